"""Latency targets are data: small human-readable JSON files, never pickles.

A target holds the coefficients of the per-op model of :mod:`hw_models.opmodel` (and optionally a
per-block lookup table measured on a device, with that model as the fallback for blocks not in
the table), plus its provenance (device, runtime, date, how it was fitted and its error), and the
ops beyond MobileNetV2's (squeeze-excitation, h-swish, the MobileNetV3 head) its model has a basis
for: a network using another one is refused with a one-line error, never costed at 0. A measured
(lookup-table) target describes the search space it was profiled on.

Where targets are found, in this order: an explicit path to a ``.json`` file; the user target
directory (``$INVRES_NAS_TARGETS``, default ``~/.config/invres-nas/targets/``), where
``python -m hw_models.profile`` and ``python -m hw_models.calibrate`` save them; the targets
shipped in ``hw_models/targets/`` (``pixel``, ``host``).
"""

from __future__ import annotations

import json
import math
import operator
import os
import re
import threading
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from invres_utils.atomic_files import atomic_write_text
from search_spaces.arch import ArchSpec, BlockPlan, block_plan, final_size

from .opmodel import (
    FEATURE_DOCS,
    FEATURES,
    FORMULA,
    OP_NAMES,
    OPS,
    Tile,
    block_features,
    classifier_features,
    head_features,
    spec_features,
    spec_ops,
    stem_features,
)

FORMAT = "invres-nas-latency-target"
VERSION = 1
TARGETS_ENV = "INVRES_NAS_TARGETS"
SHIPPED: tuple[str, ...] = ("host", "pixel")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
HOW_TO_MAKE = (
    "make one with `python -m hw_models.profile --target-name NAME` (this machine) or "
    "`python -m hw_models.calibrate measurements.csv --name NAME` (your device), or pass a path to a target .json"
)

# Lookup-table keys: the fields of each part that determine its latency. Blocks: ``activation`` is
# the projection's (linear bottleneck or ReLU6), ``hidden_activation`` the one after the expansion
# and depthwise convs, ``se_channels`` the squeeze width (0: no squeeze-excitation). Head:
# ``channels`` is the 1x1 conv's width (``last_channels``, or the MobileNetV3 head's
# ``head_channels``). Classifier (pool [+ last conv] + classifier): ``head_channels`` is the
# MobileNetV3 head's pooled width (0: the conv head, no last conv) and ``activation`` that last
# conv's ("none" without one).
BLOCK_KEY: tuple[str, ...] = (
    "in_channels",
    "out_channels",
    "hidden",
    "kernel_size",
    "stride",
    "in_size",
    "residual",
    "wide_shortcut",
    "activation",
    "hidden_activation",
    "se_channels",
    "se_gate",
)
STEM_KEY: tuple[str, ...] = ("resolution", "channels", "stride", "activation")
HEAD_KEY: tuple[str, ...] = ("in_channels", "channels", "size", "activation")
CLASSIFIER_KEY: tuple[str, ...] = ("channels", "size", "num_classes", "head_channels", "activation")
PART_KEYS: dict[str, tuple[str, ...]] = {
    "stem": STEM_KEY,
    "blocks": BLOCK_KEY,
    "head": HEAD_KEY,
    "classifier": CLASSIFIER_KEY,
}
# Columns added with MobileNetV3-style ops: a table written before them holds MobileNetV2 parts.
PART_DEFAULTS: dict[str, dict[str, Any]] = {
    "stem": {"activation": "relu6"},
    "blocks": {"hidden_activation": "relu6", "se_channels": 0, "se_gate": "hard_sigmoid"},
    "head": {"activation": "relu6"},
    "classifier": {"head_channels": 0, "activation": "none"},
}
_BOOL_COLUMNS = ("residual", "wide_shortcut")
_STRING_COLUMNS = ("activation", "hidden_activation", "se_gate")
_ZERO_ALLOWED = ("se_channels", "head_channels")


def block_key(plan: BlockPlan, activation: str) -> tuple:
    return (
        plan.in_channels,
        plan.out_channels,
        plan.hidden,
        plan.kernel_size,
        plan.stride,
        plan.in_size,
        plan.residual,
        plan.wide_shortcut,
        activation,
        plan.activation,
        plan.se_channels,
        plan.se_gate,
    )


