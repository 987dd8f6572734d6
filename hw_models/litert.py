"""LiteRT (TensorFlow Lite): networks converted to ``.tflite`` with ``litert-torch`` and run with
the ``ai-edge-litert`` interpreter (XNNPACK on CPU), the runtime phones deploy.

An optional extra (``pip install -e ".[litert]"``: litert-torch pulls jax and transformers);
without it every entry point raises a one-line ``ValueError`` naming the extra.

- :func:`convert` writes a ``.tflite`` (float32, or int8 post-training quantized with PT2E and a
  calibration sample) of one module, or of several modules as the signatures of one file;
- :class:`TFLiteModel` runs a signature of a ``.tflite`` with pinned threads, quantizing int8
  inputs and dequantizing int8 outputs with the file's own scales;
- :func:`export_checked` converts, runs the file on random input and compares it with torch
  (float: max abs difference <= ``FLOAT_TOLERANCE`` relative to the output scale; int8: with the
  quantized graph the converter was given, within ``INT8_STEPS`` output quantization steps).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

EXTRA = 'pip install -e ".[litert]"'
QUANTIZE_MODES: tuple[str, ...] = ("none", "int8")
FLOAT_TOLERANCE = 1e-4  # max |tflite - torch| <= FLOAT_TOLERANCE * max(1, max |torch|)
INT8_STEPS = 2.0  # int8 file vs the quantized torch graph: at most this many output quantization steps
SIGNATURES_PER_FILE = 25  # modules converted together into one multi-signature .tflite


def require_litert(what: str = "LiteRT (tflite) support") -> None:
    """A one-line error naming the extra unless litert-torch and ai-edge-litert import."""
    missing = [m for m in ("litert_torch", "ai_edge_litert") if not _importable(m)]
    if missing:
        raise ValueError(f"{what} needs the optional LiteRT packages ({', '.join(missing)} not installed): {EXTRA}")


def litert_available() -> bool:
    return _importable("litert_torch") and _importable("ai_edge_litert")


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@contextlib.contextmanager
def quiet_native_output() -> Iterator[None]:
    """Silence what the converter and the interpreter's C++ code print on stdout/stderr
    (progress lines, absl logs, "Created TensorFlow Lite XNNPACK delegate"), restoring both after."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = []
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        yield
        return
    try:
        for fd in (1, 2):
            try:
                saved.append((fd, os.dup(fd)))
                os.dup2(devnull, fd)
            except OSError:
                pass
        yield
    finally:
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)
        os.close(devnull)


def _litert_torch() -> Any:
    require_litert()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet_native_output():  # torchao reports CUDA kernels it cannot load
        import litert_torch

    litert_torch.config.show_progress = False
    return litert_torch


def _quantized(module: nn.Module, sample: torch.Tensor, calibration: torch.Tensor) -> tuple[nn.Module, Any]:
    """PT2E static int8 (per-channel weights, per-tensor activations) calibrated on ``calibration``."""
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e

    exported = torch.export.export(module, (sample,)).module()
    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
    )
    prepared = quantize_pt2e.prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for i in range(len(calibration)):  # the exported graph has the sample's batch size, 1
            prepared(calibration[i : i + 1])
    return quantize_pt2e.convert_pt2e(prepared, fold_quantize=False), QuantConfig(pt2e_quantizer=quantizer)


