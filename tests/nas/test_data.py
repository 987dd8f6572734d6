"""nas.data: every source loads to the same normalised, split, deterministic Dataset; batches()
covers an epoch exactly; the CIFAR unpickler refuses code; bad input is one clear line."""

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

from nas.data import AUGMENT_PAD, SPLITS, Dataset, _augment, load_data

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


def denormalise(ds: Dataset, split: str) -> torch.Tensor:
    mean, std = torch.tensor(ds.mean).view(1, 3, 1, 1), torch.tensor(ds.std).view(1, 3, 1, 1)
    return ds.images[split] * std + mean


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
        assert ds.images[split].dtype == torch.float32 and ds.labels[split].dtype == torch.int64
        assert ds.images[split].shape == (sizes[split], 3, resolution, resolution)
        assert int(ds.labels[split].min()) >= 0 and int(ds.labels[split].max()) < num_classes
    train = ds.images["train"]
    assert torch.allclose(train.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(train.std(dim=(0, 2, 3), correction=0), torch.ones(3), atol=1e-3)
    seen = [image_bytes(ds.images[s]) for s in SPLITS]
    assert sum(len(s) for s in seen) == sum(sizes.values()) == len(set.union(*seen)), "splits overlap"
    assert ds.allow_flip and "\n" not in ds.source and "\n" not in ds.describe()
    assert str(files[key]) in ds.describe()


def test_digits(digits):
    assert digits.num_classes == 10 and digits.classes == tuple("0123456789") and not digits.allow_flip
    assert sum(digits.size(s) for s in SPLITS) == 1797
    assert (digits.size("val"), digits.size("test")) == (359, 359)
    assert digits.images["train"].shape[1:] == (3, 32, 32)
    assert torch.allclose(digits.images["train"].mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert (
        digits.source
        == "sklearn load_digits, 1797 images, 8x8 upsampled to 32x32; val and test carved from train (seed 0)"
    )
    grey = denormalise(digits, "train")
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 0], grey[:, 2])
    native = load_data("sklearn-digits", 8)
    assert native.images["train"].shape[2:] == (8, 8) and "upsampled" not in native.source


def test_stratified_carving(files, digits):
    ds = load_data(files["nhwc"], 12)
    for split, per_class in (("train", 12), ("val", 4), ("test", 4)):
        assert ds.labels[split].bincount().tolist() == [per_class] * 3
    for split in ("val", "test"):  # 1797 digits: every class within one of its share
        counts = digits.labels[split].bincount(minlength=10)
        assert counts.min() >= 34 and counts.max() <= 38


def test_deterministic_for_a_seed_and_different_across_seeds(files):
    a, b, c = (load_data(files["nhwc"], 12, seed=s) for s in (7, 7, 8))
    for split in SPLITS:
        assert torch.equal(a.images[split], b.images[split]) and torch.equal(a.labels[split], b.labels[split])
    assert image_bytes(a.images["val"]) != image_bytes(c.images["val"])


def test_max_train_caps_the_train_split_only(files):
    ds = load_data(files["nhwc"], 12, max_train=9)
    assert (ds.size("train"), ds.size("val"), ds.size("test")) == (9, 12, 12)
    assert ds.labels["train"].bincount().tolist() == [3, 3, 3]
    assert "train capped at 9" in ds.source
    assert load_data(files["nhwc"], 12, max_train=1000).size("train") == 36


def test_cifar_pixels_labels_and_names(files, tmp_path):
    written = make_cifar(tmp_path / "again", meta=False)  # same rng: the same images as files["cifar"]
    ds = load_data(files["cifar-parent"], 32)
    assert ds.classes == CIFAR_CLASSES
    assert load_data(files["cifar-no-meta"], 32).classes == tuple(str(i) for i in range(10))
    expected = torch.from_numpy(written["test_batch"]).float() / 255
    assert torch.allclose(denormalise(ds, "test"), expected, atol=1e-5), "channel-major 3072 -> (3, 32, 32)"
    assert ds.labels["test"].tolist() == [i % 10 for i in range(20)]
    assert set(ds.labels["val"].bincount(minlength=10).tolist()) <= {1, 2}, "12 of 60 (6 per class), stratified"


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
    assert torch.allclose(denormalise(ds, "test"), torch.from_numpy(written["test_batch"]).float() / 255, atol=1e-5)


