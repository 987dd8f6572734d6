"""Search spaces over inverted-residual networks: plain data, validated, encodable, sampleable."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol

import numpy as np

from invres_utils.atomic_files import atomic_write_text

from .arch import (
    BOTTLENECK_ACTIVATIONS,
    SHORTCUTS,
    STRIDES,
    ArchSpec,
    StageSpec,
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
    spatial schedule, which a width/depth search keeps."""

    expansions: tuple[int, ...]
    channels: tuple[int, ...]
    repeats: tuple[int, ...]
    kernel_sizes: tuple[int, ...] = (3,)
    stride: int = 1

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

    # ---- dimensions and encoding -------------------------------------------------------------
    def dimensions(self) -> list[tuple[str, tuple[Any, ...]]]:
        """``(parameter name, choices)`` in encoding order; the one place parameter names live."""
        dims: list[tuple[str, tuple[Any, ...]]] = [("resolution", self.resolutions)]
        for i, st in enumerate(self.stages):
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
        """Number of distinct architectures in the space."""
        return math.prod(len(c) for _, c in self.dimensions())

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
        stages = tuple(
            StageSpec(
                expansion=params[f"s{i}_expansion"],
                channels=params[f"s{i}_channels"],
                repeats=params[f"s{i}_repeats"],
                stride=st.stride,
                kernel_size=params[f"s{i}_kernel"],
            )
            for i, st in enumerate(self.stages)
        )
        return ArchSpec(
            resolution=params["resolution"],
            stem_channels=self.stem_channels,
            stages=stages,
            last_channels=self.last_channels,
            num_classes=self.num_classes,
            stem_stride=self.stem_stride,
            bottleneck_activation=params.get("bottleneck_activation", self.bottleneck_activations[0]),
            shortcut=params.get("shortcut", self.shortcuts[0]),
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
                "stem_activation": (spec.stem_activation, "relu6"),
                "head": (spec.head, "conv"),
                "head_activation": (spec.head_activation, "relu6"),
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
            if not stage.uniform or stage.se_ratio or stage.activation != "relu6":
                raise ValueError(
                    f"architecture is not in space {self.name!r}: stage {i} ({stage.to_token()}) has per-block "
                    "choices, squeeze-excitation or another activation than ReLU6, which the space does not"
                )
            params[f"s{i}_expansion"] = stage.expansion
            params[f"s{i}_channels"] = stage.channels
            params[f"s{i}_repeats"] = stage.repeats
            params[f"s{i}_kernel"] = stage.kernel_size
        params["bottleneck_activation"] = spec.bottleneck_activation
        params["shortcut"] = spec.shortcut
        return params

    # ---- sampling ----------------------------------------------------------------------------
    def sample_codes(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` uniformly random encodings, shape ``(n, num_dimensions)``."""
        return (rng.random((n, len(self.cardinalities))) * self.cardinalities).astype(np.int64)

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
            params[f"s{i}_expansion"] = pick(st.expansions)
            params[f"s{i}_channels"] = pick(st.channels)
            params[f"s{i}_repeats"] = pick(st.repeats)
            params[f"s{i}_kernel"] = pick(st.kernel_sizes)
        params["bottleneck_activation"] = self.bottleneck_activations[0]
        params["shortcut"] = self.shortcuts[0]
        return self.spec_from_params(params)

    # ---- dict / JSON -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stages"] = [asdict(s) for s in self.stages]
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
