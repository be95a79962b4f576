"""Power and energy meters: Intel RAPL, NVIDIA NVML and Jetson INA3221 rails, behind one interface.

`open_meters(sensors=profile.power.sensors)` measures exactly the sensors a target profile names (`[power]
sensors`: sysfs files or globs -- RAPL `energy_uj`, INA3221 `in*_input` / `curr*_input` / `power*_input` -- and
`nvml:N`); without `sensors` it scans the machine for RAPL, NVML and INA3221 (as `available_sensors`, used by
`edgeml info`, does). Every function takes `root` (default "/") so tests can point it at a fake sysfs tree, and
NVML functions take the `pynvml` module so tests can pass a fake one.

Two kinds of meter:
- counters (RAPL `energy_uj`, NVML total energy): read at start, at every sampling tick and at stop; the
  deltas are summed, so a counter that wraps (RAPL at `max_energy_range_uj`) is counted correctly as long as
  it wraps at most once per tick.
- power samplers (NVML power, INA3221 rails): a thread reads watts every `interval` seconds with a
  timestamp; energy is the trapezoidal integral of the trace over the run.

A sensor file that is missing or unreadable is never fatal: discovery lists it under `problems`, and a read
that fails during a run marks that reading invalid with the reason.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Sensor:
    """One power/energy source found on this machine."""

    kind: str  # "rapl" | "nvml" | "ina3221"
    name: str
    path: str

    def to_dict(self) -> dict:
        return asdict(self)


class SensorReadError(Exception):
    """A sensor file or API call that failed; carries the path and the reason."""


def _read_number(path: Path) -> float:
    """One number from a sysfs file; SensorReadError (with the reason) if missing, unreadable or garbled."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        raise SensorReadError(f"{path}: missing") from None
    except PermissionError:
        raise SensorReadError(f"{path}: unreadable (permission denied; RAPL counters are root-only on "
                              "recent kernels — run as root or `chmod o+r` the file)") from None
    except OSError as e:
        raise SensorReadError(f"{path}: unreadable ({e.strerror or e})") from None
    try:
        return float(text)
    except ValueError:
        raise SensorReadError(f"{path}: not a number ({text[:40]!r})") from None


def _read_label(path: Path, default: str) -> str:
    try:
        return path.read_text().strip() or default
    except OSError:
        return default


# ----------------------------------------------------------------------------------------------- discovery


def _rapl_zones(root: str | Path) -> list[Path]:
    base = Path(root) / "sys/class/powercap"
    return sorted(base.glob("intel-rapl:*")) if base.is_dir() else []


def find_rapl(root: str | Path = "/") -> list[Sensor]:
    """RAPL zones with a readable energy counter under /sys/class/powercap."""
    found = []
    for zone in _rapl_zones(root):
        counter = zone / "energy_uj"
        if counter.is_file():
            found.append(Sensor("rapl", _read_label(zone / "name", zone.name), str(counter)))
    return found


def _ina3221_hwmons(root: str | Path) -> list[Path]:
    base = Path(root) / "sys/class/hwmon"
    hws = sorted(base.glob("hwmon*")) if base.is_dir() else []
    return [hw for hw in hws if _read_label(hw / "name", "") == "ina3221"]


def find_ina3221(root: str | Path = "/") -> list[Sensor]:
    """Jetson INA3221 power monitors exposed through hwmon (as jtop/tegrastats read them)."""
    return [Sensor("ina3221", hw.name, str(hw)) for hw in _ina3221_hwmons(root)]


def _import_pynvml() -> Any | None:
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


def find_nvml(nvml: Any | None = None) -> list[Sensor]:
    """NVIDIA GPUs visible through NVML (needs `nvidia-ml-py` and a driver); `nvml=False` skips NVML."""
    nvml = _import_pynvml() if nvml is None else nvml
    if not nvml:
        return []
    try:
        nvml.nvmlInit()
    except Exception:  # no driver / no GPU: NVML raises its own error types
        return []
    try:
        return [Sensor("nvml", _nvml_name(nvml, i), f"gpu:{i}") for i in range(nvml.nvmlDeviceGetCount())]
    finally:
        nvml.nvmlShutdown()


