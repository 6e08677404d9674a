"""A per-connection deadline that re-arms its timer lazily.

Moving a deadline is the common case (every request on a keep-alive
connection, every read of a body), and re-arming a loop timer each time is
churn.  Here ``set()`` only stores the new time; the one timer re-arms itself
when it fires early (aiohttp's habit: a deadline stored and checked instead
of a timer re-armed per request).  A new deadline earlier than the armed
timer re-arms at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Deadline:
    """Calls ``callback()`` once ``loop.time()`` passes the deadline, unless cleared."""

    __slots__ = ("_armed_at", "_callback", "_handle", "_loop", "now", "when")

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], object]) -> None:
        self._loop = loop
        #: the loop's clock (a bound method kept, not looked up per call)
        self.now: Callable[[], float] = loop.time
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = 0.0
        #: the current deadline in loop time, 0.0 when none
        self.when = 0.0

    def set(self, when: float) -> None:
        """Expire at loop time ``when`` (replacing any earlier deadline)."""
        self.when = when
        if self._handle is None or when < self._armed_at:
            self._arm(when)

    def set_after(self, delay: float) -> None:
        """Expire ``delay`` seconds from now."""
        self.set(self.now() + delay)

    def clear(self) -> None:
        """No deadline (the armed timer, if any, will find nothing to do)."""
        self.when = 0.0

    def cancel(self) -> None:
        """Stop the timer for good (the connection is gone)."""
        self.when = 0.0
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed_at = when
        self._handle = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._handle = None
        when = self.when
        if not when:
            return
        # uvloop's clock has millisecond resolution: allow for rounding.
        if self.now() + 0.002 >= when:
            self.when = 0.0
            self._callback()
        else:
            self._arm(when)
