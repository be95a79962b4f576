"""The corpus harness: run one bad input through an entry point and check the error contract.

Contract for every case: exit code 2, exactly one line on stderr, no traceback, no signal, every input
byte-identical afterwards, and nothing written anywhere but the declared output.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Outcome:
    rc: int
    stderr: str
    stdout: str = ""


def run_cli(argv: list[str]) -> Outcome:
    """`edgeml ARGV` in this process (what a user's shell runs, minus the interpreter start)."""
    from edgeml.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as e:  # argparse usage errors and --help
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    return Outcome(int(rc), err.getvalue(), out.getvalue())


def run_process(argv: list[str | os.PathLike], timeout: float = 120, **kw) -> Outcome:
    """A separate process (for native code that could die of a signal, and for real binaries)."""
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, **kw)
    return Outcome(proc.returncode, proc.stderr, proc.stdout)


def edgeml_process(argv: list[str | os.PathLike], **kw) -> Outcome:
    """`python -m edgeml ARGV` in a fresh interpreter."""
    return run_process([sys.executable, "-m", "edgeml", *argv], **kw)


def assert_clean_error(outcome: Outcome, *, contains: str | None = None) -> None:
    """Exit 2, one stderr line, no traceback, no signal (a negative rc is a signal)."""
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    assert outcome.rc >= 0, f"killed by signal {-outcome.rc}: {outcome.stderr[-500:]}"
    assert "Traceback" not in outcome.stderr, outcome.stderr[-2000:]
    assert outcome.rc == 2, f"rc {outcome.rc}, stderr: {outcome.stderr[-1000:]!r}"
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}: {outcome.stderr[-1000:]!r}"
    if contains is not None:
        assert contains.lower() in lines[0].lower(), lines[0]


def tree_digest(root: Path, *, exclude: tuple[Path, ...] = ()) -> dict[str, str]:
    """{relative path: sha256 or 'dir'/'link:...'} for everything under `root`, skipping `exclude`."""
    root = Path(root)
    excluded = [Path(e) for e in exclude]
    digest: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if not any((here / d) == e for e in excluded)]
        for name in dirnames + filenames:
            p = here / name
            if any(p == e for e in excluded):
                continue
            rel = str(p.relative_to(root))
            if p.is_symlink():
                digest[rel] = f"link:{os.readlink(p)}"
            elif p.is_dir():
                digest[rel] = "dir"
            else:
                digest[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return digest


class Guard:
    """Snapshot a tree before a case; afterwards assert nothing in it changed (outputs excepted)."""

    def __init__(self, root: Path, *outputs: Path):
        self.root, self.outputs = Path(root), tuple(Path(o) for o in outputs)
        self.before = tree_digest(self.root, exclude=self.outputs)

    def assert_untouched(self) -> None:
        after = tree_digest(self.root, exclude=self.outputs)
        changed = sorted(k for k in set(self.before) | set(after) if self.before.get(k) != after.get(k))
        assert not changed, f"files changed, created or removed: {changed[:10]}"
