"""The shared battery: every registered balancing algorithm passes the same tests.

Distribution and weights are measured with a closed-loop simulation on a
fake clock (``tests.support.loadsim``): load-aware algorithms only honour
weights through in-flight counts, so requests must overlap.  Tolerances are
absolute shares; round_robin and least_conn are also checked against nginx's
exact sequences.
"""

from __future__ import annotations

from random import Random

import pytest

from phoenix_lb.balancing import BALANCERS, Balancer, BalancerOptions, Peer, make_balancer
from tests.support.loadsim import make_peers, shares, simulate

ALGORITHMS = sorted(BALANCERS)


def build(name: str, peers: list[Peer], seed: int = 1) -> Balancer:
    return make_balancer(name, peers, BalancerOptions(Random(seed)))


@pytest.fixture(params=ALGORITHMS)
def algorithm(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_registry_lists_every_algorithm() -> None:
    assert set(BALANCERS) == {"round_robin", "least_conn", "random_two", "ewma", "hash"}


def test_unknown_name_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        make_balancer("fastest", make_peers([1]))


@pytest.mark.parametrize("concurrency", [1, 8])
def test_three_equal_servers_share_evenly(algorithm: str, concurrency: int) -> None:
    peers = make_peers([1, 1, 1])
    counts = simulate(build(algorithm, peers), peers, requests=20_000, concurrency=concurrency)
    for share in shares(counts, 3):
        # hash: 160 ring points per server leave a few percent of imbalance.
        assert share == pytest.approx(1 / 3, abs=0.04)


def test_weights_are_respected(algorithm: str) -> None:
    weights = [5, 3, 1, 1]
    peers = make_peers(weights)
    counts = simulate(build(algorithm, peers), peers, requests=30_000, concurrency=32)
    for share, weight in zip(shares(counts, 4), weights, strict=True):
        assert share == pytest.approx(weight / sum(weights), abs=0.03)


@pytest.mark.parametrize("name", ["round_robin", "least_conn"])
def test_nginx_smooth_sequence_when_idle(name: str) -> None:
    """nginx: weights 5,1,1 give a a b a c a a, then the same again."""
    peers = make_peers([5, 1, 1])
    balancer = build(name, peers)
    order = ""
    for _ in range(14):
        peer = balancer.pick(1.0, 0)
        assert peer is not None
        order += "abc"[peer.index]
    assert order == "aabacaa" * 2


@pytest.mark.parametrize("name", ["round_robin", "least_conn"])
def test_nginx_exact_shares(name: str) -> None:
    peers = make_peers([5, 3, 1, 1])
    counts = simulate(build(name, peers), peers, requests=1000, concurrency=1)
    assert [counts[i] for i in range(4)] == [500, 300, 100, 100]


def test_round_robin_exact_under_load() -> None:
    peers = make_peers([5, 3, 1, 1])
    counts = simulate(build("round_robin", peers), peers, requests=1000, concurrency=16)
    assert [counts[i] for i in range(4)] == [500, 300, 100, 100]


def _make_unavailable(peer: Peer, how: str) -> None:
    if how == "down":  # health checks, or an operator's drain/disable
        peer.accepting = False
    else:  # resting after passive failures
        peer.rest_until = 5000.0


@pytest.mark.parametrize("how", ["down", "resting"])
def test_unavailable_peer_never_picked(algorithm: str, how: str) -> None:
    peers = make_peers([1, 3, 1, 1])
    _make_unavailable(peers[1], how)
    counts = simulate(build(algorithm, peers), peers, requests=5000, concurrency=8)
    assert counts[1] == 0
    assert sum(counts.values()) == 5000
    assert all(counts[i] > 0 for i in (0, 2, 3))


def test_drained_peer_excluded_and_back_when_enabled(algorithm: str) -> None:
    peers = make_peers([1, 1, 1])
    balancer = build(algorithm, peers)
    peers[0].accepting = False
    assert simulate(balancer, peers, requests=3000)[0] == 0
    peers[0].accepting = True
    assert simulate(balancer, peers, requests=3000, start=2000.0)[0] > 500


def test_rest_over_means_available_again(algorithm: str) -> None:
    peers = make_peers([1, 1])
    peers[0].rest_until = 999.0
    counts = simulate(build(algorithm, peers), peers, requests=2000, start=1000.0)
    assert counts[0] > 500


def test_tried_peers_skipped(algorithm: str) -> None:
    peers = make_peers([1, 2, 1, 1])
    balancer = build(algorithm, peers)
    rng = Random(3)
    for skip in range(4):
        for _ in range(300):
            peer = balancer.pick(1.0, 1 << skip, rng.randbytes(8))
            assert peer is not None and peer.index != skip
        two = (1 << skip) | (1 << ((skip + 1) % 4))
        for _ in range(100):
            peer = balancer.pick(1.0, two, rng.randbytes(8))
            assert peer is not None and not (two >> peer.index) & 1


def test_retries_visit_each_available_peer_once(algorithm: str) -> None:
    """A request retried until nothing is left tries every available peer exactly once."""
    peers = make_peers([1, 2, 1, 1, 3])
    peers[3].accepting = False
    balancer = build(algorithm, peers)
    rng = Random(5)
    for _ in range(50):
        key = rng.randbytes(8)
        tried = 0
        seen = []
        while (peer := balancer.pick(1.0, tried, key)) is not None:
            seen.append(peer.index)
            tried |= 1 << peer.index
        assert sorted(seen) == [0, 1, 2, 4]


def test_all_unavailable_gives_none(algorithm: str) -> None:
    peers = make_peers([1, 1, 1])
    peers[0].accepting = False
    peers[1].rest_until = 10.0
    peers[2].accepting = False
    balancer = build(algorithm, peers)
    assert balancer.pick(1.0, 0, b"k") is None
    assert balancer.pick(1.0, 0) is None


def test_all_tried_gives_none(algorithm: str) -> None:
    peers = make_peers([1, 1, 1])
    assert build(algorithm, peers).pick(1.0, 0b111, b"k") is None


def test_no_peers_gives_none(algorithm: str) -> None:
    assert build(algorithm, []).pick(1.0, 0, b"k") is None


def test_single_peer(algorithm: str) -> None:
    peers = make_peers([4])
    balancer = build(algorithm, peers)
    assert balancer.pick(1.0, 0, b"k") is peers[0]
    assert balancer.pick(1.0, 1, b"k") is None


def test_balancer_over_part_of_a_group(algorithm: str) -> None:
    """Primaries or backups: ``tried`` bits are group indexes, not list positions."""
    group = make_peers([1, 1, 1, 1, 1])
    part = group[2:]
    balancer = build(algorithm, part)
    rng = Random(9)
    for _ in range(200):
        peer = balancer.pick(1.0, 1 << 3, rng.randbytes(8))
        assert peer is not None and peer.index in (2, 4)
    assert balancer.pick(1.0, 0b11100, b"k") is None
    balancer.on_failure(part[0])
    balancer.on_response(part[1], 0.01, 1.0)


def test_feedback_about_foreign_peers_is_ignored(algorithm: str) -> None:
    peers = make_peers([1, 1])
    balancer = build(algorithm, peers)
    stranger = Peer(7)
    balancer.on_failure(stranger)
    balancer.on_response(stranger, 0.5, 1.0)
    balancer.on_response(Peer(1), 0.5, 1.0)  # same index, another peer
    assert balancer.pick(2.0, 0, b"k") in peers


def test_failures_do_not_stop_picking(algorithm: str) -> None:
    peers = make_peers([1, 1, 1])
    balancer = build(algorithm, peers)
    for _ in range(10):
        balancer.on_failure(peers[0])
    counts = simulate(balancer, peers, requests=3000)
    assert sum(counts.values()) == 3000


def test_slow_start_ramp(algorithm: str) -> None:
    """At 25% of its slow_start window a recovered peer gets about 25% of its share.

    Three weight-1 peers: the ramping one counts 0.25 against 1 and 1, so
    0.25 / 2.25 of the requests; the others share the rest.
    """
    peers = make_peers([1, 1, 1])
    for peer in peers:
        peer.slow_start = 4000.0
    peers[2].mark_recovered(0.0)
    # The simulation starts 1000s after the recovery and lasts about a second.
    counts = simulate(build(algorithm, peers), peers, requests=30_000, concurrency=32)
    got = shares(counts, 3)
    assert got[2] == pytest.approx(0.25 / 2.25, abs=0.03)
    assert got[0] == pytest.approx(1 / 2.25, abs=0.03)


def test_slow_start_begins_small_and_ends_at_full_weight(algorithm: str) -> None:
    peers = make_peers([1, 1, 1])
    for peer in peers:
        peer.slow_start = 60.0
    peers[2].mark_recovered(999.0)  # one second into a one-minute ramp
    balancer = build(algorithm, peers)
    early = shares(simulate(balancer, peers, requests=20_000, concurrency=32), 3)
    assert early[2] < 0.04
    late = shares(simulate(balancer, peers, requests=20_000, concurrency=32, start=1100.0), 3)
    assert late[2] == pytest.approx(1 / 3, abs=0.04)


def test_no_ramp_without_slow_start(algorithm: str) -> None:
    peers = make_peers([1, 1, 1])
    peers[2].mark_recovered(999.5)
    assert peers[2].ramp_until == 0.0
    got = shares(simulate(build(algorithm, peers), peers, requests=20_000, concurrency=8), 3)
    assert got[2] == pytest.approx(1 / 3, abs=0.04)
