"""Export parity on clips of a real 720x528 video that was never re-encoded (issue 19, criterion 4): the real XviD clip
through `edgeml.video.extract` at the shipped model's 64x64 (crop policy, model-resolution kernels), the shipped
video_spiking checkpoint in PyTorch against its exported ONNX graph under ONNX Runtime, checked as the export checks
parity (`edgeml.export.validate.parity`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REAL = Path(__file__).parent / "data" / "megamind_xvid_packed.avi"


def real_clips(net, input_names, resize: str = "crop") -> tuple[list[dict[str, np.ndarray]], dict]:
    """Batch-1 feeds: per GOP, its I-frame and first clip_len P-steps, as the model reads them (float32)."""
    from edgeml.video import extract

    cfg = net.config
    tensors, meta = extract(REAL, size=(cfg["height"], cfg["width"]), grid=cfg["grid"], accumulate=True,
                            resize=resize)
    feeds = []
    for g in range(len(tensors["iframe"])):
        steps = np.flatnonzero(tensors["gop_index"] == g)[: cfg["clip_len"]]
        if len(steps) == cfg["clip_len"]:
            item = {"iframe": tensors["iframe"][g], "mv": tensors["mv"][steps], "residual": tensors["residual"][steps]}
            feeds.append({k: item[k][None].astype(np.float32) for k in input_names})
    return feeds, meta


def test_shipped_checkpoint_keeps_export_parity_on_clips_of_a_real_video(tmp_path):
    import torch

    from edgeml.export import validate
    from edgeml.export.artefact import PARITY_REL_TOL, shipped_checkpoint
    from edgeml.export.onnx import export_onnx
    from edgeml.export.runtime import OrtRuntime, TorchRuntime
    from edgeml.registry import create_model, model_spec

    ckpt = shipped_checkpoint("video_spiking")
    if ckpt is None:
        pytest.skip("no shipped video_spiking checkpoint in this checkout")
    net = create_model("video_spiking", checkpoint=ckpt).eval()
    spec = model_spec("video_spiking")
    feeds = []
    for policy in ("crop", "stretch"):  # the real clip has one GOP of clip_len P-frames: a clip per resize policy
        clips, meta = real_clips(net, spec.input_names, policy)
        assert meta["resize"]["native_size"] == [528, 720] and not meta["resize"]["identity"]  # the original stream
        assert meta["codec"] == "mpeg4" and clips, "the real clip has no GOP with clip_len P-frames"
        feeds += clips
    example = tuple(torch.from_numpy(feeds[0][k]) for k in spec.input_names)
    with torch.no_grad():
        export_onnx(net, example, tmp_path / "model.onnx", input_names=list(spec.input_names),
                    output_names=list(spec.output_names), opset=17)
    report = validate.parity(TorchRuntime(net, spec.input_names).run, OrtRuntime(tmp_path / "model.onnx").run, feeds)
    assert report["samples"] == len(feeds) and report["compared"] == len(feeds)
    assert report["max_abs"] <= 1e-4 and report["max_rel"] <= PARITY_REL_TOL, report
    assert report["top1_agreement"] == 1.0, report
