"""Event loop choice: uvloop when installed, asyncio's own loop otherwise."""

from __future__ import annotations

import asyncio
from types import ModuleType

uvloop: ModuleType | None
try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
    uvloop = None


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop, uvloop when available."""
    if uvloop is not None:
        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop
    return asyncio.new_event_loop()


def loop_name() -> str:
    """Which loop implementation new_event_loop() gives."""
    return "uvloop" if uvloop is not None else "asyncio"