def spec_part_keys(spec: ArchSpec) -> dict[str, list[tuple]]:
    """The lookup keys of every part of ``spec``, in execution order."""
    size = final_size(spec)
    mbv3 = spec.head == "mbv3"
    return {
        "stem": [(spec.resolution, spec.stem_channels, spec.stem_stride, spec.stem_activation)],
        "blocks": [block_key(p, spec.bottleneck_activation) for p in block_plan(spec)],
        "head": [
            (spec.stages[-1].channels, spec.head_channels if mbv3 else spec.last_channels, size, spec.head_activation)
        ],
        "classifier": [
            (
                spec.last_channels,
                size,
                spec.num_classes,
                spec.head_channels if mbv3 else 0,
                spec.head_activation if mbv3 else "none",
            )
        ],
    }


def part_features(kind: str, key: tuple, tile: int | Tile, plan: BlockPlan | None = None) -> np.ndarray:
    """Op-model features of one part given its lookup key (``plan`` for blocks)."""
    if kind == "stem":
        return stem_features(key[0], key[1], key[2], tile, key[3])
    if kind == "blocks":
        assert plan is not None
        return block_features(plan, tile)
    if kind == "head":
        return head_features(key[0], key[1], key[2], tile, key[3])
    return classifier_features(key[0], key[2], key[3], key[4])


def missing_ops_error(target: LatencyTarget, spec: ArchSpec, missing: list[str]) -> ValueError:
    """The one-line error for a network using ops ``target`` has no basis for."""
    what = ", ".join(OP_NAMES[op] for op in missing)
    if target.lookup is not None:
        space = target.provenance.get("space", "?")
        how = (
            f"it was profiled on space {space!r}, whose networks have none; measured targets describe the space "
            f"they were profiled on: profile one that has them, e.g. `python -m hw_models.profile --target-name "
            f"{target.name}-ofa --space proxy-ofa-digits`, and use --target {target.name}-ofa"
        )
    else:
        how = (
            "calibrate a target on measured networks that use them (`python -m hw_models.calibrate`) or use "
            "--target pixel"
        )
    return ValueError(f"latency target {target.name!r} has no basis for the cost of {what} in {spec}: {how}")


@dataclass(frozen=True)
class LookupTable:
    """Measured latency (ms) of every part a search space can contain, on one device/runtime.

    ``overhead_ms`` is the end-to-end time not spent in any part (the network's own call), fitted
    as the median of (measured - sum of parts) over a few networks."""

    runtime: str
    threads: int
    batch_size: int
    overhead_ms: float
    parts: Mapping[str, Mapping[tuple, float]]
    statistic: str = "median"  # which figure of the timing samples the table holds

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "runtime": self.runtime,
            "threads": self.threads,
            "batch_size": self.batch_size,
            "statistic": self.statistic,
            "overhead_ms": round(self.overhead_ms, 6),
        }
        for kind, names in PART_KEYS.items():
            d[kind] = {
                "columns": [*names, "ms"],
                "rows": [[*key, round(ms, 6)] for key, ms in self.parts.get(kind, {}).items()],
            }
        return d


