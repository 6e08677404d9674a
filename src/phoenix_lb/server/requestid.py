"""Request ids: unique without a system call per request.

A random prefix per process and a counter: ``3f9c1a2b7d40-1a`` is unique across
processes and restarts (48 random bits) and costs a counter increment and a
format per request, where a UUID would read the system's random source.
"""

from __future__ import annotations

import os


class RequestIds:
    """Generates ids for one process."""

    __slots__ = ("_next", "_prefix")

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex().encode() + b"-"
        self._next = 0

    def new(self) -> bytes:
        self._next += 1
        return b"%s%x" % (self._prefix, self._next)
