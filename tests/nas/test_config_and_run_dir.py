from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nas.baselines import mobilenet_v2_family
from nas.config import SearchConfig
from nas.run_dir import atomic_write_json, read_json, worker_is_dead, worker_token
from search_spaces import get_space, mobilenet_v2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"trials": 0}, "--trials must be a positive integer, but got 0"),
        ({"trials": -3}, "--trials must be a positive integer, but got -3"),
        ({"max_latency_ms": -1.0}, "--max-latency-ms must be a positive number"),
        ({"max_memory_kb": float("nan")}, "--max-memory-kb must be a positive number"),
        ({"objectives": "accuracy,speed"}, "unknown objective"),
        ({"objectives": "accuracy,accuracy"}, "lists an objective twice"),
        ({"objectives": ""}, "needs at least one"),
        ({"engine": "spark"}, "--engine must be one of"),
        ({"sampler": "cmaes"}, "--sampler must be one of"),
        ({"split_t": 0}, "--split-t must be an integer >= 1"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        SearchConfig(**kwargs)


def test_config_constraints_in_metric_units():
    config = SearchConfig(max_latency_ms=5, max_memory_kb=100, max_madds=1e6)
    assert config.constraints() == {"latency_ms": 5.0, "madds": 1e6, "peak_memory_bytes": 102400.0}
    assert SearchConfig.from_dict(config.to_dict()) == config
    assert SearchConfig(objectives="accuracy, madds").directions == {"accuracy": "max", "madds": "min"}


@pytest.mark.parametrize("name", ["proxy-digits", "mobilenetv2-imagenet"])
def test_baseline_family_is_in_space_and_ordered(name):
    space = get_space(name)
    family = mobilenet_v2_family(space)
    assert len(family) >= len(space.resolutions) * 2
    assert all(space.contains(spec) for _, spec in family)
    assert len({spec for _, spec in family}) == len(family)


def test_imagenet_family_contains_mobilenet_v2():
    space = get_space("mobilenetv2-imagenet")
    specs = {spec for _, spec in mobilenet_v2_family(space)}
    # Table 2 depths are the space's median depths except stage 3 (4 blocks)
    mnv2 = mobilenet_v2(1.0, 224)
    close = [
        s
        for s in specs
        if s.resolution == 224 and [st.channels for st in s.stages] == [st.channels for st in mnv2.stages]
    ]
    assert close and all(st.expansion == 6 for st in close[0].stages[1:])


def test_atomic_json_and_corrupt_read(tmp_path):
    path = tmp_path / "a.json"
    atomic_write_json(path, {"x": 1})
    assert read_json(path, "thing") == {"x": 1}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    path.write_text('{"x": ')
    with pytest.raises(ValueError, match="thing .* is corrupt"):
        read_json(path, "thing")


def test_worker_tokens():
    assert not worker_is_dead(worker_token())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    token = worker_token(child.pid)
    child.wait()
    assert worker_is_dead(token)
    assert not worker_is_dead("some-other-host:1:1")
    assert os.getpid() == int(worker_token().split(":")[1])