def dumps(obj: Any, level: int = 0) -> str:
    """JSON with two-space indentation, but every list of scalars (a table row) on one line."""
    pad, inner = "  " * level, "  " * (level + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{inner}{json.dumps(str(k))}: {dumps(v, level + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list | tuple):
        if all(not isinstance(v, dict | list | tuple) for v in obj):
            return json.dumps(list(obj))
        return "[\n" + ",\n".join(inner + dumps(v, level + 1) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj)


@dataclass(frozen=True, eq=False)
class LatencyTarget:
    """A device/runtime to predict latency for: the op model (``coefficients`` over ``FEATURES``,
    GEMM tiles ``tile`` (reduction depth) and ``tile_n`` (output channels), overall ``scale``), an
    optional per-part ``lookup`` table, and provenance."""

    name: str
    coefficients: tuple[float, ...]
    tile: int
    provenance: Mapping[str, Any]
    fit: Mapping[str, Any] = field(default_factory=dict)
    scale: float = 1.0
    lookup: LookupTable | None = None
    description: str = ""
    source: str | None = None  # file it was loaded from
    tile_n: int = 1
    ops: tuple[str, ...] = ()  # ops of opmodel.OPS the model has a basis for
    _cache: dict = field(default_factory=dict, repr=False, compare=False)
    _warned: set = field(default_factory=set, repr=False, compare=False)
    _lock: Any = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def from_fit(
        cls, name: str, coefficients: Sequence[float], tile: Tile, ops: Iterable[str], **fields: Any
    ) -> LatencyTarget:
        """A target from an op-model fit: its coefficients, its GEMM ``tile`` pair and the ops of
        ``opmodel.OPS`` the fit had a basis for (kept in ``OPS`` order); ``fields`` sets the rest."""
        wanted = set(ops)
        return cls(
            name=name,
            coefficients=tuple(float(c) for c in coefficients),
            tile=tile[0],
            tile_n=tile[1],
            provenance=fields.pop("provenance", {}),
            ops=tuple(op for op in OPS if op in wanted),
            **fields,
        )

    @property
    def gemm_tile(self) -> Tile:
        return (self.tile, self.tile_n)

    # ---- prediction --------------------------------------------------------------------------
    def op_model_ms(self, spec: ArchSpec) -> float:
        """Latency of ``spec`` from the op model alone (no lookup table)."""
        return self.scale * sum(map(operator.mul, self.coefficients, spec_features(spec, (self.tile, self.tile_n))))

    def _part_fallback_ms(self, kind: str, key: tuple, plan: BlockPlan | None = None) -> float:
        return self.scale * float(np.dot(self.coefficients, part_features(kind, key, self.gemm_tile, plan)))

    def breakdown(self, spec: ArchSpec) -> list[tuple[str, float, str]]:
        """``(part, ms, source)`` for every part of ``spec``; source is ``"table"`` or ``"model"``.
        Without a lookup table the whole network is one ``"model"`` row."""
        if self.lookup is None:
            return [("network", self.op_model_ms(spec), "model")]
        rows: list[tuple[str, float, str]] = [("overhead", self.scale * self.lookup.overhead_ms, "table")]
        plans = block_plan(spec)
        for kind, keys in spec_part_keys(spec).items():
            table = self.lookup.parts.get(kind, {})
            for i, key in enumerate(keys):
                label = f"block{i}" if kind == "blocks" else kind
                if key in table:
                    rows.append((label, self.scale * table[key], "table"))
                else:
                    plan = plans[i] if kind == "blocks" else None
                    rows.append((label, self._part_fallback_ms(kind, key, plan), "model"))
        return rows

    def predict(self, spec: ArchSpec) -> float:
        """Predicted latency (ms) of one forward pass of ``spec`` (batch 1 unless the table says otherwise)."""
        cached = self._cache.get(spec)
        if cached is not None:
            return cached
        if len(self.ops) < len(OPS) and not spec.mobilenet_v2_ops:
            missing = [op for op in spec_ops(spec) if op not in self.ops]
            if missing:
                raise missing_ops_error(self, spec, missing)
        if "machine" not in self._warned:
            self._warn_if_profiled_elsewhere()
        if self.lookup is None:
            value = self.op_model_ms(spec)
        else:
            rows = self.breakdown(spec)
            value = sum(ms for _, ms, _ in rows)
            missing = sum(src == "model" for _, _, src in rows)
            if missing and "fallback" not in self._warned:
                self._warned.add("fallback")
                space = self.provenance.get("space", "?")
                warnings.warn(
                    f"latency target {self.name!r}: {missing} of {len(rows)} parts of {spec} are not in its lookup "
                    f"table (profiled for space {space!r}) and come from the fallback per-op model, which "
                    "extrapolates poorly far from the profiled layers; profile your space with "
                    f"`python -m hw_models.profile --target-name {self.name} --space SPACE` (warned once per target)",
                    UserWarning,
                    stacklevel=3,
                )
        with self._lock:
            if len(self._cache) >= 65536:
                self._cache.clear()
            self._cache[spec] = value
        return value

    def _warn_if_profiled_elsewhere(self) -> None:
        """A target measured on a CPU (``hw_models.profile`` records its platform) describes that
        CPU: warn once if this machine has another one, since ``host`` then means someone else's."""
        self._warned.add("machine")
        from .measure import cpu_name

        device, here = self.provenance.get("device"), cpu_name()
        if "platform" in self.provenance and isinstance(device, str) and device != here:
            warnings.warn(
                f"latency target {self.name!r} was profiled on {device}, but this machine is {here}: its "
                f"predictions describe that machine; re-profile here with "
                f"`python -m hw_models.profile --target-name {self.name}` (warned once per target)",
                UserWarning,
                stacklevel=4,
            )

    def coverage(self, spec: ArchSpec) -> float:
        """Share of ``spec``'s parts found in the lookup table (1.0 without a table: pure model)."""
        rows = self.breakdown(spec)
        return sum(src == "table" for _, _, src in rows) / len(rows)

    # ---- data --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "name": self.name,
            "description": self.description,
            "provenance": dict(self.provenance),
            "model": {
                "formula": FORMULA,
                "tile": self.tile,
                "tile_n": self.tile_n,
                "scale": self.scale,
                "coefficients": {f: float(c) for f, c in zip(FEATURES, self.coefficients)},
                "features": dict(FEATURE_DOCS),
                "ops": list(self.ops),
            },
            "fit": dict(self.fit),
        }
        if self.lookup is not None:
            d["lookup"] = self.lookup.to_dict()
        return d

    def to_json(self) -> str:
        return dumps(self.to_dict()) + "\n"

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the target as JSON (atomically) and return the path."""
        atomic_write_text(path, self.to_json())
        clear_cache()
        return Path(path)

    def renamed(self, name: str, **changes: Any) -> LatencyTarget:
        kwargs = {
            "name": name,
            "coefficients": self.coefficients,
            "tile": self.tile,
            "tile_n": self.tile_n,
            "provenance": self.provenance,
            "fit": self.fit,
            "scale": self.scale,
            "lookup": self.lookup,
            "description": self.description,
            "ops": self.ops,
        }
        kwargs.update(changes)
        return LatencyTarget(**kwargs)

    @classmethod
    def from_dict(cls, data: Any, where: str = "target", source: str | None = None) -> LatencyTarget:
        """Validate and parse; every problem is a one-line ``ValueError`` starting with ``where``."""

        def bad(msg: str) -> ValueError:
            return ValueError(f"{where}: {msg}")

        if not isinstance(data, dict):
            raise bad(f"must be a JSON object, but got {type(data).__name__}")
        if data.get("format") != FORMAT:
            raise bad(f"'format' must be {FORMAT!r}, but got {data.get('format')!r}; is this a latency target file?")
        if data.get("version") != VERSION:
            raise bad(f"'version' must be {VERSION}, but got {data.get('version')!r}")
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise bad(f"'name' must be a non-empty string, but got {name!r}")
        provenance = data.get("provenance")
        if not isinstance(provenance, dict):
            raise bad("'provenance' must be an object (device, runtime, date, ...)")
        model = data.get("model")
        if not isinstance(model, dict):
            raise bad("'model' must be an object with 'tile', 'scale' and 'coefficients'")
        tile = model.get("tile")
        if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1:
            raise bad(f"model.tile must be an integer >= 1, but got {tile!r}")
        tile_n = model.get("tile_n", 1)
        if isinstance(tile_n, bool) or not isinstance(tile_n, int) or tile_n < 1:
            raise bad(f"model.tile_n must be an integer >= 1, but got {tile_n!r}")
        scale = _number(model.get("scale", 1.0), "model.scale", bad)
        if scale <= 0:
            raise bad(f"model.scale must be > 0, but got {scale}")
        coefs = model.get("coefficients")
        if not isinstance(coefs, dict):
            raise bad("model.coefficients must be an object {feature: value}")
        unknown = sorted(set(coefs) - set(FEATURES))
        if unknown:
            raise bad(f"unknown feature(s) {unknown} in model.coefficients; known: {list(FEATURES)}")
        values = []
        for f in FEATURES:
            v = _number(coefs.get(f, 0.0), f"model.coefficients.{f}", bad)
            if v < 0:
                raise bad(f"model.coefficients.{f} must be >= 0 (the model must stay monotone), but got {v}")
            values.append(v)
        ops = model.get("ops", [])
        if not isinstance(ops, list) or any(op not in OPS for op in ops):
            raise bad(f"model.ops must be a list of ops among {list(OPS)}, but got {ops!r}")
        fit = data.get("fit", {})
        if not isinstance(fit, dict):
            raise bad("'fit' must be an object")
        lookup = _parse_lookup(data["lookup"], bad) if data.get("lookup") is not None else None
        description = data.get("description", "")
        return cls(
            name=name,
            coefficients=tuple(values),
            tile=tile,
            tile_n=tile_n,
            provenance=provenance,
            fit=fit,
            scale=scale,
            lookup=lookup,
            description=description if isinstance(description, str) else "",
            source=source,
            ops=tuple(op for op in OPS if op in ops),
        )


def _number(value: Any, label: str, bad) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise bad(f"{label} must be a finite number, but got {value!r}")
    return float(value)


def _parse_lookup(data: Any, bad) -> LookupTable:
    if not isinstance(data, dict):
        raise bad("'lookup' must be an object")
    runtime = data.get("runtime")
    if not isinstance(runtime, str):
        raise bad(f"lookup.runtime must be a string, but got {runtime!r}")
    threads = data.get("threads")
    batch = data.get("batch_size", 1)
    for label, v in (("threads", threads), ("batch_size", batch)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise bad(f"lookup.{label} must be an integer >= 1, but got {v!r}")
    overhead = _number(data.get("overhead_ms", 0.0), "lookup.overhead_ms", bad)
    statistic = data.get("statistic", "median")
    if statistic not in ("median", "p10", "min", "mean"):
        raise bad(f"lookup.statistic must be one of median, p10, min, mean, but got {statistic!r}")
    parts: dict[str, dict[tuple, float]] = {}
    for kind, names in PART_KEYS.items():
        section = data.get(kind, {"columns": [*names, "ms"], "rows": []})
        if not isinstance(section, dict) or not isinstance(section.get("rows"), list):
            raise bad(f"lookup.{kind} must be an object with 'columns' and 'rows'")
        columns = section.get("columns")
        defaults = PART_DEFAULTS[kind]
        required = sorted([*(n for n in names if n not in defaults), "ms"])
        if (
            not isinstance(columns, list)
            or len(set(map(str, columns))) != len(columns)
            or sorted(c for c in map(str, columns) if c not in defaults) != required
            or not set(columns) <= {*names, "ms"}
        ):
            raise bad(f"lookup.{kind}.columns must be {[*names, 'ms']} (any order), but got {columns!r}")
        ms_pos = columns.index("ms")
        pos = {n: columns.index(n) for n in names if n in columns}
        table: dict[tuple, float] = {}
        for i, row in enumerate(section["rows"]):
            if not isinstance(row, list) or len(row) != len(columns):
                raise bad(f"lookup.{kind}.rows[{i}] must be a list of {len(columns)} values, but got {row!r}")
            ms = _number(row[ms_pos], f"lookup.{kind}.rows[{i}] ms", bad)
            if ms < 0:
                raise bad(f"lookup.{kind}.rows[{i}] ms must be >= 0, but got {ms}")
            key = tuple(row[pos[n]] if n in pos else defaults[n] for n in names)
            for n, v in zip(names, key):
                if n in _BOOL_COLUMNS:
                    ok = isinstance(v, bool)
                elif n in _STRING_COLUMNS:
                    ok = isinstance(v, str)
                else:
                    ok = isinstance(v, int) and not isinstance(v, bool) and v >= (0 if n in _ZERO_ALLOWED else 1)
                if not ok:
                    raise bad(f"lookup.{kind}.rows[{i}] {n} has the wrong type or value: {v!r}")
            table[key] = ms
        parts[kind] = table
    return LookupTable(
        runtime=runtime, threads=threads, batch_size=batch, overhead_ms=overhead, parts=parts, statistic=statistic
    )


# ---- finding and loading ---------------------------------------------------------------------
def user_target_dir() -> Path:
    """Where saved targets live: ``$INVRES_NAS_TARGETS`` or ``~/.config/invres-nas/targets``."""
    env = os.environ.get(TARGETS_ENV)
    return Path(env).expanduser() if env else Path.home() / ".config" / "invres-nas" / "targets"


def shipped_target_path(name: str) -> Path:
    return Path(str(resources.files("hw_models") / "targets" / f"{name}.json"))


def check_target_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or name.endswith(".json"):
        raise ValueError(
            f"a target name must be letters, digits, '_', '-' or '.' (no path, no .json), but got {name!r}"
        )
    return name


def _user_names() -> list[str]:
    folder = user_target_dir()
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.json") if NAME_PATTERN.match(p.stem))


def known_targets() -> list[str]:
    """Names usable as ``target=``: the user's saved targets and the shipped ones."""
    return sorted(set(_user_names()) | {n for n in SHIPPED if shipped_target_path(n).is_file()})


def resolve_target_path(name_or_path: str | os.PathLike[str]) -> Path:
    """Explicit path, then the user target directory, then the shipped targets."""
    text = os.fspath(name_or_path)
    if text.endswith(".json") or os.sep in text or (os.altsep and os.altsep in text):
        path = Path(text).expanduser()
        if path.is_dir():
            raise ValueError(f"latency target {text} is a directory, but a target must be a .json file; {HOW_TO_MAKE}")
        if not path.is_file():
            raise ValueError(f"latency target file {text} does not exist; {HOW_TO_MAKE}")
        return path
    if NAME_PATTERN.match(text):
        user = user_target_dir() / f"{text}.json"
        if user.is_file():
            return user
        shipped = shipped_target_path(text)
        if shipped.is_file():
            return shipped
    raise ValueError(
        f"unknown latency target {text!r}; known targets: {', '.join(known_targets()) or 'none'} "
        f"(saved ones live in {user_target_dir()}); {HOW_TO_MAKE}"
    )


# (name or path, target directory setting) -> (resolved path, mtime, size, parsed target)
_LOADED: dict[tuple[str, str], tuple[str, int, int, LatencyTarget]] = {}
_LOADED_LOCK = threading.Lock()


def clear_cache() -> None:
    """Forget parsed targets (saving a target does this; needed if a new user target now shadows
    a shipped one of the same name in a running process)."""
    with _LOADED_LOCK:
        _LOADED.clear()


def read_target(path: str | os.PathLike[str]) -> LatencyTarget:
    """Parse one target file (no cache)."""
    where = f"latency target file {path}"
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ValueError(f"cannot read {where}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{where} is not UTF-8 text; is it a latency target .json file?") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where} is not valid JSON ({e.msg} at line {e.lineno})") from None
    return LatencyTarget.from_dict(data, where, source=str(path))


