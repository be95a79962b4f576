"""Bounded, seeded fuzz of the video verbs: a small real video truncated at many offsets and with bytes mutated, run
through `edgeml data extract` and `edgeml data mvs`. Each run either succeeds or is one clean error line (exit 2):
never a traceback, never a signal. The loop runs in one fresh interpreter, so a crash in libavcodec or in our kernels
fails this test instead of killing pytest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from .test_corpus_video import good_video

SEED = 20240607
N_TRUNCATIONS = 40
N_MUTATIONS = 40

LOOP = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from robustness.harness import run_cli

problems = []
for video in sorted(Path(sys.argv[2]).glob("*.avi")):
    for verb, flag, out in (("extract", "--out", "o.safetensors"), ("mvs", "--csv", "o.csv")):
        target = Path(sys.argv[3]) / out
        r = run_cli(["data", verb, str(video), flag, str(target)])
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        clean = r.rc == 0 or (r.rc == 2 and len(lines) == 1 and lines[0].startswith("edgeml: error: "))
        if not clean or "Traceback" in r.stderr or (r.rc == 0) != target.is_file():
            problems.append({"video": video.name, "verb": verb, "rc": r.rc, "stderr": r.stderr[-800:]})
        target.unlink(missing_ok=True)
print(json.dumps(problems))
"""


def make_fuzz_inputs(good: bytes, folder: Path, seed: int = SEED) -> list[Path]:
    """Truncations at seeded offsets (header, first packets, middle, index) and seeded byte mutations (1-8 bytes
    xor-ed anywhere past the RIFF tag)."""
    rng = np.random.default_rng(seed)
    paths = []
    cuts = sorted({int(c) for c in rng.integers(1, len(good), N_TRUNCATIONS * 2)})[:N_TRUNCATIONS]
    for cut in cuts:
        paths.append(folder / f"cut_{cut:06d}.avi")
        paths[-1].write_bytes(good[:cut])
    for k in range(N_MUTATIONS):
        data = bytearray(good)
        for at in rng.integers(12, len(good), int(rng.integers(1, 9))):
            data[at] ^= int(rng.integers(1, 256))
        paths.append(folder / f"mut_{k:02d}.avi")
        paths[-1].write_bytes(bytes(data))
    return paths


def test_truncated_and_mutated_videos_never_crash_or_trace(tmp_path):
    good = good_video(tmp_path / "good.avi").read_bytes()
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    paths = make_fuzz_inputs(good, inputs)
    assert len(paths) >= N_TRUNCATIONS + N_MUTATIONS - 5
    out = tmp_path / "out"
    out.mkdir()
    tests_dir = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", LOOP, str(tests_dir), str(inputs), str(out)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"the fuzz loop died (rc {proc.returncode}): {proc.stderr[-2000:]}"
    problems = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not problems, json.dumps(problems[:5], indent=1)
    assert not list(out.iterdir())
