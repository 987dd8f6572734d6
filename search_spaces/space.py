"""Search spaces over inverted-residual networks: plain data, validated, encodable, sampleable."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol

import numpy as np

from invres_utils.atomic_files import atomic_write_text

from .arch import (
    ACTIVATIONS,
    BOTTLENECK_ACTIVATIONS,
    HEADS,
    SE_BASES,
    SE_GATES,
    SHORTCUTS,
    STRIDES,
    ArchSpec,
    StageSpec,
    _without_defaults,
)


def _check_choices(where: str, values: Any, minimum: int | None = None, odd: bool = False) -> None:
    if not isinstance(values, tuple | list) or len(values) == 0:
        raise ValueError(f"{where} must be a non-empty list of choices, but got {values!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"{where} must not repeat a choice, but got {list(values)}")
    for v in values:
        if minimum is not None:
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise ValueError(f"{where} must hold integers >= {minimum}, but got {v!r}")
            if odd and v % 2 == 0:
                raise ValueError(f"{where} must hold odd kernel sizes, but got {v}")


@dataclass(frozen=True)
class StageChoices:
    """Choices for one stage. The stride of its first block is fixed: strides set the network's
    spatial schedule, which a width/depth search keeps.

    ``per_block=False`` (MobileNetV2-style spaces): one expansion and one kernel size for every
    block of the stage. ``per_block=True`` (Once-for-All / ProxylessNAS): each block chooses its
    own expansion and kernel; the encoding then holds a choice for each of the ``max(repeats)``
    blocks, and the choices of blocks beyond the sampled depth are ignored (``encode`` writes the
    first choice there). Squeeze-excitation (``se_ratio``, ``se_gate``, ``se_basis``) and the
    ``activation`` are fixed per stage, as MobileNetV3 and Once-for-All place them; see
    :class:`search_spaces.arch.StageSpec` for their meaning.
    """

    expansions: tuple[int, ...]
    channels: tuple[int, ...]
    repeats: tuple[int, ...]
    kernel_sizes: tuple[int, ...] = (3,)
    stride: int = 1
    per_block: bool = False
    se_ratio: float = 0.0
    se_gate: str = "hard_sigmoid"
    se_basis: str = "hidden"
    activation: str = "relu6"

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))

    def validate(self, where: str = "stage") -> None:
        _check_choices(f"{where}.expansions", self.expansions, 1)
        _check_choices(f"{where}.channels", self.channels, 1)
        _check_choices(f"{where}.repeats", self.repeats, 1)
        _check_choices(f"{where}.kernel_sizes", self.kernel_sizes, 1, odd=True)
        if isinstance(self.stride, bool) or self.stride not in STRIDES:
            raise ValueError(f"{where}.stride must be one of {STRIDES}, but got {self.stride!r}")
        if not isinstance(self.per_block, bool):
            raise ValueError(f"{where}.per_block must be true or false, but got {self.per_block!r}")
        ratio = self.se_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 <= ratio <= 1:
            raise ValueError(
                f"{where}.se_ratio must be a number in [0, 1] (0: no squeeze-excitation), but got {ratio!r}"
            )
        _check_option(f"{where}.se_gate", self.se_gate, SE_GATES)
        _check_option(f"{where}.se_basis", self.se_basis, SE_BASES)
        _check_option(f"{where}.activation", self.activation, ACTIVATIONS)

    def block_options(self) -> dict[str, Any]:
        """The fixed ``StageSpec`` fields every architecture's stage gets from these choices."""
        return {
            "se_ratio": self.se_ratio,
            "se_gate": self.se_gate,
            "se_basis": self.se_basis,
            "activation": self.activation,
        }