def load_target(name_or_path: str | os.PathLike[str] | LatencyTarget) -> LatencyTarget:
    """A target by shipped name (``"pixel"``, ``"host"``), saved name, or path. Parsed targets are
    cached: a repeated call costs one ``stat`` of the file (a file changed on disk is re-read)."""
    if isinstance(name_or_path, LatencyTarget):
        return name_or_path
    if not isinstance(name_or_path, str | os.PathLike):
        raise ValueError(
            f"a latency target must be a name, a path or a LatencyTarget, but got {type(name_or_path).__name__}"
        )
    key = (os.fspath(name_or_path), os.environ.get(TARGETS_ENV, ""))
    hit = _LOADED.get(key)
    if hit is not None:
        path, mtime, size, target = hit
        try:
            stat = os.stat(path)
        except OSError:
            stat = None
        if stat is not None and stat.st_mtime_ns == mtime and stat.st_size == size:
            return target
    resolved = resolve_target_path(name_or_path)
    stat = resolved.stat()
    target = read_target(resolved)
    with _LOADED_LOCK:
        _LOADED[key] = (str(resolved), stat.st_mtime_ns, stat.st_size, target)
    return target


def save_target(target: LatencyTarget, name: str | None = None, folder: str | os.PathLike[str] | None = None) -> Path:
    """Save under the user target directory (or ``folder``) as ``<name>.json``."""
    name = check_target_name(name or target.name)
    base = Path(folder) if folder is not None else user_target_dir()
    if name != target.name:
        target = target.renamed(name)
    return target.save(base / f"{name}.json")


__all__ = [
    "FORMAT",
    "SHIPPED",
    "TARGETS_ENV",
    "LatencyTarget",
    "LookupTable",
    "block_key",
    "missing_ops_error",
    "part_features",
    "check_target_name",
    "clear_cache",
    "dumps",
    "known_targets",
    "load_target",
    "read_target",
    "resolve_target_path",
    "save_target",
    "spec_part_keys",
    "user_target_dir",
]
