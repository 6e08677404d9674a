"""least_conn: fewest in-flight requests relative to weight (nginx ``least_conn``).

A peer beats another when ``in_flight / weight`` is lower, compared by cross
multiplication as nginx does.  Peers tied at the minimum are chosen between
by smooth weighted round robin, so an idle upstream still spreads requests
by weight instead of always taking the first server.  A peer in its
slow-start ramp counts with its ramping weight in both steps.
"""

from __future__ import annotations

from collections.abc import Sequence

from phoenix_lb.balancing.base import WEIGHT_SCALE, Peer, SmoothWeighted, ramp_scaled


class LeastConn:
    """Least in-flight requests per weight, ties by smooth weighted round robin."""

    __slots__ = ("_peers", "_wrr")

    def __init__(self, peers: Sequence[Peer]) -> None:
        self._peers = list(peers)
        self._wrr = SmoothWeighted(self._peers)

    def pick(self, now: float, tried: int, key: bytes = b"") -> Peer | None:
        best: Peer | None = None
        best_i = 0
        best_w = 0
        ties: list[int] | None = None
        i = -1
        for peer in self._peers:
            i += 1
            # Availability inlined (Server.is_available): this runs per request.
            if (
                (tried and (tried >> peer.index) & 1)
                or not peer.accepting
                or now <= peer.rest_until
            ):
                continue
            w = peer.weight * WEIGHT_SCALE
            if now < peer.ramp_until:
                w = ramp_scaled(peer, now)
            if best is None:
                best = peer
                best_i = i
                best_w = w
                continue
            lhs = peer.in_flight * best_w
            rhs = best.in_flight * w
            if lhs < rhs:
                best = peer
                best_i = i
                best_w = w
                ties = None
            elif lhs == rhs:
                if ties is None:
                    ties = [best_i]
                ties.append(i)
        if ties is None:
            return best
        return self._peers[self._wrr.choose(ties, now)]

    def on_failure(self, peer: Peer) -> None:
        self._wrr.on_failure(peer)

    def on_response(self, peer: Peer, seconds: float, now: float) -> None:
        """Latency does not matter to least_conn (in-flight counts do)."""
