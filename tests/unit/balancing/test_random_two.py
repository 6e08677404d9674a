"""random_two: two weighted random choices, fewer in-flight requests per weight wins."""

from __future__ import annotations

from collections import Counter
from random import Random

import pytest

from phoenix_lb.balancing import RandomTwo
from phoenix_lb.balancing.base import draw_two
from tests.support.loadsim import make_peers


def _sequence(seed: int, count: int = 200) -> list[int]:
    peers = make_peers([1, 2, 3, 1])
    balancer = RandomTwo(peers, Random(seed))
    out = []
    for _ in range(count):
        peer = balancer.pick(1.0, 0)
        assert peer is not None
        out.append(peer.index)
    return out


def test_seeded_random_source_makes_it_reproducible() -> None:
    assert _sequence(42) == _sequence(42)
    assert _sequence(42) != _sequence(43)


def test_idle_peers_share_by_weight() -> None:
    """All ties: the first draw wins, and it is distributed by weight."""
    peers = make_peers([1, 2, 3, 1])
    balancer = RandomTwo(peers, Random(1))
    counts: Counter[int] = Counter()
    for _ in range(70_000):
        peer = balancer.pick(1.0, 0)
        assert peer is not None
        counts[peer.index] += 1
    for index, weight in enumerate([1, 2, 3, 1]):
        assert counts[index] / 70_000 == pytest.approx(weight / 7, abs=0.01)


def test_two_peers_always_compared() -> None:
    peers = make_peers([1, 1])
    balancer = RandomTwo(peers, Random(2))
    peers[0].in_flight = 3
    assert all(balancer.pick(1.0, 0) is peers[1] for _ in range(100))


def test_the_most_loaded_peer_never_wins() -> None:
    """Two distinct draws: the strictly most loaded peer always loses its pair."""
    peers = make_peers([1, 1, 1, 1])
    for peer, load in zip(peers, [2, 9, 1, 3], strict=True):
        peer.in_flight = load
    balancer = RandomTwo(peers, Random(3))
    counts = Counter(balancer.pick(1.0, 0).index for _ in range(4000))  # type: ignore[union-attr]
    assert counts[1] == 0
    assert counts[2] > counts[0] > counts[3] > 0


def test_load_compared_per_weight() -> None:
    peers = make_peers([4, 1])
    balancer = RandomTwo(peers, Random(4))
    peers[0].in_flight = 3  # 3/4 < 1/1
    peers[1].in_flight = 1
    assert all(balancer.pick(1.0, 0) is peers[0] for _ in range(100))


@pytest.mark.parametrize("weights", [[1.0, 1.0, 1.0], [5.0, 1.0, 0.25, 2.0]])
def test_draw_two_is_distinct_and_first_draw_weighted(weights: list[float]) -> None:
    rng = Random(5)
    uniform = len(set(weights)) == 1
    first: Counter[int] = Counter()
    for _ in range(40_000):
        a, b = draw_two(weights, sum(weights), uniform, rng)
        assert a != b and 0 <= a < len(weights) and 0 <= b < len(weights)
        first[a] += 1
    for i, w in enumerate(weights):
        assert first[i] / 40_000 == pytest.approx(w / sum(weights), abs=0.01)


def test_draw_two_survives_a_random_of_almost_one() -> None:
    class High(Random):
        def random(self) -> float:
            return 0.9999999999999999

    for weights, uniform in (([1.0, 1.0], True), ([1.0, 3.0, 0.5], False)):
        a, b = draw_two(weights, sum(weights), uniform, High())
        assert a != b and max(a, b) < len(weights)
