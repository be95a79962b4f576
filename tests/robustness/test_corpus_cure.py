"""Bad inputs through `edgeml cure`: each is one stderr line, exit 2, inputs byte-identical, nothing written.

Families: hostile ONNX external-data locations (sentinels live in tmp_path/"outside"), outputs that are, hold
or lie inside an input (with --force), arguments refused at parse time, and corrupt or foreign model files.
Each family has a positive control: the same setup with the hostility removed succeeds.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from .harness import Guard, assert_clean_error, run_cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cure"))
from cure_fixtures import TEXT_WIDTH, export_unet_onnx, small_unet, tiny_text_encoder_dir  # noqa: E402

KV_KEY = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    """Pristine inputs built once: a text encoder folder, an ONNX UNet with weights.pb, a UNet safetensors."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("cure_assets")
    unet = small_unet()
    save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, root / "unet.safetensors")
    unet.save_pretrained(root / "pipe" / "unet")
    return {"text": tiny_text_encoder_dir(root / "text"), "onnx": export_unet_onnx(unet, root / "onnx").parent,
            "safetensors": root / "unet.safetensors", "pipe": root / "pipe"}


def _cure(model: Path, out: Path, *extra: str, text: Path | None = None) -> list[str]:
    argv = ["cure", "--model", str(model), "--forget", "circle", "--out", str(out)]
    return argv + (["--text-encoder", str(text)] if text else []) + list(extra)


def _check(tmp_path: Path, argv: list[str], contains: str) -> None:
    guard = Guard(tmp_path)
    outcome = run_cli(argv)
    assert_clean_error(outcome, contains=contains)
    guard.assert_untouched()


# --- ONNX external data: paths read from the model file are confined to its folder -----------------------------

def _onnx_copy(tmp_path: Path, assets: dict) -> Path:
    """work/model/{model.onnx, weights.pb} plus tmp_path/outside/weights.pb, a sentinel with the same bytes."""
    model_dir = tmp_path / "work" / "model"
    shutil.copytree(assets["onnx"], model_dir)
    (tmp_path / "outside").mkdir()
    shutil.copy(model_dir / "weights.pb", tmp_path / "outside" / "weights.pb")
    return model_dir / "model.onnx"


