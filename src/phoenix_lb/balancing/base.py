"""The balancer interface, the state balancers read, and nginx's smooth WRR.

``pick(now, tried, key)`` returns the peer for the next attempt of a
request, or None when no peer is available.  ``tried`` is a bitmask of
``Peer.index`` values this request already used (nginx's ``tried`` bitmap),
so a retry goes elsewhere; a balancer over part of a group (the primaries,
the backups) still tests the peer's group-wide ``index``.  ``key`` is the
request's hash key (only ``hash`` reads it; empty when the upstream has no
key or the request lacks it).

``on_failure(peer)`` lets an algorithm react to a failed attempt (nginx
lowers the peer's effective weight, which then recovers by one per pick);
``on_response(peer, seconds, now)`` reports the time to a response head
(``ewma`` learns latency from it; the others ignore it).

``Peer`` is a concrete base class rather than a Protocol on purpose: the
compiled build reads its attributes as struct fields, which a per-request
loop over the servers notices.

Slow start: after ``mark_recovered(now)`` a peer with ``slow_start > 0``
counts with a weight that ramps linearly from almost nothing to ``weight``
over ``slow_start`` seconds.  Balancers test ``now < peer.ramp_until`` (one
float compare, false when slow start is off or over) and only then call
``ramp_scaled``.  Weights are handled in units of ``1 / WEIGHT_SCALE`` so
that a weight-1 server ramps too (the literal ``max(1, weight * fraction)``
would keep it at full weight from the first request).
"""

from __future__ import annotations

from collections.abc import Sequence
from random import Random
from typing import Final, Protocol

# Internal weight units per configured weight unit.  HAProxy scales weights
# by BE_WEIGHT_SCALE = 16 for the same reason (slow start and dynamic
# weights of a weight-1 server); 64 gives a weight-1 server a ramp in 64
# steps.  Smooth WRR is unchanged by a common factor, so round_robin and
# least_conn stay nginx-exact outside a ramp.
WEIGHT_SCALE: Final = 64


class Peer:
    """What a balancer reads about a server; written by health tracking and requests.

    Available means ``accepting and now > rest_until``.  Balancers inline
    that test instead of calling ``is_available`` per peer per request.
    """

    __slots__ = (
        "accepting",
        "backup",
        "in_flight",
        "index",
        "max_fails",
        "name",
        "ramp_until",
        "recovered_at",
        "rest_until",
        "slow_start",
        "weight",
    )

    def __init__(
        self,
        index: int,
        weight: int = 1,
        max_fails: int = 1,
        *,
        name: str = "",
        backup: bool = False,
        slow_start: float = 0.0,
    ) -> None:
        #: position in its group (bit in ``tried``)
        self.index = index
        self.weight = weight
        self.max_fails = max_fails
        #: stable identity (the configured address): consistent hashing and
        #: sticky ids derive from it, so they survive a reorder of the list
        self.name = name
        #: only used while no primary server of the group is available
        self.backup = backup
        #: seconds over which the weight ramps up after a recovery (0 = off)
        self.slow_start = slow_start
        #: loop time of the last recovery (-inf: never recovered; start-up
        #: does not ramp, as in nginx Plus and HAProxy)
        self.recovered_at = float("-inf")
        #: end of the current ramp; 0.0 when not ramping (hot-path test)
        self.ramp_until = 0.0
        #: requests sent and not yet answered
        self.in_flight = 0
        #: False while health checks (or an operator) take it out
        self.accepting = True
        #: resting after passive failures until this loop time
        self.rest_until = 0.0

    def is_available(self, now: float) -> bool:
        """May new requests go to this peer?"""
        return self.accepting and now > self.rest_until

    def mark_recovered(self, now: float) -> None:
        """The peer came back (health up, operator enable, passive rest over).

        Starts the slow-start ramp when ``slow_start`` is set; harmless
        otherwise.  Health code calls this on the down -> up transition only.
        """
        self.recovered_at = now
        self.ramp_until = now + self.slow_start if self.slow_start > 0.0 else 0.0

    def ramp_fraction(self, now: float) -> float:
        """Share of ``weight`` in effect at ``now`` (1.0 outside a ramp), for status pages."""
        if now >= self.ramp_until:
            return 1.0
        return ramp_scaled(self, now) / (self.weight * WEIGHT_SCALE)


def ramp_scaled(peer: Peer, now: float) -> int:
    """The ramping weight of ``peer`` in ``WEIGHT_SCALE`` units (only while ramping).

    ``max(1, weight * WEIGHT_SCALE * elapsed / slow_start)``: linear, never
    zero, so a just-recovered server gets a first trickle of requests.
    """
    scaled = int(peer.weight * WEIGHT_SCALE * (now - peer.recovered_at) / peer.slow_start)
    return scaled if scaled > 1 else 1


def ramp_weight(peer: Peer, now: float) -> float:
    """The ramping weight of ``peer`` in weight units (only while ramping)."""
    return ramp_scaled(peer, now) / WEIGHT_SCALE