def test_image_folder_classes_and_colours(files):
    ds = load_data(files["folder"], 8)
    assert ds.classes == FOLDER_CLASSES
    pixels = denormalise(ds, "train").mean(dim=(2, 3)) * 255
    for label, name in enumerate(FOLDER_CLASSES):
        colour = pixels[ds.labels["train"] == label].mean(dim=0)
        assert torch.allclose(colour, torch.tensor(COLOURS[name], dtype=torch.float32), atol=3)
    presplit = load_data(files["folder-split"], 8)
    assert presplit.labels["test"].bincount().tolist() == [2, 2, 2]
    assert "train, test folders" in presplit.source and "val carved" in presplit.source


def test_npz_layouts_agree(files):
    nhwc, nchw = load_data(files["nhwc"], 12), load_data(files["nchw"], 12)
    assert nhwc.classes == ("a", "b", "c") and nchw.classes == ("0", "1", "2")
    for split in SPLITS:
        assert torch.allclose(nhwc.images[split], nchw.images[split], atol=1e-5)
        assert torch.equal(nhwc.labels[split], nchw.labels[split])
    grey = denormalise(load_data(files["grey"], 16), "train")
    assert torch.allclose(grey[:, 0], grey[:, 1]) and torch.allclose(grey[:, 0], grey[:, 2])


def test_npz_given_test_split_is_used_as_is(files):
    with np.load(files["with-test"]) as archive:
        x_test, y_test = archive["x_test"], archive["y_test"]
    ds = load_data(files["with-test"], 12)
    assert torch.equal(ds.labels["test"], torch.from_numpy(y_test))
    expected = torch.from_numpy(x_test).permute(0, 3, 1, 2).float() / 255
    assert torch.allclose(denormalise(ds, "test"), expected, atol=1e-5)


def test_unstratifiable_labels_fall_back_to_a_random_split(tmp_path):
    path = tmp_path / "rare.npz"
    np.savez(path, x=np.zeros((10, 4, 4), np.uint8) + np.arange(10, dtype=np.uint8)[:, None, None], y=[0] * 9 + [1])
    ds = load_data(path, 4)
    assert sum(ds.size(s) for s in SPLITS) == 10


# ---- batches ---------------------------------------------------------------------------------------------
def indexed(n: int, allow_flip: bool = True, resolution: int = 4) -> Dataset:
    """Image i is the constant i (so a batch says which examples it holds)."""
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, resolution, resolution).contiguous()
    y = torch.arange(n) % 2
    splits = {s: x for s in SPLITS}
    return Dataset("indexed", ("a", "b"), resolution, splits, {s: y for s in SPLITS}, (0, 0, 0), (1, 1, 1), allow_flip)


def ids(batch: torch.Tensor) -> list[int]:
    return batch[:, 0, 0, 0].long().tolist()


