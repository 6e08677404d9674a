"""least_conn: nginx's least_conn, checked against nginx's C code."""

from __future__ import annotations

import pytest

from phoenix_lb.balancing import LeastConn
from tests.support.loadsim import make_peers
from tests.support.nginx_oracle import replay


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("max_fails", [0, 1, 3])
def test_least_conn_is_nginx(seed: int, max_fails: int) -> None:
    replay("least_conn", seed, max_fails)


def test_least_conn_prefers_fewer_in_flight_per_weight() -> None:
    peers = make_peers([3, 1])
    lc = LeastConn(peers)
    peers[0].in_flight = 5  # 5/3 > 1/1
    peers[1].in_flight = 1
    assert lc.pick(1.0, 0) is peers[1]
    peers[0].in_flight = 2  # 2/3 < 1/1
    assert lc.pick(1.0, 0) is peers[0]


def test_least_conn_counts_a_ramping_weight() -> None:
    peers = make_peers([4, 4])
    peers[1].slow_start = 100.0
    peers[1].mark_recovered(0.0)
    lc = LeastConn(peers)
    peers[0].in_flight = 2  # 2/4
    peers[1].in_flight = 1  # 1/1 at 25% of the ramp
    assert lc.pick(25.0, 0) is peers[0]
    assert lc.pick(100.0, 0) is peers[1]  # ramp over: 1/4 < 2/4
