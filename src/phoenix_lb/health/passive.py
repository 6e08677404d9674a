"""Passive failure accounting with nginx's ``max_fails``/``fail_timeout`` semantics.

Pure: every method takes ``now``.  Mirrors ``ngx_http_upstream_round_robin.c``:

* a failure sets ``fails += 1`` and ``checked = accessed = now``;
* a server with ``fails >= max_fails`` is unavailable while
  ``now - checked <= fail_timeout``;
* after that it is available again, and the first time it is chosen
  ``checked`` moves to now: that request is the trial, and no other request
  goes there until it ends.  If it fails, the server rests another
  ``fail_timeout``; if it succeeds (a success after a check,
  ``accessed < checked``), ``fails`` goes back to zero.

Consequence worth knowing (same in nginx): failures are not forgotten while
successes keep coming, only once a success follows a quiet ``fail_timeout``.

``rest_until`` is what the balancer reads: the server is unavailable while
``now <= rest_until`` (0.0 when it is not resting).
"""

from __future__ import annotations


class PassiveHealth:
    """Failure counter and rest period for one server."""

    __slots__ = ("accessed", "checked", "fail_timeout", "fails", "max_fails", "rest_until")

    def __init__(self, max_fails: int, fail_timeout: float) -> None:
        self.max_fails = max_fails
        self.fail_timeout = fail_timeout
        self.fails = 0
        self.accessed = 0.0
        self.checked = 0.0
        self.rest_until = 0.0

    def is_available(self, now: float) -> bool:
        """False while the server rests after ``max_fails`` failures."""
        return now > self.rest_until

    @property
    def ejected(self) -> bool:
        """True when failures reached ``max_fails`` (resting or on trial)."""
        return bool(self.max_fails) and self.fails >= self.max_fails

    def _update(self) -> None:
        self.rest_until = self.checked + self.fail_timeout if self.ejected else 0.0

    def on_selected(self, now: float) -> None:
        """The balancer chose this server for a request (only matters after failures)."""
        if now - self.checked > self.fail_timeout:
            self.checked = now
            self._update()

    def on_failure(self, now: float) -> bool:
        """Record a failure; True when this one took the server out."""
        self.fails += 1
        self.accessed = now
        self.checked = now
        self._update()
        return bool(self.max_fails) and self.fails == self.max_fails

    def on_success(self) -> None:
        """Record a success; clears the failures when it follows a check."""
        if self.accessed < self.checked:
            self.fails = 0
            self.rest_until = 0.0
