"""Dataclasses read from JSON or YAML mappings, every key and type checked, errors naming the source and the key."""
from __future__ import annotations

import dataclasses
import types
from typing import Any, Union, get_args, get_origin, get_type_hints


def build_typed(cls: type, values: Any, source: str, error: type[Exception] = ValueError, *, path: str = ""):
    """cls(**values) for a dataclass cls: unknown keys, missing required keys and wrong types raise `error`.

    Messages name the source (a file) and the key as path + key, e.g. `model.json: sampler.steps: expected int`.
    """
    inside = f" in {path.rstrip('.')!r}" if path else ""
    if not isinstance(values, dict):
        raise error(f"{source}: {path.rstrip('.') or 'the whole file'}: expected a mapping of keys, got {values!r}")
    hints = get_type_hints(cls)
    for key in values:
        if key not in hints:
            raise error(f"{source}: unknown key {key!r}{inside}; allowed: {', '.join(hints)}")
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [key for key in required if key not in values]
    if missing:
        raise error(f"{source}: missing key {missing[0]!r}{inside}")
    return cls(**{key: typed(value, hints[key], source, error, path=f"{path}{key}") for key, value in values.items()})


def typed(value: Any, expected: Any, source: str, error: type[Exception] = ValueError, *, path: str) -> Any:
    """value if it has the expected type (an int is accepted as a float; dataclasses are built), else `error`."""
    origin, args = get_origin(expected), get_args(expected)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return typed(value, next(a for a in args if a is not type(None)), source, error, path=path)
    if dataclasses.is_dataclass(expected):
        return build_typed(expected, value, source, error, path=f"{path}.")
    if expected is float and type(value) is int:
        return float(value)
    if origin in (list, tuple):
        ok = isinstance(value, list) and all(type(item) is args[0] for item in value)
        value = tuple(value) if ok and origin is tuple else value
    else:
        ok = type(value) is (origin or expected)
    if not ok:
        raise error(f"{source}: {path}: expected {type_name(expected)}, got {value!r} ({type(value).__name__})")
    return value


def type_name(expected: Any) -> str:
    """int, float, str, 'a list of str' and the like."""
    if get_origin(expected) in (list, tuple):
        return f"a list of {get_args(expected)[0].__name__}"
    return getattr(get_origin(expected) or expected, "__name__", str(expected))
