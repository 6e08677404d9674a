"""ewma: peak-EWMA latency x (in-flight + 1) / weight, two random choices."""

from __future__ import annotations

import math
from random import Random

import pytest

from phoenix_lb.balancing import PeakEwma
from phoenix_lb.balancing.ewma import PENALTY
from tests.support.loadsim import make_peers, shares, simulate


@pytest.mark.parametrize("concurrency", [1, 8, 32])
def test_ten_times_slower_peer_gets_far_fewer_requests(concurrency: int) -> None:
    peers = make_peers([1, 1, 1])
    balancer = PeakEwma(peers, Random(1))
    counts = simulate(
        balancer, peers, requests=30_000, concurrency=concurrency, latencies=[0.01, 0.01, 0.1]
    )
    got = shares(counts, 3)
    assert got[2] < 0.05
    assert got[0] == pytest.approx(got[1], abs=0.03)


def test_peak_sample_is_taken_at_once_and_lower_ones_blend() -> None:
    peers = make_peers([1, 1])
    balancer = PeakEwma(peers, Random(1), decay=10.0)
    balancer.on_response(peers[0], 0.010, 100.0)
    assert balancer.estimate(peers[0], 100.0) == pytest.approx(0.010)
    balancer.on_response(peers[0], 0.500, 100.0)  # a peak: no averaging
    assert balancer.estimate(peers[0], 100.0) == pytest.approx(0.500)
    balancer.on_response(peers[0], 0.100, 110.0)  # one time constant later
    w = math.exp(-1.0)
    assert balancer.estimate(peers[0], 110.0) == pytest.approx(0.5 * w + 0.1 * (1 - w))


def test_estimate_decays_with_the_time_constant() -> None:
    peers = make_peers([1])
    balancer = PeakEwma(peers, Random(1), decay=5.0)
    balancer.on_response(peers[0], 0.2, 10.0)
    assert balancer.estimate(peers[0], 10.0 + 5.0 * math.log(2)) == pytest.approx(0.1)


def test_slow_peer_is_probed_again_after_it_decays() -> None:
    peers = make_peers([1, 1])
    balancer = PeakEwma(peers, Random(1), decay=10.0)
    balancer.on_response(peers[0], 0.01, 0.0)
    balancer.on_response(peers[1], 1.0, 0.0)
    assert balancer.pick(1.0, 0) is peers[0]
    balancer.on_response(peers[0], 0.01, 60.0)
    # 1.0 * exp(-6) = 0.0025 < 0.01: the slow peer looks cheap again.
    assert balancer.pick(60.0, 0) is peers[1]


def test_unmeasured_peer_is_tried_but_not_flooded() -> None:
    peers = make_peers([1, 1])
    balancer = PeakEwma(peers, Random(1))
    balancer.on_response(peers[0], 0.05, 1.0)
    assert balancer.pick(1.0, 0) is peers[1]  # estimate 0: free while idle
    peers[1].in_flight = 1  # its first request has no answer yet
    assert balancer.pick(1.0, 0) is peers[0]
    assert balancer._cost(1, 1.0, 1.0) == PENALTY + 1


def test_in_flight_and_weight_scale_the_cost() -> None:
    peers = make_peers([1, 2])
    balancer = PeakEwma(peers, Random(1))
    balancer.on_response(peers[0], 0.01, 1.0)
    balancer.on_response(peers[1], 0.01, 1.0)
    peers[1].in_flight = 2  # 0.01 * 3 / 2 > 0.01 * 1 / 1
    assert balancer.pick(1.0, 0) is peers[0]
    peers[1].in_flight = 0  # 0.01 / 2 < 0.01
    assert balancer.pick(1.0, 0) is peers[1]


def test_a_failure_counts_as_a_slow_response() -> None:
    peers = make_peers([1, 1])
    balancer = PeakEwma(peers, Random(1), failure_penalty=2.0)
    balancer.on_response(peers[0], 0.01, 1.0)
    balancer.on_response(peers[1], 0.01, 1.0)
    assert balancer.pick(3.0, 0) is not None
    balancer.on_failure(peers[0])
    assert balancer.estimate(peers[0], 3.0) == pytest.approx(2.0)
    assert balancer.pick(3.0, 0) is peers[1]


def test_decay_must_be_positive() -> None:
    with pytest.raises(ValueError, match="decay"):
        PeakEwma(make_peers([1]), Random(1), decay=0.0)
