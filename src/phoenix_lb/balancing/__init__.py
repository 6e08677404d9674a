"""Balancing algorithms: one small pure module each, and a registry by name.

A balancer owns the per-server state of its algorithm (current weights,
latency estimates, a hash ring) and reads, never writes, the servers' shared
state: availability, in-flight counts, slow-start ramps.  Health checks and
passive failure tracking change that state elsewhere; the balancer only
sees its effect (Envoy's split).

Algorithms (``balance:`` in the config):

* ``round_robin``: nginx's smooth weighted round robin;
* ``least_conn``: fewest in-flight requests per weight, ties by smooth WRR
  (nginx ``least_conn``);
* ``random_two``: two random choices (weighted draws), fewer in-flight
  requests per weight wins;
* ``ewma``: two random choices, lower peak-EWMA latency x (in-flight + 1) /
  weight wins (Finagle, Linkerd);
* ``hash``: consistent hashing of a request key (ketama ring).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from random import Random

from phoenix_lb.balancing.base import WEIGHT_SCALE, Balancer, Peer
from phoenix_lb.balancing.consistent_hash import DEFAULT_POINTS, ConsistentHash
from phoenix_lb.balancing.ewma import PeakEwma
from phoenix_lb.balancing.least_conn import LeastConn
from phoenix_lb.balancing.random_two import RandomTwo
from phoenix_lb.balancing.round_robin import RoundRobin

__all__ = [
    "BALANCERS",
    "WEIGHT_SCALE",
    "Balancer",
    "BalancerOptions",
    "ConsistentHash",
    "LeastConn",
    "PeakEwma",
    "Peer",
    "RandomTwo",
    "RoundRobin",
    "make_balancer",
]


class BalancerOptions:
    """Settings some algorithms need; every algorithm gets the same object.

    ``rng`` is the random source (``random_two``, ``ewma``, ``hash`` with an
    empty key): one per worker process, seeded in tests.  ``ewma_decay`` is
    the EWMA time constant in seconds, ``ewma_failure_penalty`` the latency
    a failed attempt counts as, ``hash_points`` the ring points per weight
    unit.
    """

    __slots__ = ("ewma_decay", "ewma_failure_penalty", "hash_points", "rng")

    def __init__(
        self,
        rng: Random | None = None,
        *,
        ewma_decay: float = 10.0,
        ewma_failure_penalty: float = 1.0,
        hash_points: int = DEFAULT_POINTS,
    ) -> None:
        self.rng = rng if rng is not None else Random()
        self.ewma_decay = ewma_decay
        self.ewma_failure_penalty = ewma_failure_penalty
        self.hash_points = hash_points


def _round_robin(peers: Sequence[Peer], options: BalancerOptions) -> Balancer:
    return RoundRobin(peers)


def _least_conn(peers: Sequence[Peer], options: BalancerOptions) -> Balancer:
    return LeastConn(peers)


def _random_two(peers: Sequence[Peer], options: BalancerOptions) -> Balancer:
    return RandomTwo(peers, options.rng)


def _ewma(peers: Sequence[Peer], options: BalancerOptions) -> Balancer:
    return PeakEwma(
        peers, options.rng, decay=options.ewma_decay, failure_penalty=options.ewma_failure_penalty
    )


def _hash(peers: Sequence[Peer], options: BalancerOptions) -> Balancer:
    return ConsistentHash(peers, options.rng, points=options.hash_points)


BALANCERS: dict[str, Callable[[Sequence[Peer], BalancerOptions], Balancer]] = {
    "least_conn": _least_conn,
    "round_robin": _round_robin,
    "random_two": _random_two,
    "ewma": _ewma,
    "hash": _hash,
}


def make_balancer(
    name: str, peers: Sequence[Peer], options: BalancerOptions | None = None
) -> Balancer:
    """Build the balancer called ``name`` over ``peers`` (KeyError for unknown names)."""
    return BALANCERS[name](peers, options if options is not None else BalancerOptions())
