"""Interleaved rounds: a busy machine or disagreeing rounds make a benchmark run invalid."""

from __future__ import annotations

import subprocess
import sys
import time

from edgeml.bench.rounds import Measurement, goal_verdict, interleave, judge, measure, warm_up


def _m(name: str, r: int, value: float, foreign: float | None = 0.0) -> Measurement:
    return Measurement(name, r, value, 1.0, 1.0, foreign)


def test_agreeing_rounds_on_a_quiet_machine_are_valid():
    v = judge([_m("a", 0, 10), _m("b", 0, 20), _m("a", 1, 11), _m("b", 1, 21)])
    assert v.valid and v.medians == {"a": 10.5, "b": 20.5} and abs(v.spread["a"] - 1.1) < 1e-9


def test_disagreeing_rounds_are_invalid():
    v = judge([_m("a", 0, 10), _m("a", 1, 14)], max_spread=1.25)
    assert not v.valid and "rounds disagree" in v.reasons[0]


def test_foreign_load_is_invalid_and_named():
    v = judge([_m("a", 0, 10), _m("a", 1, 10, foreign=0.9), _m("b", 0, 5), _m("b", 1, 5)])
    assert not v.valid and v.reasons == ["machine busy: 0.90 cores of other work during a (limit 0.25)"]


def test_a_single_round_cannot_show_its_spread():
    assert not judge([_m("a", 0, 10)]).valid


def _goal(edit: list[float], copy: list[float], foreign: float = 0.0):
    ms = [_m("edit", r, v, foreign) for r, v in enumerate(edit)] + [_m("copy", r, v) for r, v in enumerate(copy)]
    return goal_verdict(ms, judge(ms, max_spread=1.5), {"edit <= 1.5x copy": ("edit", "copy", 1.5)}, 1.5)


def test_spread_that_cannot_flip_the_goal_is_recorded_not_disqualifying():
    valid, reasons, ranges = _goal([2.0, 3.6, 2.6], [2.6, 2.9, 4.4])     # worst pairing 3.6 / 2.6 = 1.38 <= 1.5
    assert valid and reasons == [] and ranges["edit <= 1.5x copy"]["decisive"]
    valid, _, ranges = _goal([9.0, 12.0], [2.0, 3.5])                      # fails for every pairing: still decisive
    assert valid and ranges["edit <= 1.5x copy"]["best"] > 1.5


def test_spread_that_could_flip_the_goal_or_a_busy_machine_is_invalid():
    valid, reasons, ranges = _goal([3.2, 2.6, 2.2], [1.7, 3.0, 2.3])     # 3.2 / 1.7 = 1.88 but 2.2 / 3.0 = 0.73
    assert not valid and not ranges["edit <= 1.5x copy"]["decisive"]
    assert [r.split(":")[0] for r in reasons] == ["copy"] and "depends on which rounds are paired" in reasons[0]
    valid, reasons, _ = _goal([2.0, 2.1], [2.0, 2.1], foreign=0.9)
    assert not valid and reasons[0].startswith("machine busy")
    valid, reasons, _ = _goal([2.0], [2.0, 2.1])
    assert not valid and reasons == ["edit: only 1 round(s); spread unknown"]


def test_interleaving_rotates_the_order():
    seen = []
    interleave({n: (lambda n=n: (seen.append(n), (1.0, {}))[1]) for n in "abc"}, rounds=3)
    assert seen == list("abc" "bca" "cab")


def test_measure_sees_another_process_burning_a_core():
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        m = measure("sleeper", 0, lambda: (time.sleep(1.0), (1.0, {}))[1])
    finally:
        burner.kill()
        burner.wait()
    assert m.foreign_cores is not None and m.foreign_cores >= 0.5 and m.own_cpu_s < 0.2


def test_warm_up_runs_each_contender_once_and_times_it():
    seen = []
    seconds = warm_up({n: (lambda n=n: (seen.append(n), time.sleep(0.01), (1.0, {}))[2]) for n in "ab"})
    assert seen == ["a", "b"] and set(seconds) == {"a", "b"} and all(s >= 0.01 for s in seconds.values())
