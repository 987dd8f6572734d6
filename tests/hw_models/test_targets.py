from __future__ import annotations

import json

import numpy as np
import pytest

from hw_models import known_targets, load_target, predict_latency_ms, save_target, user_target_dir
from hw_models.targets import LatencyTarget, LookupTable, read_target, spec_part_keys
from search_spaces import get_space, mobilenet_v2


@pytest.fixture(autouse=True)
def user_dir(tmp_path, monkeypatch):
    folder = tmp_path / "targets"
    monkeypatch.setenv("INVRES_NAS_TARGETS", str(folder))
    return folder


def lookup_target(spec) -> LatencyTarget:
    """A small lookup-table target covering every part of ``spec`` but its last block."""
    keys = spec_part_keys(spec)
    parts = {kind: {key: 0.01 * (i + 1) for i, key in enumerate(ks)} for kind, ks in keys.items()}
    parts["blocks"].pop(keys["blocks"][-1])
    lookup = LookupTable(runtime="torch", threads=1, batch_size=1, overhead_ms=0.05, parts=parts, statistic="p10")
    pixel = load_target("pixel")
    return pixel.renamed("lut", lookup=lookup, provenance={"device": "test", "runtime": "torch", "date": "today"})


def test_shipped_targets_are_known():
    assert {"pixel", "host"} <= set(known_targets())
    assert user_target_dir().name == "targets"


def test_save_load_round_trip_op_model(user_dir):
    pixel = load_target("pixel")
    path = save_target(pixel, "myphone")
    assert path == user_dir / "myphone.json"
    assert "myphone" in known_targets()
    again = load_target("myphone")
    assert again.name == "myphone" and again.coefficients == pixel.coefficients and again.tile == pixel.tile
    spec = mobilenet_v2(0.75, 160)
    assert predict_latency_ms(spec, "myphone") == pytest.approx(predict_latency_ms(spec, "pixel"), rel=1e-12)
    assert again.to_dict() == {**pixel.to_dict(), "name": "myphone"}


def test_save_load_round_trip_lookup_table(tmp_path, rng):
    spec = get_space("proxy-digits").sample(rng)
    target = lookup_target(spec)
    path = target.save(tmp_path / "lut.json")
    again = read_target(path)
    assert again.lookup == target.lookup and again.lookup.statistic == "p10"
    with pytest.warns(UserWarning, match=r"1 of \d+ parts .* not in its lookup table"):
        assert again.predict(spec) == pytest.approx(target.predict(spec), rel=1e-9)
    rows = target.breakdown(spec)
    assert [src for _, _, src in rows].count("model") == 1  # the last block falls back to the op model
    assert rows[0] == ("overhead", 0.05, "table")
    assert target.predict(spec) == pytest.approx(sum(ms for _, ms, _ in rows))
    assert 0 < target.coverage(spec) < 1
    # the table is written one row per line
    text = path.read_text()
    assert '"columns": ["in_channels", "out_channels", "hidden"' in text
    assert json.loads(text)["lookup"]["overhead_ms"] == 0.05


def test_user_targets_come_before_shipped_ones_and_paths_first(tmp_path):
    pixel = load_target("pixel")
    doubled = pixel.renamed("pixel", scale=2.0)
    save_target(doubled)
    spec = mobilenet_v2()
    assert predict_latency_ms(spec, "pixel") == pytest.approx(2 * pixel.op_model_ms(spec))
    explicit = pixel.save(tmp_path / "explicit.json")
    assert predict_latency_ms(spec, str(explicit)) == pytest.approx(pixel.op_model_ms(spec))


def test_a_changed_file_is_reread(tmp_path):
    pixel = load_target("pixel")
    path = pixel.save(tmp_path / "t.json")
    first = load_target(path)
    path.write_text(pixel.renamed("t", scale=3.0).to_json())
    assert load_target(path).scale == 3.0 and first.scale == 1.0


def test_unknown_target_is_one_line_listing_known_ones_and_how_to_make_one():
    with pytest.raises(ValueError) as info:
        load_target("galaxy")
    msg = str(info.value)
    assert "\n" not in msg
    assert "unknown latency target 'galaxy'" in msg and "pixel" in msg and "host" in msg
    assert "hw_models.profile" in msg and "hw_models.calibrate" in msg
    with pytest.raises(ValueError, match="does not exist"):
        load_target("missing/phone.json")
    with pytest.raises(ValueError, match="must be a name"):
        load_target(3)


