"""Seeded, bounded fuzz of safetensors headers through every edgeml safetensors reader.

Each mutant (every listed bad value once, then seeded random mutations of the length field, JSON bytes, offsets,
dtypes, shapes, metadata, data length) either loads or raises an EdgeMLError: never another exception type, never
a changed input, and an edited copy always keeps the input's size.
"""

from __future__ import annotations

import json
import random
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeml.errors import EdgeMLError

SEED, MUTANTS, WIDTH = 20240601, 200, 8

KEYS = ("blocks.0.attn2.to_k.weight", "blocks.0.attn2.to_v.weight", "blocks.1.attn2.to_k.weight", "blocks.0.norm")
BAD_LENGTHS = (0, 1, 2, 7, 1 << 31, 1 << 62, (1 << 64) - 1)
BAD_OFFSETS = ([-1, 5], [0, 1 << 62], [64, 0], ["0", "64"], [0], [0, 1, 2], None, 3.5, [1, 65], [0, 0], [True, 64])
BAD_DTYPES = ("F32", "F16", "BF16", "F64", "I8", "U8", "BOOL", "I64", "X", None, 7, "f32", "", ["F32"])
BAD_SHAPES = ([], [0], [-1, WIDTH], [4], [WIDTH, 4], [1 << 40, 1 << 40], [4.0, WIDTH], "4x8", None, [[4], WIDTH],
              [True, WIDTH], [2, 2, WIDTH], [0, WIDTH])
BAD_METADATA = ({"edgeml": "not json"}, {"edgeml": "[1, 2]"}, {"edgeml": "{}"}, {"edgeml": 5}, ["x"], "text",
                {"edgeml": '{"model": 3}'}, None, {"edgeml": '{"model": "tiny", "config": [1]}'}, {"other": "x"})


def _pristine(path: Path) -> bytes:
    """A small edgeml checkpoint holding cross-attention K/V weights in three float dtypes."""
    from edgeml.io import save_checkpoint

    g = torch.Generator().manual_seed(0)
    tensors = {KEYS[0]: torch.randn(4, WIDTH, generator=g), KEYS[1]: torch.randn(4, WIDTH, generator=g).half(),
               KEYS[2]: torch.randn(2, WIDTH, generator=g).bfloat16(), KEYS[3]: torch.randn(WIDTH, generator=g)}
    save_checkpoint(path, tensors, {"model": "tiny", "config": {}})
    return path.read_bytes()


