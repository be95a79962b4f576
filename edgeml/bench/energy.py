"""Estimated energy of one forward pass from its operation counts and a stated per-operation energy table.

Every figure made here is labelled "estimated": it is (MACs x pJ/MAC + ACs x pJ/AC), not a measurement.
Tables (Horowitz, ISSCC 2014, 45 nm): "45nm" FP32 — 4.6 pJ per MAC (3.7 mult + 0.9 add), 0.9 pJ per AC (add);
"45nm-fp16" — 1.5 pJ per MAC (1.1 + 0.4), 0.4 pJ per AC; "45nm-int8" — 0.23 pJ per MAC (0.2 + 0.03), 0.03 pJ per AC.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgeml.errors import ConfigError

TABLES: dict[str, dict[str, float]] = {
    "45nm": {"pj_per_mac": 4.6, "pj_per_ac": 0.9},
    "45nm-fp16": {"pj_per_mac": 1.5, "pj_per_ac": 0.4},
    "45nm-int8": {"pj_per_mac": 0.23, "pj_per_ac": 0.03},
}


@dataclass(frozen=True)
class EnergyEstimate:
    """Energy of one sample in joules, with the table used; `label` is always "estimated"."""

    joules: float
    table: str
    pj_per_mac: float
    pj_per_ac: float
    macs: float
    acs: float
    label: str = "estimated"

    def as_dict(self) -> dict[str, Any]:
        return {"joules": self.joules, "label": self.label, "table": self.table, "pj_per_mac": self.pj_per_mac,
                "pj_per_ac": self.pj_per_ac, "macs": self.macs, "acs": self.acs}


def estimate_energy(opcount: Any, table: str | dict[str, float] = "45nm") -> EnergyEstimate:
    """Energy of `opcount` (anything with `.macs` and `.acs`) under `table` (a name in TABLES or a dict with
    `pj_per_mac` and `pj_per_ac`)."""
    if isinstance(table, str):
        if table not in TABLES:
            raise ConfigError(f"unknown energy table {table!r}", fix=f"choose one of {sorted(TABLES)}")
        name, t = table, TABLES[table]
    else:
        name, t = "custom", dict(table)
    joules = (opcount.macs * t["pj_per_mac"] + opcount.acs * t["pj_per_ac"]) * 1e-12
    return EnergyEstimate(joules, name, t["pj_per_mac"], t["pj_per_ac"], float(opcount.macs), float(opcount.acs))
