"""``python -m nas.export RUN_DIR --format json|yaml|onnx|torchscript``: the selected architecture
of a run as a config or a deployable model."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from invres_utils.atomic_files import atomic_write_text
from invres_utils.cli import OneLineParser
from search_spaces import ArchSpec, build_model

from .checkpoint import load_checkpoint, save_checkpoint
from .run_dir import atomic_write_json, read_json

FORMATS = ("json", "yaml", "onnx", "torchscript")
MODEL_FORMAT = "invres-nas-model/1"
CONFIG_FORMAT = "invres-nas-arch/1"
ONNX_TOLERANCE = 1e-4


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
    if not diff <= ONNX_TOLERANCE:
        raise RuntimeError(f"{what} output differs from torch by {diff:.2e} (> {ONNX_TOLERANCE:g})")
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


# ---- run folders -------------------------------------------------------------------------------
def export_run(run_dir: str | Path, fmt: str, out: str | Path | None = None) -> Path:
    """Export a run's selected architecture (``best/``) in ``fmt``; returns the written file."""
    run_dir = Path(run_dir)
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, but got {fmt!r}")
    best = run_dir / "best"
    if not (best / "arch.json").is_file():
        raise ValueError(f"{run_dir} has no best/arch.json; is it a finished run folder of `python -m nas.search`?")
    spec = ArchSpec.from_json(best / "arch.json")
    deployment = read_json(best / "deployment.json", "deployment file") if (best / "deployment.json").is_file() else {}
    suffix = {"json": ".json", "yaml": ".yaml", "onnx": ".onnx", "torchscript": ".torchscript.pt"}[fmt]
    target = Path(out) if out else run_dir / "export" / f"model{suffix}"
    if fmt == "json":
        atomic_write_json(target, arch_config(spec, deployment))
    elif fmt == "yaml":
        import yaml

        atomic_write_text(target, yaml.safe_dump(arch_config(spec, deployment), sort_keys=False))
    else:
        model, saved_spec = load_model(best / "model.pt")
        if saved_spec != spec:
            raise ValueError(f"{best / 'model.pt'} holds another architecture than {best / 'arch.json'}")
        target.parent.mkdir(parents=True, exist_ok=True)
        (export_onnx_checked if fmt == "onnx" else export_torchscript_checked)(model, spec, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m nas.export", description=__doc__)
    parser.add_argument("run_dir", help="a run folder made by python -m nas.search")
    parser.add_argument("--format", default="json", help=f"one of {', '.join(FORMATS)} (default json)")
    parser.add_argument("--out", default=None, help="output file (default RUN_DIR/export/model.<ext>)")
    args = parser.parse_args(argv)
    try:
        path = export_run(args.run_dir, args.format, args.out)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
