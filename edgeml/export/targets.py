"""Target profiles: `export/targets/*.toml` (installed into the wheel as `edgeml/export/targets/`).

A profile says which backend builds the deployable artefact (onnxruntime, tvm, tensorrt), the ONNX opset,
the static batch, which precisions to produce (fp32 always; fp16 / int8 QDQ), and backend settings
(TensorRT version and trtexec flags, TVM target dict, onnxruntime providers, power sensors) and which precision
to deploy (with the measured reason).

Profiles are typed (`TargetProfile` and one dataclass per table) and validated when loaded: an unknown key, a
value of the wrong type or a missing required key is a ConfigError naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import tomllib
except ImportError:  # Python 3.10: the same parser from PyPI
    import tomli as tomllib

from edgeml.errors import ConfigError, InputError

BACKENDS = ("onnxruntime", "tvm", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
ORT_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
OPSET_RANGE = (13, 21)  # the ONNX opsets edgeml exports


@dataclass(frozen=True)
class TensorRTSettings:
    """`[tensorrt]`: the TensorRT version on the device and the trtexec build settings."""

    version: str
    jetpack: str | None = None
    max_opset: int | None = None
    workspace_mib: int = 1024
    dla_core: int = -1
    gpu_fallback: bool = True
    builder_optimization_level: int | None = None
    timing_cache: str | None = None


@dataclass(frozen=True)
class TVMSettings:
    """`[tvm]`: the TVM target dict, whether the library runs on this host, the cross linker."""

    target: dict[str, Any]
    host_runnable: bool = False
    cross_compiler: str | None = None


@dataclass(frozen=True)
class OnnxRuntimeSettings:
    """`[onnxruntime]`: execution providers (in preference order) and the session's graph optimization level."""

    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    graph_optimization_level: str = "all"


@dataclass(frozen=True)
class PowerSettings:
    """`[power]`: the device's power sensors, which the bench meters read (`edgeml.bench.meters.open_meters`):
    sysfs files (globs; RAPL `energy_uj`, INA3221 `in*_input` / `curr*_input` / `power*_input`) or `nvml:N`."""

    sensors: tuple[str, ...] = ()


@dataclass(frozen=True)
class PrecisionSettings:
    """`[precision]`: which of the profile's precisions to deploy, and the measurement that decided it."""

    recommended: str
    why: str


@dataclass(frozen=True)
class TargetProfile:
    """One validated target profile; `raw` keeps the whole TOML table for the manifest."""

    name: str
    description: str
    backend: str
    opset: int
    batch: int
    precisions: tuple[str, ...]
    path: Path
    aliases: tuple[str, ...] = ()
    tensorrt: TensorRTSettings | None = None
    tvm: TVMSettings | None = None
    onnxruntime: OnnxRuntimeSettings = field(default_factory=OnnxRuntimeSettings)
    power: PowerSettings = field(default_factory=PowerSettings)
    precision: PrecisionSettings | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def wants_tvm(self) -> bool:
        return self.backend == "tvm"

    @property
    def wants_tensorrt(self) -> bool:
        return self.backend == "tensorrt"


# The top-level keys of a profile file and their types (the tables are the dataclasses above).
_TOP_LEVEL: dict[str, Any] = {"name": str, "description": str, "aliases": list[str], "backend": str, "opset": int,
                              "batch": int, "precisions": list[str]}
_TABLES: dict[str, type] = {"tensorrt": TensorRTSettings, "tvm": TVMSettings, "onnxruntime": OnnxRuntimeSettings,
                            "power": PowerSettings, "precision": PrecisionSettings}


def targets_dir() -> Path:
    """The folder of the profile TOMLs: inside the installed package, else the source tree's `export/targets`."""
    pkg = Path(__file__).resolve().parent / "targets"
    if pkg.is_dir() and any(pkg.glob("*.toml")):
        return pkg
    src = Path(__file__).resolve().parents[2] / "export" / "targets"  # editable install: repo root
    if src.is_dir():
        return src
    raise ConfigError("no target profiles found", path=pkg,
                      fix="reinstall edgeml (the wheel installs export/targets/*.toml into edgeml/export/targets)")


def _profile_files() -> dict[str, Path]:
    return {p.stem: p for p in sorted(targets_dir().glob("*.toml"))}


def _aliases() -> dict[str, str]:
    """alias -> profile name, read from each profile's `aliases` (profiles that do not parse are skipped here)."""
    out = {}
    for name, path in _profile_files().items():
        try:
            data = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError):
            continue
        aliases = data.get("aliases", [])
        for a in aliases if isinstance(aliases, list) else []:
            out[str(a)] = name
    return out


def list_profiles() -> list[str]:
    """Profile names (file stems), sorted; aliases are not included."""
    return list(_profile_files())


def describe_profiles() -> list[dict[str, Any]]:
    """name, backend, description and aliases of every profile that parses (for `--list-targets`)."""
    rows = []
    for name in list_profiles():
        try:
            p = load_profile(name)
            rows.append({"name": p.name, "backend": p.backend, "precisions": list(p.precisions),
                         "aliases": list(p.aliases), "description": p.description})
        except ConfigError as e:
            rows.append({"name": name, "backend": "?", "precisions": [], "aliases": [], "description": f"ERROR: {e}"})
    return rows


