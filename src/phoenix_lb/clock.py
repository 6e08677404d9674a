"""Wall-clock strings shared by all connections of a loop, refreshed once a second.

Formatting a Date header or a log timestamp per request costs more than the
rest of the header work; one timer per loop keeps them current instead.
"""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate


class HttpClock:
    """The current ``Date:`` header line and access-log timestamp."""

    __slots__ = ("_handle", "_loop", "date_line", "iso_time", "log_time")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop
        self._handle: asyncio.TimerHandle | None = None
        self.date_line = b""
        self.log_time = ""
        self.iso_time = ""
        self._refresh()

    def _refresh(self) -> None:
        now = time.time()
        self.date_line = b"Date: %s\r\n" % formatdate(now, usegmt=True).encode("ascii")
        local = time.localtime(now)
        self.log_time = time.strftime("%d/%b/%Y:%H:%M:%S %z", local)
        self.iso_time = time.strftime("%Y-%m-%dT%H:%M:%S%z", local)
        if self._loop is not None:
            # Wake just after the next second boundary.
            self._handle = self._loop.call_later(1.0 - (now % 1.0) + 0.001, self._refresh)

    def stop(self) -> None:
        """Stop refreshing (the loop is shutting down)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