def _nvml_name(nvml: Any, index: int) -> str:
    name = nvml.nvmlDeviceGetName(nvml.nvmlDeviceGetHandleByIndex(index))
    return name.decode() if isinstance(name, bytes) else str(name)


def available_sensors(root: str | Path = "/", nvml: Any | None = None) -> list[Sensor]:
    """Every power sensor found: RAPL, then NVML, then INA3221."""
    return [*find_rapl(root), *find_nvml(nvml), *find_ina3221(root)]


# ----------------------------------------------------------------------------------------------- readings


@dataclass
class EnergyReading:
    """Energy measured over one run by one meter.

    `joules` is None when the run could not be measured (`error` says why). `trace` holds the
    (seconds since start, watts or cumulative joules) samples the figure was computed from.
    """

    meter: str  # "rapl" | "nvml" | "ina3221"
    scope: str  # what the figure covers, e.g. "package-0+package-1", "GPU 0", "VDD_IN"
    joules: float | None
    seconds: float
    samples: int
    method: str  # "counter" | "power-sampling"
    error: str | None = None
    channels: dict[str, float] = field(default_factory=dict)  # joules per zone / rail
    t_start: float | None = None  # time.perf_counter() of the first and last sample: the window measured
    t_end: float | None = None

    @property
    def source(self) -> str:
        return _METER_NAMES.get(self.meter, self.meter)

    @property
    def label(self) -> str:
        return f"measured ({self.source})"

    @property
    def watts(self) -> float | None:
        return None if self.joules is None or self.seconds <= 0 else self.joules / self.seconds

    def to_dict(self) -> dict:
        return {**asdict(self), "source": self.source, "label": self.label, "watts": self.watts}


_METER_NAMES = {"rapl": "RAPL", "nvml": "NVML", "ina3221": "INA3221"}


def integrate_power(times: list[float], watts: list[float]) -> float:
    """Trapezoidal integral of a power trace [W] over its timestamps [s] -> joules."""
    if len(times) != len(watts):
        raise ValueError(f"{len(times)} timestamps but {len(watts)} power samples")
    return float(sum((times[i] - times[i - 1]) * (watts[i] + watts[i - 1]) / 2 for i in range(1, len(times))))


def counter_delta(before: float, after: float, wrap: float | None) -> float:
    """Increase of a monotonic counter that wraps to 0 after `wrap` (RAPL's max_energy_range_uj)."""
    if after >= before:
        return after - before
    if not wrap:
        raise SensorReadError(f"counter went backwards ({before} -> {after}) and its wrap range is unknown")
    return wrap - before + after


# ----------------------------------------------------------------------------------------------- meters


class Meter:
    """One energy source. Subclasses define `_channels()` -> {name: reader} and `method`.

    A reader returns cumulative joules (method "counter") or instantaneous watts ("power-sampling").
    """

    kind = "meter"
    method = "counter"

    def __init__(self, scope: str, interval: float = 0.05):
        self.scope = scope
        self.interval = interval

    @property
    def source(self) -> str:
        return _METER_NAMES.get(self.kind, self.kind)

    @property
    def label(self) -> str:
        return f"measured ({self.source})"

    def _channels(self) -> dict[str, Callable[[], float]]:
        raise NotImplementedError

    def _wrap(self, channel: str) -> float | None:  # counters only
        return None

    def check(self) -> str | None:
        """None if every channel reads now, else the first reason it does not."""
        for read in self._channels().values():
            try:
                read()
            except SensorReadError as e:
                return str(e)
        return None

    @contextlib.contextmanager
    def measure(self) -> Iterator[list[EnergyReading]]:
        """`with meter.measure() as out:` — after the block, `out[0]` is the EnergyReading of the block."""
        out: list[EnergyReading] = []
        sampler = _Sampler(self._channels(), self.interval)
        sampler.start()
        try:
            yield out
        finally:
            sampler.stop()
            out.append(self._reading(sampler))

    def _reading(self, s: _Sampler) -> EnergyReading:
        seconds = s.times[-1] - s.times[0] if len(s.times) > 1 else 0.0
        window = {"t_start": s.times[0], "t_end": s.times[-1]} if s.times else {}
        if s.error is not None:
            return EnergyReading(self.kind, self.scope, None, seconds, len(s.times), self.method, s.error, **window)
        channels: dict[str, float] = {}
        try:
            for name, values in s.values.items():
                if self.method == "counter":
                    wrap = self._wrap(name)
                    pairs = zip(values[:-1], values[1:], strict=True)
                    channels[name] = sum(counter_delta(a, b, wrap) for a, b in pairs)
                else:
                    channels[name] = integrate_power(s.times, values)
        except SensorReadError as e:
            return EnergyReading(self.kind, self.scope, None, seconds, len(s.times), self.method, str(e), **window)
        return EnergyReading(self.kind, self.scope, sum(channels.values()), seconds, len(s.times), self.method,
                             None, channels, **window)


