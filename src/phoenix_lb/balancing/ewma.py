"""ewma: peak-EWMA of response latency with two random choices (Finagle, Linkerd).

Each peer has a latency estimate fed by ``on_response(peer, seconds, now)``:

* a sample above the estimate replaces it at once (the *peak*: a server that
  turns slow is avoided after one slow response);
* a lower sample is blended in with weight ``1 - exp(-dt / decay)``, where
  ``dt`` is the time since the previous sample, so the estimate forgets at
  the same pace whatever the request rate (time constant ``decay``, 10s by
  default as in Finagle's ``PeakEwma``);
* when read, the estimate decays towards zero by ``exp(-dt / decay)`` since
  the last sample: a server that got no traffic because it looked slow
  becomes attractive again and is probed (Finagle, tower's ``PeakEwma``).

Cost of a peer: ``estimate * (in_flight + 1) / weight``.  A peer never
measured (estimate 0.0) costs nothing while idle, so new servers are tried,
and ``PENALTY + in_flight`` while it has requests in flight, so it is not
flooded before its first answer (Finagle's rule).

Choosing: two distinct available peers drawn with probability proportional
to their weights, the cheaper one wins, ties to the first drawn (see
``random_two`` for why weighted draws).  Only two costs are computed per
request.

A failed attempt counts as a ``failure_penalty`` second response (peak
rule): a server that refuses connections at once must not look fast.  The
hook gets no clock, so the time of the last pick stands in for it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from random import Random
from typing import Final

from phoenix_lb.balancing.base import Peer, draw_two, position_map, weighted_candidates

# Cost of an unmeasured peer with requests in flight: above any latency
# cost (Finagle: Long.MaxValue >> 16), plus its in-flight count so that
# several such peers still compare.
PENALTY: Final = 1e9
# A measured peer never has a zero estimate (zero means "never measured"),
# even when the loop clock's resolution rounds a response time to zero.
MIN_SAMPLE: Final = 1e-6


class PeakEwma:
    """Peak-EWMA latency times in-flight per weight, two random choices."""

    __slots__ = (
        "_decay",
        "_estimate",
        "_failure_penalty",
        "_last_now",
        "_peers",
        "_positions",
        "_rng",
        "_stamp",
    )

    def __init__(
        self,
        peers: Sequence[Peer],
        rng: Random,
        decay: float = 10.0,
        failure_penalty: float = 1.0,
    ) -> None:
        if decay <= 0.0:
            raise ValueError(f"ewma decay must be positive, not {decay}")
        self._peers = list(peers)
        self._positions = position_map(self._peers)
        self._rng = rng
        self._decay = decay
        self._failure_penalty = failure_penalty
        #: latency estimate (seconds) per position, and when it was last fed
        self._estimate = [0.0] * len(self._peers)
        self._stamp = [0.0] * len(self._peers)
        self._last_now = 0.0

    def pick(self, now: float, tried: int, key: bytes = b"") -> Peer | None:
        self._last_now = now
        weights: list[float] = []
        cands, total, uniform = weighted_candidates(self._peers, now, tried, weights)
        n = len(cands)
        if n < 2:
            return self._peers[cands[0]] if n else None
        a, b = draw_two(weights, total, uniform, self._rng)
        pos_a = cands[a]
        pos_b = cands[b]
        if self._cost(pos_b, weights[b], now) < self._cost(pos_a, weights[a], now):
            return self._peers[pos_b]
        return self._peers[pos_a]

    def _cost(self, pos: int, weight: float, now: float) -> float:
        estimate = self._estimate[pos]
        in_flight = self._peers[pos].in_flight
        if estimate > 0.0:
            dt = now - self._stamp[pos]
            if dt > 0.0:
                estimate *= math.exp(-dt / self._decay)
        if estimate == 0.0 and in_flight > 0:
            return PENALTY + in_flight
        return estimate * (in_flight + 1) / weight

    def _observe(self, peer: Peer, seconds: float, now: float) -> None:
        i = peer.index
        positions = self._positions
        if i >= len(positions):
            return
        pos = positions[i]
        if pos < 0 or self._peers[pos] is not peer:
            return
        if seconds < MIN_SAMPLE:
            seconds = MIN_SAMPLE
        estimate = self._estimate[pos]
        if seconds > estimate:
            estimate = seconds
        else:
            dt = now - self._stamp[pos]
            w = math.exp(-dt / self._decay) if dt > 0.0 else 1.0
            estimate = estimate * w + seconds * (1.0 - w)
        self._estimate[pos] = estimate
        self._stamp[pos] = now

    def on_response(self, peer: Peer, seconds: float, now: float) -> None:
        self._observe(peer, seconds, now)

    def on_failure(self, peer: Peer) -> None:
        self._observe(peer, self._failure_penalty, self._last_now)

    def estimate(self, peer: Peer, now: float) -> float:
        """The decayed latency estimate of ``peer`` in seconds (status pages, tests)."""
        i = peer.index
        if i >= len(self._positions) or self._positions[i] < 0:
            return 0.0
        pos = self._positions[i]
        estimate = self._estimate[pos]
        dt = now - self._stamp[pos]
        return estimate * math.exp(-dt / self._decay) if dt > 0.0 else estimate
