"""iter_gops' pipelining details: the kernel thread's lower priority and the residual buffers sized by the frames a
stream declares (a hint only: a stream that holds more still comes out whole)."""

from __future__ import annotations

import os
import sys
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from edgeml.video import clips


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread niceness is Linux's (elsewhere nothing is changed)")
def test_kernel_thread_yields_to_the_decoder_and_nothing_else_does():
    seen: dict[str, int] = {}

    def worker() -> None:
        tid = threading.get_native_id()
        seen["before"] = os.getpriority(os.PRIO_PROCESS, tid)
        clips._yield_to_decoder()
        seen["after"] = os.getpriority(os.PRIO_PROCESS, tid)

    main_before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen["after"] == min(19, seen["before"] + clips.KERNEL_NICE)
    assert clips.KERNEL_NICE > 0
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_before  # the decoder keeps its own


@pytest.mark.parametrize("declared", [0, 2, 5, 2**31])
def test_residual_buffers_take_the_declared_frames_as_a_hint_only(declared):
    opened = {"video": SimpleNamespace(frames=declared)}
    buf = clips._GrowingResiduals(opened=opened)
    rows = [buf(k, 3, 4, 6) for k in range(5)]
    for k, r in enumerate(rows):
        r[...] = k
    if 0 < declared < 2**20:
        assert len(buf.chunks[0]) == declared  # no more than the stream declares
    else:
        assert len(buf.chunks[0]) == (64 << 20) // (3 * 4 * 6 * 2)  # unknown or absurd: the usual first block
    got = buf.collect(rows)
    np.testing.assert_array_equal(got, np.arange(5, dtype=np.int16)[:, None, None, None] * np.ones((5, 3, 4, 6),
                                                                                                  np.int16))