def position_map(peers: Sequence[Peer]) -> list[int]:
    """``Peer.index`` -> position in ``peers`` (-1 for indexes not in it).

    Feedback hooks get a peer, and a balancer may hold only part of a group.
    """
    size = max((p.index for p in peers), default=-1) + 1
    positions = [-1] * size
    for pos, peer in enumerate(peers):
        positions[peer.index] = pos
    return positions


class Balancer(Protocol):
    """A balancing algorithm over a fixed list of peers."""

    def pick(self, now: float, tried: int, key: bytes = b"") -> Peer | None:
        """Choose an available peer whose index is not in ``tried``; None when none is."""
        ...

    def on_failure(self, peer: Peer) -> None:
        """A request to ``peer`` failed (connect error, reset, timeout)."""
        ...

    def on_response(self, peer: Peer, seconds: float, now: float) -> None:
        """``peer`` answered a request (response head) ``seconds`` after it was sent."""
        ...


class SmoothWeighted:
    """nginx's smooth weighted round robin state (``ngx_http_upstream_round_robin.c``).

    Each pick adds every candidate's effective weight to its current weight,
    takes the candidate with the highest current weight and subtracts the
    total from it: weights 5,1,1 give a a b a c a a, never a burst of five.

    All weights are kept multiplied by ``WEIGHT_SCALE`` (a common factor does
    not change any choice); a ramping peer adds its ramp weight instead of
    its effective weight when that is lower.
    """

    __slots__ = ("current", "effective", "peers", "positions")

    def __init__(self, peers: Sequence[Peer]) -> None:
        self.peers = list(peers)
        self.positions = position_map(self.peers)
        self.current = [0] * len(self.peers)
        self.effective = [p.weight * WEIGHT_SCALE for p in self.peers]

    def choose(self, candidates: list[int], now: float) -> int:
        """Position (into peers) of the smooth-WRR choice among ``candidates`` (positions)."""
        current = self.current
        effective = self.effective
        peers = self.peers
        total = 0
        best = -1
        for i in candidates:
            peer = peers[i]
            eff = effective[i]
            if eff < peer.weight * WEIGHT_SCALE:
                # nginx: effective_weight++ after a failure lowered it.
                effective[i] = eff + WEIGHT_SCALE
            if now < peer.ramp_until:
                ramp = ramp_scaled(peer, now)
                if ramp < eff:
                    eff = ramp
            current[i] += eff
            total += eff
            if best < 0 or current[i] > current[best]:
                best = i
        current[best] -= total
        return best

    def on_failure(self, peer: Peer) -> None:
        """nginx: ``effective_weight -= weight / max_fails`` (not below zero)."""
        i = peer.index
        positions = self.positions
        if i >= len(positions) or not peer.max_fails:
            return
        pos = positions[i]
        if pos < 0 or self.peers[pos] is not peer:
            return
        eff = self.effective[pos] - (peer.weight // peer.max_fails) * WEIGHT_SCALE
        self.effective[pos] = max(eff, 0)


def weighted_candidates(
    peers: list[Peer], now: float, tried: int, weights: list[float]
) -> tuple[list[int], float, bool]:
    """Positions of the peers that may take this attempt, for the two-choice algorithms.

    Their weights (slow start applied) are appended to ``weights``; returned
    with the positions: the weights' total, and whether they are all equal
    (``draw_two`` then skips the cumulative walk).
    """
    cands: list[int] = []
    total = 0.0
    uniform = True
    first_w = -1.0
    pos = -1
    for peer in peers:
        pos += 1
        # Availability inlined (Server.is_available): this runs per request.
        if (tried and (tried >> peer.index) & 1) or not peer.accepting or now <= peer.rest_until:
            continue
        w = float(peer.weight)
        if now < peer.ramp_until:
            w = ramp_weight(peer, now)
        if first_w < 0.0:
            first_w = w
        elif w != first_w:
            uniform = False
        cands.append(pos)
        weights.append(w)
        total += w
    return cands, total, uniform


def draw_two(weights: list[float], total: float, uniform: bool, rng: Random) -> tuple[int, int]:
    """Two distinct positions drawn with probability proportional to ``weights``.

    The second draw excludes the first.  The first draw alone is distributed
    by weight, so a comparison that ties (idle peers) and keeps the first
    spreads requests exactly by weight on average.  Needs ``len(weights) >= 2``.
    """
    n = len(weights)
    if uniform:
        # Equal weights (the common case): no cumulative walk.
        a = int(rng.random() * n)
        b = int(rng.random() * (n - 1))
        if a >= n:
            a = n - 1
        if b >= n - 1:
            b = n - 2
        if b >= a:
            b += 1
        return a, b
    r = rng.random() * total
    a = 0
    acc = weights[0]
    while acc <= r and a < n - 1:
        a += 1
        acc += weights[a]
    r = rng.random() * (total - weights[a])
    b = -1
    acc = 0.0
    for j in range(n):
        if j == a:
            continue
        b = j
        acc += weights[j]
        if r < acc:
            break
    return a, b
