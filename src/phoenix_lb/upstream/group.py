"""An upstream group: named servers behind one balancing algorithm."""

from __future__ import annotations

from collections.abc import Sequence

from phoenix_lb.balancing import Balancer, make_balancer
from phoenix_lb.upstream.server import Server


class UpstreamGroup:
    """Servers of one upstream and the balancer choosing among them."""

    __slots__ = ("balancer", "name", "servers")

    def __init__(self, name: str, servers: Sequence[Server], balance: str) -> None:
        self.name = name
        self.servers = list(servers)
        self.balancer: Balancer = make_balancer(balance, self.servers)

    def pick(self, now: float, tried: int) -> Server | None:
        """A server for the next attempt of a request, or None when none is available."""
        server = self.balancer.pick(now, tried)
        return server  # type: ignore[return-value]

    def any_available(self, now: float) -> bool:
        """True when at least one server may take requests."""
        return any(s.is_available(now) for s in self.servers)

    def on_failure(self, server: Server, now: float) -> bool:
        """Count a failed attempt; True when it took the server out."""
        self.balancer.on_failure(server)
        return server.on_failure(now)
