"""The balancer interface, the state balancers read, and nginx's smooth WRR.

``pick(now, tried)`` returns the peer for the next attempt of a request, or
None when no peer is available.  ``tried`` is a bitmask of peer indexes this
request already used (nginx's ``tried`` bitmap), so a retry goes elsewhere.
``on_failure(peer)`` lets an algorithm react to a failed attempt (nginx
lowers the peer's effective weight, which then recovers by one per pick).

``Peer`` is a concrete base class rather than a Protocol on purpose: the
compiled build reads its attributes as struct fields, which a per-request
loop over the servers notices.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Peer:
    """What a balancer reads about a server; written by health tracking and requests.

    Available means ``accepting and now > rest_until``.  Balancers inline
    that test instead of calling ``is_available`` per peer per request.
    """

    __slots__ = ("accepting", "in_flight", "index", "max_fails", "rest_until", "weight")

    def __init__(self, index: int, weight: int = 1, max_fails: int = 1) -> None:
        #: position in its group (bit in ``tried``)
        self.index = index
        self.weight = weight
        self.max_fails = max_fails
        #: requests sent and not yet answered
        self.in_flight = 0
        #: False while health checks (or an operator) take it out
        self.accepting = True
        #: resting after passive failures until this loop time
        self.rest_until = 0.0

    def is_available(self, now: float) -> bool:
        """May new requests go to this peer?"""
        return self.accepting and now > self.rest_until


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

    __slots__ = ("current", "effective", "peers")

    def __init__(self, peers: Sequence[Peer]) -> None:
        self.peers = list(peers)
        self.current = [0] * len(self.peers)
        self.effective = [p.weight for p in self.peers]

    def choose(self, candidates: list[int]) -> int:
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
        i = peer.index
        if i >= len(self.peers) or self.peers[i] is not peer or not peer.max_fails:
            return
        eff = self.effective[i] - peer.weight // peer.max_fails
        self.effective[i] = max(eff, 0)
