"""Path rules every reader and writer follows: paths read from files stay inside their folder, and an
output never lands on an input."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath, PureWindowsPath

from edgeml.errors import InputError


def confined(base: str | os.PathLike, relative: str, *, what: str = "path") -> Path:
    """`base / relative`, refused unless it stays inside `base` (no absolute path, no `..`, no symlink out).

    For paths read from a file the user did not write (ONNX external-data locations, index entries): the
    check happens before anything is opened, so a hostile file cannot make edgeml read or write elsewhere.
    """
    base = Path(base)
    text = str(relative)
    if not text or "\x00" in text:
        raise InputError(f"{what} {text!r} is empty or contains a NUL byte", path=base)
    if PurePosixPath(text).is_absolute() or PureWindowsPath(text).is_absolute() or PureWindowsPath(text).drive:
        raise InputError(f"{what} {text!r} is absolute; it must be relative to its folder", path=base)
    parts = PurePosixPath(text.replace("\\", "/")).parts
    if ".." in parts:
        raise InputError(f"{what} {text!r} leaves its folder ('..')", path=base)
    candidate = base / Path(*parts)
    root = base.resolve()
    resolved = candidate.resolve()
    if resolved != root and root not in resolved.parents:
        raise InputError(f"{what} {text!r} resolves outside its folder (a symlink?)", path=base)
    return candidate


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def refuse_overwrite(output: str | os.PathLike, inputs: Iterable[str | os.PathLike | None], *,
                     flag: str = "--out") -> None:
    """Raise InputError if `output` is an input, the same inode as one, or a folder holding one.

    Call it before anything is written: an output that would replace (or, with --force, delete) a user's
    input is refused rather than trusted.
    """
    out = Path(output)
    out_resolved = out.resolve()
    for item in inputs:
        if item is None:
            continue
        src = Path(item)
        src_resolved = src.resolve()
        if out_resolved == src_resolved or _same_file(out, src):
            raise InputError(f"{flag} is the input {src}", path=out, fix="write the output to another path")
        if out_resolved in src_resolved.parents:
            raise InputError(f"{flag} is a folder that holds the input {src}", path=out,
                             fix="write the output to another folder")
