"""Export a built network (or any module) to ONNX, the format models are deployed off-phone in."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from .arch import ArchSpec
from .builder import InvertedResidualNet, build_model

DEFAULT_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "output"


def _input_shape(model: nn.Module, batch_size: int, input_shape: tuple[int, ...] | None) -> tuple[int, ...]:
    if input_shape is not None:
        return tuple(int(d) for d in input_shape)
    if isinstance(model, InvertedResidualNet):
        return (batch_size, 3, model.spec.resolution, model.spec.resolution)
    raise ValueError(
        f"cannot tell the input shape of a {type(model).__name__}; pass input_shape=(N, C, H, W) or an ArchSpec"
    )


def export_onnx(
    model_or_spec: nn.Module | ArchSpec,
    path: str | os.PathLike[str],
    batch_size: int = 1,
    opset: int = DEFAULT_OPSET,
    input_shape: tuple[int, ...] | None = None,
) -> Path:
    """Write ``model_or_spec`` (an ``ArchSpec`` is built first) as an ONNX graph in eval mode, with a
    static input of ``batch_size`` images (or ``input_shape``), input ``"input"`` and output ``"output"``.

    Uses the TorchScript exporter (``dynamo=False``): it folds batch norm into the convolutions and
    is about 6x faster than the ``torch.export`` one; falls back to ``dynamo=True`` if it fails.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, but got {batch_size!r}")
    model = build_model(model_or_spec) if isinstance(model_or_spec, ArchSpec) else model_or_spec
    if not isinstance(model, nn.Module):
        raise ValueError(f"export_onnx expects an ArchSpec or a torch.nn.Module, but got {type(model).__name__}")
    shape = _input_shape(model, batch_size, input_shape)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    example = torch.zeros(shape)
    kwargs = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME], "opset_version": opset}
    try:
        with warnings.catch_warnings():
            # the TorchScript exporter announces its deprecation on every call
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            # shape asserts become constants in the trace: right, since the export's shapes are static
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(model, (example,), str(path), dynamo=False, **kwargs)
    except Exception:  # any failure of the legacy exporter: try the torch.export-based one
        torch.onnx.export(model, (example,), str(path), dynamo=True, **kwargs)
    finally:
        model.train(was_training)
    return path


__all__ = ["DEFAULT_OPSET", "INPUT_NAME", "OUTPUT_NAME", "export_onnx"]
