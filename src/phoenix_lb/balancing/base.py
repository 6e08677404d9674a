"""The balancer interface and nginx's smooth weighted round robin.

``pick(now, tried)`` returns the peer for the next attempt of a request, or
None when no peer is available.  ``tried`` is a bitmask of peer indexes this
request already used (nginx's ``tried`` bitmap), so a retry goes elsewhere.
``on_failure(peer)`` lets an algorithm react to a failed attempt (nginx
lowers the peer's effective weight, which then recovers by one per pick).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class _Resting(Protocol):
    @property
    def rest_until(self) -> float: ...


class Peer(Protocol):
    """What a balancer may read from a server.

    Available means ``accepting and now > passive.rest_until``; balancers
    inline that test rather than call ``is_available`` per peer per request.
    """

    @property
    def weight(self) -> int: ...

    @property
    def accepting(self) -> bool: ...

    @property
    def passive(self) -> _Resting: ...

    @property
    def in_flight(self) -> int: ...

    @property
    def max_fails(self) -> int: ...

    def is_available(self, now: float) -> bool: ...


class Balancer(Protocol):
    """A balancing algorithm over a fixed list of peers."""

    def pick(self, now: float, tried: int) -> Peer | None:
        """Choose a peer not in ``tried``; None when none is available."""
        ...

    def on_failure(self, peer: Peer) -> None:
        """A request to ``peer`` failed."""
        ...


class SmoothWeighted:
    """nginx's smooth weighted round robin state (``ngx_http_upstream_round_robin.c``).

    Each pick adds every candidate's effective weight to its current weight,
    takes the candidate with the highest current weight and subtracts the
    total from it: weights 5,1,1 give a a b a c a a, never a burst of five.
    """

    __slots__ = ("current", "effective", "index", "peers")

    def __init__(self, peers: Sequence[Peer]) -> None:
        self.peers = list(peers)
        self.index = {id(p): i for i, p in enumerate(self.peers)}
        self.current = [0] * len(self.peers)
        self.effective = [p.weight for p in self.peers]

    def choose(self, candidates: Sequence[int]) -> int:
        """Index (into peers) of the smooth-WRR choice among ``candidates``."""
        current = self.current
        effective = self.effective
        peers = self.peers
        total = 0
        best = -1
        for i in candidates:
            eff = effective[i]
            current[i] += eff
            total += eff
            if eff < peers[i].weight:
                effective[i] = eff + 1
            if best < 0 or current[i] > current[best]:
                best = i
        current[best] -= total
        return best

    def on_failure(self, peer: Peer) -> None:
        i = self.index.get(id(peer))
        if i is None or not peer.max_fails:
            return
        eff = self.effective[i] - peer.weight // peer.max_fails
        self.effective[i] = max(eff, 0)
