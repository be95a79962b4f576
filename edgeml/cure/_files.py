"""Edit large weight files as a copy plus patched byte ranges: the input is read-only, the output atomic.

A 3.3 GB UNet data file with 32 edited K/V tensors (~60 MB) costs one `copyfile` (kernel-side copy where the
file system allows) plus 60 MB of writes, instead of a decode/re-encode of every tensor.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from edgeml.errors import CheckpointError

# Storage dtypes of weights we edit (ONNX TensorProto data types and safetensors dtype strings).
NUMPY_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, 1: np.float32, 10: np.float16,
                11: np.float64}


def read_range(path: Path, offset: int, count: int, dtype) -> np.ndarray:
    """`count` items of `dtype` at byte `offset` of `path` (a fresh array, the file stays closed)."""
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(count * np.dtype(dtype).itemsize)
    if len(data) != count * np.dtype(dtype).itemsize:
        raise CheckpointError(f"wanted {count * np.dtype(dtype).itemsize} bytes at {offset}, the file is shorter",
                              path=path)
    return np.frombuffer(data, dtype=dtype).copy()


def temp_sibling(dst: Path) -> Path:
    """A fresh temp path in `dst`'s folder (same file system, so the final rename is atomic)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    return Path(tmp)


def copy_with_patches(src: Path, dst: Path, patches: list[tuple[int, bytes]]) -> None:
    """Write `src` with byte ranges replaced (`(offset, data)`) to `dst`, atomically (temp + rename).

    One sequential pass: the unchanged ranges go kernel-side (`sendfile`), the patches are written in between, so
    every output page is written once (patching a finished copy made the patch writes wait for the copy's
    writeback: 0.6 s extra on a 3.4 GB UNet). No fsync: like `shutil.copy`, durability is left to the OS; readers
    never see a partial `dst`.
    """
    size = src.stat().st_size
    tmp = temp_sibling(dst)
    try:
        # "r+b", not "wb": O_TRUNC on the (empty) temp file makes ext4 flush the whole file when it is closed
        # (auto_da_alloc), which cost 0.5+ s on a 3.4 GB UNet; the temp file is new and empty anyway.
        with open(src, "rb", buffering=0) as fi, open(tmp, "r+b", buffering=0) as fo:
            pos = 0
            for offset, data in sorted(patches, key=lambda p: p[0]):
                if offset < pos or offset + len(data) > size:
                    raise CheckpointError(f"tensor bytes at {offset} (+{len(data)}) overlap another edited tensor "
                                          "or the end of the file", path=src)
                _copy_range(fi.fileno(), fo.fileno(), pos, offset - pos)
                view = memoryview(data)
                while view:  # unbuffered writes may be partial
                    view = view[fo.write(view):]
                pos = offset + len(data)
            _copy_range(fi.fileno(), fo.fileno(), pos, size - pos)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _copy_range(fd_in: int, fd_out: int, offset: int, count: int) -> None:
    """Append `count` bytes of `fd_in` from `offset` to `fd_out` (sendfile; plain reads where it is refused)."""
    while count > 0:
        try:
            sent = os.sendfile(fd_out, fd_in, offset, min(count, 1 << 30))
        except OSError:
            sent = 0
        if sent == 0:  # sendfile unsupported here (or EOF): fall back to read/write
            data = os.pread(fd_in, min(count, 1 << 24), offset)
            if not data:
                raise CheckpointError(f"the file ended {count} bytes early (changed while being copied?)")
            sent = os.write(fd_out, data)
        offset += sent
        count -= sent
