"""round_robin: smooth weighted round robin over the available peers (nginx default)."""

from __future__ import annotations

from collections.abc import Sequence

from phoenix_lb.balancing.base import Peer, SmoothWeighted


class RoundRobin:
    """Smooth weighted round robin; skips unavailable and already-tried peers."""

    __slots__ = ("_peers", "_wrr")

    def __init__(self, peers: Sequence[Peer]) -> None:
        self._peers = list(peers)
        self._wrr = SmoothWeighted(self._peers)

    def pick(self, now: float, tried: int, key: bytes = b"") -> Peer | None:
        candidates = [
            i
            for i, peer in enumerate(self._peers)
            if not (tried >> peer.index) & 1 and peer.accepting and now > peer.rest_until
        ]
        if not candidates:
            return None
        return self._peers[self._wrr.choose(candidates, now)]

    def on_failure(self, peer: Peer) -> None:
        self._wrr.on_failure(peer)

    def on_response(self, peer: Peer, seconds: float, now: float) -> None:
        """Latency does not matter to round robin."""
