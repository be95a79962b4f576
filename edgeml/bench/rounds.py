"""Interleaved benchmark rounds that notice a busy machine.

A baseline timed while something else runs looks slower than it is (a PyTorch step once read 50-100x too slow and the
README said the opposite of the truth). So contenders run in interleaved rounds — each round times every contender
once, the order rotating — and every measurement records the CPU time the rest of the machine used meanwhile
(`/proc/stat` busy time minus this process tree's own). A run is valid only when no measurement saw more than
`max_foreign_cores` of foreign load and each contender's round medians agree within `max_spread`.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_status_kb(key: str) -> int | None:
    """A kB field of this process's /proc/self/status, None where it is absent. "VmHWM" is the peak RSS of this
    process image (getrusage's ru_maxrss would carry the parent's peak over an exec), "VmRSS" the RSS now."""
    try:
        with open("/proc/self/status") as f:
            return next((int(line.split()[1]) for line in f if line.startswith(key + ":")), None)
    except OSError:
        return None


def _machine_busy_s() -> float | None:
    """CPU-seconds all cores have spent busy since boot (None where /proc/stat is absent)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICK


def _own_cpu_s() -> float:
    """CPU-seconds of this process and of its waited-for children."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


@dataclass
class Measurement:
    """One contender's result in one round, with the machine's state around it."""

    contender: str
    round: int
    value: float  # what the contender reports (e.g. a median step time in ms)
    wall_s: float
    own_cpu_s: float
    foreign_cores: float | None  # mean cores busy with other work during the measurement
    extra: dict = field(default_factory=dict)


def measure(contender: str, round_: int, run: Callable[[], tuple[float, dict]]) -> Measurement:
    """Run `run() -> (value, extra)` once, recording wall time, own CPU time and foreign load."""
    busy0, own0, t0 = _machine_busy_s(), _own_cpu_s(), time.perf_counter()
    value, extra = run()
    wall, own = time.perf_counter() - t0, _own_cpu_s() - own0
    busy1 = _machine_busy_s()
    foreign = None if busy0 is None or busy1 is None else max(0.0, (busy1 - busy0) - own) / max(wall, 1e-9)
    return Measurement(contender, round_, float(value), wall, own, foreign, extra)


@dataclass
class Verdict:
    valid: bool
    reasons: list[str]
    spread: dict[str, float]  # per contender: max / min of its round values
    max_foreign_cores: float | None
    medians: dict[str, float]

    def as_dict(self) -> dict:
        return {"valid": self.valid, "reasons": self.reasons, "spread": self.spread,
                "max_foreign_cores": self.max_foreign_cores, "medians": self.medians}


def judge(measurements: list[Measurement], *, max_spread: float = 1.25, max_foreign_cores: float = 0.25) -> Verdict:
    """Valid iff every contender's round values agree within `max_spread` (max/min) and no measurement saw more than
    `max_foreign_cores` cores of other work."""
    by: dict[str, list[float]] = {}
    for m in measurements:
        by.setdefault(m.contender, []).append(m.value)
    reasons = []
    spread = {c: (max(v) / min(v) if min(v) > 0 else float("inf")) for c, v in by.items()}
    for c, s in spread.items():
        if len(by[c]) < 2:
            reasons.append(f"{c}: only {len(by[c])} round(s); spread unknown")
        elif s > max_spread:
            reasons.append(f"{c}: rounds disagree ({s:.2f}x > {max_spread:.2f}x)")
    loads = [m.foreign_cores for m in measurements if m.foreign_cores is not None]
    worst = max(loads) if loads else None
    if worst is None:
        reasons.append("foreign load unknown (no /proc/stat)")
    elif worst > max_foreign_cores:
        busy = sorted({m.contender for m in measurements if (m.foreign_cores or 0) > max_foreign_cores})
        reasons.append(f"machine busy: {worst:.2f} cores of other work during {', '.join(busy)} "
                       f"(limit {max_foreign_cores:.2f})")
    medians = {c: float(np.median(v)) for c, v in by.items()}
    return Verdict(not reasons, reasons, spread, worst, medians)


def warm_up(contenders: dict[str, Callable[[], tuple[float, dict]]]) -> dict[str, float]:
    """One untimed pass of each contender before the rounds (a run's first pass pays lazy start-up: worker
    processes, fresh page cache) -> the wall seconds each took, for a benchmark that reports that start-up."""
    seconds = {}
    for name, run in contenders.items():
        t0 = time.perf_counter()
        run()
        seconds[name] = time.perf_counter() - t0
    return seconds


def interleave(contenders: dict[str, Callable[[], tuple[float, dict]]], rounds: int,
               progress: Callable[[str], None] | None = None) -> list[Measurement]:
    """`rounds` rounds; each runs every contender once, the starting contender rotating round to round."""
    names = list(contenders)
    out = []
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            m = measure(name, r, contenders[name])
            out.append(m)
            if progress:
                load = "?" if m.foreign_cores is None else f"{m.foreign_cores:.2f}"
                progress(f"round {r + 1}/{rounds} {name}: {m.value:.3g} (foreign load {load} cores)")
    return out


def goal_verdict(measurements: list[Measurement], verdict: Verdict, goals: dict[str, tuple[str, str, float]],
                 max_spread: float) -> tuple[bool, list[str], dict[str, dict]]:
    """A run judged through its goals (name -> (numerator, denominator, limit): the goal is num / den <= limit).

    A busy or unmeasured machine stands as `judge` says. A goal's contenders whose rounds disagree beyond
    `max_spread` make the run invalid only where that can change the goal's verdict: the goal holds, or fails, for
    every pairing of their rounds (worst: the largest numerator over the smallest denominator; best: the reverse) —
    noise that cannot flip the conclusion is recorded, not disqualifying. Contenders behind no goal are not judged
    on spread. -> (valid, reasons, per goal {worst, best, decisive})."""
    values: dict[str, list[float]] = {}
    for m in measurements:
        values.setdefault(m.contender, []).append(m.value)
    reasons = [r for r in verdict.reasons if r.startswith(("machine busy", "foreign load"))]
    ranges = {}
    for name, (num, den, limit) in goals.items():
        worst, best = max(values[num]) / min(values[den]), min(values[num]) / max(values[den])
        ranges[name] = {"worst": worst, "best": best, "decisive": (worst <= limit) == (best <= limit)}
        for c in (num, den):
            if len(values[c]) < 2:
                why = f"{c}: only {len(values[c])} round(s); spread unknown"
            elif verdict.spread[c] > max_spread and not ranges[name]["decisive"]:
                why = (f"{c}: rounds disagree ({verdict.spread[c]:.2f}x > {max_spread:.2f}x) and the goal's verdict "
                       f"depends on which rounds are paired ({best:.2f}x-{worst:.2f}x)")
            else:
                continue
            if why not in reasons:
                reasons.append(why)
    return not reasons, reasons, ranges


__all__ = ["Measurement", "Verdict", "goal_verdict", "interleave", "judge", "measure", "warm_up"]
