"""export_model end to end on test-only models: artefact folders per target, manifest, parity, bad inputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import export_tiny
import numpy as np
import pytest
import torch
from torch import nn

from edgeml.errors import CheckpointError, ExportError, InputError, MissingDependencyError
from edgeml.export import export_model
from edgeml.export.runtime import open_runtime
from edgeml.io import save_checkpoint, sha256_file


@pytest.fixture(scope="module")
def tvm_x86(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("x86tvm") / "art"
    return export_model(export_tiny.VIDEO, "x86-tvm", out, random_init=True)


def test_x86_tvm_folder_has_every_artefact(tvm_x86: Path):
    files = {str(p.relative_to(tvm_x86)) for p in tvm_x86.rglob("*") if p.is_file()}
    assert {"model.onnx", "model.int8.onnx", "model.safetensors", "manifest.json", "parity.json", "tvm/model.so",
            "stream/stream_step.onnx", "stream/stream_head.onnx"} <= files


def test_manifest_records_io_weights_versions_and_checksums(tvm_x86: Path):
    m = json.loads((tvm_x86 / "manifest.json").read_text())
    assert m["model"] == export_tiny.VIDEO and m["target"] == "x86-tvm" and m["opset"] == 17
    assert [i["name"] for i in m["inputs"]] == ["iframe", "mv", "residual"]
    assert m["inputs"][1] == {"name": "mv", "shape": [1, 3, 2, 8, 8], "dtype": "float32"}
    assert m["outputs"] == [{"name": "logits", "shape": [1, 4], "dtype": "float32"}]
    assert m["weights"]["source"] == "random-init"
    assert m["preprocessing"]["clip_len"] == 3 and m["preprocessing"]["size"] == [32, 32]
    assert m["tools"]["onnxruntime"] and m["tools"]["apache-tvm"] and m["tools"]["torch"]
    for rel, digest in m["checksums"].items():
        assert sha256_file(tvm_x86 / rel) == digest
    assert "manifest.json" not in m["checksums"]


def test_parity_report_passes_for_ort_tvm_and_streaming(tvm_x86: Path):
    rep = json.loads((tvm_x86 / "parity.json").read_text())
    s = rep["summary"]
    assert s["ort_fp32"]["pass"] and s["ort_fp32"]["max_rel"] <= 1e-4
    assert s["tvm_fp32"]["pass"] and s["tvm_fp32"]["max_rel"] <= 1e-4
    assert s["streaming"] is True
    assert rep["backends"]["ort-int8"]["random"]["samples"] == 4
    assert "random inputs" in rep["calibration"]  # no --data: said so, not hidden


def test_untuned_tvm_build_fuses_kernels(tvm_x86: Path):
    # tvm.compile runs no fusion for CPU targets; the build applies relax's CPU pipeline so elementwise chains (a
    # LIF step, conv + bias) become one kernel each
    from tvm import relax

    from edgeml.export import tvm as tvmx

    mod = tvmx._fuse(tvmx.relax_module(tvm_x86 / "model.onnx"), tvmx.make_target({"kind": "llvm"}))
    kernels = [gv.name_hint for gv, f in mod.functions.items() if not isinstance(f, relax.Function)]
    assert any(k.startswith("fused_conv2d") for k in kernels)
    assert any("greater" in k and "multiply" in k for k in kernels)  # a LIF step's elementwise ops in one kernel


def test_tvm_import_uses_fast_math_within_parity(tmp_path: Path):
    # exp/erf/softmax become TVM's vectorisable polynomials (libm's erff/expf are scalar calls), still within 1e-5
    import tvm
    from tvm import relax

    from edgeml.export import tvm as tvmx

    net = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 8), nn.Softmax(-1)).eval()
    x = torch.randn(4, 16) * 3
    torch.onnx.export(net, (x,), str(tmp_path / "m.onnx"), input_names=["x"], dynamo=False)
    mod = tvmx.relax_module(tmp_path / "m.onnx")
    text = mod.script()
    assert "R.erf" not in text and "R.nn.softmax" not in text and "R.exp" not in text
    target = tvmx.make_target({"kind": "llvm"})
    vm = relax.VirtualMachine(tvm.compile(tvmx._fuse(mod, target), target=target), tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x.numpy())).numpy()
    assert np.abs(out - net(x).detach().numpy()).max() <= 1e-5


def test_tvm_runtime_takes_aligned_inputs_without_copy_and_copies_the_rest(tvm_x86: Path):
    feeds = {k: v.numpy() for k, v in zip(("iframe", "mv", "residual"),
                                          export_tiny._video_inputs(export_tiny.TinySpiking(), 1), strict=True)}
    unaligned = {}
    for k, a in feeds.items():  # the same values at a 4-byte offset: TVM refuses such buffers zero-copy
        buf = np.empty(a.size + 1, np.float32)[1:].reshape(a.shape)
        buf[...] = a
        unaligned[k] = buf
    assert all(a.ctypes.data % 64 == 0 for a in feeds.values())  # torch's buffers: the zero-copy path
    assert all(a.ctypes.data % 64 for a in unaligned.values())
    rt = open_runtime(tvm_x86, "tvm")
    np.testing.assert_array_equal(rt.run(unaligned)[0], rt.run(feeds)[0])


def test_open_runtime_backends_agree(tvm_x86: Path):
    feeds = {k: v.numpy() for k, v in zip(("iframe", "mv", "residual"),
                                          export_tiny._video_inputs(export_tiny.TinySpiking(), 1), strict=True)}
    ref = open_runtime(tvm_x86, "torch").run(feeds)[0]
    for backend in ("ort", "tvm"):
        rt = open_runtime(tvm_x86, backend)
        assert rt.input_names == ["iframe", "mv", "residual"]
        assert np.abs(rt.run(feeds)[0] - ref).max() <= 1e-4 * np.abs(ref).max()
    fp32, int8 = open_runtime(tvm_x86, "ort").run(feeds)[0], open_runtime(tvm_x86, "ort-int8").run(feeds)[0]
    assert np.argmax(int8) == np.argmax(fp32)
    assert 0 < np.abs(int8 - fp32).max() <= 0.1 * np.abs(fp32).max()  # really quantized, yet close to fp32
    with pytest.raises(InputError, match="unknown backend"):
        open_runtime(tvm_x86, "openvino")
    with pytest.raises(InputError, match="no model.fp16.onnx"):
        open_runtime(tvm_x86, "ort-fp16")
    with pytest.raises((MissingDependencyError, InputError)):
        open_runtime(tvm_x86, "trt")


def test_jetson_export_writes_the_tensorrt_build_files(tmp_path: Path):
    out = export_model(export_tiny.VIDEO, "jetson", tmp_path / "j", random_init=True)
    m = json.loads((out / "manifest.json").read_text())
    assert m["target"] == "jetson-orin-nano" and m["target_requested"] == "jetson"
    sh = (out / "tensorrt" / "build_engine.sh").read_text()
    assert os.access(out / "tensorrt" / "build_engine.sh", os.X_OK)
    assert "--memPoolSize=workspace:2048" in sh and '"--int8 --fp16"' in sh and "../model.int8.onnx" in sh
    assert "--useDLACore" not in sh  # Orin Nano has no DLA
    assert (out / "model.fp16.onnx").is_file() and not (out / "tvm").exists()
    assert m["backends"]["tensorrt"]["op_check"]["blocking"] == []
    cfg = json.loads((out / "tensorrt" / "build_config.json").read_text())
    assert cfg["onnx"]["int8"] == "../model.int8.onnx" and cfg["tensorrt_version"] == "10.3"
    assert m["quantization"]["int8"]["activations"] == "int8 symmetric"  # TensorRT needs zero points of 0
    assert m["precision"] == {"recommended": None, "why": "the profile recommends none: measure on the device "
                                                          "(edgeml bench)"}  # and nothing measured here
    assert json.loads((out / "parity.json").read_text())["backends"]["ort-fp16"]["random"]["top1_agreement"] == 1.0


def test_rpi4_cross_compiles_an_aarch64_shared_library(tmp_path: Path):
    out = export_model(export_tiny.IMAGE, "rpi4", tmp_path / "rpi", random_init=True)
    elf = (out / "tvm" / "model.so").read_bytes()[:20]
    assert elf[:4] == b"\x7fELF" and int.from_bytes(elf[18:20], "little") == 183  # EM_AARCH64
    assert (out / "tvm" / "model.tar").is_file()
    rep = json.loads((out / "parity.json").read_text())
    assert "runs on the device" in rep["backends"]["tvm"]["skipped"]
    with pytest.raises(InputError, match="not this machine"):
        open_runtime(out, "tvm")


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


def test_op_tensorrt_cannot_take_is_named_and_nothing_is_written(tmp_path: Path):
    out = tmp_path / "det"
    with pytest.raises(ExportError) as e:
        export_model(export_tiny.DET, "jetson", out, random_init=True)
    assert "Det" in str(e.value) and "TensorRT 10.3" in str(e.value)
    assert not out.exists() and _siblings(out) == []
    # the same model exports where onnxruntime runs it
    assert (export_model(export_tiny.DET, "x86-cpu", out, random_init=True) / "model.onnx").is_file()


def test_existing_folder_needs_force_and_is_replaced_atomically(tmp_path: Path):
    out = tmp_path / "a"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    with pytest.raises(InputError, match="--force"):
        export_model(export_tiny.IMAGE, "x86-cpu", out, random_init=True)
    assert (out / "keep.txt").read_text() == "old"
    # a failing forced re-export leaves the old folder untouched
    with pytest.raises(ExportError):
        export_model(export_tiny.DET, "jetson", out, random_init=True, force=True)
    assert (out / "keep.txt").read_text() == "old" and _siblings(out) == []
    export_model(export_tiny.IMAGE, "x86-cpu", out, random_init=True, force=True)
    assert not (out / "keep.txt").exists() and (out / "manifest.json").is_file() and _siblings(out) == []


def test_weights_are_required_unless_random_init(tmp_path: Path):
    with pytest.raises(InputError, match="--random-init"):
        export_model(export_tiny.IMAGE, "x86-cpu", tmp_path / "w")
    assert not (tmp_path / "w").exists()


def test_unknown_model_lists_registered_models(tmp_path: Path):
    with pytest.raises(InputError, match="choose one of: .*test_export_cnn"):
        export_model("no_such_model", "x86-cpu", tmp_path / "u", random_init=True)


def test_checkpoint_of_another_model_is_refused(tmp_path: Path):
    ck = tmp_path / "other.safetensors"
    save_checkpoint(ck, {"model.x": torch.zeros(1)}, {"model": "something_else", "config": {}})
    with pytest.raises(CheckpointError, match="not 'test_export_cnn'"):
        export_model(export_tiny.IMAGE, "x86-cpu", tmp_path / "c", checkpoint=ck)


FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def fashion_cnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny CNN (4x4-pooled head) after 600 Adam steps on Fashion-MNIST: ~77 % test top-1 (chance: 10 %).

    Trained at one CPU thread, set here and restored after, with its own RNG streams: the result must not depend
    on the thread count or RNG state earlier tests left behind (at a leaked count it trained to 39 % once).
    """
    if not FASHION_MNIST.is_dir():
        pytest.skip("Fashion-MNIST not installed")
    from edgeml.data import open_image_dataset

    path = tmp_path_factory.mktemp("fashion") / "cnn.safetensors"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            ds = open_image_dataset("fashion-mnist", "train")
            model = export_tiny.TinyCNN(image_size=28, pool=4)
            opt = torch.optim.Adam(model.parameters(), lr=3e-3)
            loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True,
                                                 generator=torch.Generator().manual_seed(0))
            it = iter(loader)
            for _ in range(600):
                b = next(it)
                loss = torch.nn.functional.cross_entropy(model(b["image"]), b["label"])
                opt.zero_grad()
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    save_checkpoint(path, {f"model.{k}": v for k, v in model.state_dict().items()},
                    {"model": export_tiny.IMAGE, "config": {"image_size": 28, "pool": 4}})
    return path


