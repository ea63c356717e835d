"""What one upscale request asks for, read from its query string and checked before any upload is read."""
from __future__ import annotations

import math
import re
from collections.abc import Container, Mapping
from dataclasses import dataclass

from ..cli.upscale import MAX_SAMPLES, MAX_SCALE, MAX_STEPS, TARGET_PATTERN

MAX_SEED = 2**63 - 1
MAX_NAME_CHARS = 120
FIELDS = ("model", "scale", "target", "steps", "samples", "seed", "name")
UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class RequestError(Exception):
    """A request the server refuses: the HTTP status and a message for the user (sent as JSON {"error": ...})."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server: upload bytes, decoded input pixels and output pixels."""

    upload_bytes: int = 16 * 2**20
    input_pixels: int = 2**20  # 1024 x 1024
    output_pixels: int = 2**24  # 4096 x 4096


@dataclass(frozen=True)
class Settings:
    """One request's model and sampler; None means the model's own default."""

    model: str
    scale: float | None = None
    target: tuple[int, int] | None = None
    steps: int | None = None
    samples: int | None = None
    seed: int = 0
    name: str = "upload"  # the uploaded file's name, for messages and the download

    @property
    def download_name(self) -> str:
        """{stem}_out.png, as `shiftsr upscale` names it, with only safe characters."""
        stem = self.name.rsplit(".", 1)[0] if "." in self.name.strip(".") else self.name
        return (UNSAFE_NAME.sub("_", stem).strip("._") or "upload") + "_out.png"


def parse_settings(query: Mapping[str, str], models: Container[str], default_model: str) -> Settings:
    """The Settings of a query string; RequestError 400 naming the field for anything unknown or out of range."""
    unknown = sorted(set(query) - set(FIELDS))
    if unknown:
        raise RequestError(400, f"unknown field {unknown[0]!r}; allowed: {', '.join(FIELDS)}")
    given = {key: str(query[key]).strip() for key in FIELDS if str(query.get(key, "")).strip()}
    model = given.get("model", default_model)
    if model not in models:
        raise RequestError(400, f"model: {model!r} is not offered by this server (see /api/models)")
    scale = parse_scale(given.get("scale"))
    target = parse_target(given.get("target"))
    if scale is not None and target is not None:
        raise RequestError(400, "give scale or target, not both")
    return Settings(model=model, scale=scale, target=target, steps=whole(given, "steps", 1, MAX_STEPS),
                    samples=whole(given, "samples", 1, MAX_SAMPLES), seed=whole(given, "seed", 0, MAX_SEED) or 0,
                    name="".join(ch for ch in given.get("name", "upload") if ch.isprintable())[:MAX_NAME_CHARS])


def whole(given: Mapping[str, str], key: str, low: int, high: int) -> int | None:
    """given[key] as a whole number in [low, high], or None when absent."""
    if key not in given:
        return None
    try:
        value = int(given[key])
    except ValueError:
        raise RequestError(400, f"{key}: {given[key][:40]!r} is not a whole number") from None
    if not low <= value <= high:
        raise RequestError(400, f"{key}: {value} is outside {low}..{high}")
    return value


def parse_scale(text: str | None) -> float | None:
    """A scale in (0, MAX_SCALE], or None when absent."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise RequestError(400, f"scale: {text[:40]!r} is not a number") from None
    if not (math.isfinite(value) and 0 < value <= MAX_SCALE):
        raise RequestError(400, f"scale: {text[:40]} is outside (0, {MAX_SCALE:g}]")
    return value


def parse_target(text: str | None) -> tuple[int, int] | None:
    """WIDTHxHEIGHT as (width, height), or None when absent."""
    if text is None:
        return None
    match = TARGET_PATTERN.fullmatch(text) if len(text) <= 40 else None
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise RequestError(400, f"target: {text[:40]!r} is not WIDTHxHEIGHT with positive whole numbers, "
                                "e.g. 1920x1080")
    return int(match[1]), int(match[2])
