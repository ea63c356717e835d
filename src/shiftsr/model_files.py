"""A model component's folder checked before and after it loads: config.json, safetensors weights, finite values.

Every check names the file and the key, so that a broken model folder is one clear error when it is loaded,
not a traceback, a silently re-initialised tensor or a NaN image later. The network is first built on the meta
device (no memory), so a config that does not fit its weights file is refused before anything is allocated.
"""
from __future__ import annotations

import inspect
import json
import math
import types
import typing
from collections.abc import Sequence
from pathlib import Path

import torch

from .convert.checkpoint import key_problems

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
INDEX_FILE = f"{WEIGHTS_FILE}.index.json"  # diffusers' sharded form: {"weight_map": {key: shard file}}
FOREIGN_WEIGHTS = (".pth", ".pt", ".ckpt", ".bin")  # official or pickled weights: `shiftsr convert` reads them
SCALARS = (bool, int, float, str)


def check_part(cls: type, folder: Path) -> dict[str, Path]:
    """Check folder's config and weights against cls before loading; returns which file holds each tensor."""
    config = read_config(cls, folder)
    own = meta_state(cls, config, folder / CONFIG_FILE)
    files = weight_files(cls, folder)
    found = {key: (dtype, shape, path) for path in files for key, (dtype, shape) in read_header(path).items()}
    problems = key_problems({key: tensor.shape for key, tensor in own.items()},
                            {key: shape for key, (_, shape, _) in found.items()})
    where = files[0] if len(files) == 1 else folder / INDEX_FILE
    if problems:
        raise ValueError(f"{where}: does not fit the {cls.__name__} of {folder / CONFIG_FILE}: " + "; ".join(problems))
    for key, tensor in own.items():
        dtype, _, path = found[key]
        if tensor.is_floating_point() and not dtype.startswith(("F", "BF")):
            raise ValueError(f"{path}: {key}: stored as {dtype}, not floating point; a network's weights are "
                             "F32, F16 or BF16")
    return {key: path for key, (_, _, path) in found.items()}


def check_finite(module: torch.nn.Module, files: dict[str, Path] | Path) -> None:
    """Refuse a loaded module whose weights hold NaN or infinity, naming the file (files: per key, or one for all)
    and the first such tensor."""
    for key, tensor in module.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            where = files.get(key, key) if isinstance(files, dict) else files
            raise ValueError(f"{where}: {key}: holds NaN or infinity")


def read_json(path: Path):
    """The parsed contents of a JSON file; ValueError naming the file when it cannot be read or parsed."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not readable JSON ({error})") from None


def read_config(cls: type, folder: Path) -> dict:
    """The folder's config.json as a mapping, its class, keys and value types checked against cls's arguments."""
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no {CONFIG_FILE} for its {cls.__name__}")
    config = read_json(path)
    if not isinstance(config, dict):
        raise ValueError(f"{path}: the whole file: expected a mapping of keys, got {type(config).__name__}")
    name = config.get("_class_name", cls.__name__)
    if name != cls.__name__:
        raise ValueError(f"{path}: _class_name: {name!r}, but {cls.__name__} is what belongs here")
    parameters = {key: p for key, p in inspect.signature(cls.__init__).parameters.items()
                  if key != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    hints = typing.get_type_hints(cls.__init__)
    for key, value in config.items():
        if key.startswith("_"):  # diffusers' own records: _class_name, _diffusers_version, _use_default_values
            continue
        if key not in parameters:
            raise ValueError(f"{path}: unknown key {key!r}; {cls.__name__} takes: {', '.join(parameters)}")
        check_value(value, hints.get(key), parameters[key].default, f"{path}: {key}")
    return config


def check_value(value, hint, default, label: str) -> None:
    """A ValueError unless value fits a scalar or sequence-of-scalar hint; a count may be negative only where its
    default is (a sentinel such as ADM's num_head_channels -1). Other hints are left to the constructor."""
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
    args = [a for a in typing.get_args(hint) if a is not type(None)] if optional else [hint]
    if optional and value is None:
        return
    hint, origin = args[0], typing.get_origin(args[0])
    if hint in SCALARS:
        items, kind, shown = [value], hint, hint.__name__
    elif origin in (list, tuple, Sequence) and typing.get_args(hint)[:1] and typing.get_args(hint)[0] in SCALARS:
        if not isinstance(value, list):
            raise ValueError(f"{label}: expected a list, got {value!r}")
        items, kind = value, typing.get_args(hint)[0]
        shown = f"a list of {kind.__name__}"
    else:
        return
    for item in items:
        fits = type(item) is kind or (kind is float and type(item) is int)
        if not fits or (kind is float and not math.isfinite(item)):
            raise ValueError(f"{label}: expected {shown}, got {value!r}")
    defaults = default if isinstance(default, (tuple, list)) else (default,)
    sentinel = any(isinstance(d, (int, float)) and d < 0 for d in defaults)
    if kind in (int, float) and not sentinel and any(item < 0 for item in items):
        raise ValueError(f"{label}: must not be negative, got {value!r}")


def meta_state(cls: type, config: dict, path: Path) -> dict[str, torch.Tensor]:
    """The state dict (shapes and dtypes, no memory) of cls built from config on the meta device."""
    try:
        with torch.device("meta"):
            return cls.from_config(config).state_dict()
    except Exception as error:  # noqa: BLE001 - a constructor given a foreign config can fail in any way
        message = " ".join(str(error).split())[:300] or type(error).__name__
        raise ValueError(f"{path}: does not build a {cls.__name__} ({message})") from None


def weight_files(cls: type, folder: Path) -> list[Path]:
    """The safetensors file(s) of a component: one file, or the shards its diffusers index names."""
    index = folder / INDEX_FILE
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"{index}: not a safetensors index ({type(error).__name__}: {error})") from None
        absent = [name for name in names if not (folder / str(name)).is_file()]
        if absent:
            raise FileNotFoundError(f"{index}: names {absent[0]}, which is not in {folder}")
        return [folder / name for name in names]
    if (folder / WEIGHTS_FILE).is_file():
        return [folder / WEIGHTS_FILE]
    foreign = sorted(p.name for p in folder.iterdir() if p.suffix in FOREIGN_WEIGHTS)
    hint = f"; found {', '.join(foreign)}: make a model folder of it with `shiftsr convert`" if foreign else ""
    raise FileNotFoundError(f"{folder}: no {WEIGHTS_FILE} for its {cls.__name__}{hint}")


def read_header(path: Path) -> dict[str, tuple[str, list[int]]]:
    """Each tensor's dtype (safetensors' name: F32, BF16, I8, ...) and shape, from the header alone."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as handle:
            return {key: (handle.get_slice(key).get_dtype(), handle.get_slice(key).get_shape())
                    for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        message = " ".join(str(error).split())[:200]
        raise ValueError(f"{path}: not a readable safetensors file ({message or 'empty or truncated'})") from None