def test_int8_on_real_data_is_within_tolerance_and_reported(tmp_path: Path, fashion_cnn: Path):
    ck = fashion_cnn
    out = export_model(export_tiny.IMAGE, "x86-cpu", tmp_path / "fm", checkpoint=ck, data="fashion-mnist",
                       calib_samples=64, parity_samples=64, eval_samples=400)
    rep = json.loads((out / "parity.json").read_text())
    acc = rep["accuracy_test_split"]
    assert acc["ort"]["samples"] == 400
    assert acc["torch"]["top1"] >= 70 and acc["ort"]["top1"] >= 70, (acc["torch"], acc["ort"])  # trained for real
    assert abs(acc["torch"]["top1"] - acc["ort"]["top1"]) <= 0.5  # fp32 ONNX classifies as PyTorch does
    drop = acc["ort"]["top1"] - acc["ort-int8"]["top1"]
    assert rep["summary"]["int8"]["pass"] and abs(drop) <= 1.5, (acc["ort"], acc["ort-int8"])
    assert rep["summary"]["ort_fp32"]["real_samples"] == 64 and rep["summary"]["ort_fp32"]["pass"]
    assert rep["calibration"] == "real samples (train split)"
    m = json.loads((out / "manifest.json").read_text())
    assert m["weights"]["source"] == "checkpoint" and m["weights"]["sha256"] == sha256_file(ck)
    assert m["classes"][0] == "t-shirt/top" and m["quantization"]["int8"]["format"] == "QDQ"


