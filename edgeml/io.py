"""Atomic writes, safetensors checkpoints and checksums: how every edgeml artefact reaches disk.

Outputs are written to a temporary sibling, flushed, fsynced and renamed into place, so a crash or a
bad input never leaves a half-written file; inputs are only ever opened for reading.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from edgeml.errors import CheckpointError, InputError

_META_KEY = "edgeml"


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temp file beside `path`; on success fsync and rename it over `path`, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def remove_stale_temps(folder: str | os.PathLike, names: Iterable[str]) -> list[Path]:
    """Delete what a killed `atomic_write` / `atomic_dir` of `names` left in `folder`: the `.{name}.*.tmp` files and
    folders, and the `.{name}.*.old` folders of a replacement whose new output is in place (an `.old` folder is kept
    while `name` itself is missing: it then holds the only copy). Other hidden files are not ours; returns what was
    removed."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for name in names:
        stale = list(folder.glob(f".{glob.escape(name)}.*.tmp"))
        if (folder / name).exists():
            stale += folder.glob(f".{glob.escape(name)}.*.old")
        for path in stale:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Atomically write `data` to `path`."""
    with atomic_write(path, "wb") as f:
        f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write UTF-8 `text` to `path`."""
    with atomic_write(path, "w") as f:
        f.write(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write `obj` as indented JSON."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, turning a missing or malformed file into an InputError."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError("file not found", path=path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"not valid JSON ({e})", path=path) from None


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, force: bool = False) -> Iterator[Path]:
    """Build a folder in a temp sibling and move it to `path` on success.

    An existing `path` is an error unless `force`; with `force` it is replaced only once the new
    folder is complete, so a failure leaves the old one untouched.
    """
    path = Path(path)
    if path.exists() and not force:
        raise InputError("output folder already exists", path=path, fix="pass --force to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike, tensors: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
    """Write torch tensors and JSON-able `meta` into one safetensors file, atomically.

    `meta` travels in the safetensors header, so weights and their config cannot be separated.
    """
    import torch
    from safetensors.torch import save

    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items() if isinstance(v, torch.Tensor)}
    header = {_META_KEY: json.dumps(dict(meta), default=_json_default)}
    write_bytes(path, save(flat, metadata=header))


def load_checkpoint(path: str | os.PathLike, *, expect_model: str | None = None) -> tuple[dict, dict]:
    """Read (tensors, meta) written by `save_checkpoint`; never unpickles.

    Raises CheckpointError for a missing, truncated or foreign file, or one of another model.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    if not path.is_file():
        raise CheckpointError("checkpoint not found", path=path)
    data = path.read_bytes()
    try:
        tensors = load(data)
        meta_json = _read_metadata(data).get(_META_KEY)
    except (SafetensorError, ValueError, OSError) as e:
        raise CheckpointError(f"corrupt or truncated checkpoint ({e})", path=path,
                              fix="re-create it with `edgeml train`") from None
    if meta_json is None:
        raise CheckpointError("not an edgeml checkpoint (no edgeml metadata)", path=path)
    try:
        meta = json.loads(meta_json)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"checkpoint metadata is not valid JSON ({e})", path=path) from None
    if not isinstance(meta, dict) or not isinstance(meta.get("model"), str):
        raise CheckpointError("checkpoint metadata must be a JSON object naming its model", path=path)
    if not isinstance(meta.get("config", {}), dict):
        raise CheckpointError("checkpoint metadata 'config' must be a JSON object", path=path)
    if expect_model is not None and meta.get("model") != expect_model:
        raise CheckpointError(
            f"checkpoint is for model {meta.get('model')!r}, not {expect_model!r}", path=path,
            fix=f"pass a checkpoint trained with --model {expect_model}")
    return tensors, meta


def _read_metadata(data: bytes) -> dict:
    if len(data) < 8:
        raise ValueError("file shorter than the safetensors header")
    n = int.from_bytes(data[:8], "little")
    if n <= 0 or 8 + n > len(data):
        raise ValueError("header length points past the end of the file")
    header = json.loads(data[8 : 8 + n])
    return header.get("__metadata__", {}) or {}
