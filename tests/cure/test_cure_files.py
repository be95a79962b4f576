"""Large weight files edited as a kernel-side copy plus rewritten byte ranges (`edgeml.cure._files`)."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest

from edgeml.cure import _files
from edgeml.cure._files import copy_with_patches, read_range
from edgeml.errors import CheckpointError


def _refuse(code: int):
    def call(*args, **kwargs):
        raise OSError(code, os.strerror(code))
    return call


@pytest.fixture
def src(tmp_path, rng):
    path = tmp_path / "weights.bin"
    path.write_bytes(rng.integers(0, 256, 3 * (1 << 20) + 77, dtype=np.uint8).tobytes())
    return path


@pytest.mark.parametrize("route", ["copy_file_range", "sendfile", "read/write"])
def test_every_unpatched_byte_is_copied_on_each_copy_route(tmp_path, src, monkeypatch, route):
    calls = []
    if route != "copy_file_range":
        monkeypatch.setattr(_files, "_copy_file_range", _refuse(errno.EXDEV))
    if route == "read/write":
        monkeypatch.setattr(_files, "_sendfile", _refuse(errno.EINVAL))
    monkeypatch.setattr(os, "pread", lambda *a, _f=os.pread: calls.append(a[1]) or _f(*a))
    before = src.read_bytes()
    patch = np.arange(1000, dtype=np.float16)                  # an edited tensor's buffer, written as is
    patches = [(4096, patch), (len(before) - 5, b"\x01\x02\x03\x04\x05"), (10, bytearray(b"xyz"))]
    copy_with_patches(src, tmp_path / "out.bin", patches)
    want = bytearray(before)
    for offset, data in patches:
        raw = memoryview(data).cast("B").tobytes()
        want[offset:offset + len(raw)] = raw
    assert (tmp_path / "out.bin").read_bytes() == bytes(want)
    assert src.read_bytes() == before
    assert bool(calls) == (route == "read/write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin", "weights.bin"]


def test_overlapping_or_out_of_file_patches_are_refused_and_leave_no_file(tmp_path, src):
    size = src.stat().st_size
    for patches in ([(0, b"abcd"), (2, b"ef")], [(size - 1, b"ab")]):
        with pytest.raises(CheckpointError, match="overlap"):
            copy_with_patches(src, tmp_path / "out.bin", patches)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.bin"]


def test_a_write_error_propagates_and_leaves_no_temp_file(tmp_path, src, monkeypatch):
    monkeypatch.setattr(_files, "_copy_file_range", _refuse(errno.ENOSPC))
    with pytest.raises(OSError, match="No space"):
        copy_with_patches(src, tmp_path / "out.bin", [(0, b"a")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.bin"]


def test_read_range_fills_a_fresh_writable_array_or_reports_a_short_file(src):
    raw = src.read_bytes()
    got = read_range(src, 6, 100, np.float16)
    assert got.flags.writeable and got.tobytes() == raw[6:206]
    with pytest.raises(CheckpointError, match="shorter"):
        read_range(src, len(raw) - 10, 100, np.float32)


def test_patches_made_by_a_function_are_computed_while_the_file_is_copied(tmp_path, src):
    seen = []

    def make():
        seen.append(sorted(p.name for p in tmp_path.iterdir()))   # the temp copy exists already
        return [(7, np.ones(3, np.float32))]

    copy_with_patches(src, tmp_path / "out.bin", make)
    want = bytearray(src.read_bytes())
    want[7:19] = np.ones(3, np.float32).tobytes()
    assert (tmp_path / "out.bin").read_bytes() == bytes(want)
    assert len(seen) == 1 and any(name.startswith(".out.bin.") for name in seen[0])


def test_a_failing_patch_function_leaves_no_temp_file(tmp_path, src):
    def make():
        raise ValueError("bad tensor")

    with pytest.raises(ValueError, match="bad tensor"):
        copy_with_patches(src, tmp_path / "out.bin", make)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.bin"]


def test_planned_ranges_are_not_copied_and_are_filled_by_the_patches(tmp_path, src, monkeypatch):
    copied = []
    monkeypatch.setattr(_files, "_copy_range", lambda fi, fo, start, n, _f=_files._copy_range:
                        copied.append((start, n)) or _f(fi, fo, start, n))
    size = src.stat().st_size
    patches = [(size - 8, np.ones(2, np.float32)), (100, np.arange(50, dtype=np.float16))]
    copy_with_patches(src, tmp_path / "out.bin", lambda: patches, [(100, 100), (size - 8, 8)])
    want = bytearray(src.read_bytes())
    for offset, data in patches:
        want[offset:offset + data.nbytes] = data.tobytes()
    assert (tmp_path / "out.bin").read_bytes() == bytes(want)
    assert copied == [(0, 100), (200, size - 208)]          # the gaps only, in order


@pytest.mark.parametrize("patches", [[(100, b"ab")], [(100, b"abcd"), (300, b"x")], []])
def test_patches_that_do_not_fill_the_planned_ranges_leave_no_file(tmp_path, src, patches):
    with pytest.raises(CheckpointError, match="planned"):
        copy_with_patches(src, tmp_path / "out.bin", patches, [(100, 4)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.bin"]
