"""hash: consistent hashing on a ketama ring; minimal remapping when servers change."""

from __future__ import annotations

from collections import Counter
from random import Random

import pytest

from phoenix_lb.balancing import ConsistentHash, Peer
from phoenix_lb.balancing.consistent_hash import build_ring, key_point
from tests.support.loadsim import make_peers

KEYS = [f"client-{i}".encode() for i in range(10_000)]


def _map(balancer: ConsistentHash, now: float = 1.0, tried: int = 0) -> dict[bytes, str]:
    out = {}
    for key in KEYS:
        peer = balancer.pick(now, tried, key)
        assert peer is not None
        out[key] = peer.name
    return out


def test_same_key_same_peer_across_instances_and_orders() -> None:
    peers = make_peers([1, 2, 1, 1])
    first = _map(ConsistentHash(peers, Random(1)))
    again = _map(ConsistentHash(make_peers([1, 2, 1, 1]), Random(2)))
    names = [p.name for p in peers]
    reordered = [
        Peer(i, 2 if name.endswith("2:8080") else 1, name=name)
        for i, name in enumerate(reversed(names))
    ]
    shuffled = _map(ConsistentHash(reordered, Random(3)))
    assert first == again == shuffled


def test_key_point_is_stable() -> None:
    """Not Python's randomized hash(): the same in every process and release."""
    assert key_point(b"") == 0
    assert key_point(b"10.1.2.3") == key_point(b"10.1.2.3")
    assert len({key_point(b"10.1.2.%d" % i) >> 28 for i in range(256)}) == 16


@pytest.mark.parametrize("n", [3, 5, 10])
def test_a_server_going_down_moves_only_its_keys(n: int) -> None:
    peers = make_peers([1] * n)
    balancer = ConsistentHash(peers, Random(1))
    before = _map(balancer)
    gone = peers[1].name
    peers[1].accepting = False
    after = _map(balancer)
    moved = [k for k in KEYS if before[k] != after[k]]
    assert len(moved) < 1.5 / n * len(KEYS)
    assert all(before[k] == gone for k in moved)  # nobody else's keys move
    assert gone not in after.values()
    # The orphaned keys spread over all the others, not onto one neighbour.
    spread = Counter(after[k] for k in moved)
    assert len(spread) == n - 1
    assert max(spread.values()) < 2.5 * len(moved) / (n - 1)
    peers[1].accepting = True
    assert _map(balancer) == before  # and come back when it does


@pytest.mark.parametrize("n", [3, 5, 10])
def test_a_server_removed_from_the_list_moves_only_its_keys(n: int) -> None:
    peers = make_peers([1] * n)
    before = _map(ConsistentHash(peers, Random(1)))
    rest = [Peer(i, 1, name=p.name) for i, p in enumerate(peers[:2] + peers[3:])]
    after = _map(ConsistentHash(rest, Random(1)))
    moved = [k for k in KEYS if before[k] != after[k]]
    assert 0 < len(moved) < 1.5 / n * len(KEYS)
    assert all(before[k] == peers[2].name for k in moved)


def test_adding_a_server_takes_keys_only_for_itself() -> None:
    peers = make_peers([1] * 5)
    before = _map(ConsistentHash(peers[:4], Random(1)))
    after = _map(ConsistentHash(peers, Random(1)))
    moved = [k for k in KEYS if before[k] != after[k]]
    assert all(after[k] == peers[4].name for k in moved)
    assert len(moved) < 1.5 / 5 * len(KEYS)


def test_a_retry_goes_to_the_next_server_on_the_ring() -> None:
    peers = make_peers([1] * 4)
    balancer = ConsistentHash(peers, Random(1))
    for key in KEYS[:500]:
        first = balancer.pick(1.0, 0, key)
        assert first is not None
        second = balancer.pick(1.0, 1 << first.index, key)
        assert second is not None and second is not first
        # The same as if the first one were down.
        first.accepting = False
        assert balancer.pick(1.0, 0, key) is second
        first.accepting = True


def test_weights_give_ring_points() -> None:
    peers = make_peers([3, 1])
    balancer = ConsistentHash(peers, Random(1), points=40)
    assert len(build_ring([p.name for p in peers], [120, 40])) == 160
    counts = Counter(_map(balancer).values())
    assert counts[peers[0].name] / len(KEYS) == pytest.approx(0.75, abs=0.05)


def test_empty_key_is_spread_at_random() -> None:
    peers = make_peers([1, 1, 1])
    balancer = ConsistentHash(peers, Random(1))
    counts = Counter(balancer.pick(1.0, 0, b"").index for _ in range(3000))  # type: ignore[union-attr]
    assert len(counts) == 3 and min(counts.values()) > 700


def test_same_address_twice_gets_distinct_points() -> None:
    peers = [Peer(0, 1, name="a:1"), Peer(1, 1, name="a:1"), Peer(2, 1, name="b:1")]
    balancer = ConsistentHash(peers, Random(1))
    used: Counter[int] = Counter()
    for key in KEYS:
        peer = balancer.pick(1.0, 0, key)
        assert peer is not None
        used[peer.index] += 1
    assert len(used) == 3
    assert all(count > len(KEYS) / 5 for count in used.values())


def test_slow_start_brings_keys_back_gradually() -> None:
    peers = make_peers([1, 1, 1, 1])
    for peer in peers:
        peer.slow_start = 100.0
    balancer = ConsistentHash(peers, Random(1))
    full = _map(balancer, now=1.0)
    peers[0].mark_recovered(1000.0)
    quarter = _map(balancer, now=1025.0)
    back = [k for k in KEYS if quarter[k] == peers[0].name]
    own = [k for k in KEYS if full[k] == peers[0].name]
    assert set(back) <= set(own)  # only its own keys come back
    # A quarter of its points against the others' full sets: 0.25 / 3.25.
    assert len(back) / len(KEYS) == pytest.approx(0.25 / 3.25, abs=0.035)
    assert _map(balancer, now=1100.0) == full


def test_points_must_be_positive() -> None:
    with pytest.raises(ValueError, match="points"):
        ConsistentHash(make_peers([1]), points=0)
