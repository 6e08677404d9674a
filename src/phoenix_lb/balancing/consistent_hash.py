"""hash: consistent hashing of a request key on a ring with virtual nodes (ketama).

Every peer owns ``points * weight`` points on a 32-bit ring, derived from
its name (the configured address) alone: md5 of ``"<name>-<k>"`` gives four
little-endian points per digest, as libketama does; nginx's ``hash ...
consistent`` uses the same 160 points per weight unit.  A request's key
(a header, the client address: the caller decides) is hashed to a point and
goes to the owner of the first point at or after it, wrapping around.

Because points depend only on names, a server that goes down or leaves the
list takes away only its own arcs: about 1/N of the keys move, to the next
peers on the ring (spread over all of them), and nobody else's keys move;
when it comes back they return.  Reordering the list changes nothing.

Unavailable peers are left out of a *live* ring, rebuilt only when the set
of available peers changes (a health transition), so a pick costs one pass
over the peers to detect that, a crc32 and a bisection.  Peers already
``tried`` by the request are skipped by walking on along the ring, so a
retry goes to the key's next server, the same one for every retry of it.

Slow start (nginx Plus refuses it with ``hash``; HAProxy's ``chash`` ramps
by weight): a ramping peer keeps only the first part of its points, growing
in ``RAMP_STEPS`` steps, so its keys come back to it gradually and the live
ring is rebuilt at most ``RAMP_STEPS`` times per ramp.

An empty key (the request lacks the configured header, say) gets a random
point: such requests are spread instead of all landing on one server
(nginx hashes the empty string; Envoy picks at random, as here).
"""

from __future__ import annotations

import hashlib
import zlib
from bisect import bisect_left
from collections.abc import Sequence
from random import Random
from typing import Final

from phoenix_lb.balancing.base import Peer

#: virtual nodes per weight unit (nginx ``hash consistent``, libketama)
DEFAULT_POINTS: Final = 160
#: granularity of the slow-start ramp of a peer's points
RAMP_STEPS: Final = 64
_MASK32: Final = 0xFFFFFFFF


def key_point(key: bytes) -> int:
    """The ring position of a request key: crc32 (fast, stable across
    processes, unlike ``hash()``) mixed by murmur3's finalizer, because crc32
    of similar keys (addresses in one subnet) differ in few high bits."""
    h = zlib.crc32(key)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK32
    h ^= h >> 16
    return h


def build_ring(names: Sequence[str], counts: Sequence[int]) -> list[tuple[int, str, int, int]]:
    """Ring entries ``(point, name, rank, position)`` sorted by point.

    ``rank`` numbers a peer's own points in creation order (slow start keeps
    the low ranks).  Equal points (rare in 32 bits) are ordered by name, so
    the order of the configured list never matters.
    """
    entries: list[tuple[int, str, int, int]] = []
    seen: dict[str, int] = {}
    for pos, base in enumerate(names):
        # The same address listed twice gets distinct points for its copies.
        copy = seen.get(base, 0)
        seen[base] = copy + 1
        name = base if copy == 0 else f"{base}#{copy}"
        count = counts[pos]
        for k in range((count + 3) // 4):
            digest = hashlib.md5(f"{name}-{k}".encode(), usedforsecurity=False).digest()
            for h in range(4):
                rank = 4 * k + h
                if rank >= count:
                    break
                point = int.from_bytes(digest[4 * h : 4 * h + 4], "little")
                entries.append((point, name, rank, pos))
    entries.sort()
    return entries


class ConsistentHash:
    """Consistent hashing (ketama ring) of the request key."""

    __slots__ = (
        "_counts",
        "_limits",
        "_live_owners",
        "_live_points",
        "_owners",
        "_peers",
        "_points",
        "_ranks",
        "_rng",
    )

    def __init__(
        self, peers: Sequence[Peer], rng: Random | None = None, points: int = DEFAULT_POINTS
    ) -> None:
        if points < 1:
            raise ValueError(f"hash points per weight must be at least 1, not {points}")
        self._peers = list(peers)
        self._rng = rng if rng is not None else Random()
        names = [p.name or f"#{p.index}" for p in self._peers]
        self._counts = [p.weight * points for p in self._peers]
        ring = build_ring(names, self._counts)
        self._points = [e[0] for e in ring]
        self._ranks = [e[2] for e in ring]
        self._owners = [e[3] for e in ring]
        #: points of each peer in the live ring (0 = unavailable); -1 = unknown
        self._limits = [-1] * len(self._peers)
        self._live_points: list[int] = []
        self._live_owners: list[int] = []

    def pick(self, now: float, tried: int, key: bytes = b"") -> Peer | None:
        peers = self._peers
        limits = self._limits
        counts = self._counts
        changed = False
        untried = 0
        pos = -1
        for peer in peers:
            pos += 1
            # Availability inlined (Server.is_available): this runs per request.
            if not peer.accepting or now <= peer.rest_until:
                limit = 0
            else:
                limit = counts[pos]
                if now < peer.ramp_until:
                    step = int(RAMP_STEPS * (now - peer.recovered_at) / peer.slow_start)
                    limit = limit * step // RAMP_STEPS
                    if limit < 1:
                        limit = 1
                if not (tried and (tried >> peer.index) & 1):
                    untried += 1
            if limit != limits[pos]:
                limits[pos] = limit
                changed = True
        if changed:
            self._rebuild()
        if not untried:
            return None
        points = self._live_points
        n = len(points)
        point = key_point(key) if key else int(self._rng.random() * 4294967296.0)
        i = bisect_left(points, point)
        owners = self._live_owners
        # An untried live peer exists, so this walk ends.
        while True:
            if i >= n:
                i = 0
            peer = peers[owners[i]]
            if not (tried and (tried >> peer.index) & 1):
                return peer
            i += 1

    def _rebuild(self) -> None:
        """Keep the ring entries of available peers, up to each one's limit."""
        limits = self._limits
        owners = self._owners
        ranks = self._ranks
        live_points: list[int] = []
        live_owners: list[int] = []
        for i, point in enumerate(self._points):
            owner = owners[i]
            if ranks[i] < limits[owner]:
                live_points.append(point)
                live_owners.append(owner)
        self._live_points = live_points
        self._live_owners = live_owners

    def on_failure(self, peer: Peer) -> None:
        """A key's server is its server: failures are passive health's business."""

    def on_response(self, peer: Peer, seconds: float, now: float) -> None:
        """Latency does not matter to consistent hashing."""