def convert(
    modules: nn.Module | Sequence[tuple[str, nn.Module, tuple[int, ...]]],
    path: str | os.PathLike[str],
    input_shape: tuple[int, ...] | None = None,
    quantize: str = "none",
    calibration: torch.Tensor | None = None,
) -> Path:
    """Convert one eval-mode module (``input_shape`` needed) or ``(signature name, module,
    input shape)`` triples into one ``.tflite`` at ``path`` (written atomically). ``quantize="int8"``
    (one module only) quantizes weights and activations to int8, calibrated on ``calibration``
    (a batch of typical inputs; random if ``None``)."""
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {QUANTIZE_MODES}, but got {quantize!r}")
    litert_torch = _litert_torch()
    if isinstance(modules, nn.Module):
        if input_shape is None:
            raise ValueError("converting one module needs its input_shape")
        modules = [("serving_default", modules, input_shape)]
    if quantize == "int8" and len(modules) != 1:
        raise ValueError("int8 quantization converts one module at a time")
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp"
    generator = torch.Generator().manual_seed(0)
    with quiet_native_output(), torch.no_grad():
        if quantize == "int8":
            _, module, shape = modules[0]
            sample = torch.randn(shape, generator=generator)
            if calibration is None:
                calibration = torch.randn((32, *shape[1:]), generator=generator)
            graph, config = _quantized(module.eval(), sample, calibration)
            edge = litert_torch.convert(graph, (sample,), quant_config=config)
        else:
            converter = None
            for name, module, shape in modules:
                args = (torch.randn(shape, generator=generator),)
                module.eval()
                if len(modules) == 1:
                    edge = litert_torch.convert(module, args)
                    break
                converter = (
                    litert_torch.signature(name, module, args)
                    if converter is None
                    else converter.signature(name, module, args)
                )
            else:
                edge = converter.convert()
        edge.export(str(tmp))
    tmp.replace(path)
    return path


class TFLiteModel:
    """One signature of a ``.tflite`` file on the LiteRT interpreter (XNNPACK, ``threads`` threads).

    ``model(x)`` takes and returns float32 numpy arrays (int8 inputs/outputs are quantized and
    dequantized with the file's scales); :meth:`bind` + :meth:`invoke` time the bare call."""

    def __init__(self, path: str | os.PathLike[str], threads: int = 1, signature: str | None = None) -> None:
        require_litert("running a .tflite file")
        from ai_edge_litert.interpreter import Interpreter

        with quiet_native_output():
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
            self.interpreter.allocate_tensors()  # applies the XNNPACK delegate (which says so on stderr)
            signatures = self.interpreter.get_signature_list()
            name = signature or next(iter(signatures))
            self.runner = self.interpreter.get_signature_runner(name)
        (self.input_name, self.input_detail), *rest = self.runner.get_input_details().items()
        if rest:
            raise ValueError(f"{path} signature {name!r} has {1 + len(rest)} inputs; expected one image input")
        self.output_detail = next(iter(self.runner.get_output_details().values()))
        self.output_name = next(iter(self.runner.get_output_details()))
        self._bound: dict[str, np.ndarray] = {}

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.input_detail["shape"])

    @property
    def quantized(self) -> bool:
        return self.input_detail["dtype"] == np.int8

    def _to_input(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if self.input_detail["dtype"] == np.int8:
            scale, zero = self.input_detail["quantization"]
            return np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8)
        return x

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = self.runner(**{self.input_name: self._to_input(x)})[self.output_name]
        if self.output_detail["dtype"] == np.int8:
            scale, zero = self.output_detail["quantization"]
            return (out.astype(np.float32) - zero) * scale
        return out

    def output_step(self) -> float:
        """The output quantization step (0 for float outputs)."""
        if self.output_detail["dtype"] != np.int8:
            return 0.0
        return float(self.output_detail["quantization"][0])

    def bind(self, x: np.ndarray) -> None:
        self._bound = {self.input_name: self._to_input(x)}

    def invoke(self) -> Any:
        return self.runner(**self._bound)


def with_random_statistics(model: nn.Module, input_shape: tuple[int, ...], seed: int = 0, batches: int = 3) -> nn.Module:
    """``model`` (in eval mode) with batch-norm statistics estimated on random images: a freshly
    initialised network's outputs are ~1e-9, which would make a comparison with torch vacuous;
    with these statistics they are O(1). For networks exported only to be timed."""
    generator = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn((16, *input_shape[1:]), generator=generator))
    return model.eval()


