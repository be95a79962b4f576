"""Target profiles: every shipped profile parses, aliases resolve, bad names and bad TOML are clear errors."""

from __future__ import annotations

import json
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
    assert p.tensorrt.version and p.tensorrt.max_opset >= p.opset
    assert p.power.sensors


def test_tensorrt_profiles_carry_version_dla_and_workspace():
    xavier, agx = targets.load_profile("jetson-xavier-nx"), targets.load_profile("jetson-agx-orin")
    assert xavier.tensorrt.version.startswith("8.") and xavier.opset <= xavier.tensorrt.max_opset
    assert agx.tensorrt.dla_core == 0 and agx.tensorrt.workspace_mib > 0


def test_tvm_profiles_have_target_dicts():
    rpi = targets.load_profile("rpi4")
    assert rpi.tvm.target["mtriple"] == "aarch64-linux-gnu" and rpi.tvm.target["mcpu"] == "cortex-a72"
    assert targets.load_profile("x86-tvm").tvm.host_runnable is True


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
    ('backend = "onnxruntime"\n', "lacks the key .opset."),
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


@pytest.mark.parametrize("body, words", [
    ('backend = "onnxruntime"\nopset = 17\nopsett = 18\n', ["unknown key 'opsett'"]),
    ('backend = "onnxruntime"\nopset = 17\n[onnxruntime]\nprovider = ["CPUExecutionProvider"]\n',
     ["unknown key 'onnxruntime.provider'"]),
    ('backend = "onnxruntime"\nopset = 17\n[gpu]\nx = 1\n', ["unknown key 'gpu'"]),
    ('backend = "onnxruntime"\nopset = "17"\n', ["key 'opset' must be int", "'17'"]),
    ('backend = "onnxruntime"\nopset = 17\nbatch = true\n', ["key 'batch' must be int"]),
    ('backend = "onnxruntime"\nopset = 17\nprecisions = "fp32"\n', ["key 'precisions' must be list[str]"]),
    ('backend = "tensorrt"\nopset = 17\n[tensorrt]\nversion = 10.3\n', ["key 'tensorrt.version' must be str"]),
    ('backend = "tensorrt"\nopset = 17\n[tensorrt]\nversion = "10.3"\ndla_core = "0"\n',
     ["key 'tensorrt.dla_core' must be int"]),
    ('backend = "tvm"\nopset = 17\n[tvm]\ntarget = "llvm"\n', ["key 'tvm.target' must be dict"]),
    ('backend = "onnxruntime"\nopset = 17\n[power]\nsensors = [1, 2]\n', ["key 'power.sensors' must be list[str]"]),
    ('backend = "onnxruntime"\nopset = 17\npower = 3\n', ["key 'power' must be a table"]),
    ('opset = 17\n', ["lacks the key 'backend'"]),
    ('backend = "tensorrt"\nopset = 17\n[tensorrt]\nmax_opset = 20\n', ["lacks the key 'tensorrt.version'"]),
    ('backend = "tvm"\nopset = 17\n[tvm]\nhost_runnable = true\n', ["lacks the key 'tvm.target'"]),
    ('backend = "onnxruntime"\nopset = 17\n[onnxruntime]\ngraph_optimization_level = "max"\n',
     ["graph_optimization_level", "'max'"]),
])
def test_unknown_wrongly_typed_or_missing_keys_are_one_line_config_errors(tmp_path: Path, body: str, words: list):
    f = tmp_path / "p.toml"
    f.write_text(body)
    with pytest.raises(ConfigError) as e:
        targets.load_profile(f)
    msg = str(e.value)
    assert str(f) in msg and "\n" not in msg and all(w in msg for w in words), msg


def test_profiles_are_typed_dataclasses():
    p = targets.load_profile("jetson-agx-orin")
    assert isinstance(p.tensorrt, targets.TensorRTSettings) and p.tvm is None
    assert isinstance(p.onnxruntime, targets.OnnxRuntimeSettings) and isinstance(p.power, targets.PowerSettings)
    assert p.precisions == ("fp32", "fp16", "int8") and isinstance(p.power.sensors, tuple)
    assert p.onnxruntime.graph_optimization_level == "all"  # the default when the profile has no [onnxruntime]


def test_the_profiles_graph_optimization_level_reaches_the_ort_session(tmp_path: Path):
    import export_tiny
    import onnxruntime as ort

    from edgeml.export import export_model
    from edgeml.export.runtime import open_runtime

    f = tmp_path / "basic-cpu.toml"
    f.write_text('backend = "onnxruntime"\nopset = 17\n[onnxruntime]\ngraph_optimization_level = "basic"\n')
    art = export_model(export_tiny.IMAGE, f, tmp_path / "art", random_init=True, simplify=False)
    level = open_runtime(art, "ort").session.get_session_options().graph_optimization_level
    assert level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    default = open_runtime(export_model(export_tiny.IMAGE, "x86-cpu", tmp_path / "all", random_init=True,
                                        simplify=False), "ort")
    assert default.session.get_session_options().graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL


def test_tvm_records_ship_inside_the_package_for_the_x86_tvm_profile():
    import subprocess

    import edgeml
    from edgeml.export.tvm import RECORD_FILES, shipped_records

    records = shipped_records("video_spiking", "x86-tvm")
    assert records is not None and records.is_relative_to(Path(edgeml.__file__).parent)  # wheel.packages ships it
    about = json.loads((records / "tuning.json").read_text())
    assert about["model"] == "video_spiking" and about["profile"] == "x86-tvm" and about["trials"] > 0
    root = Path(__file__).resolve().parents[2]
    if (root / ".git").exists():  # scikit-build-core leaves git-ignored files out of the wheel
        ignored = subprocess.run(["git", "check-ignore", *[str(records / f) for f in RECORD_FILES]], cwd=root,
                                 capture_output=True, text=True).stdout
        assert ignored == ""
    assert shipped_records("video_spiking", "rpi4") is None  # aarch64: cannot be measured here, none shipped


def test_shipped_tvm_records_cover_every_tuned_kernel_of_the_shipped_model(tmp_path: Path):
    # If the model's graph changes, its kernels no longer match the records: re-tune (see tuning.json) and re-ship.
    import torch
    from tvm.s_tir import meta_schedule as ms

    from edgeml.export import onnx as ox
    from edgeml.export import tvm as tvmx
    from edgeml.export.artefact import shipped_checkpoint
    from edgeml.registry import create_model, model_spec

    profile = targets.load_profile("x86-tvm")
    spec = model_spec("video_spiking")
    net = create_model("video_spiking", checkpoint=shipped_checkpoint("video_spiking")).eval()
    with torch.no_grad():
        ox.export_onnx(net, tuple(spec.example_inputs(net, profile.batch)), tmp_path / "m.onnx",
                       input_names=list(spec.input_names), output_names=list(spec.output_names), opset=profile.opset)
    _, _, tasks = tvmx._tasks(tvmx.relax_module(tmp_path / "m.onnx"), profile.tvm.target)
    db = ms.database.JSONDatabase(work_dir=str(tvmx.shipped_records("video_spiking", "x86-tvm")), allow_missing=False)
    missing = [t.task_name for t in tasks if not db.has_workload(t.dispatched[0])]
    assert tasks and missing == []
