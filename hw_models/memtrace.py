"""Measure the peak activation memory of a PyTorch computation by tracking live tensor storages.

CPU PyTorch keeps no allocator statistics, so the measurement works one level up: a
``TorchDispatchMode`` sees the output of every aten op run inside it. An output whose storage is
neither already tracked nor shared with one of the op's inputs was allocated by that op; its
``untyped_storage().nbytes()`` is added to the live total and stays there until the last tensor
(Python object) observed on that storage is garbage-collected. The peak of that total is the
figure reported.

What is counted: every storage allocated by an aten op inside the mode (so an input created
inside the measured function is counted while anything holds it). What is not: tensors that
existed before (weights, buffers, an input built outside), views and in-place results (they
allocate nothing), and scratch buffers a kernel allocates and frees internally (im2col,
oneDNN reorders), which the dispatcher does not see.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

T = TypeVar("T")


def _storage_key(t: torch.Tensor) -> tuple[int, int] | None:
    storage = t.untyped_storage()
    if storage.nbytes() == 0:
        return None
    return storage.data_ptr(), storage.nbytes()


class LiveStorageTracker(TorchDispatchMode):
    """Dispatch mode that keeps the running and peak bytes of storages allocated inside it."""

    def __init__(self) -> None:
        super().__init__()
        self._refs: dict[tuple[int, int], int] = {}
        self.live_bytes = 0
        self.peak_bytes = 0
        self.allocations = 0

    def _release(self, key: tuple[int, int]) -> None:
        self._refs[key] -= 1
        if self._refs[key] == 0:
            del self._refs[key]
            self.live_bytes -= key[1]

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        inputs = {
            k for a in tree_flatten((args, kwargs or {}))[0] if isinstance(a, torch.Tensor) for k in [_storage_key(a)]
        }
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            key = _storage_key(t)
            if key is None:
                continue
            if key not in self._refs:
                if key in inputs:
                    continue  # a view of, or in-place write to, a tensor allocated outside the mode
                self._refs[key] = 0
                self.allocations += 1
                self.live_bytes += key[1]
                self.peak_bytes = max(self.peak_bytes, self.live_bytes)
            self._refs[key] += 1
            weakref.finalize(t, self._release, key)
        return out


def measure_peak_bytes(fn: Callable[[], T]) -> tuple[T, int]:
    """Run ``fn()`` under ``torch.no_grad()`` and a :class:`LiveStorageTracker`; return its
    result and the peak bytes of live storages allocated during the run (see the module doc for
    exactly what is counted). Create the input inside ``fn`` to count it."""
    tracker = LiveStorageTracker()
    with torch.no_grad(), tracker:
        result = fn()
    return result, tracker.peak_bytes


__all__ = ["LiveStorageTracker", "measure_peak_bytes"]