def _set_external(onnx_path: Path, change: Callable[[str, dict], dict]) -> None:
    """Rewrite every external initializer's key/value entries with `change(name, entries)`."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            entries = change(t.name, {e.key: e.value for e in t.external_data})
            del t.external_data[:]
            for k, v in entries.items():
                t.external_data.add(key=k, value=v)
    onnx_path.write_bytes(model.SerializeToString())


def _kv_initializer(onnx_path: Path) -> str:
    import onnx

    from edgeml.cure.onnx import find_text_kv_weights

    return find_text_kv_weights(onnx.load(str(onnx_path), load_external_data=False))[0].initializer


def _relocate(location: str):
    return lambda name, e: {**e, "location": location}


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlinked_file", "symlinked_folder"])
def test_external_data_outside_the_model_folder_is_refused_and_untouched(tmp_path, assets, how):
    src = _onnx_copy(tmp_path, assets)
    (src.parent / "weights.pb").unlink()
    if how == "dotdot":
        _set_external(src, _relocate("../../outside/weights.pb"))
    elif how == "absolute":
        _set_external(src, _relocate(str(tmp_path / "outside" / "weights.pb")))
    elif how == "symlinked_file":
        (src.parent / "weights.pb").symlink_to(tmp_path / "outside" / "weights.pb")
    else:
        (src.parent / "sub").symlink_to(tmp_path / "outside", target_is_directory=True)
        _set_external(src, _relocate("sub/weights.pb"))
    # Refused where the location is read (the message names the initializer), not only where the copy is written.
    _check(tmp_path, _cure(src, tmp_path / "work" / "out", text=assets["text"]),
           "external data location of initializer")


def test_external_data_pointing_at_the_graph_file_is_refused(tmp_path, assets):
    src = _onnx_copy(tmp_path, assets)
    _set_external(src, _relocate("model.onnx"))
    _check(tmp_path, _cure(src, tmp_path / "work" / "out", text=assets["text"]), "graph file")


@pytest.mark.parametrize("entries,contains", [
    ({"offset": "-4"}, "offset"), ({"offset": "1e3"}, "offset"), ({"length": "abc"}, "length"),
    ({"length": " 12"}, "length"), ({"length": str(1 << 62)}, "ends past"), ({"offset": str(1 << 40)}, "ends past"),
    ({"length": "4"}, "need"), ({"location": ""}, "external data")])
def test_hostile_external_data_fields_are_refused(tmp_path, assets, entries, contains):
    src = _onnx_copy(tmp_path, assets)
    kv = _kv_initializer(src)
    _set_external(src, lambda name, e: {**e, **entries} if name == kv else e)
    _check(tmp_path, _cure(src, tmp_path / "work" / "out", text=assets["text"]), contains)


def test_onnx_control_the_untouched_copy_is_edited_inside_out(tmp_path, assets):
    """Also crash-safe: the temp folder a killed earlier run left beside --out is removed by this run."""
    src = _onnx_copy(tmp_path, assets)
    stale = tmp_path / "work" / ".out.k1ll3d.tmp"
    (stale / "unet").mkdir(parents=True)
    guard = Guard(tmp_path, tmp_path / "work" / "out", stale)
    outcome = run_cli(_cure(src, tmp_path / "work" / "out", text=assets["text"]))
    assert outcome.rc == 0, outcome.stderr
    guard.assert_untouched()
    assert not stale.exists()
    out = tmp_path / "work" / "out"
    assert sorted(p.name for p in out.iterdir()) == ["cure_report.json", "model.onnx", "weights.pb"]
    assert (out / "weights.pb").read_bytes() != (src.parent / "weights.pb").read_bytes()


# --- inputs are sacred: --force never deletes or rewrites an input ----------------------------------------------

def _work_copy(tmp_path: Path, assets: dict, name: str) -> Path:
    dst = tmp_path / "work" / Path(assets[name]).name
    dst.parent.mkdir(parents=True, exist_ok=True)
    (shutil.copytree if Path(assets[name]).is_dir() else shutil.copy)(assets[name], dst)
    return dst


def test_out_is_the_folder_holding_the_onnx_file(tmp_path, assets):
    src = _onnx_copy(tmp_path, assets)
    _check(tmp_path, _cure(src, src.parent, "--force", text=assets["text"]), "holds the input")


@pytest.mark.parametrize("where,contains", [("itself", "is the input"), ("parent", "holds the input"),
                                            ("unet", "holds the input"), ("inside_new", "inside the input")])
def test_out_on_a_diffusers_pipeline_is_refused_even_with_force(tmp_path, assets, where, contains):
    pipe = _work_copy(tmp_path, assets, "pipe")
    out = {"itself": pipe, "parent": pipe.parent, "unet": pipe / "unet", "inside_new": pipe / "erased"}[where]
    _check(tmp_path, _cure(pipe, out, "--force", text=assets["text"]), contains)


def test_out_is_the_text_encoder_folder(tmp_path, assets):
    pipe = _work_copy(tmp_path, assets, "pipe")
    text = _work_copy(tmp_path, assets, "text")
    _check(tmp_path, _cure(pipe, text, "--force", text=text), "is the input")


@pytest.mark.parametrize("alias", ["same_path", "hard_link", "symlink"])
def test_out_aliasing_the_safetensors_input_is_refused(tmp_path, assets, alias):
    src = _work_copy(tmp_path, assets, "safetensors")
    out = tmp_path / "work" / "alias.safetensors"
    if alias == "same_path":
        out = src
    elif alias == "hard_link":
        os.link(src, out)
    else:
        out.symlink_to(src)
    _check(tmp_path, _cure(src, out, "--force", text=assets["text"]), "is the input")


def test_an_existing_report_beside_a_safetensors_output_is_kept(tmp_path, assets):
    src = _work_copy(tmp_path, assets, "safetensors")
    (tmp_path / "work" / "new.cure.json").write_text("the user's notes")
    _check(tmp_path, _cure(src, tmp_path / "work" / "new.safetensors", text=assets["text"]), "already exists")


def test_safetensors_control_writes_only_the_output_and_its_report(tmp_path, assets):
    src = _work_copy(tmp_path, assets, "safetensors")
    out = tmp_path / "work" / "new.safetensors"
    stale = [tmp_path / "work" / ".new.safetensors.k1ll3d.tmp", tmp_path / "work" / ".new.cure.json.k1ll3d.tmp"]
    for path in stale:
        path.write_bytes(b"half a file from a killed run")
    guard = Guard(tmp_path, out, tmp_path / "work" / "new.cure.json", *stale)
    outcome = run_cli(_cure(src, out, text=assets["text"]))
    assert outcome.rc == 0, outcome.stderr
    guard.assert_untouched()
    assert not any(path.exists() for path in stale)
    assert json.loads((tmp_path / "work" / "new.cure.json").read_text())["tensors_edited"] == 8


# --- arguments are checked where they are parsed ----------------------------------------------------------------

@pytest.mark.parametrize("args,contains", [
    (["--alpha", "0"], "--alpha"), (["--alpha", "-1"], "--alpha"), (["--alpha", "nan"], "--alpha"),
    (["--alpha", "inf"], "--alpha"), (["--alpha", "two"], "--alpha"), (["--forget", ""], "--forget"),
    (["--retain", "  "], "--retain"), (["--template", "{} and {}"], "--template"),
    (["--template", "a {x} of {}"], "--template"), (["--template", ""], "--template"),
    (["--text-input", ""], "--text-input"), (["--text-encoder", "missing_dir"], "--text-encoder"),
    (["--tokenizer", "missing_dir"], "--tokenizer"), (["--method", "magic"], "--method"),
    (["--format", "pt"], "--format")])
def test_bad_arguments_are_refused_at_parse_time(tmp_path, assets, args, contains):
    src = _work_copy(tmp_path, assets, "safetensors")
    _check(tmp_path, _cure(src, tmp_path / "work" / "new.safetensors", *args, text=assets["text"]), contains)


@pytest.mark.parametrize("which", ["model", "out_empty", "out_under_a_file"])
def test_bad_model_and_out_paths_are_refused_at_parse_time(tmp_path, assets, which):
    src = _work_copy(tmp_path, assets, "safetensors")
    model, out = src, str(tmp_path / "work" / "new.safetensors")
    if which == "model":
        model = tmp_path / "work" / "nope.safetensors"
    elif which == "out_empty":
        out = ""
    else:
        out = str(src / "new.safetensors")
    argv = ["cure", "--model", str(model), "--forget", "circle", "--out", out, "--text-encoder", str(assets["text"])]
    _check(tmp_path, argv, "--model" if which == "model" else "--out")


# --- model files are checked where they are read ----------------------------------------------------------------

def _safetensors(header: dict | bytes, data: bytes = b"", length: int | None = None) -> bytes:
    head = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(head) if length is None else length) + head + data


KV = np.ones((4, TEXT_WIDTH), np.float32).tobytes()
GOOD = {KV_KEY: {"dtype": "F32", "shape": [4, TEXT_WIDTH], "data_offsets": [0, len(KV)]}}

HOSTILE_SAFETENSORS = {
    "huge_header_length": (_safetensors(GOOD, KV, length=1 << 62), "header length"),
    "header_past_end": (_safetensors(GOOD, KV, length=len(json.dumps(GOOD)) + len(KV) + 1), "header length"),
    "shorter_than_8_bytes": (b"\x10\x00", "shorter"),
    "header_not_json": (_safetensors(b"{not json" + b" " * 20, KV), "JSON"),
    "header_not_utf8": (_safetensors(b'{"\xff\xfe": 1}', KV), "JSON"),
    "header_a_list": (_safetensors([1, 2], KV), "JSON object"),
    "offsets_past_data": (_safetensors({KV_KEY: {**GOOD[KV_KEY], "data_offsets": [0, 10 * len(KV)]}}, KV),
                          "data_offsets"),
    "offsets_negative": (_safetensors({KV_KEY: {**GOOD[KV_KEY], "data_offsets": [-8, len(KV) - 8]}}, KV),
                         "data_offsets"),
    "offsets_reversed": (_safetensors({KV_KEY: {**GOOD[KV_KEY], "data_offsets": [len(KV), 0]}}, KV),
                         "data_offsets"),
    "offsets_strings": (_safetensors({KV_KEY: {**GOOD[KV_KEY], "data_offsets": ["0", "8"]}}, KV), "data_offsets"),
    "dtype_unknown": (_safetensors({KV_KEY: {**GOOD[KV_KEY], "dtype": "F33"}}, KV), "dtype"),
    "dtype_integer_kv": (_safetensors({KV_KEY: {**GOOD[KV_KEY], "dtype": "I32"}}, KV), "not supported"),
    "shape_not_matching_bytes": (_safetensors({KV_KEY: {**GOOD[KV_KEY], "shape": [8, TEXT_WIDTH]}}, KV), "shape"),
    "shape_negative": (_safetensors({KV_KEY: {**GOOD[KV_KEY], "shape": [-4, -TEXT_WIDTH]}}, KV), "shape"),
    "shape_overflowing": (_safetensors({KV_KEY: {**GOOD[KV_KEY], "shape": [1 << 62, 1 << 62]}}, KV), "shape"),
    "shape_3d": (_safetensors({KV_KEY: {**GOOD[KV_KEY], "shape": [2, 2, TEXT_WIDTH]}}, KV), "2-D"),
    "overlapping_kv": (_safetensors({**GOOD, KV_KEY.replace("to_k", "to_v"): GOOD[KV_KEY]}, KV), "overlaps"),
    "metadata_not_strings": (_safetensors({"__metadata__": {"edgeml": {"model": 1}}, **GOOD}, KV), "__metadata__"),
    "metadata_a_list": (_safetensors({"__metadata__": ["x"], **GOOD}, KV), "__metadata__"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_SAFETENSORS))
def test_hostile_safetensors_headers_are_one_line_errors(tmp_path, assets, case):
    blob, contains = HOSTILE_SAFETENSORS[case]
    src = tmp_path / "work" / "unet.safetensors"
    src.parent.mkdir()
    src.write_bytes(blob)
    _check(tmp_path, _cure(src, tmp_path / "work" / "new.safetensors", text=assets["text"]), contains)


@pytest.mark.parametrize("case", ["huge_header_length", "header_a_list", "header_not_utf8", "metadata_a_list",
                                  "metadata_not_strings"])
def test_hostile_safetensors_without_a_text_encoder_are_one_line_errors(tmp_path, case):
    """The tiny_t2i metadata sniff reads the header before any text encoder: it must not trust it either."""
    blob, contains = HOSTILE_SAFETENSORS[case]
    src = tmp_path / "work" / "unet.safetensors"
    src.parent.mkdir()
    src.write_bytes(blob)
    _check(tmp_path, _cure(src, tmp_path / "work" / "new.safetensors"), contains)


def test_a_hostile_unet_file_inside_a_diffusers_folder_is_an_error(tmp_path, assets):
    pipe = _work_copy(tmp_path, assets, "pipe")
    weights = pipe / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(HOSTILE_SAFETENSORS["shape_not_matching_bytes"][0])
    _check(tmp_path, _cure(pipe, tmp_path / "work" / "out", text=assets["text"]), "shape")


@pytest.mark.parametrize("layout,contains", [("empty_unet", "no UNet weights"), ("pickled_unet", "pickled"),
                                             ("no_unet", "no UNet weights")])
def test_a_diffusers_folder_without_unet_weights_is_an_error(tmp_path, assets, layout, contains):
    pipe = tmp_path / "work" / "pipe"
    (pipe / "unet").mkdir(parents=True)
    if layout == "pickled_unet":
        (pipe / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"not unpickled")
    elif layout == "no_unet":
        (pipe / "unet").rmdir()
        (pipe / "readme.txt").write_text("hello")
    argv = _cure(pipe, tmp_path / "work" / "out", "--format", "diffusers", text=assets["text"])
    _check(tmp_path, argv, contains)


def test_a_text_encoder_folder_that_is_not_one_is_an_error(tmp_path, assets):
    pipe = _work_copy(tmp_path, assets, "pipe")
    text = tmp_path / "work" / "text"
    text.mkdir()
    (text / "config.json").write_text('{"model_type": "no-such-architecture"}')
    _check(tmp_path, _cure(pipe, tmp_path / "work" / "out", text=text), "text encoder")


def test_an_onnx_text_encoder_that_is_not_onnx_is_an_error(tmp_path, assets):
    pipe = _work_copy(tmp_path, assets, "pipe")
    text = tmp_path / "work" / "text.onnx"
    text.write_bytes(b"\x08\x07\x12\xff\xff\xff\xff\x0fnot an ONNX text encoder")
    _check(tmp_path, _cure(pipe, tmp_path / "work" / "out", "--tokenizer", str(assets["text"]), text=text),
           "cannot load the text encoder")


def test_a_tokenizer_folder_that_is_not_one_is_an_error(tmp_path, assets):
    pipe = _work_copy(tmp_path, assets, "pipe")
    text = tmp_path / "work" / "text.onnx"
    text.write_bytes(b"never reached")
    (tmp_path / "work" / "tok").mkdir()
    (tmp_path / "work" / "tok" / "tokenizer_config.json").write_text("{broken")
    _check(tmp_path, _cure(pipe, tmp_path / "work" / "out", "--tokenizer", str(tmp_path / "work" / "tok"), text=text),
           "tokenizer")


def _tiny_onnx(path: Path, weight: np.ndarray, *, cycle: bool = False) -> Path:
    """encoder_hidden_states [1, 3, d] @ W: one cross-attention K/V weight (through an Identity cycle if asked)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    d = weight.shape[0]
    ehs = helper.make_tensor_value_info("encoder_hidden_states", TensorProto.FLOAT, [1, 3, d])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, None)
    nodes = [helper.make_node("MatMul", ["encoder_hidden_states", "w_used" if cycle else "w"], ["out"], name="kv")]
    if cycle:
        nodes += [helper.make_node("Identity", ["w_loop"], ["w_used"], name="a"),
                  helper.make_node("Identity", ["w_used"], ["w_loop"], name="b")]
    graph = helper.make_graph(nodes, "g", [ehs], [out], [numpy_helper.from_array(weight, "w")])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(helper.make_model(graph).SerializeToString())
    assert onnx.load(str(path)).graph.node  # a parseable model: the hostility is in its content
    return path


