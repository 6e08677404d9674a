"""nginx's round robin and least_conn, transliterated from C, as test oracles.

``ngx_http_upstream_get_peer`` (smooth weighted round robin),
``ngx_http_upstream_free_round_robin_peer`` on failure
(``effective_weight -= weight / max_fails``) and
``ngx_http_upstream_get_least_conn_peer``, in plain unscaled integers.
``replay`` runs a random scenario of picks, retries (``tried``), failures,
availability changes and in-flight counts against a balancer and the
oracle: every choice must be the same.
"""

from __future__ import annotations

from random import Random

from phoenix_lb.balancing import LeastConn, Peer, RoundRobin
from tests.support.loadsim import make_peers


class NginxPeers:
    """The state nginx keeps per peer, and its two pick functions."""

    def __init__(self, weights: list[int], max_fails: int) -> None:
        self.weight = list(weights)
        self.max_fails = max_fails
        self.current = [0] * len(weights)
        self.effective = list(weights)

    def _smooth(self, indexes: list[int]) -> int:
        best = -1
        total = 0
        for i in indexes:
            self.current[i] += self.effective[i]
            total += self.effective[i]
            if self.effective[i] < self.weight[i]:
                self.effective[i] += 1
            if best < 0 or self.current[i] > self.current[best]:
                best = i
        self.current[best] -= total
        return best

    def get_peer(self, usable: list[bool]) -> int | None:
        indexes = [i for i, ok in enumerate(usable) if ok]
        return self._smooth(indexes) if indexes else None

    def get_least_conn_peer(self, usable: list[bool], conns: list[int]) -> int | None:
        best = -1
        many = False
        for i, ok in enumerate(usable):
            if not ok:
                continue
            if best < 0 or conns[i] * self.weight[best] < conns[best] * self.weight[i]:
                best = i
                many = False
            elif conns[i] * self.weight[best] == conns[best] * self.weight[i]:
                many = True
        if best < 0:
            return None
        if not many:
            return best
        tied = [
            i
            for i in range(best, len(usable))
            if usable[i] and conns[i] * self.weight[best] == conns[best] * self.weight[i]
        ]
        return self._smooth(tied)

    def failed(self, i: int) -> None:
        if self.max_fails:
            self.effective[i] = max(self.effective[i] - self.weight[i] // self.max_fails, 0)


def replay(name: str, seed: int, max_fails: int) -> None:
    rng = Random(seed)
    weights = [rng.choice([1, 1, 2, 3, 5, 10]) for _ in range(rng.randint(1, 6))]
    peers = make_peers(weights)
    for peer in peers:
        peer.max_fails = max_fails
    ours = RoundRobin(peers) if name == "round_robin" else LeastConn(peers)
    ref = NginxPeers(weights, max_fails)
    for step in range(3000):
        roll = rng.random()
        if roll < 0.05:
            peer = rng.choice(peers)
            peer.accepting = not peer.accepting
        elif roll < 0.08:
            peer = rng.choice(peers)
            peer.rest_until = step + rng.choice([-1.0, 3.0])
        elif roll < 0.15:
            peer = rng.choice(peers)
            ours.on_failure(peer)
            ref.failed(peer.index)
        elif roll < 0.30 and name == "least_conn":
            peer = rng.choice(peers)
            peer.in_flight = max(0, peer.in_flight + rng.choice([-1, 1, 2]))
        tried = sum(1 << i for i in range(len(peers)) if rng.random() < 0.15)
        now = float(step)
        usable = [not (tried >> p.index) & 1 and p.accepting and now > p.rest_until for p in peers]
        if name == "round_robin":
            expected = ref.get_peer(usable)
        else:
            expected = ref.get_least_conn_peer(usable, [p.in_flight for p in peers])
        got: Peer | None = ours.pick(now, tried)
        assert (got.index if got is not None else None) == expected, (seed, step)
