"""Carving the splits a source does not give (val, test) out of its training data, and capping
the training split: seeded and stratified by class."""

from __future__ import annotations

import numpy as np

from .common import SPLITS, DataError, RawSource


def split_indices(labels: np.ndarray, n_take: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, taken) sorted indices, ``n_take`` taken; stratified by label when every class can
    be (at least 2 examples each and room for every class on both sides), else plain random."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    try:
        keep, take = train_test_split(index, test_size=n_take, stratify=labels, random_state=seed)
    except ValueError:
        keep, take = train_test_split(index, test_size=n_take, random_state=seed)
    return np.sort(keep), np.sort(take)


def _take(items, index: np.ndarray):
    """The entries ``index`` of a uint8 tensor or a tuple of paths."""
    if isinstance(items, tuple):
        return tuple(items[i] for i in index)
    import torch

    return items.index_select(0, torch.from_numpy(index))


def carve_splits(
    raw: RawSource, *, seed: int, val_fraction: float, test_fraction: float, max_train: int | None
) -> tuple[dict[str, tuple], list[str]]:
    """Every split of ``raw`` (carving the missing ones from train) and notes saying what was done."""
    splits = dict(raw.splits)
    items, labels = splits["train"]
    n = len(labels)
    notes = []
    carve = [s for s in ("test", "val") if s not in splits]
    if carve:
        fraction = {"test": test_fraction, "val": val_fraction}
        counts = {s: max(1, round(fraction[s] * n)) for s in carve}
        if n - sum(counts.values()) < 1:
            raise DataError(
                f"data {raw.name} has {n} training examples, too few to carve {' and '.join(carve)} from; "
                f"give more data or the {' and '.join(carve)} split(s) explicitly"
            )
        for s in carve:
            keep, take = split_indices(labels, counts[s], seed)
            splits[s] = (_take(items, take), labels[take])
            items, labels = _take(items, keep), labels[keep]
        notes.append(f"{' and '.join(sorted(carve, key=SPLITS.index))} carved from train (seed {seed})")
    if max_train is not None and max_train < len(labels):
        _, take = split_indices(labels, max_train, seed)
        items, labels = _take(items, take), labels[take]
        notes.append(f"train capped at {max_train}")
    splits["train"] = (items, labels)
    return splits, notes
