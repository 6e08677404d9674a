"""One backend server: its address, weight and the state that balancers read."""

from __future__ import annotations

from typing import TYPE_CHECKING

from phoenix_lb.health.passive import PassiveHealth

if TYPE_CHECKING:
    from phoenix_lb.upstream.pool import ConnectionPool


class Server:
    """A backend server of an upstream group.

    Balancers read two plain attributes to decide availability, so that the
    check costs no call on the request path: ``accepting`` (health checks
    and operators say yes) and ``passive.rest_until`` (passive failure
    accounting says rest until then).  ``in_flight`` is written by the
    request path.
    """

    pool: ConnectionPool  # set by the runtime that opens connections

    __slots__ = (
        "accepting",
        "address",
        "failures",
        "host",
        "in_flight",
        "index",
        "passive",
        "pool",
        "port",
        "requests",
        "upstream",
        "weight",
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
    ) -> None:
        self.upstream = upstream
        self.index = index
        #: the address as configured (host:port), for logs and status
        self.address = address
        self.host = host
        self.port = port
        self.weight = weight
        self.in_flight = 0
        self.passive = PassiveHealth(max_fails, fail_timeout)
        #: False when health checks (or an unresolvable name) take it out
        self.accepting = True
        self.requests = 0
        self.failures = 0

    @property
    def max_fails(self) -> int:
        return self.passive.max_fails

    def is_available(self, now: float) -> bool:
        """May new requests go to this server?"""
        return self.accepting and now > self.passive.rest_until

    def __repr__(self) -> str:
        return f"<Server {self.upstream}/{self.address}>"
