"""Target profiles: every shipped profile parses, aliases resolve, bad names and bad TOML are clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeml.errors import ConfigError, InputError
from edgeml.export import targets

REQUIRED = {"jetson-orin-nano", "jetson-agx-orin", "jetson-xavier-nx", "x86-cpu", "x86-tvm", "rpi4", "cuda-gpu"}


def test_every_required_profile_is_shipped_and_parses():
    assert set(targets.list_profiles()) >= REQUIRED
    for name in targets.list_profiles():
        p = targets.load_profile(name)
        assert p.name == name and p.backend in targets.BACKENDS and "fp32" in p.precisions


def test_jetson_alias_is_the_default_jetson_profile():
    p = targets.load_profile("jetson")
    assert p.name == "jetson-orin-nano" and p.backend == "tensorrt"
    assert p.tensorrt["version"] and p.tensorrt["max_opset"] >= p.opset
    assert p.power["sensors"]


def test_tensorrt_profiles_carry_version_dla_and_workspace():
    xavier, agx = targets.load_profile("jetson-xavier-nx"), targets.load_profile("jetson-agx-orin")
    assert xavier.tensorrt["version"].startswith("8.") and xavier.opset <= xavier.tensorrt["max_opset"]
    assert agx.tensorrt["dla_core"] == 0 and agx.tensorrt["workspace_mib"] > 0


def test_tvm_profiles_have_target_dicts():
    rpi = targets.load_profile("rpi4")
    assert rpi.tvm["target"]["mtriple"] == "aarch64-linux-gnu" and rpi.tvm["target"]["mcpu"] == "cortex-a72"
    assert targets.load_profile("x86-tvm").tvm["host_runnable"] is True


def test_unknown_target_lists_the_valid_ones():
    with pytest.raises(InputError) as e:
        targets.load_profile("jetsn")
    msg = str(e.value)
    assert "jetsn" in msg and "jetson-orin-nano" in msg and "rpi4" in msg and "jetson (= jetson-orin-nano)" in msg


def test_toml_syntax_error_is_a_config_error_naming_the_file(tmp_path: Path):
    bad = tmp_path / "broken.toml"
    bad.write_text('name = "broken"\nbackend = "onnxruntime\nopset = 17\n')
    with pytest.raises(ConfigError) as e:
        targets.load_profile(bad)
    assert str(bad) in str(e.value) and "TOML syntax error" in str(e.value) and "line 2" in str(e.value)


@pytest.mark.parametrize("body, problem", [
    ('backend = "openvino"\nopset = 17\n', "unknown backend"),
    ('backend = "onnxruntime"\n', "lacks the field 'opset'"),
    ('backend = "tensorrt"\nopset = 19\n[tensorrt]\nversion = "8.5"\nmax_opset = 17\n', "exceeds TensorRT"),
    ('backend = "tvm"\nopset = 17\n', "[tvm] target"),
    ('backend = "onnxruntime"\nopset = 17\nprecisions = ["int4"]\n', "precisions"),
])
def test_invalid_profile_fields_are_config_errors(tmp_path: Path, body: str, problem: str):
    f = tmp_path / "p.toml"
    f.write_text(body)
    with pytest.raises(ConfigError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        targets.load_profile(f)


def test_profiles_are_found_in_the_installed_wheel_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """In a wheel, CMake installs the TOMLs to edgeml/export/targets/ beside targets.py: that folder wins."""
    pkg = tmp_path / "edgeml" / "export"
    (pkg / "targets").mkdir(parents=True)
    (pkg / "targets" / "only-one.toml").write_text('backend = "onnxruntime"\nopset = 17\n')
    monkeypatch.setattr(targets, "__file__", str(pkg / "targets.py"))
    assert targets.targets_dir() == pkg / "targets"
    assert targets.list_profiles() == ["only-one"]


def test_cmake_installs_the_profiles_into_the_package():
    root = Path(__file__).resolve().parents[2]
    assert "DESTINATION edgeml/export/targets" in (root / "CMakeLists.txt").read_text()
    assert sorted(p.stem for p in (root / "export" / "targets").glob("*.toml")) == targets.list_profiles()