class _Sampler:
    """A thread reading every channel each `interval` seconds, with timestamps (time.perf_counter)."""

    def __init__(self, channels: dict[str, Callable[[], float]], interval: float):
        self.channels = channels
        self.interval = interval
        self.times: list[float] = []
        self.values: dict[str, list[float]] = {name: [] for name in channels}
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="edgeml-meter", daemon=True)

    def _tick(self) -> None:
        if self.error is not None:
            return
        try:
            row = {name: read() for name, read in self.channels.items()}
        except SensorReadError as e:
            self.error = str(e)
            return
        self.times.append(time.perf_counter())
        for name, v in row.items():
            self.values[name].append(v)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._tick()

    def start(self) -> None:
        self._tick()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._tick()


class RaplMeter(Meter):
    """Intel RAPL package zones: cumulative `energy_uj` counters that wrap at `max_energy_range_uj`.

    Only top-level zones are summed (sub-zones like core/uncore/dram-in-package are inside their package);
    `psys` (whole platform) is used alone where it exists, since it already contains the packages.
    """

    kind = "rapl"
    method = "counter"

    def __init__(self, zones: list[Path], interval: float = 0.05):
        self.zones = zones
        super().__init__("+".join(_read_label(z / "name", z.name) for z in zones), interval)

    def _channels(self) -> dict[str, Callable[[], float]]:
        return {_read_label(z / "name", z.name): (lambda z=z: _read_number(z / "energy_uj") * 1e-6)
                for z in self.zones}

    def _wrap(self, channel: str) -> float | None:
        for z in self.zones:
            if _read_label(z / "name", z.name) == channel:
                try:
                    return _read_number(z / "max_energy_range_uj") * 1e-6
                except SensorReadError:
                    return None
        return None


def _rapl_top_zones(root: str | Path) -> list[Path]:
    top = [z for z in _rapl_zones(root) if z.name.count(":") == 1]
    psys = [z for z in top if _read_label(z / "name", "") == "psys"]
    return psys or top


class NvmlMeter(Meter):
    """One NVIDIA GPU through NVML: the total-energy counter (mJ, Volta+) where supported, else power (mW).

    NVML refreshes both every 20–100 ms, so time whole batches, not single kernels.
    """

    kind = "nvml"

    def __init__(self, nvml: Any, index: int = 0, interval: float = 0.05):
        self.nvml = nvml
        self.index = index
        nvml.nvmlInit()
        self.handle = nvml.nvmlDeviceGetHandleByIndex(index)
        try:
            nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
            self.method = "counter"
        except Exception:  # NVMLError_NotSupported before Volta, or an old binding without the call
            self.method = "power-sampling"
        super().__init__(f"GPU {index} ({_nvml_name(nvml, index)})", interval)

    def _read(self) -> float:
        try:
            if self.method == "counter":
                return self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) * 1e-3
            return self.nvml.nvmlDeviceGetPowerUsage(self.handle) * 1e-3
        except Exception as e:  # NVMLError subclasses: GPU lost, driver reset, ...
            raise SensorReadError(f"NVML GPU {self.index}: {e}") from None

    def _channels(self) -> dict[str, Callable[[], float]]:
        return {f"gpu{self.index}": self._read}


# Rails that carry the whole module's input power, by Jetson family (L4T device trees; energymon's list).
_INA_TOTAL_RAILS = ("VDD_IN", "POM_5V_IN", "5V_IN", "VIN")