def good_dict() -> dict:
    return load_target("pixel").to_dict()


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d.update(format="something"), "'format' must be"),
        (lambda d: d.update(version=7), "'version' must be 1"),
        (lambda d: d.pop("provenance"), "'provenance' must be an object"),
        (lambda d: d["model"].update(tile=0), "model.tile"),
        (lambda d: d["model"].update(scale=-1), "model.scale must be > 0"),
        (lambda d: d["model"]["coefficients"].update(gemm_macs=-1e-7), "must be >= 0"),
        (lambda d: d["model"]["coefficients"].update(flops=1.0), "unknown feature"),
        (lambda d: d["model"]["coefficients"].update(layers="fast"), "finite number"),
        (lambda d: d.update(lookup={"runtime": "torch", "threads": 0}), "lookup.threads"),
        (lambda d: d.update(lookup={"runtime": "torch", "threads": 1, "statistic": "max"}), "lookup.statistic"),
        (
            lambda d: d.update(lookup={"runtime": "torch", "threads": 1, "stem": {"columns": ["a"], "rows": []}}),
            "lookup.stem.columns",
        ),
        (
            lambda d: d.update(
                lookup={
                    "runtime": "torch",
                    "threads": 1,
                    "stem": {"columns": ["resolution", "channels", "stride", "ms"], "rows": [[32, 16, 2, -1.0]]},
                }
            ),
            r"ms must be >= 0",
        ),
        (
            lambda d: d.update(
                lookup={
                    "runtime": "torch",
                    "threads": 1,
                    "stem": {"columns": ["resolution", "channels", "stride", "ms"], "rows": [[32, "16", 2, 1.0]]},
                }
            ),
            "wrong type",
        ),
    ],
)
def test_malformed_target_files_are_one_line_errors_naming_the_file(tmp_path, mutate, match):
    data = good_dict()
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=match) as info:
        load_target(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_invalid_json_and_not_an_object(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"format": ')
    with pytest.raises(ValueError, match=r"broken.json is not valid JSON .* line 1"):
        load_target(path)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="must be a JSON object"):
        load_target(path)


def test_bad_names_are_refused():
    with pytest.raises(ValueError, match="target name"):
        save_target(load_target("pixel"), "../escape")
    with pytest.raises(ValueError, match="target name"):
        save_target(load_target("pixel"), "phone.json")


def test_shipped_host_target_covers_the_default_space(rng):
    host = load_target("host")
    assert host.lookup is not None and host.lookup.threads == 1
    for key in ("device", "runtime", "date", "space", "fallback"):
        assert key in host.provenance
    space = get_space(host.provenance["space"])
    for _ in range(20):
        spec = space.sample(rng)
        assert host.coverage(spec) == 1.0
        assert host.predict(spec) > 0
    # outside the profiled space it falls back to the per-op model fitted to the same measurements
    assert 0 < host.coverage(mobilenet_v2(0.35, 64)) < 1
    with pytest.warns(UserWarning, match="profile your space"):
        assert np.isfinite(host.renamed("host-copy").predict(mobilenet_v2(0.35, 64)))


def test_a_target_profiled_on_another_cpu_warns_once(rng):
    from hw_models.measure import cpu_name

    spec = get_space("proxy-digits").sample(rng)
    pixel = load_target("pixel")
    here = pixel.renamed("here", provenance={"device": cpu_name(), "platform": "Linux"})
    there = pixel.renamed("there", provenance={"device": "Some Other CPU 9000", "platform": "Linux"})
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        here.predict(spec)  # profiled on this CPU: silent
        pixel.predict(spec)  # not profiled on a CPU (fitted to published phone numbers): silent
    with pytest.warns(UserWarning, match="profiled on Some Other CPU 9000, but this machine is"):
        there.predict(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        there.predict(get_space("proxy-digits").sample(rng))  # once per target


def test_lookup_keys_tell_apart_everything_that_changes_a_parts_cost():
    from search_spaces import ArchSpec

    base = ArchSpec.from_string("in32_c8_s2-ir_r2_k3_s2_e4_c16-head_c64_n10")
    variants = [
        "in32_c8_s2_nhs-ir_r2_k3_s2_e4_c16-head_c64_n10",  # stem activation
        "in32_c8_s2-ir_r2_k3_s2_e4_c16_nhs-head_c64_n10",  # block activation
        "in32_c8_s2-ir_r2_k3_s2_e4_c16_se0.25-head_c64_n10",  # squeeze-excitation
        "in32_c8_s2-ir_r2_k3_s2_e4_c16_se0.25_gsig-head_c64_n10",  # its gate
        "in32_c8_s2-ir_r2_k3_s2_e4_c16-head_c64_n10_nhs",  # head activation
        "in32_c8_s2-ir_r2_k3_s2_e4_c16-head_c64_n10_h48",  # the MobileNetV3 head
        "in32_c8_s2-ir_r2_k3_s2_e4_c16-head_c64_n10_h48_nhs",
    ]
    seen = {tuple(tuple(v) for v in spec_part_keys(base).values())}
    for text in variants:
        keys = tuple(tuple(v) for v in spec_part_keys(ArchSpec.from_string(text)).values())
        assert keys not in seen, text
        seen.add(keys)


def test_tables_written_before_the_mobilenet_v3_columns_still_load(tmp_path, rng):
    spec = get_space("proxy-digits").sample(rng)
    data = lookup_target(spec).to_dict()
    new = {"stem": ["activation"], "blocks": ["hidden_activation", "se_channels", "se_gate"],
           "head": ["activation"], "classifier": ["head_channels", "activation"]}  # fmt: skip
    for kind, columns in new.items():
        section = data["lookup"][kind]
        keep = [i for i, c in enumerate(section["columns"]) if c not in columns]
        section["columns"] = [section["columns"][i] for i in keep]
        section["rows"] = [[row[i] for i in keep] for row in section["rows"]]
    del data["model"]["ops"]
    old = LatencyTarget.from_dict(data)
    assert old.lookup.parts == lookup_target(spec).lookup.parts and old.ops == ()
