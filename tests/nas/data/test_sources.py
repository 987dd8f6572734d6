"""nas.data sources: every source loads to the same split, deterministic Dataset of uint8 crops,
normalised by its training statistics; the CIFAR unpickler refuses code; bad input is one line."""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nas.data import SPLITS, ArrayImages, Augmentation, Dataset, eval_loader, load_data

CIFAR_CLASSES = tuple(f"class{i}" for i in range(10))
FOLDER_CLASSES = ("cat", "dog", "emu")
COLOURS = {"cat": (220, 30, 30), "dog": (30, 220, 30), "emu": (30, 30, 220)}


# ---- fixtures: small files in the real formats -----------------------------------------------------
def write_cifar_batch(path: Path, images: np.ndarray, labels: list[int], protocol: int = pickle.DEFAULT_PROTOCOL):
    batch = {
        b"batch_label": path.name.encode(),
        b"labels": labels,
        b"data": images.reshape(len(images), -1),
        b"filenames": [f"img{i}.png".encode() for i in range(len(images))],
    }
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=protocol)


def make_cifar(folder: Path, *, meta: bool = True, protocol: int = pickle.DEFAULT_PROTOCOL) -> dict[str, np.ndarray]:
    """2 data batches of 30 images (3 per class) and a test batch of 20, as CIFAR-10 ships them."""
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True)
    written = {}
    for name, n in (("data_batch_1", 30), ("data_batch_2", 30), ("test_batch", 20)):
        images = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
        labels = [i % 10 for i in range(n)]
        write_cifar_batch(folder / name, images, labels, protocol)
        written[name] = images
    if meta:
        with open(folder / "batches.meta", "wb") as f:
            pickle.dump({b"label_names": [c.encode() for c in CIFAR_CLASSES], b"num_vis": 3072}, f)
    return written