@pytest.mark.parametrize("case,contains", [("integer_weight", "data type"), ("3d_weight", "2-D"),
                                           ("identity_cycle", "cycle"), ("not_onnx", "not a readable ONNX")])
def test_malformed_onnx_models_are_one_line_errors(tmp_path, assets, case, contains):
    path = tmp_path / "work" / "m" / "model.onnx"
    w = np.ones((TEXT_WIDTH, 8), np.float32)
    if case == "integer_weight":
        _tiny_onnx(path, w.astype(np.int64))
    elif case == "3d_weight":
        _tiny_onnx(path, np.ones((TEXT_WIDTH, 2, 4), np.float32))
    elif case == "identity_cycle":
        _tiny_onnx(path, w, cycle=True)
    else:
        path.parent.mkdir(parents=True)
        path.write_bytes(b"\x08\x07\x12\xff\xff\xff\xff\x0fthis is not an ONNX model")
    _check(tmp_path, _cure(path, tmp_path / "work" / "out", text=assets["text"]), contains)


def test_tiny_onnx_control_is_edited(tmp_path, assets):
    path = _tiny_onnx(tmp_path / "work" / "m" / "model.onnx", np.ones((TEXT_WIDTH, 8), np.float32))
    outcome = run_cli(_cure(path, tmp_path / "work" / "out", text=assets["text"]))
    assert outcome.rc == 0, outcome.stderr


