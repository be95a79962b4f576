"""Seeded, bounded fuzz of the LLS pack loaders: ~200 mutations of a small valid pack (bytes flipped, preamble
sizes, header fields set to hostile values, truncations; most with the CRC fixed up so they reach the parsers)
go through the Python reader and the C++ engine in ONE subprocess, and a sample through `edgeml-finetune`.
Each variant loads or fails with a clean one-line error: no signal, no traceback, no other exception type."""

from __future__ import annotations

import json
import random
import struct
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeml.lls.device import finetune_binary, write_idx_folder
from edgeml.lls.pack import PREAMBLE, write_pack

from .harness import Guard, assert_clean_error, run_process
from .test_corpus_lls import assemble, pack_parts, tiny_model

SEED = 20240601
HOSTILE_VALUES: list[Any] = [0, -1, 1, 2 ** 31, 2 ** 53, 2 ** 63, 10 ** 30, 1e308, -1e308, 0.5, float("nan"), "x",
                             None, True, [], {}, [0, 0], [2 ** 40, 2 ** 40], [-1], "conv2d", "i8"]


def _leaves(node: Any, path: tuple = ()) -> list[tuple]:
    """Paths to every value in a JSON tree (containers included, so whole lists/objects get replaced too)."""
    out = [path] if path else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _leaves(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _leaves(v, (*path, i))
    return out


def _fix_crc(raw: bytearray) -> bytes:
    body = bytes(raw[:-4])
    return body + struct.pack("<I", zlib.crc32(body))


def mutants(base: Path, count: int, seed: int) -> list[tuple[str, bytes]]:
    """`count` seeded variants of the pack at `base`: (description, bytes)."""
    rnd = random.Random(seed)
    raw = base.read_bytes()
    header, data = pack_parts(base)
    leaves = _leaves(header)
    graph = [p for p in leaves if p[0] in ("blocks", "input", "optimizer", "num_classes", "basis")]
    out: list[tuple[str, bytes]] = []
    while len(out) < count:
        kind = rnd.choice(["field", "field", "field", "bytes_crc", "bytes", "preamble", "truncate", "data_crc"])
        if kind == "field":  # a header value replaced by a hostile one, CRC valid
            h = json.loads(json.dumps(header))
            path = rnd.choice(graph if rnd.random() < 0.6 else leaves)  # the graph's fields drive the arithmetic
            node = h
            for k in path[:-1]:
                node = node[k]
            value = rnd.choice(HOSTILE_VALUES)
            node[path[-1]] = value
            out.append((f"field {'/'.join(map(str, path))} = {value!r}", assemble(h, data)))
        elif kind in ("bytes", "bytes_crc"):  # random bytes of the header region flipped
            b = bytearray(raw)
            end = PREAMBLE.size + PREAMBLE.unpack_from(raw)[3]
            for _ in range(rnd.randint(1, 4)):
                b[rnd.randrange(8, end)] = rnd.randrange(256)
            out.append((f"{kind}", _fix_crc(b) if kind == "bytes_crc" else bytes(b)))
        elif kind == "preamble":  # header_len / data_len / version set to odd values
            b = bytearray(raw)
            field, fmt = rnd.choice([(8, "<I"), (16, "<Q"), (24, "<Q")])
            value = rnd.choice([0, 1, 2 ** 31, 2 ** 63, 2 ** 64 - 1, rnd.randrange(4096)])
            struct.pack_into(fmt, b, field, value % (2 ** (8 * struct.calcsize(fmt))))
            out.append((f"preamble @{field} = {value}", _fix_crc(b)))
        elif kind == "truncate":
            n = rnd.randrange(len(raw))
            out.append((f"truncated to {n}", raw[:n]))
        else:  # weights turned into NaN/inf/garbage, CRC valid: loads (the numbers are the user's problem)
            d = bytearray(data)
            for _ in range(8):
                d[rnd.randrange(len(d))] = 0xFF
            out.append(("data bytes", assemble(header, bytes(d))))
    return out


LOOP = """
import json, sys
import numpy as np
from edgeml.errors import EdgeMLError
from edgeml.lls.device import open_engine
from edgeml.lls.pack import read_pack
for path in json.loads(sys.argv[1]):
    row = {}
    for name, load in (("python", lambda: read_pack(path)), ("engine", lambda: open_engine(path, 2, train_last=1))):
        try:
            obj = load()
            if name == "engine":  # a loaded engine must also step and run forward without dying
                x = np.zeros((2, *obj.input_shape), np.float32)
                obj.train_step(x, np.zeros(2, np.int64))
                obj.forward(x)
            row[name] = "ok"
        except EdgeMLError as e:
            row[name] = "clean" if "\\n" not in str(e) else "multi-line: " + str(e)
        except Exception as e:
            row[name] = f"{type(e).__name__}: {e}"
    print(json.dumps(row), flush=True)
"""


@pytest.fixture(scope="module")
def fuzz_folder(tmp_path_factory) -> tuple[Path, list[tuple[str, Path]]]:
    root = tmp_path_factory.mktemp("fuzz")
    base = write_pack(root / "base.pack", tiny_model(), train_blocks="last:2")
    cases = []
    for i, (what, raw) in enumerate(mutants(base, 200, SEED)):
        path = root / "mutants" / f"{i:03d}.pack"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(raw)
        cases.append((what, path))
    return root, cases


def test_fuzzed_packs_load_or_fail_cleanly_in_python_and_the_engine(fuzz_folder):
    root, cases = fuzz_folder
    guard = Guard(root)
    paths = [str(p) for _, p in cases]
    r = run_process([sys.executable, "-c", LOOP, json.dumps(paths)], timeout=120)
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    if r.rc != 0:
        culprit = cases[len(rows)][0] if len(rows) < len(cases) else "?"
        pytest.fail(f"the loader process died (rc {r.rc}) on mutant {len(rows)} ({culprit}): {r.stderr[-1500:]}")
    assert len(rows) == len(cases)
    bad = [(cases[i][0], row) for i, row in enumerate(rows) if set(row.values()) - {"ok", "clean"}]
    assert not bad, bad[:5]
    outcomes = {v for row in rows for v in row.values()}
    assert outcomes == {"ok", "clean"}, "the fuzz should produce both loadable and refused packs"
    guard.assert_untouched()


def test_fuzzed_packs_through_the_standalone_binary(fuzz_folder, tmp_path):
    root, cases = fuzz_folder
    data = tmp_path / "data"
    write_idx_folder(data, np.zeros((4, 8, 8), np.uint8), np.arange(4) % 3)
    guard = Guard(root)
    for what, path in cases[::8]:  # a 25-mutant sample
        out = tmp_path / "out.pack"
        r = run_process([finetune_binary(), "--pack", path, "--data", data, "--out", out, "--batch", "2",
                         "--blocks", "last:1", "--quiet"])
        if r.rc == 0:
            out.unlink()
            continue
        try:
            assert_clean_error(r)
        except AssertionError as e:
            raise AssertionError(f"mutant {path.name} ({what}): {e}") from None
        assert not out.exists()
    guard.assert_untouched()