def write_pngs(folder: Path, classes: tuple[str, ...], per_class: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for name in classes:
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(np.array(COLOURS[name]) + rng.integers(-20, 21, size=(10, 12, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(folder / name / f"{i}.png")


def grey_classes(n_per_class: int, k: int, shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random (unique) uint8 images, ``n_per_class`` per class, labels in shuffled order."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.repeat(np.arange(k), n_per_class))
    return rng.integers(0, 256, size=(len(y), *shape), dtype=np.uint8), y


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    out = {"cifar": root / "cifar-parent" / "cifar-10-batches-py"}
    make_cifar(out["cifar"])
    out["cifar-parent"] = root / "cifar-parent"
    out["cifar-no-meta"] = root / "cifar-no-meta"
    make_cifar(out["cifar-no-meta"], meta=False)

    out["folder"] = root / "folder"
    write_pngs(out["folder"], FOLDER_CLASSES, 6, seed=0)
    out["folder-split"] = root / "folder-split"
    write_pngs(out["folder-split"] / "train", FOLDER_CLASSES, 6, seed=1)
    write_pngs(out["folder-split"] / "test", FOLDER_CLASSES, 2, seed=2)

    x, y = grey_classes(20, 3, (12, 12, 3), seed=3)
    out["nhwc"] = root / "nhwc.npz"
    np.savez(out["nhwc"], x=x, y=y, classes=np.array(["a", "b", "c"]))
    out["nchw"] = root / "nchw.npz"  # the same images as floats, channel-first
    np.savez(out["nchw"], x=x.transpose(0, 3, 1, 2).astype(np.float32) / 255, y=y)
    xg, yg = grey_classes(20, 3, (10, 14), seed=4)
    out["grey"] = root / "grey.npz"
    np.savez(out["grey"], x=xg, y=yg)
    xt, yt = grey_classes(5, 3, (12, 12, 3), seed=5)
    out["with-test"] = root / "with-test.npz"
    np.savez(out["with-test"], x=x, y=y, x_test=xt, y_test=yt)
    return out


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_data("digits", 32)


def image_bytes(x: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in x}


def crops(ds: Dataset, split: str) -> torch.Tensor:
    """The evaluation crops of a split, uint8 (N, C, R, R)."""
    return torch.cat([x for x, _ in eval_loader(ds, split, 64)])


def network_input(ds: Dataset, split: str) -> torch.Tensor:
    return ds.normalise(crops(ds, split))


def pixels(ds: Dataset, split: str) -> torch.Tensor:
    """Evaluation crops as floats in [0, 1], three channels."""
    return crops(ds, split).float().div(255).expand(-1, 3, -1, -1)


# ---- every source ------------------------------------------------------------------------------------
SOURCES = {
    "cifar": (10, {"train": 48, "val": 12, "test": 20}),
    "cifar-parent": (10, {"train": 48, "val": 12, "test": 20}),
    "cifar-no-meta": (10, {"train": 48, "val": 12, "test": 20}),
    "folder": (3, {"train": 10, "val": 4, "test": 4}),  # 18 images: 20 % (3.6 -> 4) each carved
    "folder-split": (3, {"train": 14, "val": 4, "test": 6}),  # val carved from the 18 train images
    "nhwc": (3, {"train": 36, "val": 12, "test": 12}),
    "nchw": (3, {"train": 36, "val": 12, "test": 12}),
    "grey": (3, {"train": 36, "val": 12, "test": 12}),
    "with-test": (3, {"train": 48, "val": 12, "test": 15}),
}


@pytest.mark.parametrize("key", SOURCES)
@pytest.mark.parametrize("resolution", [16, 32])
def test_every_source_loads_split_and_normalised(files, key, resolution):
    num_classes, sizes = SOURCES[key]
    ds = load_data(files[key], resolution, seed=0)
    assert ds.num_classes == num_classes and ds.resolution == resolution and ds.name == str(files[key])
    assert {s: ds.size(s) for s in SPLITS} == sizes
    for split in SPLITS:
        x = crops(ds, split)
        assert x.dtype == torch.uint8 and ds.labels(split).dtype == torch.int64
        assert x.shape[0] == sizes[split] and x.shape[1] in (1, 3) and x.shape[2:] == (resolution, resolution)
        assert int(ds.labels(split).min()) >= 0 and int(ds.labels(split).max()) < num_classes
    train = network_input(ds, "train")  # fewer than STATS_IMAGES: the statistics are exact
    assert train.dtype == torch.float32 and train.shape[1] == 3
    assert torch.allclose(train.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(train.std(dim=(0, 2, 3), correction=0), torch.ones(3), atol=1e-3)
    seen = [image_bytes(crops(ds, s)) for s in SPLITS]
    assert sum(len(s) for s in seen) == sum(sizes.values()) == len(set.union(*seen)), "splits overlap"
    assert ds.allow_flip and "\n" not in ds.source and "\n" not in ds.describe()
    assert str(files[key]) in ds.describe()


def test_digits(digits):
    assert digits.num_classes == 10 and digits.classes == tuple("0123456789") and not digits.allow_flip
    assert sum(digits.size(s) for s in SPLITS) == 1797
    assert (digits.size("val"), digits.size("test")) == (359, 359)
    assert crops(digits, "train").shape[1:] == (1, 32, 32), "grey images stay one channel until normalised"
    assert torch.allclose(network_input(digits, "train").mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert digits.source == (
        "sklearn load_digits, 1797 images, 8x8, upsampled to 32x32 per batch, uint8 in memory; "
        "val and test carved from train (seed 0)"
    )
    grey = network_input(digits, "train")
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 0], grey[:, 2])
    assert digits.in_memory and digits.augmentation.flip is False
    native = load_data("sklearn-digits", 8)
    assert crops(native, "train").shape[2:] == (8, 8) and "upsampled" not in native.source


def test_stratified_carving(files, digits):
    ds = load_data(files["nhwc"], 12)
    for split, per_class in (("train", 12), ("val", 4), ("test", 4)):
        assert ds.labels(split).bincount().tolist() == [per_class] * 3
    for split in ("val", "test"):  # 1797 digits: every class within one of its share
        counts = digits.labels(split).bincount(minlength=10)
        assert counts.min() >= 34 and counts.max() <= 38


def test_deterministic_for_a_seed_and_different_across_seeds(files):
    a, b, c = (load_data(files["nhwc"], 12, seed=s) for s in (7, 7, 8))
    for split in SPLITS:
        assert torch.equal(crops(a, split), crops(b, split)) and torch.equal(a.labels(split), b.labels(split))
    assert a.mean == b.mean and a.std == b.std
    assert image_bytes(crops(a, "val")) != image_bytes(crops(c, "val"))


def test_max_train_caps_the_train_split_only(files):
    ds = load_data(files["nhwc"], 12, max_train=9)
    assert (ds.size("train"), ds.size("val"), ds.size("test")) == (9, 12, 12)
    assert ds.labels("train").bincount().tolist() == [3, 3, 3]
    assert "train capped at 9" in ds.source
    assert load_data(files["nhwc"], 12, max_train=1000).size("train") == 36


def test_cifar_pixels_labels_and_names(files, tmp_path):
    written = make_cifar(tmp_path / "again", meta=False)  # same rng: the same images as files["cifar"]
    ds = load_data(files["cifar-parent"], 32)
    assert ds.classes == CIFAR_CLASSES
    assert load_data(files["cifar-no-meta"], 32).classes == tuple(str(i) for i in range(10))
    assert torch.equal(crops(ds, "test"), torch.from_numpy(written["test_batch"])), "channel-major 3072 -> (3, 32, 32)"
    assert ds.labels("test").tolist() == [i % 10 for i in range(20)]
    assert set(ds.labels("val").bincount(minlength=10).tolist()) <= {1, 2}, "12 of 60 (6 per class), stratified"
    assert ds.in_memory and ds.splits["train"].images.dtype == torch.uint8


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batches_of_every_pickle_protocol_load(tmp_path, protocol):
    make_cifar(tmp_path / "c", protocol=protocol)
    assert load_data(tmp_path / "c", 8).size("test") == 20


def test_cifar_batches_pickled_by_numpy_1_load(tmp_path):
    """CIFAR-10's own files name numpy.core.multiarray (numpy 1.x); protocol 2 spells globals as text."""
    written = make_cifar(tmp_path / "c", protocol=2)
    for name in ("data_batch_1", "data_batch_2", "test_batch"):
        path = tmp_path / "c" / name
        path.write_bytes(path.read_bytes().replace(b"numpy._core.", b"numpy.core."))
    assert b"numpy.core.multiarray\n_reconstruct" in (tmp_path / "c" / "test_batch").read_bytes()
    ds = load_data(tmp_path / "c", 32)
    assert torch.equal(crops(ds, "test"), torch.from_numpy(written["test_batch"]))


def test_image_folder_classes_and_colours(files):
    ds = load_data(files["folder"], 8)
    assert ds.classes == FOLDER_CLASSES
    colours = pixels(ds, "train").mean(dim=(2, 3)) * 255
    for label, name in enumerate(FOLDER_CLASSES):
        colour = colours[ds.labels("train") == label].mean(dim=0)
        assert torch.allclose(colour, torch.tensor(COLOURS[name], dtype=torch.float32), atol=3)
    assert not ds.in_memory and ds.augmentation.eval_crop == 0.875
    presplit = load_data(files["folder-split"], 8)
    assert presplit.labels("test").bincount().tolist() == [2, 2, 2]
    assert "train, test folders" in presplit.source and "val carved" in presplit.source


def test_npz_layouts_agree(files):
    nhwc, nchw = load_data(files["nhwc"], 12), load_data(files["nchw"], 12)
    assert nhwc.classes == ("a", "b", "c") and nchw.classes == ("0", "1", "2")
    for split in SPLITS:  # float images in [0, 1] are quantised to the same 8 bits
        assert torch.equal(crops(nhwc, split), crops(nchw, split))
        assert torch.equal(nhwc.labels(split), nchw.labels(split))
    grey_data = load_data(files["grey"], 16)  # 10x14: the centre 10x10, upsampled
    grey = pixels(grey_data, "train")
    assert crops(grey_data, "train").shape[1:] == (1, 16, 16)
    assert torch.allclose(grey[:, 0], grey[:, 1]) and torch.allclose(grey[:, 0], grey[:, 2])


def test_npz_given_test_split_is_used_as_is(files):
    with np.load(files["with-test"]) as archive:
        x_test, y_test = archive["x_test"], archive["y_test"]
    ds = load_data(files["with-test"], 12)
    assert torch.equal(ds.labels("test"), torch.from_numpy(y_test))
    assert torch.equal(crops(ds, "test"), torch.from_numpy(x_test).permute(0, 3, 1, 2))


def test_unstratifiable_labels_fall_back_to_a_random_split(tmp_path):
    path = tmp_path / "rare.npz"
    np.savez(path, x=np.zeros((10, 4, 4), np.uint8) + np.arange(10, dtype=np.uint8)[:, None, None], y=[0] * 9 + [1])
    ds = load_data(path, 4)
    assert sum(ds.size(s) for s in SPLITS) == 10


# ---- the Dataset ------------------------------------------------------------------------------------------
def test_subset_and_describe(digits):
    small = digits.subset("train", 50, torch.Generator().manual_seed(0))
    assert small.size("train") == 50 and small.size("val") == digits.size("val") and small.mean == digits.mean
    assert digits.subset("val", 10**6, torch.Generator()) is digits
    assert (
        digits.describe() == "digits: 10 classes (0, 1, 2, 3, 4, 5, 6, 7, 8, 9), train 1079 / val 359 / test 359, 32x32"
    )
    assert repr(digits) == f"Dataset({digits.describe()})"
    assert digits.crop_bytes("val") == 359 * 32 * 32


def test_statistics_come_from_a_sample(monkeypatch, files):
    import nas.data.dataset as dataset

    full = load_data(files["nhwc"], 12)
    monkeypatch.setattr(dataset, "STATS_IMAGES", 10)
    sampled = load_data(files["nhwc"], 12)
    assert sampled.mean != full.mean and sampled.std != full.std
    assert np.allclose(sampled.mean, full.mean, atol=0.05) and np.allclose(sampled.std, full.std, atol=0.05)
    assert torch.equal(crops(sampled, "train"), crops(full, "train"))


# ---- the restricted unpickler ---------------------------------------------------------------------------
class Exploit:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class Sneaky:
    def __reduce__(self):
        return (eval, ("1 + 1",))


@pytest.mark.parametrize("payload", ["os.system", "eval", "class"], ids=str)
def test_restricted_unpickler_refuses_code_and_does_not_run_it(tmp_path, payload):
    folder = tmp_path / "evil"
    make_cifar(folder)
    marker = tmp_path / "pwned"
    obj = {"os.system": Exploit(f"touch {marker}"), "eval": Sneaky(), "class": Exploit}[payload]
    with open(folder / "data_batch_2", "wb") as f:
        pickle.dump({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"x": obj}, f)
    with pytest.raises(ValueError, match="refuses to load") as info:
        load_data(folder, 8)
    message = str(info.value)
    assert "only numpy arrays and plain data are allowed" in message and str(folder / "data_batch_2") in message
    assert "\n" not in message
    assert not marker.exists()


# ---- bad input: one line, naming the path -----------------------------------------------------------------
def npz(tmp: Path, **arrays) -> Path:
    path = tmp / "bad.npz"
    np.savez(path, **arrays)
    return path


def truncated_npz(tmp: Path) -> Path:
    path = npz(tmp, x=np.zeros((5, 4, 4), np.uint8), y=np.arange(5))
    path.write_bytes(path.read_bytes()[:100])
    return path


def corrupt_member_npz(tmp: Path) -> Path:
    path = tmp / "member.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", b"not an npy array")
        archive.writestr("y.npy", b"nor this")
    return path


def cifar_with(tmp: Path, batch: object, name: str = "data_batch_1") -> Path:
    folder = tmp / "cifar"
    make_cifar(folder)
    with open(folder / name, "wb") as f:
        pickle.dump(batch, f)
    return folder


def cifar_garbage(tmp: Path) -> Path:
    folder = tmp / "cifar"
    make_cifar(folder)
    (folder / "data_batch_2").write_bytes(b"\x00garbage")
    return folder


def cifar_without_test(tmp: Path) -> Path:
    folder = tmp / "cifar"
    make_cifar(folder)
    (folder / "test_batch").unlink()
    return folder


def folder_with(tmp: Path, classes: tuple[str, ...] = FOLDER_CLASSES, per_class: int = 2) -> Path:
    root = tmp / "images"
    write_pngs(root, classes, per_class, seed=0)
    return root


def empty_class(tmp: Path) -> Path:
    root = folder_with(tmp)
    (root / "fox").mkdir()
    (root / "fox" / "notes.txt").write_text("no images here")
    return root


def unreadable_image(tmp: Path) -> Path:
    root = folder_with(tmp)
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    return root


def no_images_at_all(tmp: Path) -> Path:
    root = tmp / "images"
    for name in FOLDER_CLASSES:
        (root / name).mkdir(parents=True)
    return root


def split_with_unknown_class(tmp: Path) -> Path:
    root = tmp / "images"
    write_pngs(root / "train", ("cat", "dog"), 2, seed=0)
    write_pngs(root / "test", ("emu",), 2, seed=0)
    return root


def loose_images(tmp: Path) -> Path:
    root = tmp / "loose"
    root.mkdir()
    Image.new("RGB", (4, 4)).save(root / "a.png")
    return root


def text_file(tmp: Path) -> Path:
    path = tmp / "notes.txt"
    path.write_text("hello")
    return path


def empty_dir(tmp: Path) -> Path:
    (tmp / "empty").mkdir()
    return tmp / "empty"


def garbage_npz(tmp: Path) -> Path:
    path = tmp / "x.npz"
    path.write_text("garbage")
    return path


def single_array_npz(tmp: Path) -> Path:
    path = tmp / "single.npz"
    with open(path, "wb") as f:
        np.save(f, np.zeros(3))
    return path


X = np.zeros((6, 4, 4), np.uint8)
Y = np.array([0, 1, 2, 0, 1, 2])

BAD_SOURCES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing path": (
        lambda t: t / "nowhere",
        "does not exist; expected 'cluttered-digits', 'digits', a CIFAR-10 python folder",
    ),
    "file of no format": (text_file, "is not an .npz file"),
    "folder of no format": (empty_dir, "matches no known layout"),
    "images without class folders": (loose_images, "no class sub-folders"),
    "npz not a zip": (garbage_npz, "not a zip file"),
    "npz truncated": (truncated_npz, "not a zip file"),
    "npz holding one array": (single_array_npz, "not a zip file"),
    "npz corrupt member": (corrupt_member_npz, "could not be read"),
    "npz without y": (lambda t: npz(t, x=X), "has no array 'y'"),
    "npz without x": (lambda t: npz(t, y=Y), "has no array 'x'"),
    "npz lengths differ": (lambda t: npz(t, x=X, y=Y[:5]), "6 images in x but 5 labels in y"),
    "npz x 2-d": (lambda t: npz(t, x=np.zeros((6, 16), np.uint8), y=Y), "has shape (6, 16)"),
    "npz x 4 channels": (lambda t: npz(t, x=np.zeros((6, 4, 4, 4), np.uint8), y=Y), "with C 1 or 3"),
    "npz float labels": (lambda t: npz(t, x=X, y=Y.astype(float)), "must be integer labels 0..K-1, got dtype float64"),
    "npz negative labels": (lambda t: npz(t, x=X, y=Y - 1), "got a negative label -1"),
    "npz 2-d labels": (lambda t: npz(t, x=X, y=Y[:, None]), "must be 1-d integer labels"),
    "npz float pixels > 1": (lambda t: npz(t, x=X + 200.0, y=Y), "float images must lie in [0, 1]"),
    "npz x_test without y_test": (lambda t: npz(t, x=X, y=Y, x_test=X), "only one of x_test and y_test"),
    "npz labels beyond classes": (
        lambda t: npz(t, x=X, y=Y, classes=np.array(["a", "b"])),
        "has label 2 but classes names only 2",
    ),
    "npz one class": (lambda t: npz(t, x=X, y=Y * 0), "need at least 2 classes"),
    "npz too few to carve": (lambda t: npz(t, x=X[:2], y=Y[:2]), "too few to carve"),
    "cifar not a pickle": (cifar_garbage, "is not a readable pickle"),
    "cifar not a dict": (lambda t: cifar_with(t, [1, 2, 3]), "holds a list"),
    "cifar missing labels": (lambda t: cifar_with(t, {b"data": np.zeros((2, 3072), np.uint8)}), "has no b'labels'"),
    "cifar wrong shape": (
        lambda t: cifar_with(t, {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}),
        "uint8 array of shape (2, 100)",
    ),
    "cifar label count": (
        lambda t: cifar_with(t, {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}),
        "2 images but 1 labels",
    ),
    "cifar bad meta": (lambda t: cifar_with(t, {b"names": []}, "batches.meta"), "no b'label_names'"),
    "cifar without test_batch": (cifar_without_test, "has no test_batch"),
    "folder with one class": (lambda t: folder_with(t, ("cat",)), "has 1 class sub-folder(s) ['cat']; need at least 2"),
    "folder with an empty class": (empty_class, "fox has no images"),
    "folder with a broken image": (unreadable_image, "1 file(s) that could not be read as images"),
    "folder whose classes hold no images": (no_images_at_all, "cat has no images"),
    "split folder with an unknown class": (split_with_unknown_class, "emu has no counterpart in"),
}


@pytest.mark.parametrize("case", BAD_SOURCES)
def test_bad_source_is_one_line_naming_the_path(tmp_path, case):
    build, fragment = BAD_SOURCES[case]
    path = build(tmp_path)
    with pytest.raises(ValueError) as info:
        load_data(path, 8)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    assert fragment in message
    assert info.value.__cause__ is None and (info.value.__context__ is None or info.value.__suppress_context__)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"resolution": 0}, "resolution must be an integer >= 1, got 0"),
        ({"resolution": 2.5}, "resolution must be an integer >= 1, got 2.5"),
        ({"val_fraction": 0.0}, "val_fraction must be a number in (0, 1), got 0.0"),
        ({"test_fraction": 1.0}, "test_fraction must be a number in (0, 1), got 1.0"),
        ({"val_fraction": -0.1}, "val_fraction must be a number in (0, 1), got -0.1"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "val_fraction + test_fraction must be < 1"),
        ({"max_train": 0}, "max_train must be None or an integer >= 1, got 0"),
        ({"seed": -1}, "seed must be an integer in [0, 2**32), got -1"),
        ({"source": ""}, "data source is empty"),
        ({"augmentation": "rrc"}, "augmentation must be a nas.data.Augmentation, got str"),
    ],
)
def test_bad_arguments_are_one_line(kwargs, fragment):
    with pytest.raises(ValueError) as info:
        load_data(**{"source": "digits", **kwargs})
    assert "\n" not in str(info.value) and fragment in str(info.value)


