"""Fake power sensors for the bench tests: sysfs trees (RAPL, INA3221 hwmon) and a pynvml module."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path


def write_atomic(path: Path, text: str) -> None:
    """Replace a sysfs-like file in one step, so the sampling thread never reads half a number."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def make_rapl(root: Path, zones: dict[str, tuple[int, int]], subzones: bool = True) -> list[Path]:
    """/sys/class/powercap/intel-rapl:N with name, energy_uj, max_energy_range_uj; zones: name -> (uj, max)."""
    base = root / "sys/class/powercap"
    out = []
    for i, (name, (uj, wrap)) in enumerate(zones.items()):
        z = base / f"intel-rapl:{i}"
        z.mkdir(parents=True)
        (z / "name").write_text(name + "\n")
        (z / "energy_uj").write_text(f"{uj}\n")
        (z / "max_energy_range_uj").write_text(f"{wrap}\n")
        if subzones:  # core sub-zone: inside the package, must not be added again
            s = base / f"intel-rapl:{i}:0"
            s.mkdir()
            (s / "name").write_text("core\n")
            (s / "energy_uj").write_text("123456789\n")
            (s / "max_energy_range_uj").write_text(f"{wrap}\n")
        out.append(z)
    return out


def make_ina3221(root: Path, rails: dict[str, tuple[float, float]], hwmon: str = "hwmon3",
                 power_files: bool = False) -> Path:
    """hwmon INA3221 with in{n}_label, in{n}_input [mV], curr{n}_input [mA]; rails: label -> (mV, mA)."""
    hw = root / "sys/class/hwmon" / hwmon
    hw.mkdir(parents=True)
    (hw / "name").write_text("ina3221\n")
    for n, (label, (mv, ma)) in enumerate(rails.items(), start=1):
        (hw / f"in{n}_label").write_text(label + "\n")
        (hw / f"in{n}_input").write_text(f"{int(mv)}\n")
        (hw / f"curr{n}_input").write_text(f"{int(ma)}\n")
        if power_files:
            (hw / f"power{n}_input").write_text(f"{int(mv * ma)}\n")  # µW = mV * mA
    return hw


class FakeNVMLError(Exception):
    pass


class FakeNVMLNotSupported(FakeNVMLError):
    pass


class FakePynvml:
    """The pynvml calls edgeml uses, driven by a power trace `watts(t)` (t: seconds since creation).

    With `energy_counter=True` the total-energy counter [mJ] is the exact integral of the trace, as on Volta+.
    """

    NVMLError = FakeNVMLError

    def __init__(self, watts, *, energy_counter: bool, gpus: int = 1, antiderivative=None):
        self.watts = watts
        self.antiderivative = antiderivative
        self.energy_counter = energy_counter
        self.gpus = gpus
        self.t0 = time.perf_counter()
        self.inits = 0
        self.fail_reads = False

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def nvmlInit(self):
        self.inits += 1

    def nvmlShutdown(self):
        pass

    def nvmlDeviceGetCount(self):
        return self.gpus

    def nvmlDeviceGetHandleByIndex(self, i):
        return ("gpu", i)

    def nvmlDeviceGetName(self, handle):
        return b"Fake H100"

    def nvmlDeviceGetPowerUsage(self, handle):
        if self.fail_reads:
            raise FakeNVMLError("GPU is lost")
        return int(round(self.watts(self.now()) * 1000))  # mW, integer like the real call

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if not self.energy_counter:
            raise FakeNVMLNotSupported("Not Supported")
        if self.fail_reads:
            raise FakeNVMLError("GPU is lost")
        return int(self.antiderivative(self.now()) * 1000)  # mJ since driver load


def wavy_power(t: float) -> float:
    """A known trace [W]: 120 W base with a 40 W swing of period 0.2 s."""
    return 120.0 + 40.0 * math.sin(2 * math.pi * t / 0.2)


def wavy_energy(t: float) -> float:
    """Antiderivative of `wavy_power` [J]."""
    return 120.0 * t - 40.0 * 0.2 / (2 * math.pi) * math.cos(2 * math.pi * t / 0.2)
