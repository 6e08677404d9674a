"""random_two: the power of two random choices on in-flight requests per weight.

Draw two distinct available peers at random, each with probability
proportional to its weight, and take the one with fewer in-flight requests
per weight (``in_flight_a * weight_b`` against ``in_flight_b * weight_a``,
as ``least_conn`` compares); on a tie the first drawn wins.

Why weighted draws (nginx ``random two least_conn`` and Envoy draw
uniformly): the first draw alone is distributed by weight, so idle peers
(all ties) get requests in proportion to their weights, and under load the
comparison steers shares towards equal ``in_flight / weight``, a target
that weighted draws can always reach (a uniform draw caps a peer's share at
``2 / n``, below the weight share of a heavy server among many).

Compared with ``least_conn`` it looks at two peers instead of all, so
several balancers (one per worker process) that see stale counts do not all
rush to the same least loaded server (Mitzenmacher, "The Power of Two
Choices in Randomized Load Balancing", 2001).  The random source is passed
in, so tests seed it.
"""

from __future__ import annotations

from collections.abc import Sequence
from random import Random

from phoenix_lb.balancing.base import Peer, draw_two, weighted_candidates


class RandomTwo:
    """Power of two weighted random choices on ``in_flight / weight``."""

    __slots__ = ("_peers", "_rng")

    def __init__(self, peers: Sequence[Peer], rng: Random) -> None:
        self._peers = list(peers)
        self._rng = rng

    def pick(self, now: float, tried: int, key: bytes = b"") -> Peer | None:
        peers = self._peers
        weights: list[float] = []
        cands, total, uniform = weighted_candidates(peers, now, tried, weights)
        n = len(cands)
        if n < 2:
            return peers[cands[0]] if n else None
        a, b = draw_two(weights, total, uniform, self._rng)
        pa = peers[cands[a]]
        pb = peers[cands[b]]
        if pb.in_flight * weights[a] < pa.in_flight * weights[b]:
            return pb
        return pa

    def on_failure(self, peer: Peer) -> None:
        """Failures are passive health's business; in-flight counts already moved."""

    def on_response(self, peer: Peer, seconds: float, now: float) -> None:
        """Latency does not matter to random_two."""