def test_dataset_checks_its_splits():
    images = torch.zeros(4, 1, 4, 4, dtype=torch.uint8)
    labels = torch.tensor([0, 1, 0, 1])
    aug = Augmentation()

    def split(y=labels, resolution=4):
        return ArrayImages(images, y, resolution, aug)

    with pytest.raises(ValueError, match=r"labels of split 'train' must lie in \[0, 2\)"):
        Dataset("x", ("a", "b"), 4, {"train": split(labels + 5)}, (0, 0, 0), (1, 1, 1), aug)
    with pytest.raises(ValueError, match="crops to 8 px, not the dataset's 4"):
        Dataset("x", ("a", "b"), 4, {"train": split(resolution=8)}, (0, 0, 0), (1, 1, 1), aug)
    with pytest.raises(ValueError, match="'train' plus any of"):
        Dataset("x", ("a", "b"), 4, {"val": split()}, (0, 0, 0), (1, 1, 1), aug)
    with pytest.raises(ValueError, match="at least 2 classes"):
        Dataset("x", ("a",), 4, {"train": split(labels * 0)}, (0, 0, 0), (1, 1, 1), aug)


# ---- cluttered digits (the embedded default) ---------------------------------------------------------
def test_cluttered_digits_are_one_fixed_dataset():
    from nas.data import CLUTTER_CANVAS, CLUTTER_VARIANTS, cluttered_digits

    images, labels, origin = cluttered_digits()
    assert images.shape == (1797 * CLUTTER_VARIANTS, 1, CLUTTER_CANVAS, CLUTTER_CANVAS) and images.dtype == np.uint8
    assert np.array_equal(np.bincount(origin), np.full(1797, CLUTTER_VARIANTS))
    again, _, _ = cluttered_digits()
    assert np.array_equal(images, again)
    # the three versions of a digit differ (placement, clutter, noise)
    assert not np.array_equal(images[0], images[1])
    # a digit is drawn: every image has bright strokes, well above the noise
    assert (images.reshape(len(images), -1).max(1) > 150).all()  # noise alone stays below ~60


def test_cluttered_digits_splits_keep_a_digits_versions_together():
    from nas.data import cluttered_digits

    data = load_data("cluttered-digits", resolution=24, seed=3)
    assert data.name == "cluttered-digits" and data.num_classes == 10 and not data.allow_flip
    assert sum(data.size(s) for s in SPLITS) == 1797 * 3
    images, _, origin = cluttered_digits()
    # Identify each split's images by their pixels, then check no source digit is in two splits.
    owner = {images[i].tobytes(): origin[i] for i in range(len(origin))}
    sources = {split: {owner[x.numpy().tobytes()] for x in crops(data, split)} for split in SPLITS}
    assert not (sources["train"] & sources["val"]) and not (sources["train"] & sources["test"])
    assert not (sources["val"] & sources["test"])
    other = load_data("cluttered-digits", resolution=24, seed=4)
    assert not torch.equal(other.labels("test"), data.labels("test"))