# --- concept files: read as text, checked, never an output --------------------------------------------------------

@pytest.mark.parametrize("content,contains", [
    (None, "concept file not found"), (b"\xff\xfe\x00broken", "not UTF-8"), (b"# only a comment\n\n  \n", "no concept"),
    (b"van gogh\x00\n", "NUL"), (b"x" * ((1 << 20) + 1), "larger than")])
def test_bad_concept_files_are_one_line_errors(tmp_path, assets, content, contains):
    src = _work_copy(tmp_path, assets, "safetensors")
    concepts = tmp_path / "work" / "forget.txt"
    if content is not None:
        concepts.write_bytes(content)
    argv = ["cure", "--model", str(src), "--forget", f"@{concepts}", "--out",
            str(tmp_path / "work" / "new.safetensors"), "--text-encoder", str(assets["text"])]
    _check(tmp_path, argv, contains)


def test_out_that_is_the_concept_file_is_refused_even_with_force(tmp_path, assets):
    src = _work_copy(tmp_path, assets, "safetensors")
    concepts = tmp_path / "work" / "forget.safetensors"  # an odd name, but the user's file all the same
    concepts.write_text("circle\nred\n")
    argv = ["cure", "--model", str(src), "--forget", f"@{concepts}", "--out", str(concepts), "--force",
            "--text-encoder", str(assets["text"])]
    _check(tmp_path, argv, "is the input")