class Ina3221Meter(Meter):
    """Jetson INA3221 rails under hwmon: power = `in{n}_input` [mV] × `curr{n}_input` [mA], as jtop reads it.

    A `power{n}_input` file (µW, the hwmon ABI) is used where the driver provides one. The module input rail
    (VDD_IN and its aliases) is measured where present; otherwise every rail is summed. `channels`: only these
    (hwmon folder, channel number) pairs (the ones a profile names), else every labelled channel.
    """

    kind = "ina3221"
    method = "power-sampling"

    def __init__(self, hwmons: list[Path], interval: float = 0.05, channels: set[tuple[Path, int]] | None = None):
        self.rails = _ina_rails(hwmons) if channels is None else _ina_channel_rails(channels)
        total = {k: v for k, v in self.rails.items() if k.split("@")[0] in _INA_TOTAL_RAILS}
        if total:
            self.rails = dict(list(total.items())[:1])
        super().__init__("+".join(k.split("@")[0] for k in self.rails) or "no rails", interval)

    def _channels(self) -> dict[str, Callable[[], float]]:
        return dict(self.rails)


def _power_file_reader(power: Path) -> Callable[[], float]:
    """Watts from a hwmon power file [µW]."""
    return lambda: _read_number(power) * 1e-6


def _v_times_i_reader(volts: Path, amps: Path) -> Callable[[], float]:
    """Watts from a hwmon voltage [mV] and current [mA] pair."""
    return lambda: _read_number(volts) * _read_number(amps) * 1e-6


def _ina_rails(hwmons: list[Path]) -> dict[str, Callable[[], float]]:
    rails: dict[str, Callable[[], float]] = {}
    for hw in hwmons:
        for label_file in sorted(hw.glob("in*_label")):
            n = label_file.name[2:-len("_label")]
            label = _read_label(label_file, f"in{n}")
            if label.upper().startswith("SUM OF"):  # Orin's summed channel would double count
                continue
            power = hw / f"power{n}_input"
            rails[f"{label}@{hw.name}"] = (_power_file_reader(power) if power.exists()
                                           else _v_times_i_reader(hw / f"in{n}_input", hw / f"curr{n}_input"))
    return rails


def _ina_channel_rails(channels: set[tuple[Path, int]]) -> dict[str, Callable[[], float]]:
    """Rails of the given (hwmon folder, channel) pairs that carry a current or power reading (INA3221's
    `in4..6_input` are shunt voltages without one: not rails)."""
    rails: dict[str, Callable[[], float]] = {}
    for hw, n in sorted(channels):
        power, volts, amps = hw / f"power{n}_input", hw / f"in{n}_input", hw / f"curr{n}_input"
        if not (power.exists() or amps.exists()):
            continue
        label = _read_label(hw / f"in{n}_label", f"in{n}")
        if label.upper().startswith("SUM OF"):  # Orin's summed channel would double count
            continue
        rails[f"{label}@{hw.name}"] = _power_file_reader(power) if power.exists() else _v_times_i_reader(volts, amps)
    return rails


# ----------------------------------------------------------------------------------------------- opening


@dataclass
class MeterSet:
    """The meters usable here, plus every sensor that was found but cannot be read (with the reason)."""

    meters: list[Meter]
    problems: list[str]

    @property
    def measured(self) -> bool:
        return bool(self.meters)

    @contextlib.contextmanager
    def measure(self) -> Iterator[list[EnergyReading]]:
        """Measure a block with every meter at once; the list holds one EnergyReading per meter afterwards."""
        out: list[EnergyReading] = []
        with contextlib.ExitStack() as stack:
            parts = [stack.enter_context(m.measure()) for m in self.meters]
            try:
                yield out
            finally:
                stack.close()
                out.extend(r for part in parts for r in part)


