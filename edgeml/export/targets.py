"""Target profiles: `export/targets/*.toml` (installed into the wheel as `edgeml/export/targets/`).

A profile says which backend builds the deployable artefact (onnxruntime, tvm, tensorrt), the ONNX opset,
the static batch, which precisions to produce (fp32 always; fp16 / int8 QDQ), and backend settings
(TensorRT version and trtexec flags, TVM target dict, power sensor paths).
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class TargetProfile:
    """One parsed target profile; `raw` keeps the whole TOML table for the manifest."""

    name: str
    description: str
    backend: str
    opset: int
    batch: int
    precisions: tuple[str, ...]
    path: Path
    aliases: tuple[str, ...] = ()
    tensorrt: dict[str, Any] = field(default_factory=dict)
    tvm: dict[str, Any] = field(default_factory=dict)
    onnxruntime: dict[str, Any] = field(default_factory=dict)
    power: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def wants_tvm(self) -> bool:
        return self.backend == "tvm"

    @property
    def wants_tensorrt(self) -> bool:
        return self.backend == "tensorrt"


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
        except (tomllib.TOMLDecodeError, OSError):
            continue
        for a in data.get("aliases", []):
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

    Unknown names are an InputError listing the valid ones; a TOML syntax error or a missing/invalid field is a
    ConfigError naming the file and the line.
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
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"TOML syntax error in target profile ({e})", path=path,
                          fix="fix the profile file (see the other profiles in the same folder)") from None
    return _parse(data, path)


def _need(data: dict, key: str, kind: type, path: Path) -> Any:
    if key not in data:
        raise ConfigError(f"target profile lacks the field {key!r}", path=path, fix=f"add `{key} = ...`")
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise ConfigError(f"field {key!r} must be a {kind.__name__}, got {value!r}", path=path)
    return value


def _parse(data: dict, path: Path) -> TargetProfile:
    backend = _need(data, "backend", str, path)
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}", path=path, fix=f"use one of: {', '.join(BACKENDS)}")
    precisions = tuple(data.get("precisions", ["fp32"]))
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad or "fp32" not in precisions:
        raise ConfigError(f"precisions must include fp32 and be among {PRECISIONS}, got {list(precisions)}", path=path)
    opset = _need(data, "opset", int, path)
    if not 13 <= opset <= 21:
        raise ConfigError(f"opset {opset} out of the supported range 13..21", path=path)
    trt = dict(data.get("tensorrt", {}))
    if backend == "tensorrt":
        if "version" not in trt:
            raise ConfigError("a tensorrt profile needs [tensorrt] version", path=path)
        if opset > int(trt.get("max_opset", opset)):
            raise ConfigError(f"opset {opset} exceeds TensorRT {trt['version']}'s max_opset {trt['max_opset']}",
                              path=path)
    tvm = dict(data.get("tvm", {}))
    if backend == "tvm" and not isinstance(tvm.get("target"), dict):
        raise ConfigError("a tvm profile needs [tvm] target = { kind = \"llvm\", ... }", path=path)
    return TargetProfile(
        name=str(data.get("name", path.stem)), description=str(data.get("description", "")), backend=backend,
        opset=opset, batch=int(data.get("batch", 1)), precisions=precisions, path=path,
        aliases=tuple(data.get("aliases", [])), tensorrt=trt, tvm=tvm,
        onnxruntime=dict(data.get("onnxruntime", {})), power=dict(data.get("power", {})), raw=data)