@pytest.mark.slow
def test_tuned_tvm_build_keeps_parity_and_records_the_budget(tmp_path: Path):
    lines: list[str] = []
    out = export_model(export_tiny.VIDEO, "x86-tvm", tmp_path / "art", random_init=True, tune_trials=16,
                       log=lines.append)
    manifest = json.loads((out / "manifest.json").read_text())
    tvm_info = manifest["backends"]["tvm"]
    assert tvm_info["tuned"] and tvm_info["tuning"]["tasks"] >= 1 and tvm_info["tuning"]["trials_per_task"] >= 8
    assert tvm_info["tuning"]["source"] == "tuned here" and (out / "tvm/tuning/database_workload.json").is_file()
    progress = [line for line in lines if line.startswith("[export] TVM tuning: tasks ")]
    assert progress and "best " in progress[-1] and "ms per run" in progress[-1]  # never silent
    summary = json.loads((out / "parity.json").read_text())["summary"]
    assert summary["tvm_fp32"]["pass"] and summary["tvm_fp32"]["max_rel"] <= 1e-4


def test_export_runs_the_named_steps_its_profile_asks_for_in_order(tmp_path: Path):
    lines: list[str] = []
    export_model(export_tiny.IMAGE, "x86-cpu", tmp_path / "o", random_init=True, log=lines.append)
    steps = [line.split("] ", 1)[1] for line in lines if line.startswith("[export] ")]
    assert [s.split(" ")[0] for s in steps[:-1]] == ["weights", "ONNX", "int8", "parity", "recommended", "manifest"]
    assert not any("fp16" in s or "TVM" in s or "TensorRT" in s for s in steps)  # x86-cpu asks for none of them