def _split(blob: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", blob[:8])[0]
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def _join(header, data: bytes, length: int | None = None) -> bytes:
    head = json.dumps(header).encode()
    return struct.pack("<Q", len(head) if length is None else length) + head + data


def _mutate(blob: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One random mutation of a safetensors file -> (what was mutated, new bytes)."""
    header, data = _split(blob)
    tensors = [k for k in header if k != "__metadata__"]
    kind = rng.choice(["length", "json_bytes", "json_cut", "offsets", "dtype", "shape", "metadata", "data_cut",
                       "swap_entries", "header_type"])
    key = rng.choice(tensors)
    if kind == "length":
        n = len(blob) - 8 - len(data)
        return kind, _join(header, data, rng.choice(BAD_LENGTHS + (n - 1, n + 1, len(blob), rng.randrange(1 << 20))))
    if kind == "json_bytes":
        raw = bytearray(blob)
        n = struct.unpack("<Q", blob[:8])[0]
        for _ in range(rng.randint(1, 4)):
            raw[8 + rng.randrange(n)] = rng.randrange(256)
        return kind, bytes(raw)
    if kind == "json_cut":
        head = json.dumps(header).encode()
        cut = head[:rng.randrange(len(head))]
        return kind, struct.pack("<Q", len(cut)) + cut + data
    if kind == "offsets":
        header[key]["data_offsets"] = rng.choice(BAD_OFFSETS)
    elif kind == "dtype":
        header[key]["dtype"] = rng.choice(BAD_DTYPES)
    elif kind == "shape":
        header[key]["shape"] = rng.choice(BAD_SHAPES)
    elif kind == "metadata":
        header["__metadata__"] = rng.choice(BAD_METADATA)
    elif kind == "data_cut":
        data = data[:rng.randrange(len(data) + 1)]
    elif kind == "swap_entries":
        other = rng.choice(tensors)
        header[key], header[other] = header[other], header[key]
    else:
        header = rng.choice([[header], "header", 7, None, {key: header[key]["shape"]}])
    return kind, _join(header, data)


def _mutants(blob: bytes, rng: random.Random):
    """Every listed bad value once (on a K/V entry, so the edit path meets it), then MUTANTS random mutations."""
    header, data = _split(blob)
    for length in BAD_LENGTHS:
        yield "length", _join(header, data, length)
    for field, values in (("data_offsets", BAD_OFFSETS), ("dtype", BAD_DTYPES), ("shape", BAD_SHAPES)):
        for value in values:
            yield field, _join({**header, KEYS[0]: {**header[KEYS[0]], field: value}}, data)
    for meta in BAD_METADATA:
        yield "metadata", _join({**header, "__metadata__": meta}, data)
    for _ in range(MUTANTS):
        yield _mutate(blob, rng)


@pytest.fixture(scope="module")
def edit():
    from edgeml.cure import discriminative_projector

    return discriminative_projector(np.random.default_rng(1).normal(size=(2, WIDTH)))


def test_mutated_safetensors_headers_load_or_give_an_edgeml_error(tmp_path, edit):
    from edgeml.cure.apply import edit_safetensors_file, read_safetensors_header
    from edgeml.io import load_checkpoint

    rng = random.Random(SEED)
    pristine = _pristine(tmp_path / "pristine.safetensors")
    src, out = tmp_path / "mutant.safetensors", tmp_path / "edited.safetensors"
    readers = {"load_checkpoint": load_checkpoint, "read_safetensors_header": read_safetensors_header,
               "edit_safetensors_file": lambda p: edit_safetensors_file(p, out, edit)}
    outcomes, failures = Counter(), []
    for i, (kind, blob) in enumerate(_mutants(pristine, rng)):
        src.write_bytes(blob)
        out.unlink(missing_ok=True)
        for name, read in readers.items():
            try:
                read(src)
                outcomes[name, "ok"] += 1
                if name == "edit_safetensors_file":
                    assert out.stat().st_size == len(blob), f"mutant {i} ({kind}): the edited copy changed size"
            except EdgeMLError:
                outcomes[name, "error"] += 1
            except Exception as e:  # noqa: BLE001 - the point: any other type is a failure, collected with its case
                failures.append(f"mutant {i} ({kind}) via {name}: {type(e).__name__}: {str(e)[:160]}")
            assert src.read_bytes() == blob, f"mutant {i} ({kind}): {name} modified its input"
    assert not failures, "\n".join(failures[:20])
    for name in readers:  # the mix is not degenerate: every reader both accepted and refused mutants
        assert outcomes[name, "ok"] >= 10 and outcomes[name, "error"] >= 50, outcomes


def test_the_pristine_file_loads_and_edits_through_every_reader(tmp_path, edit):
    """Control: the un-mutated file is accepted, so refusals above come from the mutations."""
    from safetensors.torch import load_file

    from edgeml.cure.apply import edit_safetensors_file
    from edgeml.io import load_checkpoint

    src = tmp_path / "pristine.safetensors"
    _pristine(src)
    tensors, meta = load_checkpoint(src)
    assert meta["model"] == "tiny" and set(tensors) == set(KEYS)
    rows = edit_safetensors_file(src, tmp_path / "edited.safetensors", edit)
    assert sorted(r["name"] for r in rows) == sorted(KEYS[:3])
    edited = load_file(tmp_path / "edited.safetensors")
    for k in KEYS[:3]:  # W (I - D) from the float64 formula, within the stored dtype's rounding
        want = edit.apply_weight(tensors[k].double()).to(tensors[k].dtype)
        torch.testing.assert_close(edited[k], want)
        assert (edited[k].double() - tensors[k].double()).abs().max() > 1e-2, f"{k} was not edited"
    torch.testing.assert_close(edited[KEYS[3]], tensors[KEYS[3]], rtol=0, atol=0)
