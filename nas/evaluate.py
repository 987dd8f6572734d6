"""Scoring a sub-network: batch-norm recalibration, then batched evaluation, on the run's device.

A supernet's batch-norm running statistics are an average over every sub-network trained
through it and fit none of them. Before a candidate is scored, its standalone network is
extracted and its statistics are recomputed (an exact average, not a moving one) on a fixed set
of training images at the candidate's resolution; the same images for every candidate.

Scoring runs in float32 whatever the training precision, so that a candidate's accuracy does not
depend on the precision its supernet was trained in beyond the weights themselves.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_spaces import ArchSpec
from search_spaces.supernet import Supernet

from .data import Dataset, eval_loader, model_input
from .device import CPU, Runtime

EVAL_CACHE_BYTES = 256 * 1024**2  # evaluation crops of a split decoded from files are kept up to this size


def resize(images: Tensor, resolution: int) -> Tensor:
    """Images at ``resolution`` x ``resolution`` (anti-aliased bilinear; unchanged if already so)."""
    if images.shape[-1] == resolution and images.shape[-2] == resolution:
        return images
    return F.interpolate(images, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)


@torch.no_grad()
def recalibrate_batch_norm(model: nn.Module, batches: Iterable[Tensor]) -> nn.Module:
    """Replace every batch norm's running statistics by their exact average over ``batches``
    (forward passes in train mode for batch norm only); returns ``model`` in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
        m.train()
    for x in batches:
        model(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return model.eval()


@dataclass(frozen=True)
class Score:
    accuracy: float
    loss: float
    examples: int


@torch.inference_mode()
def score_batches(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]]) -> Score:
    """Top-1 accuracy and mean cross-entropy of ``model`` (eval mode) over prepared ``(x, y)`` batches."""
    model.eval()
    correct = loss = None
    n = 0
    for x, y in batches:
        logits = model(x).float()
        hits, total = (logits.argmax(1) == y).sum(), F.cross_entropy(logits, y, reduction="sum")
        correct = hits if correct is None else correct + hits
        loss = total if loss is None else loss + total
        n += len(y)
    if not n:
        return Score(float("nan"), float("nan"), 0)
    return Score(int(correct) / n, float(loss) / n, n)


