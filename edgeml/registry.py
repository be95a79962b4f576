"""Model registry: name -> factory, example inputs and metadata (the timm pattern).

Model modules in `edgeml.models` register themselves with `@register_model`; `create_model` is the
one way to build a model, optionally from a checkpoint written by `edgeml train`.
"""

from __future__ import annotations

import importlib
import inspect
import numbers
import pkgutil
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from os import PathLike
from typing import Any

from edgeml.errors import CheckpointError, ConfigError, InputError

_MODELS: dict[str, ModelSpec] = {}
_LOADED = False


@dataclass(frozen=True)
class ModelSpec:
    """What the rest of edgeml needs to know about a model without building it."""

    name: str
    factory: Callable[..., Any]
    example_inputs: Callable[[Any, int], tuple]  # (model, batch) -> inputs for forward / export
    task: str  # "video" | "image" | "t2i"
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    input_names: tuple[str, ...] = ("input",)
    output_names: tuple[str, ...] = ("logits",)


def register_model(
    name: str,
    *,
    example_inputs: Callable[[Any, int], tuple],
    task: str,
    description: str = "",
    defaults: dict[str, Any] | None = None,
    input_names: tuple[str, ...] = ("input",),
    output_names: tuple[str, ...] = ("logits",),
) -> Callable:
    """Decorator registering `factory(**config) -> nn.Module` under `name`."""

    def wrap(factory: Callable[..., Any]) -> Callable[..., Any]:
        if name in _MODELS and _MODELS[name].factory is not factory:
            raise ValueError(f"model {name!r} registered twice")
        _MODELS[name] = ModelSpec(name, factory, example_inputs, task, description or (factory.__doc__ or ""),
                                  dict(defaults or {}), tuple(input_names), tuple(output_names))
        return factory

    return wrap


def _load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    import edgeml.models as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{pkg.__name__}.{info.name}")
    _LOADED = True


def list_models(task: str | None = None) -> list[str]:
    """Registered model names, sorted (optionally only those of one task)."""
    _load_all()
    return sorted(n for n, s in _MODELS.items() if task is None or s.task == task)


def model_spec(name: str) -> ModelSpec:
    """The spec of `name`; an unknown name is an InputError listing the valid ones."""
    _load_all()
    if name not in _MODELS:
        raise InputError(f"unknown model {name!r}", fix=f"choose one of: {', '.join(list_models())}")
    return _MODELS[name]


def config_parameters(name: str) -> dict[str, inspect.Parameter]:
    """The config keys model `name` takes, with their annotations and defaults.

    Read from the factory's signature, or, for a `factory(**config)` that forwards everything, from the
    `__init__` of the class its return annotation names.
    """
    spec = model_spec(name)
    params = dict(inspect.signature(spec.factory).parameters)
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        try:
            cls = typing.get_type_hints(spec.factory).get("return")
        except (NameError, TypeError):
            cls = None
        if isinstance(cls, type):
            params = dict(inspect.signature(cls.__init__).parameters)
            params.pop("self", None)
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):  # cannot tell: accept what the defaults name
        return {k: inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v) for k, v in spec.defaults.items()}
    return {k: p for k, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


_TYPES = {"int": numbers.Integral, "float": numbers.Real, "str": str, "bool": bool}


def _type_ok(value: Any, annotation: Any) -> bool:
    """Whether `value` fits a simple annotation (`int`, `float`, `str`, `bool`, `X | None`); others pass."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    kinds = [k.strip() for k in text.split("|")] if text else []
    if not kinds or any(k not in _TYPES and k != "None" for k in kinds):
        return True
    if value is None:
        return "None" in kinds
    if isinstance(value, bool):
        return "bool" in kinds
    return any(k != "None" and isinstance(value, _TYPES[k]) for k in kinds)


def check_config(name: str, config: Mapping[str, Any], *, source: str = "config") -> None:
    """Raise ConfigError for a key model `name` does not take or a value of the wrong type, naming the key."""
    params = config_parameters(name)
    for key, value in config.items():
        if key not in params:
            raise ConfigError(f"unknown {source} key {key!r} for model {name!r}",
                              fix=f"valid keys: {', '.join(sorted(params))}")
        if not _type_ok(value, params[key].annotation):
            annotation = params[key].annotation
            expected = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "?")
            raise ConfigError(f"{source} key {key!r} of model {name!r} must be {expected}, got {value!r}")


def _build(spec: ModelSpec, config: dict[str, Any]) -> Any:
    try:
        return spec.factory(**config)
    except (ValueError, RuntimeError) as e:  # a value of the right type the model cannot be built with
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"model {spec.name!r} cannot be built with this config ({first})") from None


def checkpoint_config(name: str, meta: Mapping[str, Any], path: str | PathLike) -> dict[str, Any]:
    """The model config a checkpoint's metadata records, checked like `--set` (a CheckpointError naming `path`)."""
    saved = meta.get("config", {})
    try:
        if not isinstance(saved, dict):
            raise ConfigError(f"checkpoint config must be a JSON object, got {type(saved).__name__}")
        check_config(name, saved, source="checkpoint config")
    except ConfigError as e:
        raise CheckpointError(e.problem, path=path, fix=e.fix) from None
    return saved


def create_model(name: str, checkpoint: str | PathLike | None = None, **overrides: Any) -> Any:
    """Build model `name` from its defaults + `overrides`, or from `checkpoint`'s config and weights.

    Unknown keys and values of the wrong type are a ConfigError naming the key (a CheckpointError when
    they come from the checkpoint).
    """
    spec = model_spec(name)
    check_config(name, overrides)
    config = {**spec.defaults, **overrides}
    if checkpoint is None:
        return _tag(_build(spec, config), name)
    from edgeml.io import load_checkpoint
    from edgeml.training.checkpoint import load_weights

    tensors, meta = load_checkpoint(checkpoint, expect_model=name)
    saved = checkpoint_config(name, meta, checkpoint)
    try:
        model = _tag(_build(spec, {**spec.defaults, **saved, **overrides}), name)
    except ConfigError as e:
        raise CheckpointError(e.problem, path=checkpoint, fix=e.fix) from None
    load_weights(model, tensors, checkpoint)
    return model


def _tag(model: Any, name: str) -> Any:
    """Record the registry name on the module (`edgeml.training` names checkpoints by it)."""
    if hasattr(model, "__dict__"):
        model.registry_name = name
    return model