def open_meters(root: str | Path = "/", nvml: Any | None = None, interval: float = 0.05,
                kinds: tuple[str, ...] = ("rapl", "nvml", "ina3221"),
                sensors: Sequence[str] | None = None) -> MeterSet:
    """The meters that read on this machine; unreadable ones go to `problems`.

    `sensors`: a target profile's `[power] sensors` -- exactly those are measured (none when it is empty); None
    scans for every RAPL, NVML and INA3221 sensor (`kinds` limits the scan). `nvml`: a pynvml-like module (tests
    pass a fake), None to import pynvml, False to skip NVML.
    """
    if sensors is not None:
        return _profile_meters(sensors, root, nvml, interval)
    candidates: list[Meter] = []
    problems: list[str] = []
    if "rapl" in kinds and (zones := _rapl_top_zones(root)):
        candidates.append(RaplMeter(zones, interval))
    nvml = _import_pynvml() if nvml is None else nvml
    if "nvml" in kinds and nvml:
        try:
            nvml.nvmlInit()
            count = nvml.nvmlDeviceGetCount()
        except Exception as e:  # NVMLError_LibraryNotFound / DriverNotLoaded: simply no NVIDIA GPU here
            count = 0
            if "NotFound" not in type(e).__name__ and "DriverNotLoaded" not in type(e).__name__:
                problems.append(f"NVML: {e}")
        for i in range(count):
            try:
                candidates.append(NvmlMeter(nvml, i, interval))
            except Exception as e:
                problems.append(f"NVML GPU {i}: {e}")
    if "ina3221" in kinds and (hwmons := _ina3221_hwmons(root)):
        meter = Ina3221Meter(hwmons, interval)
        if meter.rails:
            candidates.append(meter)
        else:
            problems.append(f"{', '.join(map(str, hwmons))}: ina3221 without labelled rails")
    return _checked(candidates, problems)


def _checked(candidates: list[Meter], problems: list[str]) -> MeterSet:
    """The candidates that read now; each one that does not adds its reason to `problems`."""
    meters = []
    for m in candidates:
        if (why := m.check()) is None:
            meters.append(m)
        else:
            problems.append(why)
    return MeterSet(meters, problems)


_INA_FILE = re.compile(r"(in|curr|power)(\d+)_input")


def _profile_meters(sensors: Sequence[str], root: str | Path, nvml: Any | None, interval: float) -> MeterSet:
    """Meters over exactly the sensors a profile names: `nvml:N`, RAPL `energy_uj` files, INA3221 channel files
    (globs allowed; each resolved under `root`). A sensor that is absent or unknown here goes to `problems`."""
    if not sensors:
        return MeterSet([], ["the target profile names no power sensor ([power] sensors = [])"])
    problems: list[str] = []
    candidates: list[Meter] = []
    zones: list[Path] = []
    channels: set[tuple[Path, int]] = set()
    for sensor in sensors:
        if sensor.startswith("nvml:"):
            candidates.extend(_nvml_sensor(sensor, nvml, interval, problems))
            continue
        found = sorted(Path(root).glob(sensor.lstrip("/"))) if sensor.strip("/") else []
        if not found:
            problems.append(f"{sensor}: not present on this machine")
        for path in found:
            if path.name == "energy_uj":
                zones.append(path.parent)
            elif m := _INA_FILE.fullmatch(path.name):
                channels.add((path.parent, int(m.group(2))))
            else:
                problems.append(f"{path}: not a sensor edgeml reads (RAPL energy_uj, INA3221 in/curr/power*_input, "
                                "nvml:N)")
    if zones:
        candidates.append(RaplMeter(sorted(set(zones)), interval))
    if channels:
        meter = Ina3221Meter(sorted({hw for hw, _ in channels}), interval, channels)
        if meter.rails:
            candidates.append(meter)
        else:
            problems.append(f"{', '.join(sorted(str(hw / f'in{n}_input') for hw, n in channels))}: "
                            "no current or power reading beside them")
    return _checked(candidates, problems)


def _nvml_sensor(sensor: str, nvml: Any | None, interval: float, problems: list[str]) -> list[Meter]:
    """The NvmlMeter of `nvml:N` (a list of one), or none with the reason added to `problems`."""
    index = sensor.partition(":")[2]
    if not index.isdigit():
        problems.append(f"{sensor}: expected nvml:N with N a GPU index")
        return []
    nvml = _import_pynvml() if nvml is None else nvml
    if not nvml:
        problems.append(f"{sensor}: pynvml is not installed (pip install 'edgeml[nvml]')")
        return []
    try:
        return [NvmlMeter(nvml, int(index), interval)]
    except Exception as e:  # NVMLError_*: no driver, no such GPU
        problems.append(f"{sensor}: {e}")
        return []
