"""The datasets a search trains and evaluates on.

``load_data(source, resolution, seed)`` reads one of five sources and always returns the same
:class:`Dataset`:

- ``"cluttered-digits"`` (the embedded default): scikit-learn's digits rescaled, rotated and
  placed on 24x24 canvases among fragments of other digits (:func:`cluttered_digits`); plain
  digits are too easy to tell architectures apart (every proxy network scores 97-99%);
- ``"digits"``: scikit-learn's bundled 8x8 digits (ships inside scikit-learn, works offline);
- a CIFAR-10 python folder, read with a restricted unpickler (:mod:`nas.data.cifar`);
- an image folder, one sub-folder per class, optionally pre-split into ``train/ val/ test/``
  (:mod:`nas.data.folder`), decoded one image at a time, never all at once;
- an ``.npz`` file with arrays ``x`` and ``y`` (:mod:`nas.data.npz`).

The package, one concern per module: ``common`` (errors, split names), the readers
(``digits``, ``cifar``, ``npz``, ``folder``), ``splits`` (carving val/test), ``transforms``
(random-resized and centre crops, normalisation), ``images`` (a split as a
``torch.utils.data.Dataset``), ``dataset`` (``load_data``) and ``loaders`` (``DataLoader``
construction, per-epoch shuffles, data-parallel shards).
"""

from .common import SPLITS, DataError
from .dataset import STATS_IMAGES, Dataset, load_data
from .digits import CLUTTER_CANVAS, CLUTTER_VARIANTS, cluttered_digits
from .images import ArrayImages, BadImageWarning, FolderImages, SplitImages
from .loaders import EpochSampler, epoch_seed, eval_loader, model_input, train_loader
from .transforms import PRESETS, Augmentation

__all__ = [
    "CLUTTER_CANVAS",
    "CLUTTER_VARIANTS",
    "PRESETS",
    "SPLITS",
    "STATS_IMAGES",
    "ArrayImages",
    "Augmentation",
    "BadImageWarning",
    "DataError",
    "Dataset",
    "EpochSampler",
    "FolderImages",
    "SplitImages",
    "cluttered_digits",
    "epoch_seed",
    "eval_loader",
    "load_data",
    "model_input",
    "train_loader",
]
