"""Request statistics kept as plain counters on the request path.

Nothing here formats or locks: a finished request adds to a few integer
lists held by the objects it already touched (its listener context, its
upstream group, its server).  The control plane reads them when Prometheus
scrapes (``admin/metrics.py``), sums them over worker processes and renders
the text format; per-request cost stays a handful of list increments.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any, Final

# Methods counted by name; anything else is "other" (an unbounded label
# set would let clients grow the metrics without limit).
# (Tuples here are plain globals, not Final: mypyc would inline a Final
# tuple and then refuse the expressions derived from it at import.)
METHOD_NAMES: tuple[str, ...] = (
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "PATCH",
    "OPTIONS",
    "other",
)
METHOD_INDEX: Final[dict[bytes, int]] = {
    name.encode(): i for i, name in enumerate(METHOD_NAMES[:-1])
}
N_METHODS: Final = 8
# Status classes 1xx..5xx.
CODE_CLASSES: tuple[str, ...] = ("1xx", "2xx", "3xx", "4xx", "5xx")
N_CLASSES: Final = 5

# Histogram bucket upper bounds in seconds: Prometheus' defaults plus the
# long tail a proxy with 60 s timeouts needs.
BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
N_BUCKETS: Final = 14  # len(BUCKETS) + 1: the last one is +Inf


def bucket_index(seconds: float) -> int:
    """Index of the first bucket whose bound is >= ``seconds`` (binary search)."""
    if seconds <= 0.1:
        if seconds <= 0.01:
            return 0 if seconds <= 0.005 else 1
        if seconds <= 0.025:
            return 2
        return 3 if seconds <= 0.05 else 4
    if seconds <= 2.5:
        if seconds <= 0.25:
            return 5
        if seconds <= 0.5:
            return 6
        return 7 if seconds <= 1.0 else 8
    if seconds <= 10.0:
        return 9 if seconds <= 5.0 else 10
    if seconds <= 30.0:
        return 11
    return 12 if seconds <= 60.0 else 13


class Histogram:
    """Non-cumulative bucket counts and a sum (made cumulative when rendered)."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * N_BUCKETS
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bucket_index(seconds)] += 1
        self.total += seconds

    def to_wire(self) -> list[float]:
        """Counts then the sum, for the control channel."""
        return [float(c) for c in self.counts] + [self.total]


# TLS handshakes: a full one costs about a millisecond of CPU, a resumed one
# less; the request buckets would put them all in the first bucket.
TLS_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class BoundsHistogram:
    """A histogram over any bucket bounds (off the request path: a bisect per observation)."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def to_wire(self) -> list[float]:
        """Counts then the sum, for the control channel."""
        return [float(c) for c in self.counts] + [self.total]


def request_counts(listeners: int) -> list[int]:
    """A zeroed [listener][method][class] counter block."""
    return [0] * (listeners * N_METHODS * N_CLASSES)


def count_index(listener: int, method: bytes, status: int) -> int:
    """Offset of (listener, method, status class) in a ``request_counts`` block."""
    code = status // 100 - 1
    if code < 0:
        code = 0
    elif code > 4:
        code = 4
    return (listener * N_METHODS + METHOD_INDEX.get(method, N_METHODS - 1)) * N_CLASSES + code


def merge_tree(into: Any, other: Any) -> Any:
    """Element-wise sum of two snapshot trees (dicts, lists, numbers)."""
    if isinstance(into, dict) and isinstance(other, dict):
        for key, value in other.items():
            into[key] = merge_tree(into[key], value) if key in into else _copy(value)
        return into
    if isinstance(into, list) and isinstance(other, list):
        if len(into) < len(other):
            into.extend([0] * (len(other) - len(into)))
        for i, value in enumerate(other):
            into[i] = merge_tree(into[i], value)
        return into
    if isinstance(into, bool) or isinstance(other, bool):
        return into or other
    if isinstance(into, (int, float)) and isinstance(other, (int, float)):
        return into + other
    return into


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
