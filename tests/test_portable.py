"""Nothing committed records the machine it was made on: results JSON, README and shipped assets are portable."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Absolute paths of a build machine (temp, home and work folders, installed packages); documented system paths
# a user types (/usr/share/datasets/...) are not build-machine paths.
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:tmp|root|home|work|mnt|srv|Users|private|var/folders)/|site-packages")


def _asset_metadata(path: Path) -> str:
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    return json.dumps(json.loads(data[8 : 8 + n]).get("__metadata__", {}))


def _committed_texts() -> list[tuple[str, str]]:
    results = sorted((ROOT / "benchmarks" / "results").glob("*.json"))
    texts = [(str(p.relative_to(ROOT)), p.read_text()) for p in results]
    texts.append(("README.md", (ROOT / "README.md").read_text()))
    texts += [(str(p.relative_to(ROOT)), p.read_text()) for p in sorted((ROOT / "export" / "targets").glob("*.toml"))]
    texts += [(str(p.relative_to(ROOT)), _asset_metadata(p))
              for p in sorted((ROOT / "edgeml" / "assets").rglob("*.safetensors"))]
    return texts


@pytest.mark.parametrize("name,text", _committed_texts(), ids=[name for name, _ in _committed_texts()])
def test_no_machine_specific_path_is_committed(name, text):
    hits = [m.group(0) + text[m.end(): m.end() + 40].split('"')[0] for m in MACHINE_PATH.finditer(text)]
    assert not hits, f"{name} records paths of the machine it was made on: {hits[:5]}"


def test_the_pattern_catches_what_it_is_for():
    for bad in ('"/tmp/vm/b384/clips384"', "/work/main/x", "/home/u/runs", "lib/python3.11/site-packages/edgeml",
                "/root/.cache"):
        assert MACHINE_PATH.search(bad), bad
    for ok in ("/usr/share/datasets/fashion-mnist", "runs/tmp/x", "~/work/x", "a/b"):
        assert not MACHINE_PATH.search(ok), ok
