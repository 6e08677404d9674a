"""Balancing algorithms: one small pure module each, and a registry by name.

A balancer owns the per-server state of its algorithm (current weights and
the like) and reads, never writes, the servers' shared state: availability
and in-flight counts.  Health checks and passive failure tracking change
that state elsewhere; the balancer only sees its effect (Envoy's split).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from phoenix_lb.balancing.base import Balancer, Peer
from phoenix_lb.balancing.least_conn import LeastConn
from phoenix_lb.balancing.round_robin import RoundRobin

__all__ = ["BALANCERS", "Balancer", "Peer", "make_balancer"]

BALANCERS: dict[str, Callable[[Sequence[Peer]], Balancer]] = {
    "least_conn": LeastConn,
    "round_robin": RoundRobin,
}


def make_balancer(name: str, peers: Sequence[Peer]) -> Balancer:
    """Build the balancer called ``name`` over ``peers``."""
    return BALANCERS[name](peers)
