"""Distribution across servers: round_robin, weights, least_conn (issue 2, "Balancing").

Requests go through one keep-alive client connection unless concurrency is
the point; which server answered is read from the backend's ``X-Backend``
header and cross-checked with what each backend recorded.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter

import pytest

from tests.support import RawClient

from .helpers import make_config


def _send_sequential(port: int, count: int, target: str = "/") -> Counter[str]:
    seen: Counter[str] = Counter()
    with RawClient(port) as client:
        for _ in range(count):
            resp = client.request("GET", target)
            assert resp.status == 200
            name = resp.header("X-Backend")
            assert name is not None
            assert resp.text == f"{name}\n"
            seen[name] += 1
    return seen


def test_round_robin_equal_weights_split_evenly(backends, proxy) -> None:
    bs = backends(3)
    p = proxy(make_config([b.address for b in bs], balance="round_robin"))
    seen = _send_sequential(p.port, 300)
    assert seen == {"b0": 100, "b1": 100, "b2": 100}
    assert [len(b.requests) for b in bs] == [100, 100, 100]


def test_round_robin_order_is_interleaved(backends, proxy) -> None:
    """Smooth round robin never sends two requests in a row to one of three equal servers."""
    bs = backends(3)
    p = proxy(make_config([b.address for b in bs], balance="round_robin"))
    with RawClient(p.port) as client:
        order = [client.request("GET", "/").header("X-Backend") for _ in range(30)]
    assert all(a != b for a, b in itertools.pairwise(order)), order
    assert set(order[:3]) == {"b0", "b1", "b2"}


@pytest.mark.parametrize("balance", ["round_robin", "least_conn"])
def test_weights_3_to_1_exact_share(backends, proxy, balance: str) -> None:
    """Smooth WRR: weights 3:1 give exactly 75% / 25% over a multiple of 4 requests.

    With sequential requests every server is idle at each pick, so
    least_conn falls back to the same smooth WRR tie-break.
    """
    bs = backends(2)
    servers = [{"address": bs[0].address, "weight": 3}, {"address": bs[1].address, "weight": 1}]
    p = proxy(make_config(servers, balance=balance))
    seen = _send_sequential(p.port, 200)
    assert seen == {"b0": 150, "b1": 50}
    # Smooth: never more than three b0 in a row.
    with RawClient(p.port) as client:
        order = "".join(client.request("GET", "/").header("X-Backend")[-1] for _ in range(40))
    assert "1" in order[:4]
    assert "0000" not in order, order


def test_least_conn_idle_servers_spread_evenly(backends, proxy) -> None:
    bs = backends(3)
    p = proxy(make_config([b.address for b in bs], balance="least_conn"))
    seen = _send_sequential(p.port, 300)
    assert seen == {"b0": 100, "b1": 100, "b2": 100}


def test_least_conn_prefers_idle_server_over_slow_one(backends, proxy) -> None:
    """One backend takes 0.5 s per request: least_conn sends it far fewer requests."""
    slow, fast = backends(2, names=["slow", "fast"])
    slow.delay = 0.5
    p = proxy(make_config([slow.address, fast.address], balance="least_conn"))
    workers, per_worker = 6, 15
    results: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work() -> None:
        try:
            with RawClient(p.port, timeout=10) as client:
                for _ in range(per_worker):
                    resp = client.request("GET", "/")
                    assert resp.status == 200
                    with lock:
                        results.append(resp.header("X-Backend") or "?")
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    counts = Counter(results)
    total = workers * per_worker
    assert sum(counts.values()) == total
    # Round robin would give the slow server half (45).  least_conn only hands
    # it a request when it is no busier than the fast one; allow a few.
    assert counts["slow"] <= total // 6, counts
    assert counts["fast"] >= total - total // 6, counts
    # The balancer's in-flight accounting is back to zero.
    assert [p.server(i).in_flight for i in range(2)] == [0, 0]


def test_in_flight_counts_back_to_zero_after_concurrent_load(backends, proxy) -> None:
    bs = backends(2)
    p = proxy(make_config([b.address for b in bs], balance="least_conn"))

    def work() -> None:
        with RawClient(p.port) as client:
            for _ in range(20):
                assert client.request("GET", "/slow?delay=0.01").status == 200

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sum(len(b.requests) for b in bs) == 80
    assert [p.server(i).in_flight for i in range(2)] == [0, 0]
