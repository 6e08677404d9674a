"""Garbage collector settings for a long-running server.

Imports (pydantic, prometheus_client...) leave ~100k long-lived objects;
every full collection walks all of them, a pause of milliseconds that lands
in the latency tail.  Once the process has started, ``gc.freeze()`` moves
them out of the collector's sight (the Instagram/uWSGI practice), and a
larger first-generation threshold makes young collections rarer: requests
free almost everything they allocate by reference counting, so few cycles
need the collector at all.
"""

from __future__ import annotations

import gc

# CPython's default is 700: a young collection every few requests here.
YOUNG_THRESHOLD = 20_000


def settle() -> None:
    """Collect once, then freeze everything alive so far (call after start-up)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
