"""nas.data.loaders and image streaming: an epoch covers every example once, in an order fixed by
(seed, epoch) and independent of loader workers and data-parallel ranks; image folders are
decoded per image; a damaged image is skipped with a warning naming it, never a traceback."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import nas.data.images as images_module
from nas.data import (
    ArrayImages,
    Augmentation,
    BadImageWarning,
    DataError,
    Dataset,
    eval_loader,
    load_data,
    train_loader,
)

STILL = Augmentation(scale=(1.0, 1.0), ratio=(1.0, 1.0), pad=0.0, flip=False, eval_crop=1.0)


def indexed(n: int, aug: Augmentation = STILL) -> Dataset:
    """Image i is the constant i (so a batch says which examples it holds)."""
    x = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    y = torch.arange(n) % 2
    split = ArrayImages(x, y, 4, aug)
    return Dataset("indexed", ("a", "b"), 4, {"train": split, "val": split, "test": split}, (0, 0, 0), (1, 1, 1), aug)


def ids(x: torch.Tensor) -> list[int]:
    return x[:, 0, 0, 0].long().tolist()


def epoch(loader, number: int) -> list[list[int]]:
    loader.sampler.set_epoch(number)
    return [ids(x) for x, _ in loader]


def test_an_epoch_covers_every_example_once_in_a_seeded_order():
    data = indexed(10)
    loader = train_loader(data, 3, seed=0)
    first, second = epoch(loader, 0), epoch(loader, 1)
    for batches in (first, second):
        assert len(batches) == 3 and all(len(b) == 3 for b in batches)  # 10 // 3, the rest dropped
        flat = [i for b in batches for i in b]
        assert len(set(flat)) == 9
    assert first != second
    assert epoch(train_loader(data, 3, seed=0), 0) == first
    assert epoch(train_loader(data, 3, seed=1), 0) != first
    for x, y in train_loader(data, 3, seed=0):
        assert torch.equal(y, torch.tensor(ids(x)) % 2)


def test_loader_workers_do_not_change_batches_or_crops():
    data = indexed(40, Augmentation(scale=(0.3, 1.0), flip=True))
    one = train_loader(data, 8, seed=5)
    two = train_loader(data, 8, seed=5, workers=2)
    for number in (0, 1):
        one.sampler.set_epoch(number)
        two.sampler.set_epoch(number)
        for (a, ya), (b, yb) in zip(one, two, strict=True):
            assert torch.equal(a, b) and torch.equal(ya, yb)


def test_loader_workers_end_with_each_pass():
    loader = eval_loader(indexed(8), "val", 4, workers=1)
    assert [ids(x) for x, _ in loader] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert not loader.persistent_workers  # no worker left running between passes


def test_ranks_share_each_batch_exactly():
    data = indexed(50)
    single = epoch(train_loader(data, 8, seed=3), 2)
    shards = [epoch(train_loader(data, 4, seed=3, rank=r, world_size=2), 2) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == len(single) == 6
    for step, batch in enumerate(single):
        assert sorted(shards[0][step] + shards[1][step]) == sorted(batch)
        assert not set(shards[0][step]) & set(shards[1][step])


def test_without_augmentation_training_batches_are_evaluation_crops(tmp_path):
    data = indexed(12, Augmentation(pad=0.25))
    plain = train_loader(data, 4, seed=0, augment=False)
    for x, _ in plain:
        assert all(len(set(image.flatten().tolist())) == 1 for image in x), "uncropped constant images"
    assert [ids(x) for x, _ in eval_loader(data, "val", 5)] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11]]


def test_bad_worker_count_is_one_line():
    with pytest.raises(ValueError, match="--data-workers must be an integer >= 0, but got -1"):
        train_loader(indexed(4), 2, seed=0, workers=-1)


# ---- image folders: streamed ---------------------------------------------------------------------------
COLOURS = {"red": (220, 30, 30), "green": (30, 220, 30), "blue": (30, 30, 220)}


def write_folder(root: Path, per_class: int, suffix: str = ".png", size: tuple[int, int] = (40, 30)) -> list[Path]:
    rng = np.random.default_rng(0)
    written = []
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.integers(-15, 16, size=(size[1], size[0], 3)), 0, 255).astype(
                np.uint8
            )
            path = root / name / f"{i}{suffix}"
            Image.fromarray(pixels).save(path)
            written.append(path)
    return written


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_folder_images_are_decoded_one_at_a_time(tmp_path, monkeypatch, suffix):
    write_folder(tmp_path / "f", 8, suffix)
    data = load_data(tmp_path / "f", 16, seed=0)
    split = data.splits["train"]
    assert not data.in_memory and not hasattr(split, "images")
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda path, *a, **k: (opened.append(str(path)), real_open(path, *a, **k))[1])
    loader = train_loader(data, 4, seed=0)
    loader.sampler.set_epoch(0)
    x, y = next(iter(loader))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.uint8
    assert len(opened) == 4 and set(opened) <= set(split.paths), "only the batch's files were opened"
    for image, label in zip(x, y):
        colour = image.float().mean(dim=(1, 2))
        expected = torch.tensor(COLOURS[data.classes[int(label)]], dtype=torch.float32)
        assert torch.allclose(colour, expected, atol=25)


def test_a_truncated_image_is_skipped_with_a_warning_naming_it(tmp_path):
    files = write_folder(tmp_path / "f", 6)
    broken = files[0]
    truncate(broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_data(tmp_path / "f", 16, seed=0)  # the header is intact: it loads
        labels, images = [], 0
        for split in ("train", "val", "test"):
            for x, y in eval_loader(data, split, 64):
                images += len(x)
                labels += y.tolist()
    messages = [str(w.message) for w in caught if issubclass(w.category, BadImageWarning)]
    assert messages and all(str(broken) in m and "\n" not in m for m in messages)
    assert images == 17, "18 files, the broken one skipped"


def test_a_batch_of_only_broken_images_is_one_line_even_from_a_worker(tmp_path):
    files = write_folder(tmp_path / "f", 4)
    data = load_data(tmp_path / "f", 16, seed=0)
    for path in files:
        truncate(path)
    for workers in (0, 1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BadImageWarning)
            with pytest.raises(DataError) as info:
                list(eval_loader(data, "val", 64, workers=workers))
        message = str(info.value)
        assert "\n" not in message and "no image of a batch could be decoded" in message and str(tmp_path) in message


def test_data_error_keeps_one_line_of_a_worker_traceback():
    wrapped = "Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n  File x\nnas.data.common.DataError: the real message"
    assert str(DataError(wrapped)) == "the real message"
    assert images_module.collate_batch((1, 2)) == (1, 2)
