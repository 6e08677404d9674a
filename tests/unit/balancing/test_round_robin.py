"""round_robin: nginx's smooth weighted round robin, checked against nginx's C code."""

from __future__ import annotations

import pytest

from phoenix_lb.balancing import RoundRobin
from tests.support.loadsim import make_peers
from tests.support.nginx_oracle import replay


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("max_fails", [0, 1, 3])
def test_round_robin_is_nginx(seed: int, max_fails: int) -> None:
    replay("round_robin", seed, max_fails)


def test_failure_lowers_share_until_it_recovers() -> None:
    peers = make_peers([1, 1])
    rr = RoundRobin(peers)
    rr.on_failure(peers[0])  # effective weight 1 -> 0, back to 1 after one pick
    picks = []
    for _ in range(4):
        peer = rr.pick(1.0, 0)
        assert peer is not None
        picks.append(peer.index)
    assert picks == [1, 0, 1, 0]
