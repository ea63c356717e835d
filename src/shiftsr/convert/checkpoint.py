"""Reading foreign checkpoint files safely and loading them strictly, with errors that name the file and the key."""
from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

WRAPPER_KEYS = ("state_dict", "model", "params", "module")  # Lightning, BasicSR-style and plain wrappers
PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DistributedDataParallel, torch.compile


class CheckpointError(ValueError):
    """A checkpoint that cannot be used as it is; the message names the file and the problem."""


def read_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a .pth / .ckpt / .safetensors file, unwrapped from {'state_dict': ...} and unprefixed.

    Pickles are read with torch.load(weights_only=True): a file that needs arbitrary code to unpickle is
    refused. Non-tensor entries of a wrapper (epoch counters, optimiser state under other keys) are dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(path)
        except Exception as error:  # safetensors raises its own SafetensorError and OSError kinds
            raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from None
    else:
        try:
            # a zip checkpoint is memory-mapped: its tensors are read as the conversion copies them, so an 8 GB
            # DoSSR file does not need 8 GB of memory on top of the model's (the legacy format cannot map)
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
        except pickle.UnpicklingError as error:
            found = re.search(r"GLOBAL (\S+)", str(error))
            if found is None:
                raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (corrupt pickle)") from None
            raise CheckpointError(f"{path}: refused: unpickling it would call {found[1]}, which could run any "
                                  "code; only plain tensor checkpoints are read") from None
        except (RuntimeError, EOFError, OSError) as error:
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({error or 'empty or truncated'})"
                                  ) from None
    return strip_prefixes(unwrap(state, path))


def unwrap(state, path: Path) -> dict[str, Tensor]:
    """The tensor mapping inside a checkpoint: the object itself or its first wrapper key that holds tensors."""
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a mapping of tensors")
    for key in WRAPPER_KEYS:
        inner = state.get(key)
        if isinstance(inner, Mapping) and any(torch.is_tensor(v) for v in inner.values()):
            state = inner
            break
    tensors = {k: v for k, v in state.items() if torch.is_tensor(v)}
    if not tensors:
        raise CheckpointError(f"{path}: holds no tensors")
    return tensors


def strip_prefixes(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop a `module.` / `_orig_mod.` prefix when every key carries it (repeatedly: compiled DDP models)."""
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            if state and all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def load_strict(module: torch.nn.Module, state: Mapping[str, Tensor], path: str | Path,
                ignore: tuple[str, ...] = ()) -> None:
    """Load state into module, every tensor used: missing, unexpected or wrongly shaped keys named in one error.

    ignore: suffixes of checkpoint keys that the official code stores but never uses (e.g. Swin `attn_mask`).
    """
    state = {k: v for k, v in state.items() if not k.endswith(ignore)}
    own = {k: v.shape for k, v in module.state_dict().items()}
    problems = key_problems(own, {k: v.shape for k, v in state.items()})
    if problems:
        raise CheckpointError(f"{path}: does not fit {type(module).__name__}: " + "; ".join(problems))
    module.load_state_dict(state, strict=True)


def key_problems(own: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]]) -> list[str]:
    """The missing, unexpected and wrongly shaped keys of found (key -> shape) against a module's own, described."""
    missing = sorted(own.keys() - found.keys())
    unexpected = sorted(found.keys() - own.keys())
    shapes = sorted(f"{k} {tuple(found[k])} != {tuple(own[k])}" for k in own.keys() & found.keys()
                    if tuple(found[k]) != tuple(own[k]))
    return [f"{label} {describe_keys(keys)}" for label, keys in
            (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)) if keys]


def describe_keys(keys: list[str], shown: int = 5) -> str:
    """A short list of key names: the first few and how many more."""
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more
