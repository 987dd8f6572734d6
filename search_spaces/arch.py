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
ACTIVATIONS = ("relu", "relu6", "hswish")
SE_GATES = ("hard_sigmoid", "sigmoid")
SE_BASES = ("hidden", "input")
HEADS = ("conv", "mbv3")
# timm arch-def activation tokens ("_nre", "_nr6", "_nhs")
_ACTIVATION_TOKENS = {"relu": "nre", "relu6": "nr6", "hswish": "nhs"}
_TOKEN_ACTIVATIONS = {v: k for k, v in _ACTIVATION_TOKENS.items()}


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, but got {value!r}")


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, but got {value!r}")


def _canonical_expansion(value: Any, where: str) -> int | float:
    """An expansion rate: an integer (hidden width ``t * d'`` exactly) or, as MobileNetV3 writes
    some of its blocks (e.g. 2.5, 2.3), a fraction (hidden width rounded to a multiple of 8);
    a fraction equal to an integer becomes that integer."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 1:
        raise ValueError(f"{where} must be a number >= 1, but got {value!r}")
    return int(value) if float(value).is_integer() else float(value)


def _per_block(name: str, value: Any, repeats: int, check: Any) -> Any:
    """A per-stage value, or a list with one value per block (``repeats`` long); a list whose
    values are all equal becomes that single value, so equal stages compare equal."""
    if isinstance(value, list | tuple):
        if len(value) != repeats:
            raise ValueError(
                f"{name} lists one value per block, so it must have repeats={repeats} entries, but got {list(value)}"
            )
        values = tuple(check(v, f"{name}[{i}]") for i, v in enumerate(value))
        return values[0] if len(set(values)) == 1 else values
    return check(value, name)


def _canonical_kernel(value: Any, where: str) -> int:
    _check_int(where, value, 1)
    if value % 2 == 0:
        raise ValueError(f"{where} must be odd, but got {value}")
    return value


@dataclass(frozen=True)
class StageSpec:
    """One stage of inverted-residual blocks, the ``(t, c, n, s)`` row of MobileNetV2 Table 2.

    ``stride`` applies to the first block only; the others have stride 1. ``expansion`` and
    ``kernel_size`` are one value for every block of the stage or a tuple with one value per
    block (Once-for-All / ProxylessNAS choose them per block). Squeeze-excitation
    (MobileNetV3 Section 5.3) runs after the depthwise conv when ``se_ratio > 0``: its squeeze
    width is ``se_ratio`` of the hidden width rounded to a multiple of 8 (``se_basis="hidden"``,
    the MobileNetV3 reference) or ``int(se_ratio * block input width)`` (``"input"``, the
    MnasNet / EfficientNet reference); ``se_gate`` is the hard sigmoid of MobileNetV3 or a sigmoid.
    ``activation`` follows the expansion and depthwise convs (and inside SE it is always ReLU).
    """

    expansion: int | float | tuple[int | float, ...]
    channels: int
    repeats: int
    stride: int = 1
    kernel_size: int | tuple[int, ...] = 3
    se_ratio: float = 0.0
    se_gate: str = "hard_sigmoid"
    se_basis: str = "hidden"
    activation: str = "relu6"

    def __post_init__(self) -> None:
        _check_int("channels", self.channels, 1)
        _check_int("repeats", self.repeats, 1)
        if isinstance(self.stride, bool) or self.stride not in STRIDES:
            raise ValueError(f"stride must be one of {STRIDES}, but got {self.stride!r}")
        object.__setattr__(
            self, "expansion", _per_block("expansion", self.expansion, self.repeats, _canonical_expansion)
        )
        object.__setattr__(
            self, "kernel_size", _per_block("kernel_size", self.kernel_size, self.repeats, _canonical_kernel)
        )
        ratio = self.se_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 <= ratio <= 1:
            raise ValueError(f"se_ratio must be a number in [0, 1] (0: no squeeze-excitation), but got {ratio!r}")
        object.__setattr__(self, "se_ratio", float(ratio))
        _check_choice("se_gate", self.se_gate, SE_GATES)
        _check_choice("se_basis", self.se_basis, SE_BASES)
        _check_choice("activation", self.activation, ACTIVATIONS)
        if self.se_ratio == 0:  # SE options of a stage without SE mean nothing: keep them canonical
            object.__setattr__(self, "se_gate", "hard_sigmoid")
            object.__setattr__(self, "se_basis", "hidden")

    @property
    def block_expansions(self) -> tuple[int | float, ...]:
        """The expansion rate of each block."""
        e = self.expansion
        return e if isinstance(e, tuple) else (e,) * self.repeats

    @property
    def block_kernels(self) -> tuple[int, ...]:
        """The depthwise kernel size of each block."""
        k = self.kernel_size
        return k if isinstance(k, tuple) else (k,) * self.repeats

    @property
    def uniform(self) -> bool:
        """Every block has the same expansion and kernel (the MobileNetV2 ``(t, c, n, s)`` form)."""
        return not isinstance(self.expansion, tuple) and not isinstance(self.kernel_size, tuple)

    @property
    def plain(self) -> bool:
        """A MobileNetV2 stage: uniform blocks with an integer expansion, ReLU6, no squeeze-excitation."""
        return self.uniform and isinstance(self.expansion, int) and self.se_ratio == 0 and self.activation == "relu6"

    def to_token(self) -> str:
        """timm-style token, e.g. ``ir_r2_k3_s2_e6_c24`` or ``ir_r3_k5_s2_e3_c40_se0.25_nre``;
        per-block values are joined by ``:`` (``ir_r3_k3:5:7_s2_e6:3:3_c40``)."""
        k = ":".join(str(v) for v in self.block_kernels) if isinstance(self.kernel_size, tuple) else self.kernel_size
        e = ":".join(_number(v) for v in self.block_expansions) if isinstance(self.expansion, tuple) else None
        token = f"ir_r{self.repeats}_k{k}_s{self.stride}_e{e or _number(self.expansion)}_c{self.channels}"
        if self.se_ratio:
            token += f"_se{_number(self.se_ratio)}"
            if self.se_basis == "input":
                token += "_sei"
            if self.se_gate == "sigmoid":
                token += "_gsig"
        if self.activation != "relu6":
            token += f"_{_ACTIVATION_TOKENS[self.activation]}"
        return token


def _number(value: float) -> str:
    """Shortest text that reads back as the same number (``6``, ``2.5``, ``0.25``)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass(frozen=True)
