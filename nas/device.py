"""Where training and scoring run and in which precision: the one module that knows about devices.

``Runtime.create(device, precision)`` resolves ``auto|cpu|cuda|cuda:N|mps`` (``auto``: the first
CUDA device, else MPS, else the CPU) and checks the precision against it:

- ``fp32``: plain float32 everywhere;
- ``bf16``: autocast to bfloat16 (CUDA with compute capability >= 8.0, the CPU, MPS); weights,
  optimizer state and batch-norm statistics stay float32;
- ``fp16``: autocast to float16 with a gradient scaler (CUDA, MPS; not the CPU, which has no fast
  float16 kernels).

``channels_last`` (NHWC) memory format is on for CUDA (cuDNN's fast convolution kernels use it)
and for the CPU, where oneDNN's depthwise-convolution backward pass runs about twice as fast in
NHWC (a supernet training step on the default space: 0.16 s instead of 0.32 s on one thread).

Everything else in the package asks a ``Runtime`` to move modules and batches and to open the
autocast region, so no other module branches on the device.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
PRECISIONS = ("fp32", "bf16", "fp16")
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_CUDA_INDEX = re.compile(r"cuda:(\d+)")
# Evaluation batches hold at most this many input pixels, so that their activations stay modest at
# any resolution (500 images up to 32 px on the CPU, 222 at 48 px, 10 at 224 px: a larger batch is
# no faster there); a GPU gets larger batches (256 at 224 px), which it needs to be busy.
EVAL_BATCH_PIXELS = {"cpu": 500 * 32 * 32, "accelerator": 256 * 224 * 224}


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    """The ``torch.device`` for ``--device NAME``; a one-line ``ValueError`` naming the fix if
    that device is unknown or not available here."""
    text = str(name).strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        if not _mps_available():
            raise ValueError(
                "--device mps: MPS is not available here (it needs Apple silicon); use --device cpu or auto"
            )
        return torch.device("mps")
    match = _CUDA_INDEX.fullmatch(text)
    if text == "cuda" or match:
        if not torch.cuda.is_available():
            why = "this torch is a CPU-only build" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"--device {text}: CUDA is not available ({why}); use --device cpu or --device auto")
        index = int(match.group(1)) if match else torch.cuda.current_device()
        count = torch.cuda.device_count()
        if index >= count:
            raise ValueError(f"--device {text}: there are {count} CUDA device(s), cuda:0..cuda:{count - 1}")
        return torch.device("cuda", index)
    raise ValueError(f"--device must be one of {', '.join(DEVICES)}, but got {name!r}")


def check_precision(precision: str, device: torch.device) -> str:
    """``precision`` if ``device`` can train in it, else a one-line ``ValueError`` naming the fix."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, but got {precision!r}")
    if precision == "fp16" and device.type == "cpu":
        raise ValueError(
            "--precision fp16 needs a GPU (CUDA or MPS): the CPU has no fast float16 kernels; use bf16 or fp32"
        )
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        name = torch.cuda.get_device_name(device)
        raise ValueError(f"--precision bf16: {device} ({name}) has no bfloat16 support; use fp16 or fp32")
    return precision


@dataclass(frozen=True)
class Runtime:
    """A device, a training precision and a memory format. Build it with :meth:`create`."""

    device: torch.device = torch.device("cpu")
    precision: str = "fp32"
    channels_last: bool = False

    @classmethod
    def create(
        cls, device: str | torch.device = "auto", precision: str = "fp32", channels_last: bool | None = None
    ) -> Runtime:
        """Resolve and check ``device`` and ``precision``; ``channels_last`` defaults to on for
        CUDA and the CPU (see the module docstring), off for MPS."""
        resolved = device if isinstance(device, torch.device) else resolve_device(device)
        check_precision(precision, resolved)
        if channels_last is None:
            channels_last = resolved.type in ("cuda", "cpu")
        return cls(resolved, precision, bool(channels_last))

    # ---- precision ---------------------------------------------------------------------------
    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return _AUTOCAST_DTYPES.get(self.precision)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The region where forward passes run in the training precision (a no-op for fp32)."""
        dtype = self.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler, enabled for fp16 only (bf16 has float32's exponent range)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    # ---- placement ---------------------------------------------------------------------------
    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    @property
    def pin_memory(self) -> bool:
        """Whether data loaders should hand out page-locked batches (faster host-to-GPU copies)."""
        return self.device.type == "cuda"

    @property
    def map_location(self) -> torch.device:
        """Where ``torch.load`` should put a checkpoint's tensors."""
        return self.device

    def module(self, module: nn.Module) -> nn.Module:
        """``module`` on this device, in this memory format (in place, returned for chaining)."""
        return module.to(device=self.device, memory_format=self.memory_format)

    def to(self, x: Tensor) -> Tensor:
        """``x`` on this device, layout unchanged; asynchronous from pinned memory."""
        return x.to(self.device, non_blocking=x.is_pinned())

    def tensor(self, x: Tensor) -> Tensor:
        """A batch on this device; 4-d image batches in this memory format."""
        x = self.to(x)
        if x.ndim == 4 and self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def eval_batch_size(self, resolution: int, cap: int = 500) -> int:
        """Images per evaluation batch at ``resolution``: ``cap``, fewer where the batch would hold
        more than ``EVAL_BATCH_PIXELS`` input pixels."""
        budget = EVAL_BATCH_PIXELS["cpu" if self.device.type == "cpu" else "accelerator"]
        return max(1, min(cap, budget // (resolution * resolution)))

    def synchronize(self) -> None:
        """Wait for queued device work (for honest timings)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elif self.device.type == "mps":
            torch.mps.synchronize()

    def describe(self) -> str:
        """One line for logs and progress bars, e.g. ``cuda:0 (NVIDIA A100), bf16``."""
        where = str(self.device)
        if self.device.type == "cuda":
            where += f" ({torch.cuda.get_device_name(self.device)})"
        return f"{where}, {self.precision}"


CPU = Runtime(torch.device("cpu"), "fp32", channels_last=True)  # what the Python API uses when given no runtime

__all__ = ["CPU", "DEVICES", "EVAL_BATCH_PIXELS", "PRECISIONS", "Runtime", "check_precision", "resolve_device"]