def test_batches_cover_every_example_once_per_epoch():
    ds = indexed(10)
    assert [ids(x) for x, _ in ds.batches("train", 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [ids(x) for x, _ in ds.batches("train", 4, drop_last=True)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    gen = torch.Generator().manual_seed(0)
    epochs = [[i for x, _ in ds.batches("train", 3, shuffle=True, generator=gen) for i in ids(x)] for _ in range(3)]
    for order in epochs:
        assert sorted(order) == list(range(10))
    assert epochs[0] != epochs[1]
    again = torch.Generator().manual_seed(0)
    assert [i for x, _ in ds.batches("train", 3, shuffle=True, generator=again) for i in ids(x)] == epochs[0]
    for x, y in ds.batches("train", 3, shuffle=True, generator=gen, drop_last=True):
        assert len(x) == len(y) == 3 and torch.equal(y, torch.tensor(ids(x)) % 2)


def test_batches_are_copies():
    ds = indexed(4)
    x, _ = next(ds.batches("val", 2))
    x.fill_(-1)
    assert ids(ds.images["val"]) == [0, 1, 2, 3]


def test_augment_keeps_shapes_and_labels_and_changes_pixels(files):
    ds = load_data(files["nhwc"], 12)
    gen = torch.Generator().manual_seed(0)
    plain = list(ds.batches("train", 16))
    augmented = list(ds.batches("train", 16, augment=True, generator=gen))
    assert [x.shape for x, _ in plain] == [x.shape for x, _ in augmented]
    assert all(torch.equal(a[1], b[1]) for a, b in zip(plain, augmented))
    assert not torch.equal(torch.cat([x for x, _ in plain]), torch.cat([x for x, _ in augmented]))


def test_augment_is_a_translated_crop_or_its_mirror():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(32, 3, 6, 6, generator=gen)
    out = _augment(x, gen, flip=True)
    p = AUGMENT_PAD
    padded = torch.nn.functional.pad(x, (p, p, p, p), mode="replicate")
    kinds = set()
    for image, result in zip(padded, out):
        crops = {
            (dy, dx, f): image[:, dy : dy + 6, dx : dx + 6]
            for dy in range(2 * p + 1)
            for dx in range(2 * p + 1)
            for f in (0, 1)
        }
        match = [k for k, crop in crops.items() if torch.equal(crop.flip(2) if k[2] else crop, result)]
        assert match, "not a crop of the padded image"
        kinds |= {(k[0], k[1]) for k in match} | {("flip", k[2]) for k in match}
    assert ("flip", 0) in kinds and ("flip", 1) in kinds and len(kinds) > 10


@pytest.mark.parametrize("allow_flip", [True, False])
def test_flip_only_when_allowed(allow_flip):
    ramp = torch.arange(8, dtype=torch.float32).expand(40, 3, 8, 8).contiguous()  # rises left to right
    ds = Dataset(
        "ramp",
        ("a", "b"),
        8,
        {"train": ramp},
        {"train": torch.zeros(40, dtype=torch.int64)},
        (0, 0, 0),
        (1, 1, 1),
        allow_flip,
    )
    x, _ = next(ds.batches("train", 40, augment=True, generator=torch.Generator().manual_seed(0)))
    falling = (x.diff(dim=3) < 0).any(dim=(1, 2, 3))
    assert bool(falling.any()) == allow_flip


def test_batches_validate_their_arguments():
    ds = indexed(4)
    for kwargs in ({"shuffle": True}, {"augment": True}):
        with pytest.raises(ValueError, match="torch.Generator must be passed"):
            ds.batches("train", 2, **kwargs)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        ds.batches("train", 0)
    with pytest.raises(ValueError, match="split must be one of"):
        ds.batches("training", 2)


def test_subset_and_describe(digits):
    small = digits.subset("train", 50, torch.Generator().manual_seed(0))
    assert small.size("train") == 50 and small.size("val") == digits.size("val") and small.mean == digits.mean
    assert digits.subset("val", 10**6, torch.Generator()) is digits
    assert (
        digits.describe() == "digits: 10 classes (0, 1, 2, 3, 4, 5, 6, 7, 8, 9), train 1079 / val 359 / test 359, 32x32"
    )
    assert repr(digits) == f"Dataset({digits.describe()})"


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
    "missing path": (lambda t: t / "nowhere", "does not exist; expected 'cluttered-digits', 'digits', a CIFAR-10 python folder"),
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
    "folder with a broken image": (unreadable_image, "broken.png could not be read"),
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
    ],
)
def test_bad_arguments_are_one_line(kwargs, fragment):
    with pytest.raises(ValueError) as info:
        load_data(**{"source": "digits", **kwargs})
    assert "\n" not in str(info.value) and fragment in str(info.value)


def test_dataset_checks_its_tensors():
    good = indexed(4)
    with pytest.raises(ValueError, match=r"images\['train'\] must be float32 \(N, 3, 4, 4\)"):
        Dataset(
            "x",
            ("a", "b"),
            4,
            {"train": good.images["train"][:, :1]},
            {"train": good.labels["train"]},
            (0, 0, 0),
            (1, 1, 1),
        )
    with pytest.raises(ValueError, match=r"labels\['train'\] must lie in \[0, 2\)"):
        Dataset(
            "x",
            ("a", "b"),
            4,
            {"train": good.images["train"]},
            {"train": good.labels["train"] + 5},
            (0, 0, 0),
            (1, 1, 1),
        )
    with pytest.raises(ValueError, match="'train' plus any of"):
        Dataset("x", ("a", "b"), 4, {"val": good.images["val"]}, {"val": good.labels["val"]}, (0, 0, 0), (1, 1, 1))


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
    mean, std = np.array(data.mean)[None, :, None, None], np.array(data.std)[None, :, None, None]
    sources = {}
    for split in SPLITS:
        raw = np.rint((data.images[split].numpy() * std + mean)[:, :1] * 255).astype(np.uint8)
        sources[split] = {owner[x.tobytes()] for x in raw}
    assert not (sources["train"] & sources["val"]) and not (sources["train"] & sources["test"])
    assert not (sources["val"] & sources["test"])
    other = load_data("cluttered-digits", resolution=24, seed=4)
    assert not torch.equal(other.labels["test"], data.labels["test"])