def test_manifest_says_which_precision_the_profile_recommends_and_why(tvm_x86: Path):
    p = json.loads((tvm_x86 / "manifest.json").read_text())["precision"]
    assert p["recommended"] == "fp32" and "int8" in p["why"] and "benchmarks/export_latency.py" in p["why"]
    here = p["measured_here"]  # fp32 vs int8 timed on this machine during the export, interleaved
    assert here["fp32_ms"] > 0 and here["int8_ms"] > 0 and here["faster"] in ("fp32", "int8")
    assert here["int8_vs_fp32"] == pytest.approx(here["int8_ms"] / here["fp32_ms"], rel=1e-2)
    assert isinstance(here["valid"], bool) and isinstance(here["reasons"], list)


def test_cpu_int8_quantizes_only_conv_gemm_matmul_with_uint8_activations(tvm_x86: Path):
    import onnx

    graph = onnx.load(str(tvm_x86 / "model.int8.onnx")).graph
    made_by = {o: n.op_type for n in graph.node for o in n.output}
    used_by: dict[str, set[str]] = {}
    for n in graph.node:
        for i in n.input:
            used_by.setdefault(i, set()).add(n.op_type)
    in_int8 = {n.op_type for n in graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
               and any(made_by.get(i) == "DequantizeLinear" for i in n.input)
               and any("QuantizeLinear" in used_by.get(o, ()) for o in n.output)}
    assert "Conv" in in_int8 and in_int8 <= {"Conv", "Gemm", "MatMul", "Relu", "Softmax"}  # Relu/Softmax: fused
    assert in_int8.isdisjoint({"Mul", "Add", "Sub", "Greater", "Cast"})  # no QDQ around the LIF ops
    inits = {t.name: t for t in graph.initializer}
    act_zero_points = [inits[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear"]
    assert act_zero_points and all(z.data_type == onnx.TensorProto.UINT8 for z in act_zero_points)
    q = json.loads((tvm_x86 / "manifest.json").read_text())["quantization"]["int8"]
    assert q["activations"] == "uint8 asymmetric" and q["ops"] == ["Conv", "Gemm", "MatMul"]


def test_model_options_reach_the_model_and_the_manifest(tmp_path: Path):
    out = export_model(export_tiny.IMAGE, "x86-cpu", tmp_path / "o", random_init=True,
                       overrides={"image_size": 24, "num_classes": 5})
    m = json.loads((out / "manifest.json").read_text())
    assert m["inputs"][0]["shape"] == [1, 1, 24, 24] and m["outputs"][0]["shape"] == [1, 5]
    assert m["config"]["image_size"] == 24 and m["weights"]["overrides"] == {"image_size": 24, "num_classes": 5}


@pytest.mark.parametrize("overrides, words", [
    ({"image_sise": 24}, ["unknown --set key 'image_sise'", "valid keys:", "image_size"]),
    ({"image_size": "big"}, ["--set key 'image_size'", "must be int", "'big'"]),
])
def test_bad_model_options_are_config_errors_before_anything_is_written(tmp_path: Path, overrides, words):
    from edgeml.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        export_model(export_tiny.IMAGE, "x86-cpu", tmp_path / "o", random_init=True, overrides=overrides)
    assert all(w in str(e.value) for w in words), str(e.value)
    assert not (tmp_path / "o").exists()


def test_tvm_records_of_another_model_schedule_nothing_and_say_so(tvm_x86: Path, tmp_path: Path):
    from edgeml.export import tvm as tvmx
    from edgeml.export.targets import load_profile

    records = tvmx.shipped_records("video_spiking", "x86-tvm")
    assert records is not None
    info = tvmx.build(tvm_x86 / "model.onnx", tmp_path / "tvm", load_profile("x86-tvm").tvm, records=records,
                      log=lambda s: None)
    t = info["tuning"]
    assert t["source"] == "shipped records" and t["tasks"] >= 1 and t["tasks_scheduled"] == 0 and not info["tuned"]
    assert (tmp_path / "tvm" / "tuning" / "database_tuning_record.json").is_file()  # the records used, kept


def test_tuning_progress_counts_tasks_trials_and_the_best_latency():
    from edgeml.export.tvm import TuningProgress

    p = TuningProgress(["fused_conv2d", "matmul"], [2.0, 1.0], trials_total=6)
    p.update(0, [[30e-6, 10e-6], None, [50e-6]])  # mean 20 us, a failed build, 50 us
    assert (p.tasks_done, p.trials_done, p.best_s[0]) == (1, 3, pytest.approx(20e-6))
    p.update(1, [[5e-6], [7e-6], [6e-6]])
    assert p.tuned_kernels_ms == pytest.approx(2 * 0.020 + 0.005)  # calls per run x best, in ms
    assert p.failed == 1
    assert p.line() == "tasks 2/2, trials 6/6 (1 failed), best matmul 5.0 us, tuned kernels 0.045 ms per run"