@dataclass(frozen=True)
class ExportCheck:
    """What :func:`export_checked` found."""

    path: Path
    quantize: str
    max_abs_diff: float  # float: vs the torch model; int8: vs the quantized torch graph
    output_scale: float  # max |torch output| on the check input
    tolerance: float
    seconds: float  # conversion time
    bytes: int
    int8_vs_float_max_abs_diff: float | None = None  # int8 only: quantization error vs the float model
    int8_top1_agreement: float | None = None  # int8 only: share of calibration images with the same top-1

    def summary(self) -> str:
        text = (
            f"LiteRT {self.quantize if self.quantize != 'none' else 'float32'} {self.path} ({self.bytes / 1e6:.2f} MB, "
            f"converted in {self.seconds:.1f} s): max abs diff vs torch {self.max_abs_diff:.2e} "
            f"(tolerance {self.tolerance:.2e}, output scale {self.output_scale:.3g})"
        )
        if self.int8_vs_float_max_abs_diff is not None:
            text += (
                f"; int8 vs float model: max abs diff {self.int8_vs_float_max_abs_diff:.3g}, "
                f"top-1 agreement {100 * (self.int8_top1_agreement or 0):.0f}% on the calibration sample"
            )
        return text


def export_checked(
    model: nn.Module,
    input_shape: tuple[int, ...],
    path: str | os.PathLike[str],
    quantize: str = "none",
    calibration: torch.Tensor | None = None,
    seed: int = 0,
) -> ExportCheck:
    """Convert ``model`` to ``path``, run the file with ai-edge-litert on random input and compare
    with torch; a mismatch raises ``RuntimeError`` (and leaves no file at ``path``)."""
    model = model.eval()
    path = Path(path)
    staging = Path(tempfile.mkdtemp(prefix=".invres-tflite-", dir=path.parent))
    try:
        started = time.perf_counter()
        x = torch.randn(input_shape, generator=torch.Generator().manual_seed(seed))
        if quantize == "int8" and calibration is None:
            calibration = torch.randn((32, *input_shape[1:]), generator=torch.Generator().manual_seed(seed + 1))
        file = convert(model, staging / "model.tflite", input_shape, quantize, calibration)
        seconds = time.perf_counter() - started
        runtime = TFLiteModel(file)
        with torch.no_grad():
            expected = model(x).numpy()
        got = runtime(x.numpy())
        scale = float(np.abs(expected).max())
        extra: dict[str, Any] = {}
        if quantize == "int8":
            assert calibration is not None
            graph, _ = _quantized(model, x, calibration)
            with torch.no_grad():
                reference = graph(x).numpy()
                float_out = model(calibration).numpy()
            int8_out = np.concatenate([runtime(calibration[i : i + 1].numpy()) for i in range(len(calibration))])
            diff = float(np.abs(got - reference).max())
            tolerance = INT8_STEPS * runtime.output_step() + FLOAT_TOLERANCE * max(1.0, scale)
            extra = {
                "int8_vs_float_max_abs_diff": float(np.abs(int8_out - float_out).max()),
                "int8_top1_agreement": float(np.mean(int8_out.argmax(1) == float_out.argmax(1))),
            }
        else:
            diff = float(np.abs(got - expected).max())
            tolerance = FLOAT_TOLERANCE * max(1.0, scale)
        if got.shape != expected.shape or not diff <= tolerance:
            what = "the int8 file's output differs from the quantized torch graph" if quantize == "int8" else (
                "LiteRT output differs from torch"
            )
            hint = " (int8 conversion is not reliable for this network with this litert-torch; export float32)"
            raise RuntimeError(
                f"{what} by {diff:.2e} (> {tolerance:.2e}); the .tflite was not written"
                + (hint if quantize == "int8" else "")
            )
        size = file.stat().st_size
        file.replace(path)
        return ExportCheck(path, quantize, diff, scale, tolerance, seconds, size, **extra)
    finally:
        for leftover in staging.glob("*"):
            leftover.unlink()
        staging.rmdir()


def runtime_version() -> str:
    require_litert()
    from importlib.metadata import version

    return f"LiteRT {version('ai-edge-litert')} (XNNPACK), converted with litert-torch {version('litert-torch')}"


__all__ = [
    "EXTRA",
    "FLOAT_TOLERANCE",
    "QUANTIZE_MODES",
    "ExportCheck",
    "TFLiteModel",
    "convert",
    "export_checked",
    "litert_available",
    "quiet_native_output",
    "require_litert",
    "runtime_version",
    "with_random_statistics",
]
