"""Checkpoint files: written atomically, read with ``torch.load(weights_only=True)`` only.

A checkpoint is a dict of tensors and plain data (numbers, strings, lists, dicts) with a
``format`` tag, so loading never unpickles arbitrary objects and a file from another tool, a
truncated file or a file of the wrong kind is a one-line ``ValueError``. Tensors are mapped to the
CPU on loading (``map_location``), whichever device saved them, so a checkpoint trained on a GPU
loads on a laptop; the caller moves the module where it runs (``nas.device.Runtime.module``).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from invres_utils.atomic_files import atomic_write_bytes
from search_spaces import SearchSpace
from search_spaces.supernet import Supernet

SUPERNET_FORMAT = "invres-nas-supernet/1"


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """``torch.save`` to a temporary file, then rename: a kill never leaves a torn checkpoint."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike[str], expected_format: str, what: str = "checkpoint") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` with the given ``format`` tag."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a torch file, or holding objects weights_only refuses
        first_line = (str(e).splitlines() or [""])[0][:120]
        raise ValueError(
            f"{what} {path} is corrupt or not an invres-nas file ({type(e).__name__}: {first_line}); "
            "delete it to start over"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != expected_format:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{what} {path} is not an {expected_format} file (found {found!r})")
    return payload


def space_difference(saved: Any, space: SearchSpace) -> str | None:
    """``None`` if ``saved`` (a ``to_dict()``) describes ``space``, else what differs, in words."""
    try:
        other = SearchSpace.from_dict(saved)
    except (ValueError, TypeError):
        return "the saved space is unreadable"
    if other == space:
        return None
    mine, theirs = space.to_dict(), other.to_dict()
    for key in mine:
        if key == "stages" and len(mine[key]) == len(theirs[key]):
            for i, (a, b) in enumerate(zip(theirs[key], mine[key])):
                for field in a:
                    if a[field] != b[field]:
                        return f"stage {i} {field} {a[field]} vs {b[field]}"
        if mine[key] != theirs.get(key):
            return f"{key} {theirs.get(key)!r} vs {mine[key]!r}"
    return "the spaces differ"


def supernet_payload(supernet: Supernet, **extra: Any) -> dict[str, Any]:
    return {"format": SUPERNET_FORMAT, "space": supernet.space.to_dict(), "state_dict": supernet.state_dict(), **extra}


def load_supernet(
    path: str | os.PathLike[str], space: SearchSpace | None = None, device: str | torch.device = "cpu"
) -> Supernet:
    """A supernet checkpoint (from ``train_supernet``) as a ``Supernet`` in eval mode on ``device``.
    If ``space`` is given the checkpoint must have been trained for exactly that space."""
    return load_supernet_with_identity(path, space)[0].to(device)


def load_supernet_with_identity(
    path: str | os.PathLike[str], space: SearchSpace | None = None
) -> tuple[Supernet, dict[str, Any]]:
    """:func:`load_supernet`, plus what it was trained on: ``{"data", "seed", "config", "space"}``
    (the seed also fixed the data split, which a search must reuse so that it never scores
    candidates on images the supernet trained on)."""
    payload = load_checkpoint(path, SUPERNET_FORMAT, "supernet checkpoint")
    if space is not None:
        difference = space_difference(payload.get("space"), space)
        if difference is not None:
            raise ValueError(
                f"supernet checkpoint {path} was trained for a space that differs from space {space.name!r} "
                f"({difference}); train a supernet for this space (omit --supernet) or search the space it was trained for"
            )
    else:
        space = SearchSpace.from_dict(payload["space"])
    supernet = Supernet(space)
    try:
        supernet.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError) as e:
        raise ValueError(f"supernet checkpoint {path} does not fit its space: {str(e).splitlines()[0][:200]}") from None
    if not payload.get("complete", True):
        raise ValueError(
            f"supernet checkpoint {path} is from an unfinished training run (epoch {payload.get('epoch')}); "
            "resume its training first"
        )
    identity = payload.get("identity")
    return supernet.eval(), identity if isinstance(identity, dict) else {}
