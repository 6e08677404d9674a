"""A closed-loop load simulation for balancers: fake clock, no sockets, no sleeps.

``concurrency`` requests are always outstanding; each one picked goes to a
peer, holds one of its in-flight slots for that peer's latency and then
reports the latency through ``on_response``, and a new request is picked at
the moment it finishes.  Every request has a random key (only ``hash``
reads it).  Deterministic for a given seed.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Sequence
from random import Random

from phoenix_lb.balancing import Balancer, Peer


def make_peers(
    weights: Sequence[int], *, names: Sequence[str] | None = None, backups: int = 0
) -> list[Peer]:
    """Peers with the given weights, named like addresses (``10.0.0.<i>:8080``)."""
    peers = []
    for i, weight in enumerate(weights):
        name = names[i] if names is not None else f"10.0.0.{i + 1}:8080"
        peers.append(Peer(i, weight, name=name, backup=i >= len(weights) - backups))
    return peers


def simulate(
    balancer: Balancer,
    peers: Sequence[Peer],
    *,
    requests: int,
    concurrency: int = 8,
    latencies: Sequence[float] | None = None,
    start: float = 1000.0,
    seed: int = 7,
) -> Counter[int]:
    """Run ``requests`` picks; return how many each peer index got."""
    lat = list(latencies) if latencies is not None else [0.001] * len(peers)
    rng = Random(seed)
    heap: list[tuple[float, int, Peer]] = []
    counts: Counter[int] = Counter()
    now = start
    for seq in range(requests):
        if len(heap) >= concurrency:
            done_at, _, done = heapq.heappop(heap)
            now = max(now, done_at)
            done.in_flight -= 1
            balancer.on_response(done, lat[done.index], now)
        key = rng.getrandbits(64).to_bytes(8, "big")
        peer = balancer.pick(now, 0, key)
        assert peer is not None, f"no peer at request {seq}"
        counts[peer.index] += 1
        peer.in_flight += 1
        heapq.heappush(heap, (now + lat[peer.index], seq, peer))
    while heap:
        done_at, _, done = heapq.heappop(heap)
        done.in_flight -= 1
        balancer.on_response(done, lat[done.index], max(now, done_at))
    return counts


def shares(counts: Counter[int], n: int) -> list[float]:
    """Fraction of all picks per peer index ``0 .. n-1``."""
    total = sum(counts.values())
    return [counts[i] / total for i in range(n)]
