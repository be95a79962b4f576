"""Model registry: name -> factory, example inputs and metadata (the timm pattern).

Model modules in `edgeml.models` register themselves with `@register_model`; `create_model` is the
one way to build a model, optionally from a checkpoint written by `edgeml train`.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from os import PathLike
from typing import Any

from edgeml.errors import CheckpointError, InputError

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


def create_model(name: str, checkpoint: str | PathLike | None = None, **overrides: Any) -> Any:
    """Build model `name` from its defaults + `overrides`, or from `checkpoint`'s config and weights."""
    spec = model_spec(name)
    config = {**spec.defaults, **overrides}
    if checkpoint is None:
        return _tag(spec.factory(**config), name)
    from edgeml.io import load_checkpoint

    tensors, meta = load_checkpoint(checkpoint, expect_model=name)
    config = {**spec.defaults, **meta.get("config", {}), **overrides}
    model = spec.factory(**config)
    prefix = "model."
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise CheckpointError(f"weights do not fit model {name!r} ({first})", path=checkpoint) from None
    return _tag(model, name)


def _tag(model: Any, name: str) -> Any:
    """Record the registry name on the module (`edgeml.train` names checkpoints by it)."""
    if hasattr(model, "__dict__"):
        model.registry_name = name
    return model