class EvalImages:
    """The evaluation crops of a split (or of its ``indices``) as network input at any resolution.

    Held on the device as uint8 when the data is in memory anyway or the crops fit
    ``cache_bytes``; otherwise decoded again by a ``DataLoader`` (``workers`` processes) each time
    they are read, so that an image folder of any size is never held whole."""

    def __init__(
        self,
        data: Dataset,
        split: str,
        runtime: Runtime = CPU,
        *,
        indices: Sequence[int] | None = None,
        cache_bytes: float = EVAL_CACHE_BYTES,
        workers: int = 0,
    ) -> None:
        self.data, self.split, self.runtime, self.workers = data, split, runtime, workers
        self.indices = None if indices is None else [int(i) for i in indices]
        count = data.size(split) if indices is None else len(self.indices)
        size = data.crop_bytes(split) * count / max(1, data.size(split))
        self._cached: tuple[Tensor, Tensor] | None = None
        if data.splits[split].in_memory or size <= cache_bytes:
            crops = list(self._loader(batch_size=1024))
            images = (
                torch.cat([x for x, _ in crops])
                if crops
                else torch.empty(0, 3, data.resolution, data.resolution, dtype=torch.uint8)
            )
            labels = torch.cat([y for _, y in crops]) if crops else torch.empty(0, dtype=torch.int64)
            self._cached = (runtime.to(images), runtime.to(labels))

    def _loader(self, batch_size: int):
        return eval_loader(
            self.data,
            self.split,
            batch_size,
            indices=self.indices,
            workers=self.workers,
            pin_memory=self.runtime.pin_memory,
        )

    def __len__(self) -> int:
        return self.data.size(self.split) if self.indices is None else len(self.indices)

    def batch_size(self, resolution: int, cap: int) -> int:
        """Images per batch for scoring at ``resolution``: ``Runtime.eval_batch_size`` of the larger
        of it and the data's resolution, since each batch is normalised at the data's resolution
        before it is resized (a batch of 500 images at 32 px read as 48 px crops would hold 2.25x
        the pixels the budget allows)."""
        return self.runtime.eval_batch_size(max(resolution, self.data.resolution), cap)

    def batches(self, resolution: int, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """``(normalised images at resolution, labels)`` batches on the device."""
        if self._cached is not None:
            images, labels = self._cached
            raw: Iterable[tuple[Tensor, Tensor]] = (
                (images[i : i + batch_size], labels[i : i + batch_size]) for i in range(0, len(labels), batch_size)
            )
        else:
            raw = self._loader(batch_size)
        for x, y in model_input(raw, self.data, self.runtime):
            yield resize(x, resolution).contiguous(memory_format=self.runtime.memory_format), y


def evaluate_model(
    model: nn.Module,
    data: Dataset,
    split: str = "val",
    *,
    resolution: int | None = None,
    runtime: Runtime = CPU,
    batch_size: int = 500,
    workers: int = 0,
) -> Score:
    """Accuracy and loss of a standalone ``model`` (on ``runtime``'s device) on ``split`` at
    ``resolution`` (default: the data's), in batches of at most ``batch_size`` images (fewer at
    high resolutions: ``Runtime.eval_batch_size``)."""
    images = EvalImages(data, split, runtime, cache_bytes=0, workers=workers)
    resolution = resolution or data.resolution
    return score_batches(model, images.batches(resolution, images.batch_size(resolution, batch_size)))


class SubnetEvaluator:
    """Accuracy a sub-network inherits from a trained supernet, batch norm recalibrated.

    ``evaluator(spec)`` -> :class:`Score` on ``split``; ``evaluator.model(spec)`` -> the
    standalone network (eval mode, on ``runtime``'s device) that score belongs to. The
    calibration images are a fixed random sample of the training split, held on the device; the
    scored split is cached up to ``cache_bytes`` (see :class:`EvalImages`).
    """

    def __init__(
        self,
        supernet: Supernet,
        data: Dataset,
        split: str = "val",
        calibration_images: int = 500,
        calibration_batch_size: int = 100,
        batch_size: int = 500,
        seed: int = 0,
        *,
        runtime: Runtime = CPU,
        workers: int = 0,
        cache_bytes: float = EVAL_CACHE_BYTES,
    ) -> None:
        if calibration_images < 1 or calibration_batch_size < 1:
            raise ValueError(
                f"calibration needs at least one image and a batch size >= 1, but got "
                f"{calibration_images} images in batches of {calibration_batch_size}"
            )
        self.supernet = supernet.eval()
        self.data = data
        self.split = split
        self.runtime = runtime
        self.batch_size = batch_size
        self.calibration_batch_size = calibration_batch_size
        # A fixed random subset of the training images, the same for every candidate.
        order = torch.randperm(data.size("train"), generator=torch.Generator().manual_seed(seed))[:calibration_images]
        self._calibration = EvalImages(
            data, "train", runtime, indices=order.tolist(), cache_bytes=math.inf, workers=workers
        )
        self._scored = EvalImages(data, split, runtime, cache_bytes=cache_bytes, workers=workers)

    def model(self, spec: ArchSpec) -> nn.Module:
        """The standalone network of ``spec`` with inherited weights and recalibrated batch norm."""
        model = self.runtime.module(self.supernet.extract(spec))
        batches = (x for x, _ in self._calibration.batches(spec.resolution, self.calibration_batch_size))
        return recalibrate_batch_norm(model, batches)

    def __call__(self, spec: ArchSpec) -> Score:
        batch_size = self._scored.batch_size(spec.resolution, self.batch_size)
        return score_batches(self.model(spec), self._scored.batches(spec.resolution, batch_size))