class ArchSpec:
    """A complete network: stem conv, stages of inverted-residual blocks, 1x1 head, classifier.

    Block options (MobileNetV2 Section 6.4 ablations):
    ``bottleneck_activation`` is ``"linear"`` (the paper's linear bottleneck) or ``"relu6"``;
    ``shortcut`` is ``"bottleneck"`` (inverted residual), ``"expansion"`` (conventional residual
    between the expanded tensors) or ``"none"``.

    ``head`` is ``"conv"`` (MobileNetV2: 1x1 conv to ``last_channels`` + BN, pool, classifier) or
    ``"mbv3"`` (MobileNetV3 Section 5.4: 1x1 conv to ``head_channels`` + BN, pool, 1x1 conv to
    ``last_channels`` with a bias and no BN, classifier). ``stem_activation`` and
    ``head_activation`` are the activations of the stem conv and of the head's convs.
    """

    resolution: int
    stem_channels: int
    stages: tuple[StageSpec, ...]
    last_channels: int
    num_classes: int
    stem_stride: int = 2
    bottleneck_activation: str = "linear"
    shortcut: str = "bottleneck"
    stem_activation: str = "relu6"
    head: str = "conv"
    head_channels: int = 0
    head_activation: str = "relu6"

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
        _check_choice("stem_activation", self.stem_activation, ACTIVATIONS)
        _check_choice("head_activation", self.head_activation, ACTIVATIONS)
        _check_choice("head", self.head, HEADS)
        if self.head == "mbv3":
            _check_int("head_channels (the 1x1 conv before pooling of the mbv3 head)", self.head_channels, 1)
        elif self.head_channels != 0:
            raise ValueError(
                f"head_channels is the pre-pooling width of head='mbv3' only; with head='conv' it must be 0, "
                f"but got {self.head_channels!r}"
            )

    # ---- dict / JSON -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain data; the fields added for MobileNetV3-style networks appear only when they differ
        from their defaults, so a MobileNetV2-family spec writes the JSON it always did."""
        d = _without_defaults(asdict(self), _V3_ARCH_FIELDS, ArchSpec)
        d["stages"] = [_without_defaults(asdict(s), _V3_STAGE_FIELDS, StageSpec) for s in self.stages]
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
        stem = f"in{self.resolution}_c{self.stem_channels}_s{self.stem_stride}"
        if self.stem_activation != "relu6":
            stem += f"_{_ACTIVATION_TOKENS[self.stem_activation]}"
        tokens = [stem]
        tokens += [s.to_token() for s in self.stages]
        head = f"head_c{self.last_channels}_n{self.num_classes}"
        if self.head == "mbv3":
            head += f"_h{self.head_channels}"
        if self.head_activation != "relu6":
            head += f"_{_ACTIVATION_TOKENS[self.head_activation]}"
        tokens.append(head)
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

    @property
    def mobilenet_v2_ops(self) -> bool:
        """Only MobileNetV2's ops: ReLU6 everywhere, no squeeze-excitation, the conv head
        (per-block kernels and expansions allowed)."""
        return (
            all(s.se_ratio == 0 and s.activation == "relu6" for s in self.stages)
            and self.stem_activation == "relu6"
            and self.head == "conv"
            and self.head_activation == "relu6"
        )

    @property
    def plain(self) -> bool:
        """A MobileNetV2-family network: :attr:`mobilenet_v2_ops` and every stage uniform (the
        ``(t, c, n, s)`` form with integer ``t`` that per-stage closed forms handle)."""
        return all(s.plain for s in self.stages) and self.mobilenet_v2_ops

    def replace(self, **changes: Any) -> ArchSpec:
        return replace(self, **changes)


_V3_STAGE_FIELDS = ("se_ratio", "se_gate", "se_basis", "activation")
_V3_ARCH_FIELDS = ("stem_activation", "head", "head_channels", "head_activation")


def _without_defaults(d: dict[str, Any], names: tuple[str, ...], cls: type) -> dict[str, Any]:
    defaults = cls.__dataclass_fields__
    for name in names:
        if d[name] == defaults[name].default:
            del d[name]
    return d


# ---- compact string parsing ------------------------------------------------------------------
_KV = re.compile(r"^([a-z]+)(\d[\d.:]*)$")
_INT = re.compile(r"^\d+$")
_NUMBER = re.compile(r"^\d+(\.\d+)?$")


def _split_token(token: str, parts: list[str], expected: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
    """``key<value>`` parts -> {key: text}; flags (``nre``, ``sei``, ``gsig``) -> {flag: ""}."""
    values: dict[str, str] = {}
    for part in parts:
        if part in _TOKEN_ACTIVATIONS or part in ("sei", "gsig"):
            key, value = part, ""
        else:
            m = _KV.match(part)
            if not m or m.group(1) not in expected + optional:
                raise ValueError(
                    f"cannot parse {part!r} in token {token!r}; expected keys {expected + optional} followed by a number"
                )
            key, value = m.group(1), m.group(2)
        if key in values or (key in _TOKEN_ACTIVATIONS and any(k in _TOKEN_ACTIVATIONS for k in values)):
            raise ValueError(f"token {token!r} gives {key!r} twice; give each option once")
        values[key] = value
    missing = [k for k in expected if k not in values]
    if missing:
        raise ValueError(f"token {token!r} is missing {missing}")
    return values


def _int(token: str, key: str, text: str) -> int:
    if not _INT.match(text):
        raise ValueError(f"{key!r} in token {token!r} must be an integer, but got {text!r}")
    return int(text)


def _numbers(token: str, key: str, text: str, convert: Any) -> Any:
    """One value, or ``:``-joined per-block values (a tuple)."""
    pattern = _INT if convert is int else _NUMBER
    items = text.split(":")
    if not all(pattern.match(item) for item in items):
        kind = "integers" if convert is int else "numbers"
        raise ValueError(f"{key!r} in token {token!r} must be {kind} (per block: joined by ':'), but got {text!r}")
    values = tuple(convert(item) for item in items)
    return values if len(values) > 1 else values[0]


def _activation(values: dict[str, str]) -> dict[str, str]:
    found = [_TOKEN_ACTIVATIONS[key] for key in values if key in _TOKEN_ACTIVATIONS]
    return {"activation": found[0]} if found else {}


def _parse_stage(token: str, parts: list[str]) -> StageSpec:
    v = _split_token(token, parts, ("r", "k", "s", "e", "c"), ("se",))
    options: dict[str, Any] = _activation(v)
    if "se" in v:
        options["se_ratio"] = _numbers(token, "se", v["se"], float)
    elif "sei" in v or "gsig" in v:
        raise ValueError(f"token {token!r} sets squeeze-excitation options without a ratio; add '_se<ratio>'")
    if "sei" in v:
        options["se_basis"] = "input"
    if "gsig" in v:
        options["se_gate"] = "sigmoid"
    return StageSpec(
        expansion=_numbers(token, "e", v["e"], float),
        channels=_int(token, "c", v["c"]),
        repeats=_int(token, "r", v["r"]),
        stride=_int(token, "s", v["s"]),
        kernel_size=_numbers(token, "k", v["k"], int),
        **options,
    )


def _no_se_flags(token: str, values: dict[str, str]) -> None:
    bad = [k for k in values if k in ("sei", "gsig")]
    if bad:
        raise ValueError(f"token {token!r} cannot take {bad}")


def _parse_arch_string(text: str) -> ArchSpec:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(
            "an architecture string must be non-empty, e.g. 'in224_c32_s2-ir_r1_k3_s1_e1_c16-head_c1280_n1001'"
        )
    tokens = text.strip().split("-")
    head = tokens[0]
    if not head.startswith("in"):
        raise ValueError(f"architecture string must start with 'in<resolution>_c<stem>_s<stride>', got {head!r}")
    first = _split_token(head, head.split("_"), ("in", "c", "s"))
    _no_se_flags(head, first)
    options: dict[str, Any] = {}
    if act := _activation(first):
        options["stem_activation"] = act["activation"]
    stages: list[StageSpec] = []
    last: dict[str, str] | None = None
    head_token = ""
    for token in tokens[1:]:
        parts = token.split("_")
        if parts[0] == "ir":
            if last is not None:
                raise ValueError(f"stage token {token!r} comes after the head token")
            stages.append(_parse_stage(token, parts[1:]))
        elif parts[0] == "head":
            if last is not None:
                raise ValueError(f"architecture string has more than one head token (second: {token!r})")
            last, head_token = _split_token(token, parts[1:], ("c", "n"), ("h",)), token
            _no_se_flags(token, last)
            if act := _activation(last):
                options["head_activation"] = act["activation"]
            if "h" in last:
                options["head"] = "mbv3"
                options["head_channels"] = _int(token, "h", last["h"])
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
        resolution=_int(head, "in", first["in"]),
        stem_channels=_int(head, "c", first["c"]),
        stem_stride=_int(head, "s", first["s"]),
        stages=tuple(stages),
        last_channels=_int(head_token, "c", last["c"]),
        num_classes=_int(head_token, "n", last["n"]),
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


def hidden_channels(in_channels: int, expansion: int | float) -> int:
    """Width of the expanded tensor: ``t * d'`` (MobileNetV2 Table 1) for an integer ``t``; a
    fractional ``t`` (MobileNetV3's 2.5, 2.3, 4.5, 3.67) rounds ``t * d'`` to a multiple of 8 as
    the MobileNetV3 reference implementations do."""
    if isinstance(expansion, int):
        return in_channels * expansion
    return make_divisible(in_channels * expansion)


def se_channels(stage: StageSpec, in_channels: int, hidden: int) -> int:
    """Squeeze width of a block's squeeze-excitation (0: none). ``se_basis="hidden"``: the
    MobileNetV3 reference, ``make_divisible(hidden * ratio, 8)``; ``"input"``: the MnasNet /
    EfficientNet TF reference, ``max(1, int(in_channels * ratio))``."""
    if stage.se_ratio == 0:
        return 0
    if stage.se_basis == "hidden":
        return make_divisible(hidden * stage.se_ratio)
    return max(1, int(in_channels * stage.se_ratio))


class BlockPlan(NamedTuple):
    """Everything about one inverted-residual block that the spec determines."""

    stage: int
    index: int  # position within its stage
    in_channels: int
    out_channels: int
    hidden: int
    expansion: int | float
    kernel_size: int
    stride: int
    in_size: int  # spatial side of the block input
    out_size: int  # spatial side of the block output
    residual: bool  # shortcut between bottlenecks (x + F(x))
    wide_shortcut: bool  # receives the previous block's expanded tensor (shortcut="expansion")
    activation: str = "relu6"  # after the expansion and depthwise convs
    se_channels: int = 0  # squeeze width of the squeeze-excitation (0: none)
    se_gate: str = "hard_sigmoid"


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
        out_c = stage.channels
        for b, (t, k) in enumerate(zip(stage.block_expansions, stage.block_kernels)):
            stride = stage.stride if b == 0 else 1
            out_size = -(-size // stride)
            hidden = hidden_channels(channels, t)
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
                    stage.activation,
                    se_channels(stage, channels, hidden),
                    stage.se_gate,
                )
            )
            channels, size, prev_stride, prev_hidden = out_c, out_size, stride, hidden
    return tuple(plans)


def require_mobilenet_v2_ops(spec: ArchSpec, what: str) -> None:
    """``ValueError`` if ``spec`` uses ops ``what`` does not model (SE, ReLU/h-swish, the
    MobileNetV3 head)."""
    if not spec.mobilenet_v2_ops:
        raise ValueError(
            f"{what} handles MobileNetV2's ops only (ReLU6, no squeeze-excitation, the conv head), but "
            f"{spec.to_string()} uses squeeze-excitation, ReLU/h-swish or the MobileNetV3 head"
        )


def final_size(spec: ArchSpec) -> int:
    """Spatial side of the last bottleneck / head conv output."""
    size = conv_out_size(spec.resolution, spec.stem_stride)
    for stage in spec.stages:
        size = conv_out_size(size, stage.stride)
    return size


__all__ = [
    "ACTIVATIONS",
    "HEADS",
    "SE_BASES",
    "SE_GATES",
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
    "require_mobilenet_v2_ops",
    "se_channels",
]
