"""measure_latency_ms and predict_latency_ms take the same architecture inputs; target-file errors."""

from __future__ import annotations

import pytest

from hw_models import load_target, measure_latency_ms, measure_many, predict_latency_ms
from search_spaces import mobilenet_v2, parse_arch

TINY = mobilenet_v2(0.35, 16, num_classes=10)


@pytest.fixture
def arch_file(tmp_path):
    path = tmp_path / "arch.json"
    TINY.to_json(path)
    return path


@pytest.mark.parametrize(
    "make",
    [
        lambda f: TINY,
        lambda f: TINY.to_string(),
        lambda f: TINY.to_dict(),
        lambda f: f,
        lambda f: str(f),
    ],
    ids=["spec", "compact-string", "dict", "path", "path-string"],
)
def test_measure_accepts_what_predict_accepts(make, arch_file):
    value = make(arch_file)
    assert parse_arch(value) == TINY
    assert predict_latency_ms(value) == predict_latency_ms(TINY)
    m = measure_latency_ms(value, warmup=0, repeats=2, number=1)
    assert m.median_ms > 0 and m.batch_size == 1
    assert len(measure_many([value, TINY], warmup=0, repeats=2, rounds=1)) == 2


@pytest.mark.parametrize("value", ["in16_garbage", "not a model"])
def test_measure_and_predict_reject_the_same_strings_alike(value):
    with pytest.raises(ValueError) as predicted:
        predict_latency_ms(value)
    with pytest.raises(ValueError) as measured:
        measure_latency_ms(value)
    assert str(measured.value) == str(predicted.value)


def test_a_target_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "binary.json"
    path.write_bytes(b"\xff\xfe\x00garbage\x80")
    with pytest.raises(ValueError) as info:
        load_target(path)
    assert str(info.value) == f"latency target file {path} is not UTF-8 text; is it a latency target .json file?"


@pytest.mark.parametrize("suffix", ["", "/", ".json"], ids=["folder", "folder-slash", "folder-named-json"])
def test_a_directory_as_target_says_so(tmp_path, suffix):
    folder = tmp_path / ("targets.json" if suffix == ".json" else "targets")
    folder.mkdir()
    text = str(folder) + ("/" if suffix == "/" else "")
    with pytest.raises(ValueError) as info:
        load_target(text)
    message = str(info.value)
    assert message.startswith(f"latency target {text} is a directory, but a target must be a .json file;")
    assert "does not exist" not in message and "\n" not in message
