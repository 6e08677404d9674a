"""The rise/fall health state machine (nginx_upstream_check_module, HAProxy ``check``).

Pure: results go in with ``now``; a ``Transition`` comes out when the state
changes.  Used for upstream servers (active checks) and for GSLB regions.

States and transitions::

    UP   --`fall` consecutive failures-->  DOWN
    DOWN --`rise` consecutive successes--> UP

A success resets the failure streak and a failure resets the success streak,
so an alternating flapper never changes state.  ``initial_up=False`` is
nginx_upstream_check's ``default_down``: nothing is trusted until ``rise``
successes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Transition:
    """A state change, reported once."""

    up: bool
    #: the result that caused it, e.g. "status 503", "timeout", "connect refused"
    reason: str
    at: float

    @property
    def old(self) -> str:
        return "down" if self.up else "up"

    @property
    def new(self) -> str:
        return "up" if self.up else "down"


class RiseFall:
    """Consecutive-result counter deciding up/down."""

    __slots__ = (
        "changed_at",
        "failures",
        "fall",
        "last_checked",
        "last_ok",
        "last_reason",
        "rise",
        "successes",
        "up",
    )

    def __init__(self, rise: int, fall: int, *, initial_up: bool = True) -> None:
        if rise < 1 or fall < 1:
            raise ValueError("rise and fall must be at least 1")
        self.rise = rise
        self.fall = fall
        self.up = initial_up
        #: consecutive successes / failures in the current streak
        self.successes = 0
        self.failures = 0
        #: the last result, for status pages (None before the first check)
        self.last_ok: bool | None = None
        self.last_reason = ""
        self.last_checked = 0.0
        self.changed_at = 0.0

    def record(self, ok: bool, reason: str, now: float) -> Transition | None:
        """Record one check result; return the transition it caused, if any."""
        self.last_ok = ok
        self.last_reason = reason
        self.last_checked = now
        if ok:
            self.successes += 1
            self.failures = 0
            if not self.up and self.successes >= self.rise:
                self.up = True
                self.changed_at = now
                return Transition(True, reason, now)
        else:
            self.failures += 1
            self.successes = 0
            if self.up and self.failures >= self.fall:
                self.up = False
                self.changed_at = now
                return Transition(False, reason, now)
        return None