def _check_option(where: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{where} must be one of {allowed}, but got {value!r}")


# Fields added for MobileNetV3 / Once-for-All spaces; written to JSON only where they differ from
# their defaults, so that the dict of a MobileNetV2-style space (and run fingerprints) is unchanged.
_V3_STAGE_FIELDS = ("per_block", "se_ratio", "se_gate", "se_basis", "activation")
_V3_SPACE_FIELDS = ("stem_activation", "head", "head_channels", "head_activation")


class Suggester(Protocol):
    """What :func:`sample_spec` needs from an Optuna trial (or anything like it)."""

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


@dataclass(frozen=True)
class SearchSpace:
    """Per-stage choices of expansion rate, width, repeats and kernel size, plus global choices of
    input resolution and block options. Every combination is a valid ``ArchSpec``."""

    name: str
    resolutions: tuple[int, ...]
    stem_channels: int
    stages: tuple[StageChoices, ...]
    last_channels: int
    num_classes: int
    stem_stride: int = 2
    bottleneck_activations: tuple[str, ...] = ("linear",)
    shortcuts: tuple[str, ...] = ("bottleneck",)
    stem_activation: str = "relu6"
    head: str = "conv"
    head_channels: int = 0
    head_activation: str = "relu6"

    def __post_init__(self) -> None:
        for name in ("resolutions", "bottleneck_activations", "shortcuts"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        if isinstance(self.stages, list):
            object.__setattr__(self, "stages", tuple(self.stages))
        self.validate()

    # ---- validation --------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ``ValueError`` saying what must hold if any choice is impossible."""
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, but got {self.name!r}")
        _check_choices("resolutions", self.resolutions, 1)
        for label, value in (
            ("stem_channels", self.stem_channels),
            ("last_channels", self.last_channels),
            ("num_classes", self.num_classes),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{label} must be an integer >= 1, but got {value!r}")
        if isinstance(self.stem_stride, bool) or self.stem_stride not in STRIDES:
            raise ValueError(f"stem_stride must be one of {STRIDES}, but got {self.stem_stride!r}")
        if not isinstance(self.stages, tuple) or not self.stages:
            raise ValueError(f"stages must be a non-empty list, but got {self.stages!r}")
        for i, stage in enumerate(self.stages):
            if not isinstance(stage, StageChoices):
                raise ValueError(f"stages[{i}] must be a StageChoices, but got {type(stage).__name__}")
            stage.validate(f"stages[{i}]")
        _check_choices("bottleneck_activations", self.bottleneck_activations)
        for a in self.bottleneck_activations:
            if a not in BOTTLENECK_ACTIVATIONS:
                raise ValueError(f"bottleneck_activations must be among {BOTTLENECK_ACTIVATIONS}, but got {a!r}")
        _check_choices("shortcuts", self.shortcuts)
        for s in self.shortcuts:
            if s not in SHORTCUTS:
                raise ValueError(f"shortcuts must be among {SHORTCUTS}, but got {s!r}")
        _check_option("stem_activation", self.stem_activation, ACTIVATIONS)
        _check_option("head_activation", self.head_activation, ACTIVATIONS)
        _check_option("head", self.head, HEADS)
        if self.head == "mbv3":
            if (
                isinstance(self.head_channels, bool)
                or not isinstance(self.head_channels, int)
                or self.head_channels < 1
            ):
                raise ValueError(
                    f"head_channels (the 1x1 conv before pooling of the mbv3 head) must be an integer >= 1, "
                    f"but got {self.head_channels!r}"
                )
        elif self.head_channels != 0:
            raise ValueError("head_channels applies to head='mbv3' only; with head='conv' it must be 0")

    # ---- dimensions and encoding -------------------------------------------------------------
    def dimensions(self) -> list[tuple[str, tuple[Any, ...]]]:
        """``(parameter name, choices)`` in encoding order; the one place parameter names live."""
        dims: list[tuple[str, tuple[Any, ...]]] = [("resolution", self.resolutions)]
        for i, st in enumerate(self.stages):
            if st.per_block:
                dims += [(f"s{i}_channels", st.channels), (f"s{i}_repeats", st.repeats)]
                for b in range(max(st.repeats)):
                    dims += [(f"s{i}_b{b}_expansion", st.expansions), (f"s{i}_b{b}_kernel", st.kernel_sizes)]
            else:
                dims += [
                    (f"s{i}_expansion", st.expansions),
                    (f"s{i}_channels", st.channels),
                    (f"s{i}_repeats", st.repeats),
                    (f"s{i}_kernel", st.kernel_sizes),
                ]
        dims += [
            ("bottleneck_activation", self.bottleneck_activations),
            ("shortcut", self.shortcuts),
        ]
        return dims

    @property
    def cardinalities(self) -> np.ndarray:
        return np.array([len(c) for _, c in self.dimensions()], dtype=np.int64)

    def num_architectures(self) -> int:
        """Number of distinct architectures in the space (a per-block stage of depth ``d`` has
        ``(kernels * expansions) ** d`` block choices; encodings of unused blocks do not count)."""
        count = len(self.resolutions) * len(self.bottleneck_activations) * len(self.shortcuts)
        for st in self.stages:
            per_block = len(st.expansions) * len(st.kernel_sizes)
            if st.per_block:
                count *= len(st.channels) * sum(per_block**d for d in st.repeats)
            else:
                count *= len(st.channels) * len(st.repeats) * per_block
        return count

    def stage_params(self, i: int, expansion: int, channels: int, repeats: int, kernel_size: int) -> dict[str, Any]:
        """Named parameters giving stage ``i`` these values (every block alike), in either form."""
        st = self.stages[i]
        params: dict[str, Any] = {f"s{i}_channels": channels, f"s{i}_repeats": repeats}
        if not st.per_block:
            return {**params, f"s{i}_expansion": expansion, f"s{i}_kernel": kernel_size}
        for b in range(max(st.repeats)):
            params[f"s{i}_b{b}_expansion"] = expansion
            params[f"s{i}_b{b}_kernel"] = kernel_size
        return params

    def decode(self, code: Any) -> ArchSpec:
        """Integer vector (one choice index per dimension) -> ``ArchSpec``."""
        dims = self.dimensions()
        code = [int(c) for c in code]
        if len(code) != len(dims):
            raise ValueError(f"an encoding of space {self.name!r} has {len(dims)} entries, but got {len(code)}")
        values = {}
        for (name, choices), c in zip(dims, code):
            if not 0 <= c < len(choices):
                raise ValueError(f"index for {name} must be in [0, {len(choices)}), but got {c}")
            values[name] = choices[c]
        return self.spec_from_params(values)

    def encode(self, spec: ArchSpec) -> np.ndarray:
        """``ArchSpec`` -> integer vector; ``ValueError`` if the spec is not in this space."""
        params = self.params_from_spec(spec)
        code = []
        for name, choices in self.dimensions():
            if params[name] not in choices:
                raise ValueError(
                    f"architecture is not in space {self.name!r}: {name}={params[name]!r} is not one of {list(choices)}"
                )
            code.append(choices.index(params[name]))
        return np.array(code, dtype=np.int64)

    def contains(self, spec: ArchSpec) -> bool:
        try:
            self.encode(spec)
        except ValueError:
            return False
        return True

    def spec_from_params(self, params: dict[str, Any]) -> ArchSpec:
        """Named parameter values (as in :meth:`dimensions`) -> ``ArchSpec``."""
        stages = []
        for i, st in enumerate(self.stages):
            repeats = params[f"s{i}_repeats"]
            if st.per_block:
                expansion: Any = [params[f"s{i}_b{b}_expansion"] for b in range(repeats)]
                kernel: Any = [params[f"s{i}_b{b}_kernel"] for b in range(repeats)]
            else:
                expansion, kernel = params[f"s{i}_expansion"], params[f"s{i}_kernel"]
            stages.append(
                StageSpec(
                    expansion=expansion,
                    channels=params[f"s{i}_channels"],
                    repeats=repeats,
                    stride=st.stride,
                    kernel_size=kernel,
                    **st.block_options(),
                )
            )
        return ArchSpec(
            resolution=params["resolution"],
            stem_channels=self.stem_channels,
            stages=tuple(stages),
            last_channels=self.last_channels,
            num_classes=self.num_classes,
            stem_stride=self.stem_stride,
            bottleneck_activation=params.get("bottleneck_activation", self.bottleneck_activations[0]),
            shortcut=params.get("shortcut", self.shortcuts[0]),
            stem_activation=self.stem_activation,
            head=self.head,
            head_channels=self.head_channels,
            head_activation=self.head_activation,
        )

    def params_from_spec(self, spec: ArchSpec) -> dict[str, Any]:
        """``ArchSpec`` -> named parameter values; checks the fixed parts match the space."""
        fixed = {
            "stem_channels": (spec.stem_channels, self.stem_channels),
            "stem_stride": (spec.stem_stride, self.stem_stride),
            "last_channels": (spec.last_channels, self.last_channels),
            "num_classes": (spec.num_classes, self.num_classes),
            "number of stages": (len(spec.stages), len(self.stages)),
        }
        fixed.update(
            {
                "stem_activation": (spec.stem_activation, self.stem_activation),
                "head": (spec.head, self.head),
                "head_channels": (spec.head_channels, self.head_channels),
                "head_activation": (spec.head_activation, self.head_activation),
            }
        )
        for label, (got, want) in fixed.items():
            if got != want:
                raise ValueError(f"architecture is not in space {self.name!r}: {label} is {got}, the space has {want}")
        params: dict[str, Any] = {"resolution": spec.resolution}
        for i, (stage, choices) in enumerate(zip(spec.stages, self.stages)):
            if stage.stride != choices.stride:
                raise ValueError(
                    f"architecture is not in space {self.name!r}: stage {i} stride is {stage.stride}, "
                    f"the space has {choices.stride}"
                )
            options = {name: getattr(stage, name) for name in choices.block_options()}
            if options != choices.block_options():
                raise ValueError(
                    f"architecture is not in space {self.name!r}: stage {i} ({stage.to_token()}) has "
                    f"{options}, the space has {choices.block_options()}"
                )
            params[f"s{i}_channels"] = stage.channels
            params[f"s{i}_repeats"] = stage.repeats
            if choices.per_block:
                depth = max(choices.repeats)  # unused blocks take the first choice: one encoding per spec
                expansions = stage.block_expansions[:depth] + (choices.expansions[0],) * (depth - stage.repeats)
                kernels = stage.block_kernels[:depth] + (choices.kernel_sizes[0],) * (depth - stage.repeats)
                for b in range(depth):
                    params[f"s{i}_b{b}_expansion"] = expansions[b]
                    params[f"s{i}_b{b}_kernel"] = kernels[b]
            elif not stage.uniform:
                raise ValueError(
                    f"architecture is not in space {self.name!r}: stage {i} ({stage.to_token()}) chooses its "
                    "expansion or kernel per block, and the space's stage does not (per_block is false)"
                )
            else:
                params[f"s{i}_expansion"] = stage.expansion
                params[f"s{i}_kernel"] = stage.kernel_size
        params["bottleneck_activation"] = spec.bottleneck_activation
        params["shortcut"] = spec.shortcut
        return params

    # ---- sampling ----------------------------------------------------------------------------
    def sample_codes(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` random encodings, shape ``(n, num_dimensions)``: every dimension uniform (for a
        per-block stage: the depth, then each block's choices, as Once-for-All samples), in the
        canonical form :meth:`encode` gives."""
        codes = (rng.random((n, len(self.cardinalities))) * self.cardinalities).astype(np.int64)
        return self.canonical_codes(codes)

    def canonical_codes(self, codes: np.ndarray) -> np.ndarray:
        """``codes`` with the choices of blocks beyond each per-block stage's depth set to the
        first choice, so that equal architectures have equal encodings (a copy)."""
        codes = np.array(codes, dtype=np.int64, copy=True)
        column = {name: j for j, (name, _) in enumerate(self.dimensions())}
        for i, st in enumerate(self.stages):
            if not st.per_block:
                continue
            depth = np.asarray(st.repeats, dtype=np.int64)[codes[:, column[f"s{i}_repeats"]]]
            for b in range(max(st.repeats)):
                unused = depth <= b
                codes[unused, column[f"s{i}_b{b}_expansion"]] = 0
                codes[unused, column[f"s{i}_b{b}_kernel"]] = 0
        return codes

    def sample(self, rng: np.random.Generator) -> ArchSpec:
        """One uniformly random architecture; the RNG is explicit so runs reproduce."""
        return self.decode(self.sample_codes(rng, 1)[0])

    def largest(self) -> ArchSpec:
        """Largest choice of every dimension (the supernet's full network)."""
        return self._extreme(max)

    def smallest(self) -> ArchSpec:
        return self._extreme(min)

    def _extreme(self, pick: Any) -> ArchSpec:
        params: dict[str, Any] = {"resolution": pick(self.resolutions)}
        for i, st in enumerate(self.stages):
            params.update(
                self.stage_params(i, pick(st.expansions), pick(st.channels), pick(st.repeats), pick(st.kernel_sizes))
            )
        params["bottleneck_activation"] = self.bottleneck_activations[0]
        params["shortcut"] = self.shortcuts[0]
        return self.spec_from_params(params)

    # ---- dict / JSON -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = _without_defaults(asdict(self), _V3_SPACE_FIELDS, SearchSpace)
        d["stages"] = [_without_defaults(asdict(s), _V3_STAGE_FIELDS, StageChoices) for s in self.stages]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchSpace:
        if not isinstance(data, dict):
            raise ValueError(f"a search space must be a JSON object, but got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown search-space field(s) {unknown}; known fields: {sorted(known)}")
        stages = data.get("stages")
        if not isinstance(stages, list) or not stages:
            raise ValueError(f"stages must be a non-empty list of stage objects, but got {stages!r}")
        parsed = []
        stage_fields = {f.name for f in fields(StageChoices)}
        for i, s in enumerate(stages):
            if not isinstance(s, dict):
                raise ValueError(f"stages[{i}] must be an object, but got {s!r}")
            bad = sorted(set(s) - stage_fields)
            if bad:
                raise ValueError(f"stages[{i}] has unknown field(s) {bad}; known fields: {sorted(stage_fields)}")
            try:
                parsed.append(StageChoices(**s))
            except TypeError as e:
                raise ValueError(f"stages[{i}]: {e}") from None
        try:
            return cls(**{**data, "stages": tuple(parsed)})
        except TypeError as e:
            raise ValueError(f"search space: {e}") from None

    def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        if path is not None:
            atomic_write_text(path, text)
        return text

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> SearchSpace:
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except OSError as e:
            raise ValueError(f"cannot read search-space file {path}: {e.strerror}") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"search-space file {path} is not valid JSON ({e.msg} at line {e.lineno})") from None
        try:
            return cls.from_dict(data)
        except ValueError as e:
            raise ValueError(f"search-space file {path}: {e}") from None


def sample_spec(trial: Suggester, space: SearchSpace) -> ArchSpec:
    """Ask a trial (Optuna's ``suggest_categorical`` API) for every dimension of the space."""
    params = {name: trial.suggest_categorical(name, list(choices)) for name, choices in space.dimensions()}
    return space.spec_from_params(params)
