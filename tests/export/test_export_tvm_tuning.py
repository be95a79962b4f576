"""TVM tuning target: MetaSchedule sizes its candidates for the profile's `num-cores` (x86-tvm: the one thread per
stream edgeml runs TVM with), else for this machine's cores; the shipped records were measured for the profile."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeml.export import targets
from edgeml.export import tvm as tvmx


def _conv_onnx(path: Path) -> Path:
    import numpy as np

    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "conv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_tuning_target_takes_the_profiles_num_cores_else_this_machines(tmp_path: Path):
    mod = tvmx.relax_module(_conv_onnx(tmp_path / "conv.onnx"))
    target, _, tasks = tvmx._tasks(mod, {"kind": "llvm", "num-cores": 1})
    assert int(target.attrs["num-cores"]) == 1 and any("conv2d" in t.task_name for t in tasks)
    target, _, _ = tvmx._tasks(mod, {"kind": "llvm"})
    assert int(target.attrs["num-cores"]) == (os.cpu_count() or 1)
    assert targets.load_profile("x86-tvm").tvm.target["num-cores"] == 1