def test_concept_file_control_erases_every_listed_concept(tmp_path, assets):
    src = _work_copy(tmp_path, assets, "safetensors")
    (tmp_path / "work" / "forget.txt").write_text("\ufeff# shapes\ncircle\n\nsquare  \n")
    out = tmp_path / "work" / "new.safetensors"
    guard = Guard(tmp_path, out, tmp_path / "work" / "new.cure.json")
    outcome = run_cli(_cure(src, out, "--forget", str(tmp_path / "work" / "forget.txt"), text=assets["text"]))
    assert outcome.rc == 0, outcome.stderr
    guard.assert_untouched()
    assert json.loads((tmp_path / "work" / "new.cure.json").read_text())["forget"] == ["circle", "circle", "square"]


# --- single-file checkpoints (LDM layout): their text encoders are read through the checked header ---------------

def _single_file(path: Path, *, damage: str | None = None) -> Path:
    """model.diffusion_model K/V (context 64) + an SD 1.x text encoder under cond_stage_model.transformer."""
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    enc = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                       num_attention_heads=1, max_position_embeddings=77))
    tensors = {f"cond_stage_model.transformer.text_model.{k.removeprefix('text_model.')}": v
               for k, v in enc.state_dict().items() if not k.endswith("position_ids")}
    unet = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2."
    tensors.update({unet + "to_k.weight": torch.randn(8, 64), unet + "to_v.weight": torch.randn(8, 64),
                    unet + "to_q.weight": torch.randn(8, 8)})
    layer1 = "cond_stage_model.transformer.text_model.encoder.layers.1."
    if damage == "missing_tensor":
        del tensors[layer1 + "mlp.fc2.weight"]
    elif damage == "layer_gap":
        tensors = {k.replace(".layers.1.", ".layers.5."): v for k, v in tensors.items()}
    elif damage == "wrong_shape":
        tensors[layer1 + "mlp.fc1.weight"] = torch.randn(128, 32)
    elif damage == "integer_embedding":
        key = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
        tensors[key] = tensors[key].to(torch.int32)
    elif damage == "mixed_context":
        tensors[unet.replace("input_blocks.1", "input_blocks.2") + "to_k.weight"] = torch.randn(8, 32)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, path)
    return path


