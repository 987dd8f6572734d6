"""Architecture description: the single source of truth for an inverted-residual network.

An ``ArchSpec`` is plain, frozen, hashable data. The builder, the cost models, the supernet, the
exporters and the search all read it; nobody re-derives channels or strides their own way.
Per-block quantities derived from it (input/output channels, hidden width, spatial sizes, which
shortcuts exist) come from one function, :func:`block_plan`.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from dataclasses import MISSING, asdict, dataclass, replace
from typing import Any, NamedTuple

from invres_utils.atomic_files import atomic_write_text

BOTTLENECK_ACTIVATIONS = ("linear", "relu6")
SHORTCUTS = ("bottleneck", "expansion", "none")
STRIDES = (1, 2)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, but got {value!r}")


@dataclass(frozen=True)
class StageSpec:
    """One stage of inverted-residual blocks, the ``(t, c, n, s)`` row of MobileNetV2 Table 2.

    ``stride`` applies to the first block only; the others have stride 1. ``kernel_size`` is the
    depthwise kernel of every block in the stage.
    """

    expansion: int
    channels: int
    repeats: int
    stride: int = 1
    kernel_size: int = 3

    def __post_init__(self) -> None:
        _check_int("expansion", self.expansion, 1)
        _check_int("channels", self.channels, 1)
        _check_int("repeats", self.repeats, 1)
        if isinstance(self.stride, bool) or self.stride not in STRIDES:
            raise ValueError(f"stride must be one of {STRIDES}, but got {self.stride!r}")
        _check_int("kernel_size", self.kernel_size, 1)
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, but got {self.kernel_size}")

    def to_token(self) -> str:
        """timm-style token, e.g. ``ir_r2_k3_s2_e6_c24``."""
        return f"ir_r{self.repeats}_k{self.kernel_size}_s{self.stride}_e{self.expansion}_c{self.channels}"


@dataclass(frozen=True)
class ArchSpec:
    """A complete network: stem conv, stages of inverted-residual blocks, 1x1 head, classifier.

    Block options (MobileNetV2 Section 6.4 ablations):
    ``bottleneck_activation`` is ``"linear"`` (the paper's linear bottleneck) or ``"relu6"``;
    ``shortcut`` is ``"bottleneck"`` (inverted residual), ``"expansion"`` (conventional residual
    between the expanded tensors) or ``"none"``.
    """

    resolution: int
    stem_channels: int
    stages: tuple[StageSpec, ...]
    last_channels: int
    num_classes: int
    stem_stride: int = 2
    bottleneck_activation: str = "linear"
    shortcut: str = "bottleneck"

    def __post_init__(self) -> None:
        _check_int("resolution", self.resolution, 1)
        _check_int("stem_channels", self.stem_channels, 1)
        _check_int("last_channels", self.last_channels, 1)
        _check_int("num_classes", self.num_classes, 1)
        if isinstance(self.stem_stride, bool) or self.stem_stride not in STRIDES:
            raise ValueError(f"stem_stride must be one of {STRIDES}, but got {self.stem_stride!r}")
        if isinstance(self.stages, list):
            object.__setattr__(self, "stages", tuple(self.stages))
        if not isinstance(self.stages, tuple) or not self.stages:
            raise ValueError(f"stages must be a non-empty tuple of StageSpec, but got {self.stages!r}")
        for i, stage in enumerate(self.stages):
            if not isinstance(stage, StageSpec):
                raise ValueError(f"stages[{i}] must be a StageSpec, but got {type(stage).__name__}")
        if self.bottleneck_activation not in BOTTLENECK_ACTIVATIONS:
            raise ValueError(
                f"bottleneck_activation must be one of {BOTTLENECK_ACTIVATIONS}, but got {self.bottleneck_activation!r}"
            )
        if self.shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, but got {self.shortcut!r}")

    # ---- dict / JSON -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stages"] = [asdict(s) for s in self.stages]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchSpec:
        """From ``to_dict()`` output, or from an exported config that holds it under ``"arch"``."""
        if not isinstance(data, dict):
            raise ValueError(f"an architecture must be a JSON object, but got {type(data).__name__}")
        if isinstance(data.get("arch"), dict):
            data = data["arch"]
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown architecture field(s) {unknown}; known fields: {sorted(known)}")
        missing = sorted(
            name for name, f in cls.__dataclass_fields__.items() if name not in data and f.default is MISSING
        )
        if missing:
            raise ValueError(f"architecture is missing field(s) {missing}")
        stages = data["stages"]
        if not isinstance(stages, list | tuple):
            raise ValueError(f"stages must be a list of stage objects, but got {stages!r}")
        parsed = []
        for i, s in enumerate(stages):
            if not isinstance(s, dict):
                raise ValueError(f"stages[{i}] must be an object, but got {s!r}")
            try:
                parsed.append(StageSpec(**s))
            except TypeError as e:
                raise ValueError(f"stages[{i}]: {e}") from None
            except ValueError as e:
                raise ValueError(f"stages[{i}]: {e}") from None
        return cls(**{**data, "stages": tuple(parsed)})

    def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
        """Return the JSON text; if ``path`` is given, also write it there atomically."""
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        if path is not None:
            atomic_write_text(path, text)
        return text

    @classmethod
    def from_json(cls, path_or_text: str | os.PathLike[str]) -> ArchSpec:
        """Load from a JSON file path (or from JSON text starting with ``{``)."""
        text = str(path_or_text)
        if not text.lstrip().startswith("{"):
            try:
                with open(path_or_text, encoding="utf-8") as f:
                    text = f.read()
            except OSError as e:
                raise ValueError(f"cannot read architecture file {path_or_text}: {e.strerror}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"architecture JSON {path_or_text if len(str(path_or_text)) < 200 else ''} "
                f"is not valid JSON ({e.msg} at line {e.lineno}); re-export it"
            ) from None
        return cls.from_dict(data)

    # ---- compact string ----------------------------------------------------------------------
    def to_string(self) -> str:
        """Compact, round-trippable form, one token per stage, e.g.
        ``in224_c32_s2-ir_r1_k3_s1_e1_c16-...-head_c1280_n1001``."""
        tokens = [f"in{self.resolution}_c{self.stem_channels}_s{self.stem_stride}"]
        tokens += [s.to_token() for s in self.stages]
        tokens.append(f"head_c{self.last_channels}_n{self.num_classes}")
        if self.bottleneck_activation != "linear":
            tokens.append(f"act_{self.bottleneck_activation}")
        if self.shortcut != "bottleneck":
            tokens.append(f"sc_{self.shortcut}")
        return "-".join(tokens)

    @classmethod
    def from_string(cls, text: str) -> ArchSpec:
        return _parse_arch_string(text)

    def __str__(self) -> str:
        return self.to_string()

    # ---- convenience -------------------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return sum(s.repeats for s in self.stages)

    def replace(self, **changes: Any) -> ArchSpec:
        return replace(self, **changes)


# ---- compact string parsing ------------------------------------------------------------------
_KV = re.compile(r"^([a-z]+)(\d+)$")


def _kv(token: str, parts: list[str], expected: tuple[str, ...]) -> dict[str, int]:
    values: dict[str, int] = {}
    for part in parts:
        m = _KV.match(part)
        if not m or m.group(1) not in expected:
            raise ValueError(f"cannot parse {part!r} in token {token!r}; expected keys {expected} followed by a number")
        if m.group(1) in values:
            raise ValueError(f"token {token!r} gives {m.group(1)!r} twice; give each of {expected} once")
        values[m.group(1)] = int(m.group(2))
    missing = [k for k in expected if k not in values]
    if missing:
        raise ValueError(f"token {token!r} is missing {missing}")
    return values


def _parse_arch_string(text: str) -> ArchSpec:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(
            "an architecture string must be non-empty, e.g. 'in224_c32_s2-ir_r1_k3_s1_e1_c16-head_c1280_n1001'"
        )
    tokens = text.strip().split("-")
    head = tokens[0]
    if not head.startswith("in"):
        raise ValueError(f"architecture string must start with 'in<resolution>_c<stem>_s<stride>', got {head!r}")
    first = _kv(head, head.split("_"), ("in", "c", "s"))
    stages: list[StageSpec] = []
    last: dict[str, int] | None = None
    options: dict[str, str] = {}
    for token in tokens[1:]:
        parts = token.split("_")
        if parts[0] == "ir":
            if last is not None:
                raise ValueError(f"stage token {token!r} comes after the head token")
            v = _kv(token, parts[1:], ("r", "k", "s", "e", "c"))
            stages.append(StageSpec(v["e"], v["c"], v["r"], v["s"], v["k"]))
        elif parts[0] == "head":
            if last is not None:
                raise ValueError(f"architecture string has more than one head token (second: {token!r})")
            last = _kv(token, parts[1:], ("c", "n"))
        elif parts[0] in ("act", "sc") and len(parts) == 2:
            field = "bottleneck_activation" if parts[0] == "act" else "shortcut"
            if field in options:
                raise ValueError(f"architecture string has more than one {parts[0]!r} token (second: {token!r})")
            options[field] = parts[1]
        else:
            raise ValueError(
                f"unknown token {token!r} in architecture string; expected 'ir_...', 'head_...', 'act_...' or 'sc_...'"
            )
    if last is None:
        raise ValueError("architecture string has no 'head_c<channels>_n<classes>' token")
    return ArchSpec(
        resolution=first["in"],
        stem_channels=first["c"],
        stem_stride=first["s"],
        stages=tuple(stages),
        last_channels=last["c"],
        num_classes=last["n"],
        **options,
    )


def parse_arch(value: str | os.PathLike[str] | dict[str, Any] | ArchSpec) -> ArchSpec:
    """Accept an ArchSpec, a dict, a JSON or YAML file path, or a compact string."""
    if isinstance(value, ArchSpec):
        return value
    if isinstance(value, dict):
        return ArchSpec.from_dict(value)
    text = str(value)
    if text.endswith((".yaml", ".yml")):
        return _from_yaml(text)
    if text.lstrip().startswith("{") or text.endswith(".json") or os.path.exists(text):
        return ArchSpec.from_json(value)
    return ArchSpec.from_string(text)


def _from_yaml(path: str) -> ArchSpec:
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ValueError(f"cannot read architecture file {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ValueError(f"architecture YAML {path} is not valid YAML ({str(e).splitlines()[0]})") from None
    return ArchSpec.from_dict(data)


# ---- derived per-block quantities ------------------------------------------------------------
def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to a multiple of ``divisor``, never below ``min_value`` (default divisor)
    and never more than 10% below ``value`` (the TF-slim / torchvision channel rounding)."""
    if not math.isfinite(value):
        raise ValueError(f"a channel count must be a finite number, but got {value!r}")
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def conv_out_size(size: int, stride: int) -> int:
    """SAME padding: output = ceil(input / stride)."""
    return -(-size // stride)


def hidden_channels(in_channels: int, expansion: int) -> int:
    """Width of the expanded tensor: ``t * d'`` (MobileNetV2 Table 1)."""
    return in_channels * expansion


class BlockPlan(NamedTuple):
    """Everything about one inverted-residual block that the spec determines."""

    stage: int
    index: int  # position within its stage
    in_channels: int
    out_channels: int
    hidden: int
    expansion: int
    kernel_size: int
    stride: int
    in_size: int  # spatial side of the block input
    out_size: int  # spatial side of the block output
    residual: bool  # shortcut between bottlenecks (x + F(x))
    wide_shortcut: bool  # receives the previous block's expanded tensor (shortcut="expansion")


@functools.lru_cache(maxsize=8192)
def block_plan(spec: ArchSpec) -> tuple[BlockPlan, ...]:
    """Per-block channels, sizes and shortcuts; the one place these rules live.

    Shortcut rules: ``residual`` (x + F(x)) needs shortcut="bottleneck", stride 1 and equal
    channels; ``wide_shortcut`` (shortcut="expansion") needs the previous block to have stride 1
    and the same expanded width, so the two expanded tensors have the same shape.
    """
    plans: list[BlockPlan] = []
    bottleneck = spec.shortcut == "bottleneck"
    wide_mode = spec.shortcut == "expansion"
    channels = spec.stem_channels
    size = -(-spec.resolution // spec.stem_stride)
    prev_stride, prev_hidden = 0, 0
    for s_idx, stage in enumerate(spec.stages):
        t, out_c, k = stage.expansion, stage.channels, stage.kernel_size
        for b in range(stage.repeats):
            stride = stage.stride if b == 0 else 1
            out_size = -(-size // stride)
            hidden = channels * t
            plans.append(
                BlockPlan(
                    s_idx,
                    b,
                    channels,
                    out_c,
                    hidden,
                    t,
                    k,
                    stride,
                    size,
                    out_size,
                    bottleneck and stride == 1 and channels == out_c,
                    wide_mode and prev_stride == 1 and prev_hidden == hidden,
                )
            )
            channels, size, prev_stride, prev_hidden = out_c, out_size, stride, hidden
    return tuple(plans)


def final_size(spec: ArchSpec) -> int:
    """Spatial side of the last bottleneck / head conv output."""
    size = conv_out_size(spec.resolution, spec.stem_stride)
    for stage in spec.stages:
        size = conv_out_size(size, stage.stride)
    return size


__all__ = [
    "ArchSpec",
    "StageSpec",
    "BlockPlan",
    "BOTTLENECK_ACTIVATIONS",
    "SHORTCUTS",
    "block_plan",
    "conv_out_size",
    "final_size",
    "hidden_channels",
    "make_divisible",
    "parse_arch",
]
