"""Argument types shared by the verbs: every value is checked where it is parsed (argparse turns a
`ArgumentTypeError` into the one-line usage error, exit 2)."""

from __future__ import annotations

import argparse
import math


def _number(text: str, kind: type) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") \
            from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (counts, sizes, epochs, threads)."""
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def nonneg_int(text: str) -> int:
    """An integer >= 0 (worker counts where 0 means in-process, seeds)."""
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (learning rates, scales)."""
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def nonneg_float(text: str) -> float:
    """A finite number >= 0 (weight decay, thresholds)."""
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def finite_float(text: str) -> float:
    """Any finite number."""
    return float(_number(text, float))


def size_hw(text: str) -> tuple[int, int]:
    """'HxW' (or one number for a square) -> (H, W), both >= 1."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) <= 0:
        raise argparse.ArgumentTypeError(f"expected HxW like 64x64, got {text!r}")
    return parts[0], parts[1]


def model_options(items: list[str]) -> dict[str, object]:
    """`--set KEY=VALUE` items -> model config overrides; a value is JSON (numbers, true/false, null, lists) or else
    the text itself, never NaN/inf. Keys and types are checked against the model by the registry (`check_config`)."""
    import json

    from edgeml.errors import InputError

    def value(key: str, text: str) -> object:
        def refuse(constant: str) -> float:
            raise InputError(f"--set {key}={text}: expected a finite number, got {constant}")

        try:
            return json.loads(text, parse_constant=refuse,
                              parse_float=lambda t: float(t) if math.isfinite(float(t)) else refuse(t))
        except json.JSONDecodeError:
            return text

    out: dict[str, object] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise InputError(f"--set {item!r} is not KEY=VALUE")
        out[key] = value(key, text)
    return out