def load_profile(name: str | Path) -> TargetProfile:
    """Load profile `name` (a profile name, an alias such as `jetson`, or a path to a .toml file).

    Unknown names are an InputError listing the valid ones; a TOML syntax error, an unknown key, a value of the
    wrong type or a missing required key is a ConfigError naming the file (and the line or the key).
    """
    path = Path(name)
    if path.suffix == ".toml" and path.is_file():
        pass
    else:
        files = _profile_files()
        key = _aliases().get(str(name), str(name))
        if key not in files:
            valid = ", ".join(list(files) + [f"{a} (= {t})" for a, t in sorted(_aliases().items())])
            raise InputError(f"unknown target {name!r}", fix=f"choose one of: {valid}")
        path = files[key]
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"TOML syntax error in target profile ({e})", path=path,
                          fix="fix the profile file (see the other profiles in the same folder)") from None
    return _parse(data, path)


def _type_name(hint: Any) -> str:
    """The TOML-facing name of a field type: int, str, list[str], dict (None of an optional is left out)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args if a is not type(None))
    if origin in (list, tuple):
        return f"list[{_type_name(args[0])}]"
    return getattr(origin or hint, "__name__", str(hint))


def _matches(value: Any, hint: Any) -> bool:
    """Whether a TOML value has the declared type (bool is not an int here; a list of T is checked item-wise)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args if a is not type(None))
    if origin in (list, tuple):
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _check_key(value: Any, hint: Any, key: str, path: Path) -> Any:
    if not _matches(value, hint):
        raise ConfigError(f"key {key!r} must be {_type_name(hint)}, got {value!r}", path=path)
    return tuple(value) if isinstance(value, list) else value


def _check_table(data: Any, schema: dict[str, Any], prefix: str, path: Path, required: set[str]) -> dict[str, Any]:
    """`data` checked against `schema` {key: type}: unknown keys, wrong types, missing `required` keys."""
    if not isinstance(data, dict):
        raise ConfigError(f"key {prefix.rstrip('.')!r} must be a table, got {data!r}", path=path)
    for key in data:
        if key not in schema:
            raise ConfigError(f"unknown key {prefix + key!r} in target profile", path=path,
                              fix=f"use one of: {', '.join(prefix + k for k in schema)}")
    for key in sorted(required):
        if key not in data:
            raise ConfigError(f"target profile lacks the key {prefix + key!r}", path=path,
                              fix=f"add `{key} = ...`" + (f" under [{prefix.rstrip('.')}]" if prefix else ""))
    return {k: _check_key(v, schema[k], prefix + k, path) for k, v in data.items()}


def _section(cls: type, data: Any, section: str, path: Path) -> Any:
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    required = {f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    return cls(**_check_table(data, {f.name: hints[f.name] for f in fields}, f"{section}.", path, required))


def _parse(data: dict, path: Path) -> TargetProfile:
    tables = {k: v for k, v in data.items() if k in _TABLES}
    top = _check_table({k: v for k, v in data.items() if k not in _TABLES}, _TOP_LEVEL, "", path,
                       {"backend", "opset"})
    backend, opset = top["backend"], top["opset"]
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}", path=path, fix=f"use one of: {', '.join(BACKENDS)}")
    precisions = top.get("precisions", ("fp32",))
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad or "fp32" not in precisions:
        raise ConfigError(f"precisions must include fp32 and be among {PRECISIONS}, got {list(precisions)}", path=path)
    if not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        raise ConfigError(f"opset {opset} out of the supported range {OPSET_RANGE[0]}..{OPSET_RANGE[1]}", path=path)
    batch = top.get("batch", 1)
    if batch < 1:
        raise ConfigError(f"key 'batch' must be >= 1, got {batch}", path=path)
    sections = {k: _section(cls, tables[k], k, path) for k, cls in _TABLES.items() if k in tables}
    trt, tvm = sections.get("tensorrt"), sections.get("tvm")
    if backend == "tensorrt" and trt is None:
        raise ConfigError("a tensorrt profile needs [tensorrt] version", path=path)
    if trt is not None:
        if not re.fullmatch(r"\d+\.\d+(\.\d+)*", trt.version):
            raise ConfigError(f"key 'tensorrt.version' must look like \"10.3\", got {trt.version!r}", path=path)
        if trt.workspace_mib < 1 or trt.dla_core < -1:
            raise ConfigError("key 'tensorrt.workspace_mib' must be >= 1 and 'tensorrt.dla_core' >= -1", path=path)
        if backend == "tensorrt" and trt.max_opset is not None and opset > trt.max_opset:
            raise ConfigError(f"opset {opset} exceeds TensorRT {trt.version}'s max_opset {trt.max_opset}", path=path)
    if backend == "tvm" and tvm is None:
        raise ConfigError("a tvm profile needs [tvm] target = { kind = \"llvm\", ... }", path=path)
    ort = sections.get("onnxruntime", OnnxRuntimeSettings())
    if ort.graph_optimization_level not in ORT_OPTIMIZATION_LEVELS:
        raise ConfigError(f"key 'onnxruntime.graph_optimization_level' must be one of {ORT_OPTIMIZATION_LEVELS}, "
                          f"got {ort.graph_optimization_level!r}", path=path)
    precision = sections.get("precision")
    if precision is not None and precision.recommended not in precisions:
        raise ConfigError(f"key 'precision.recommended' must be one of the profile's precisions {list(precisions)}, "
                          f"got {precision.recommended!r}", path=path)
    return TargetProfile(
        name=top.get("name", path.stem), description=top.get("description", ""), backend=backend, opset=opset,
        batch=batch, precisions=precisions, path=path, aliases=top.get("aliases", ()), tensorrt=trt, tvm=tvm,
        onnxruntime=ort, power=sections.get("power", PowerSettings()), precision=precision, raw=data)