@pytest.mark.parametrize("damage,contains", [
    ("missing_tensor", "does not fit a CLIP text model"), ("layer_gap", "not numbered"),
    ("wrong_shape", "does not fit a CLIP text model"), ("integer_embedding", "incomplete"),
    ("mixed_context", "different widths")])
def test_broken_single_file_checkpoints_are_one_line_errors(tmp_path, damage, contains):
    src = _single_file(tmp_path / "work" / "model.safetensors", damage=damage)
    _check(tmp_path, ["cure", "--model", str(src), "--forget", "circle", "--out",
                      str(tmp_path / "work" / "new.safetensors")], contains)


def test_single_file_text_encoder_of_the_wrong_width_is_a_one_line_error(tmp_path, assets):
    src = _single_file(tmp_path / "work" / "model.safetensors")
    _check(tmp_path, _cure(src, tmp_path / "work" / "new.safetensors", text=assets["text"]), "does not match")


def test_single_file_control_uses_its_own_text_encoder(tmp_path):
    src = _single_file(tmp_path / "work" / "model.safetensors")
    out = tmp_path / "work" / "new.safetensors"
    guard = Guard(tmp_path, out, tmp_path / "work" / "new.cure.json")
    outcome = run_cli(["cure", "--model", str(src), "--forget", "circle", "--out", str(out)])
    assert outcome.rc == 0, outcome.stderr
    guard.assert_untouched()
    report = json.loads((tmp_path / "work" / "new.cure.json").read_text())
    assert report["family"]["name"] == "sd1" and report["tensors_edited"] == 2
    assert report["family"]["encoders"][0]["source"] == "model.safetensors:cond_stage_model.transformer."


@pytest.mark.parametrize("report", [b"{not json", b'["a", 1]', b'{"edits": "many"}', b"\xff" * 64])
def test_a_hostile_earlier_report_is_ignored_not_trusted(tmp_path, assets, report):
    src = _work_copy(tmp_path, assets, "safetensors")
    (tmp_path / "work" / "unet.cure.json").write_bytes(report)
    out = tmp_path / "work" / "new.safetensors"
    guard = Guard(tmp_path, out, tmp_path / "work" / "new.cure.json")
    outcome = run_cli(_cure(src, out, text=assets["text"]))
    assert outcome.rc == 0, outcome.stderr
    guard.assert_untouched()
    assert len(json.loads((tmp_path / "work" / "new.cure.json").read_text())["edits"]) == 1
