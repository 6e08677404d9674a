"""nginx-style duration and size literals.

Durations accept ``ms``, ``s``, ``m``, ``h``, ``d``, ``w`` and combinations
nginx accepts such as ``1m30s`` or ``1h 30m`` (largest unit first, each unit
once); a bare number means seconds, as in nginx.  Sizes
accept ``k`` and ``m`` (and ``g``), case-insensitive; a bare number means
bytes.  Both return plain numbers (seconds as float, bytes as int) so the
rest of the program never sees the strings.
"""

from __future__ import annotations

import math
import re

# [0-9], not \d: \d also matches non-ASCII digits, which float() would accept.
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_DURATION_PART = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d|w)")
_DURATION_FACTORS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
# nginx (ngx_parse_time) wants units from the largest to the smallest, each once.
_DURATION_ORDER = {"w": 0, "d": 1, "h": 2, "m": 3, "s": 4, "ms": 5}
_SIZE = re.compile(r"([0-9]+)([kKmMgG]?)")
_SIZE_FACTORS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_duration(value: object) -> float:
    """Return ``value`` in seconds; raise ValueError with a readable reason."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 500ms, 3s, 10m or 1h")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError("duration must be a finite number")
        if value < 0:
            raise ValueError("duration must not be negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError("expected a duration such as 500ms, 3s, 10m or 1h")
    text = value.strip()
    if _NUMBER.fullmatch(text):
        return float(text)
    pos = 0
    total = 0.0
    last_rank = -1
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if match is None:
            break
        rank = _DURATION_ORDER[match.group(2)]
        if rank <= last_rank:
            raise ValueError(
                f"invalid duration {value!r}: write units from the largest to the smallest, "
                "each once (e.g. 1m30s)"
            )
        last_rank = rank
        total += float(match.group(1)) * _DURATION_FACTORS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"invalid duration {value!r}: use units ms, s, m, h, d (e.g. 500ms, 3s)")
    return total


def parse_size(value: object) -> int:
    """Return ``value`` in bytes; raise ValueError with a readable reason."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 16k or 100m")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("size must not be negative")
        return value
    if not isinstance(value, str):
        raise ValueError("expected a size such as 16k or 100m")
    match = _SIZE.fullmatch(value.strip())
    if not match:
        raise ValueError(f"invalid size {value!r}: use a number with optional k, m or g (e.g. 16k)")
    return int(match.group(1)) * _SIZE_FACTORS[match.group(2).lower()]


def format_duration(seconds: float) -> str:
    """Render seconds the way a user would write them in the config."""
    if seconds and seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds % 3600 == 0 and seconds >= 3600:
        return f"{int(seconds // 3600)}h"
    if seconds % 60 == 0 and seconds >= 60:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


def format_size(size: int) -> str:
    """Render bytes the way a user would write them in the config."""
    for suffix, factor in (("g", 1024**3), ("m", 1024**2), ("k", 1024)):
        if size and size % factor == 0:
            return f"{size // factor}{suffix}"
    return str(size)
