"""``python -m nas.export RUN_DIR|ARCH --format json|yaml|onnx|torchscript|tflite``: the selected
architecture of a run (or any architecture) as a config or a deployable model.

``RUN_DIR`` exports the run's ``best/`` architecture with its weights; ``ARCH`` (a compact string,
an ``arch.json``/YAML file) exports that architecture, with the weights of a ``model.pt`` beside the
file if it holds the same architecture, else freshly initialised ones (enough to time it on a
device). ``--format tflite`` needs the optional LiteRT extra (``pip install -e ".[litert]"``);
``--quantize int8`` adds post-training int8 quantization calibrated on images of the run's data."""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from invres_utils.atomic_files import atomic_write_text
from invres_utils.cli import OneLineParser
from search_spaces import ArchSpec, build_model
from search_spaces.arch import parse_arch

from .checkpoint import load_checkpoint, save_checkpoint
from .run_dir import atomic_write_json, read_json

FORMATS = ("json", "yaml", "onnx", "torchscript", "tflite")
SUFFIXES = {"json": ".json", "yaml": ".yaml", "onnx": ".onnx", "torchscript": ".torchscript.pt", "tflite": ".tflite"}
CALIBRATION_IMAGES = 64
MODEL_FORMAT = "invres-nas-model/1"
CONFIG_FORMAT = "invres-nas-arch/1"
ONNX_TOLERANCE = 1e-4  # of the output's scale, max(1, max |torch output|): float32 error grows with it


# ---- model files -----------------------------------------------------------------------------
def save_model(model: torch.nn.Module, spec: ArchSpec, path: str | Path) -> None:
    """Weights plus the architecture they belong to, loadable with ``weights_only=True``."""
    save_checkpoint(path, {"format": MODEL_FORMAT, "arch": spec.to_dict(), "state_dict": model.state_dict()})


def load_model(path: str | Path) -> tuple[torch.nn.Module, ArchSpec]:
    """Rebuild a saved model (eval mode). Never unpickles arbitrary objects."""
    payload = load_checkpoint(path, MODEL_FORMAT, "model file")
    spec = ArchSpec.from_dict(payload["arch"])
    model = build_model(spec)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as e:
        raise ValueError(f"weights in {path} do not fit its architecture: {str(e).splitlines()[0]}") from None
    return model.eval(), spec


# ---- configs -----------------------------------------------------------------------------------
def arch_config(spec: ArchSpec, deployment: dict[str, Any] | None = None) -> dict[str, Any]:
    """An exported architecture config: the spec, its compact string and how it is meant to run
    (executor, chunk count t, the memory and latency figures the search optimised for)."""
    return {"format": CONFIG_FORMAT, "string": spec.to_string(), "arch": spec.to_dict(), "deployment": deployment or {}}


def _verify(reference: torch.nn.Module, run, x: torch.Tensor, what: str) -> float:
    with torch.no_grad():
        expected = reference(x).numpy()
    got = np.asarray(run(x))
    diff = float(np.abs(got - expected).max())
    allowed = ONNX_TOLERANCE * max(1.0, float(np.abs(expected).max()))
    if not diff <= allowed:
        raise RuntimeError(f"{what} output differs from torch by {diff:.2e} (> {allowed:.2e}, {ONNX_TOLERANCE:g} of its scale)")
    return diff


def export_onnx_checked(model: torch.nn.Module, spec: ArchSpec, path: str | Path) -> float:
    """Export to ONNX and check ONNX Runtime against torch on random input; returns max |diff|."""
    import onnxruntime as ort

    from search_spaces.export import export_onnx

    model = model.eval()
    path = Path(path)
    tmp = path.parent / f".{path.stem}.tmp.onnx"
    export_onnx(model, tmp)
    session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = torch.randn(1, 3, spec.resolution, spec.resolution, generator=torch.Generator().manual_seed(0))
    diff = _verify(model, lambda t: session.run(None, {name: t.numpy()})[0], x, "ONNX Runtime")
    tmp.replace(path)
    return diff


def export_torchscript_checked(model: torch.nn.Module, spec: ArchSpec, path: str | Path) -> float:
    model = model.eval()
    x = torch.randn(1, 3, spec.resolution, spec.resolution, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated but still what many runtimes load
        traced = torch.jit.trace(model, x)
    diff = _verify(model, lambda t: traced(t).detach().numpy(), x, "TorchScript")
    path = Path(path)
    tmp = path.parent / f".{path.stem}.tmp.pt"
    traced.save(str(tmp))
    tmp.replace(path)
    return diff


def calibration_images(data: str, resolution: int, seed: int, count: int = CALIBRATION_IMAGES) -> torch.Tensor:
    """``count`` training images of ``data`` at ``resolution`` (seeded), normalised as in training:
    the calibration sample of int8 quantization."""
    from .data import eval_loader, load_data

    dataset = load_data(data, resolution, seed)
    size = dataset.size("train")
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed))[: min(count, size)]
    x, _ = next(iter(eval_loader(dataset, "train", len(order), indices=order.tolist())))
    return dataset.normalise(x)


def export_tflite_checked(
    model: torch.nn.Module,
    spec: ArchSpec,
    path: str | Path,
    quantize: str = "none",
    calibration: torch.Tensor | None = None,
):
    """Convert to ``.tflite`` with litert-torch and check it on ai-edge-litert against torch
    (:func:`hw_models.litert.export_checked`); returns the check (max abs diff, sizes, time)."""
    from hw_models.litert import export_checked, require_litert

    require_litert("--format tflite")
    return export_checked(model, (1, 3, spec.resolution, spec.resolution), path, quantize, calibration)


