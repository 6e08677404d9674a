"""UpstreamGroup: primaries by the configured algorithm, backups round robin, feedback."""

from __future__ import annotations

from collections import Counter
from random import Random

import pytest

from phoenix_lb.balancing import BALANCERS, BalancerOptions, PeakEwma
from phoenix_lb.upstream.group import UpstreamGroup
from phoenix_lb.upstream.server import Server


def _servers(weights: list[int], backups: int = 0) -> list[Server]:
    servers = []
    for i, weight in enumerate(weights):
        server = Server("app", i, f"10.0.0.{i + 1}:80", f"10.0.0.{i + 1}", 80, weight=weight)
        server.backup = i >= len(weights) - backups
        servers.append(server)
    return servers


def _group(balance: str, servers: list[Server]) -> UpstreamGroup:
    return UpstreamGroup("app", servers, balance, BalancerOptions(Random(1)))


def _picks(group: UpstreamGroup, count: int, now: float = 1.0) -> Counter[int]:
    rng = Random(2)
    counts: Counter[int] = Counter()
    for _ in range(count):
        server = group.pick(now, 0, rng.randbytes(8))
        assert server is not None
        counts[server.index] += 1
    return counts


@pytest.mark.parametrize("balance", sorted(BALANCERS))
def test_backups_only_while_every_primary_is_down(balance: str) -> None:
    servers = _servers([1, 1, 3, 1], backups=2)
    group = _group(balance, servers)
    assert set(_picks(group, 300)) == {0, 1}
    servers[0].accepting = False
    assert set(_picks(group, 300)) == {1}
    servers[1].rest_until = 100.0  # resting after failures counts as down too
    # Backups by smooth weighted round robin, weights 3:1.
    assert _picks(group, 400) == {2: 300, 3: 100}
    order = [group.pick(1.0, 0).index for _ in range(4)]  # type: ignore[union-attr]
    assert order == [2, 2, 3, 2]  # smooth: a a b a, never a burst
    # A primary comes back: it gets everything again.
    servers[0].accepting = True
    assert set(_picks(group, 300)) == {0}


@pytest.mark.parametrize("balance", sorted(BALANCERS))
def test_backups_after_every_primary_was_tried(balance: str) -> None:
    servers = _servers([1, 1, 1, 1], backups=2)
    group = _group(balance, servers)
    tried = 0
    seen = []
    while (server := group.pick(1.0, tried, b"key")) is not None:
        seen.append(server.index)
        tried |= 1 << server.index
    assert sorted(seen[:2]) == [0, 1] and sorted(seen[2:]) == [2, 3]


def test_no_backups_and_all_down_gives_none() -> None:
    servers = _servers([1, 1])
    group = _group("round_robin", servers)
    for server in servers:
        server.accepting = False
    assert group.backup_balancer is None
    assert group.pick(1.0, 0) is None


def test_only_backups_still_serve() -> None:
    servers = _servers([1, 1], backups=2)
    assert set(_picks(_group("least_conn", servers), 10)) == {0, 1}


def test_failures_reach_the_balancer_of_the_server() -> None:
    servers = _servers([1, 1, 1, 1], backups=2)
    group = _group("round_robin", servers)
    for server in servers[:2]:
        server.accepting = False
    assert group.on_failure(servers[2], 1.0) is True  # max_fails=1: out for fail_timeout
    assert servers[2].rest_until > 1.0
    assert group.pick(2.0, 0) is servers[3]
    assert group.on_failure(servers[0], 1.0) is True


def test_responses_feed_the_primary_balancer() -> None:
    servers = _servers([1, 1, 1], backups=1)
    group = _group("ewma", servers)
    assert isinstance(group.balancer, PeakEwma)
    group.on_response(servers[0], 0.25, 5.0)
    group.on_response(servers[2], 0.25, 5.0)  # a backup: round robin ignores latency
    assert group.balancer.estimate(servers[0], 5.0) == pytest.approx(0.25)
    assert group.balancer.estimate(servers[1], 5.0) == 0.0


def test_the_key_reaches_the_hash_balancer() -> None:
    group = _group("hash", _servers([1, 1, 1, 1]))
    for key in (b"alice", b"bob", b"carol"):
        first = group.pick(1.0, 0, key)
        assert all(group.pick(1.0, 0, key) is first for _ in range(20))


def test_servers_are_named_by_address() -> None:
    group = _group("hash", _servers([1, 1]))
    assert [s.name for s in group.servers] == ["10.0.0.1:80", "10.0.0.2:80"]


def test_pinned_server_for_a_sticky_cookie() -> None:
    servers = _servers([1, 1, 1])
    group = _group("round_robin", servers)
    assert group.pinned(1, 1.0, 0) is servers[1]
    assert group.pinned(1, 1.0, 0b010) is None  # already tried
    assert group.pinned(3, 1.0, 0) is None
    assert group.pinned(-1, 1.0, 0) is None
    # Draining: no new requests, but clients pinned to it may keep coming.
    servers[1].accepting = False
    assert group.pinned(1, 1.0, 0) is servers[1]
    # Down or disabled: the client is re-pinned elsewhere.
    servers[1].sticky_ok = False
    assert group.pinned(1, 1.0, 0) is None


def test_slow_start_of_a_recovered_server() -> None:
    servers = _servers([1, 1, 1])
    for server in servers:
        server.slow_start = 30.0
    group = _group("round_robin", servers)
    servers[2].accepting = False
    assert 2 not in _picks(group, 30)
    servers[2].accepting = True
    servers[2].mark_recovered(100.0)
    assert servers[2].ramp_fraction(107.5) == pytest.approx(0.25)
    counts = _picks(group, 900, now=107.5)
    assert counts[2] == pytest.approx(900 * 0.25 / 2.25, abs=2)
    assert servers[2].ramp_fraction(130.0) == 1.0
    assert _picks(group, 900, now=130.0) == {0: 300, 1: 300, 2: 300}
