"""Image folders: one sub-folder per class (JPEG, PNG, ...), optionally inside ``train/``,
``val/`` (or ``validation/``, ``valid/``) and ``test/``. Reading one lists the files and opens
each one's header (format and size, no pixels): a file that is not an image stops loading with a
one-line error naming it. Pixels are decoded later, one image at a time (``images.FolderImages``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import DataError, RawSource, exc_text

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
VAL_FOLDERS = ("val", "validation", "valid")
_PROGRESS_MIN_FILES = 1000
_NAMED_BAD_FILES = 3


def subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def image_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )


def _check_headers(paths: list[Path], where: str) -> None:
    """Open every file's header; a one-line error naming the files that are not images."""
    try:
        from PIL import Image
    except ImportError:
        raise DataError("reading an image folder needs Pillow; install it with pip install pillow") from None
    from tqdm.auto import tqdm

    bad = []
    progress = tqdm(
        paths,
        desc="checking images",
        unit="img",
        leave=False,
        disable=None if len(paths) > _PROGRESS_MIN_FILES else True,
    )
    for path in progress:
        try:
            with Image.open(path) as image:
                width, height = image.size
            if width < 1 or height < 1:
                raise ValueError(f"size {width}x{height}")
        except Exception as exc:
            bad.append(f"{path} ({exc_text(exc)})")
    if bad:
        named = "; ".join(bad[:_NAMED_BAD_FILES]) + (
            f"; and {len(bad) - _NAMED_BAD_FILES} more" if len(bad) > _NAMED_BAD_FILES else ""
        )
        raise DataError(
            f"image folder {where} has {len(bad)} file(s) that could not be read as images: {named}; replace or remove them"
        )


def read_image_folder(root: Path, where: str) -> RawSource:
    train_dir = root / "train"
    presplit = train_dir.is_dir() and bool(subdirs(train_dir))
    split_dirs = {"train": train_dir if presplit else root}
    if presplit:
        for split, names in (("val", VAL_FOLDERS), ("test", ("test",))):
            found = next((root / n for n in names if (root / n).is_dir()), None)
            if found is not None:
                split_dirs[split] = found
    classes = tuple(d.name for d in subdirs(split_dirs["train"]))
    if len(classes) < 2:
        raise DataError(
            f"image folder {split_dirs['train']} has {len(classes)} class sub-folder(s) {list(classes)}; "
            "need at least 2 (one sub-folder per class)"
        )
    suffixes = ", ".join(IMAGE_SUFFIXES)
    files: dict[str, list[tuple[Path, int]]] = {}
    for split, folder in split_dirs.items():
        class_dirs = subdirs(folder)
        if not class_dirs:
            raise DataError(
                f"{split} folder {folder} has no class sub-folders; expected the same class folders as {train_dir}"
            )
        files[split] = []
        for class_dir in class_dirs:
            if class_dir.name not in classes:
                raise DataError(
                    f"class folder {class_dir} has no counterpart in {train_dir}; "
                    f"{split} classes must be among the train classes {list(classes)}"
                )
            images = image_files(class_dir)
            if not images:
                raise DataError(f"class folder {class_dir} has no images ({suffixes}); add images or remove the folder")
            files[split] += [(p, classes.index(class_dir.name)) for p in images]
    _check_headers([p for entries in files.values() for p, _ in entries], where)

    total = sum(len(f) for f in files.values())
    splits = {
        split: (tuple(str(p) for p, _ in entries), np.array([y for _, y in entries], dtype=np.int64))
        for split, entries in files.items()
    }
    given = f"{', '.join(split_dirs)} folders" if presplit else "no split folders"
    return RawSource(
        name=where,
        classes=classes,
        splits=splits,
        source=f"image folder, {total} images in {len(classes)} classes ({given}), decoded per image",
        kind="folder",
    )