# ---- run folders -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """What to export: an architecture, its weights (``None``: freshly initialised) and deployment
    facts, and the data settings of the run it came from (``None`` outside a run)."""

    spec: ArchSpec
    model_path: Path | None
    deployment: dict[str, Any]
    run_args: dict[str, Any] | None
    default_out: Path | None


def resolve_source(source: str | Path) -> Source:
    """A run folder (its ``best/``) or an architecture (string, ``arch.json``, YAML)."""
    path = Path(source)
    if path.is_dir():
        best = path / "best"
        if not (best / "arch.json").is_file():
            raise ValueError(f"{path} has no best/arch.json; is it a finished run folder of `python -m nas.search`?")
        spec = ArchSpec.from_json(best / "arch.json")
        deployment = read_json(best / "deployment.json", "deployment file") if (best / "deployment.json").is_file() else {}
        model_path = best / "model.pt"
        return Source(spec, model_path, deployment, _run_args(path), path / "export")
    text = str(source)
    looks_like_path = os.sep in text or text.endswith((".json", ".yaml", ".yml"))
    if looks_like_path and not path.exists():
        raise ValueError(f"{text} does not exist; pass a run folder, an arch.json/YAML file or a compact architecture string")
    spec = parse_arch(source)
    model_path = path.parent / "model.pt" if path.suffix in (".json", ".yaml", ".yml") else None
    run_args = _run_args(path.parent.parent) if model_path is not None else None
    if model_path is not None and model_path.is_file():
        try:
            saved_spec = ArchSpec.from_dict(load_checkpoint(model_path, MODEL_FORMAT, "model file")["arch"])
        except ValueError:
            saved_spec = None
        if saved_spec != spec:
            model_path = None
    else:
        model_path = None
    return Source(spec, model_path, {}, run_args, None)


def _run_args(run_dir: Path) -> dict[str, Any] | None:
    config = run_dir / "config.json"
    if not config.is_file():
        return None
    saved = read_json(config, "run config")
    return saved.get("args") if isinstance(saved, dict) and isinstance(saved.get("args"), dict) else None


def export_run(
    run_dir: str | Path,
    fmt: str,
    out: str | Path | None = None,
    quantize: str = "none",
    data: str | None = None,
    log=None,
) -> Path:
    """Export a run's selected architecture (``best/``), or an architecture, in ``fmt``; returns the
    written file. ``log`` receives one line per check (e.g. the tflite max abs difference)."""
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, but got {fmt!r}")
    if quantize not in ("none", "int8"):
        raise ValueError(f"--quantize must be none or int8, but got {quantize!r}")
    if quantize != "none" and fmt != "tflite":
        raise ValueError(f"--quantize {quantize} needs --format tflite")
    if fmt == "tflite":
        from hw_models.litert import require_litert

        require_litert("--format tflite")
    src = resolve_source(run_dir)
    spec = src.spec
    if out:
        target = Path(out)
    elif src.default_out is not None:
        target = src.default_out / f"model{SUFFIXES[fmt]}"
    else:
        raise ValueError("exporting an architecture (not a run folder) needs --out FILE")
    if fmt == "json":
        atomic_write_json(target, arch_config(spec, src.deployment))
    elif fmt == "yaml":
        import yaml

        atomic_write_text(target, yaml.safe_dump(arch_config(spec, src.deployment), sort_keys=False))
    else:
        if src.model_path is not None:
            model, saved_spec = load_model(src.model_path)
            if saved_spec != spec:
                raise ValueError(f"{src.model_path} holds another architecture than {run_dir}")
        else:
            model = build_model(spec).eval()
            if fmt == "tflite":
                from hw_models.litert import with_random_statistics

                model = with_random_statistics(model, (1, 3, spec.resolution, spec.resolution))
            if log is not None:
                log(
                    f"note: no trained weights for {spec}: exporting freshly initialised ones (fine for timing"
                    + ("; batch-norm statistics from random images, so the check compares O(1) outputs)" if fmt == "tflite" else ")")
                )
        target.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "tflite":
            calibration = None
            if quantize == "int8":
                source_data = data or (src.run_args or {}).get("data")
                if source_data is None:
                    raise ValueError("--quantize int8 outside a run folder needs --data SOURCE for its calibration images")
                seed = int((src.run_args or {}).get("seed", 0))
                calibration = calibration_images(source_data, spec.resolution, seed)
            check = export_tflite_checked(model, spec, target, quantize, calibration)
            if log is not None:
                log(check.summary())
        else:
            diff = (export_onnx_checked if fmt == "onnx" else export_torchscript_checked)(model, spec, target)
            if log is not None:
                log(f"{fmt}: max abs diff vs torch {diff:.2e} (tolerance {ONNX_TOLERANCE:g} of the output's scale)")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m nas.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="a run folder made by python -m nas.search, or an architecture (string, arch.json)")
    parser.add_argument("--format", default="json", help=f"one of {', '.join(FORMATS)} (default json)")
    parser.add_argument("--out", default=None, help="output file (default RUN_DIR/export/model.<ext>)")
    parser.add_argument(
        "--quantize", default="none", help="tflite only: none (float32) or int8 (post-training, calibrated on the data)"
    )
    parser.add_argument("--data", default=None, help="calibration data for --quantize int8 (default: the run's --data)")
    args = parser.parse_args(argv)
    try:
        path = export_run(args.source, args.format, args.out, args.quantize, args.data, log=print)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # an export that does not match torch
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
