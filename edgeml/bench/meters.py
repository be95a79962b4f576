"""Power and energy sensors: Intel RAPL, NVIDIA NVML and Jetson INA3221 rails.

Every function takes `root` (default "/") so tests can point it at a fake sysfs tree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Sensor:
    """One power/energy source found on this machine."""

    kind: str  # "rapl" | "nvml" | "ina3221"
    name: str
    path: str

    def to_dict(self) -> dict:
        return asdict(self)


def find_rapl(root: str | Path = "/") -> list[Sensor]:
    """RAPL zones with a readable energy counter under /sys/class/powercap."""
    base = Path(root) / "sys/class/powercap"
    found = []
    for zone in sorted(base.glob("intel-rapl:*")) if base.is_dir() else []:
        counter = zone / "energy_uj"
        if counter.is_file():
            name = (zone / "name").read_text().strip() if (zone / "name").is_file() else zone.name
            found.append(Sensor("rapl", name, str(counter)))
    return found


def find_ina3221(root: str | Path = "/") -> list[Sensor]:
    """Jetson INA3221 power monitors exposed through hwmon (as jtop/tegrastats read them)."""
    base = Path(root) / "sys/class/hwmon"
    found = []
    for hw in sorted(base.glob("hwmon*")) if base.is_dir() else []:
        name_file = hw / "name"
        if name_file.is_file() and name_file.read_text().strip() == "ina3221":
            found.append(Sensor("ina3221", hw.name, str(hw)))
    return found


def find_nvml() -> list[Sensor]:
    """NVIDIA GPUs visible through NVML (needs `nvidia-ml-py` and a driver)."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver / no GPU: NVML raises its own error types
        return []
    try:
        return [Sensor("nvml", str(pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))), f"gpu:{i}")
                for i in range(pynvml.nvmlDeviceGetCount())]
    finally:
        pynvml.nvmlShutdown()


def available_sensors(root: str | Path = "/") -> list[Sensor]:
    """Every power sensor found: RAPL, then NVML, then INA3221."""
    return [*find_rapl(root), *find_nvml(), *find_ina3221(root)]
