"""One backend server: its address, weight and the state that balancers read."""

from __future__ import annotations

from typing import TYPE_CHECKING

from phoenix_lb.balancing.base import Peer
from phoenix_lb.health.passive import PassiveHealth
from phoenix_lb.stats import Histogram, request_counts

if TYPE_CHECKING:
    from phoenix_lb.upstream.pool import ConnectionPool


class Server(Peer):
    """A backend server of an upstream group.

    Balancers read the ``Peer`` attributes: ``accepting`` (health checks and
    operators say yes), ``rest_until`` (passive failure accounting says rest
    until then, mirrored from ``passive``) and ``in_flight`` (written by the
    request path).
    """

    pool: ConnectionPool  # set by the runtime that opens connections

    __slots__ = (
        "address",
        "counts",
        "ejections",
        "failures",
        "host",
        "passive",
        "pool",
        "port",
        "requests",
        "response_time",
        "sticky_ok",
        "upstream",
    )

    def __init__(
        self,
        upstream: str,
        index: int,
        address: str,
        host: str,
        port: int,
        *,
        weight: int = 1,
        max_fails: int = 1,
        fail_timeout: float = 10.0,
        listeners: int = 1,
    ) -> None:
        super().__init__(index, weight, max_fails)
        self.upstream = upstream
        #: the address as configured (host:port), for logs and status
        self.address = address
        self.host = host
        self.port = port
        self.passive = PassiveHealth(max_fails, fail_timeout)
        #: clients pinned by a sticky cookie may still come (draining allows it)
        self.sticky_ok = True
        #: attempts sent here (retries included)
        self.requests = 0
        #: finished requests by [listener][method][status class] (stats.py)
        self.counts = request_counts(listeners)
        #: time to the response head
        self.response_time = Histogram()
        #: times passive failure accounting took it out
        self.ejections = 0
        self.failures = 0

    def on_selected(self, now: float) -> None:
        """Chosen for a request: may start a passive trial (only after failures)."""
        passive = self.passive
        passive.on_selected(now)
        self.rest_until = passive.rest_until

    def on_failure(self, now: float) -> bool:
        """A request failed here; True when this failure took the server out."""
        self.failures += 1
        out = self.passive.on_failure(now)
        self.rest_until = self.passive.rest_until
        if out:
            self.ejections += 1
        return out

    def on_success(self) -> None:
        """A request succeeded here (only matters after failures)."""
        passive = self.passive
        passive.on_success()
        self.rest_until = passive.rest_until

    def __repr__(self) -> str:
        return f"<Server {self.upstream}/{self.address}>"
