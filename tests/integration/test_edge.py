"""The edge end to end (issue 4): rate and connection limits, allow/deny, the real
client address behind trusted proxies and PROXY protocol, security headers.

Everything runs the data plane in-process (the ``proxy`` fixture) except the
``phoenix-lb check`` run.  Client addresses other than 127.0.0.1 come from
binding client sockets to 127.0.0.2 / 127.0.0.3 (``edgesupport``).  Bursts
are pipelined over connections opened beforehand, so that the proxy sees
"simultaneous" requests within a millisecond or two; the limit arithmetic is
nginx's, so the counts asserted are exact.
"""

from __future__ import annotations

import itertools
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support import Backend, RefusingPort, Response, parse_responses

from .conftest import ProxyInstance
from .edgesupport import (
    CLIENT,
    OTHER,
    THIRD,
    SourceClient,
    burst,
    get,
    proxy_v1,
    proxy_v2,
    raw_exchange,
    request_line,
    statuses,
    tls_files,
    tls_get,
)
from .helpers import config_yaml, make_config, phoenix_lb_command, set_linger_zero, wait_for

Backends = Callable[..., list[Backend]]
Proxy = Callable[[dict[str, Any]], ProxyInstance]

pytestmark = pytest.mark.timeout(30)


def edge_config(servers: list[str], routes: list[dict[str, Any]], **top: Any) -> dict[str, Any]:
    """``make_config`` with these routes on the listener and top-level sections added."""
    config = make_config(servers)
    config["listeners"][0]["routes"] = routes
    config.update(top)
    return config


def route(path: str = "/", upstream: str = "app", **decisions: Any) -> dict[str, Any]:
    return {"path": path, "upstream": upstream, **decisions}


def retry_after(response: Response) -> int:
    value = response.header("Retry-After")
    assert value is not None and value.isdigit(), response.headers
    return int(value)


# ---------------------------------------------------------------- limit_req


def test_limit_req_burst_20_nodelay_passes_exactly_21_of_100(
    backends: Backends, proxy: Proxy
) -> None:
    (b0,) = backends(1)
    p = proxy(
        edge_config(
            [b0.address],
            [route(rate_limit={"zone": "api", "burst": 20, "nodelay": True})],
            rate_limits={"api": {"rate": "10r/s"}},
        )
    )
    sent = time.monotonic()
    first = burst(p.port, 100)
    assert statuses(first).count(200) == 21, statuses(first)
    refused = [r for r in first if r.status != 200]
    assert {r.status for r in refused} == {429}
    # The bucket is full: the next request fits in 0.1 s, i.e. 1 s rounded up.
    assert {retry_after(r) for r in refused} == {1}
    assert len(b0.requests) == 21

    # One second later the bucket drained 10 requests' worth: 10 more pass.
    time.sleep(max(0.0, sent + 1.05 - time.monotonic()))
    second = burst(p.port, 30)
    assert statuses(second).count(200) in (10, 11), statuses(second)
    assert len(b0.requests) == 21 + statuses(second).count(200)


def test_limit_req_status_option_is_used_for_refusals(backends: Backends, proxy: Proxy) -> None:
    (b0,) = backends(1)
    limit = {"zone": "api", "burst": 0, "nodelay": True, "status": 503}
    p = proxy(
        edge_config([b0.address], [route(rate_limit=limit)], rate_limits={"api": {"rate": "1r/s"}})
    )
    answers = burst(p.port, 5, connections=1)
    assert statuses(answers) == [200, 503, 503, 503, 503]
    assert all(retry_after(r) >= 1 for r in answers[1:])
    assert len(b0.requests) == 1


def test_limit_req_without_nodelay_delays_the_burst_instead_of_refusing(
    backends: Backends, proxy: Proxy
) -> None:
    (b0,) = backends(1)
    p = proxy(
        edge_config(
            [b0.address],
            [route(rate_limit={"zone": "api", "burst": 5})],
            rate_limits={"api": {"rate": "10r/s"}},
        )
    )
    started = time.monotonic()
    answers = burst(p.port, 5, connections=5)
    elapsed = time.monotonic() - started
    assert statuses(answers) == [200] * 5
    # Held 0, 0.1, 0.2, 0.3 and 0.4 s: spaced at the rate, about 0.4 s in all.
    assert 0.3 <= elapsed < 0.8, f"5 requests took {elapsed:.2f}s"
    arrivals = sorted(r.received_at for r in b0.requests)
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert all(0.06 <= gap <= 0.2 for gap in gaps), gaps


# ---------------------------------------------------------------- limit_conn


def conn_proxy(proxy: Proxy, backend: Backend, limit: int = 2) -> ProxyInstance:
    return proxy(
        edge_config(
            [backend.address],
            [route(conn_limit={"zone": "addr", "max": limit})],
            conn_limits={"addr": {}},
        )
    )


def test_limit_conn_refuses_the_third_concurrent_request_then_frees_slots(
    backends: Backends, proxy: Proxy
) -> None:
    (b0,) = backends(1)
    b0.delay = 0.5
    p = conn_proxy(proxy, b0)
    with SourceClient(p.port) as c1, SourceClient(p.port) as c2:
        c1.send(request_line("/"))
        c2.send(request_line("/"))
        b0.wait_for_requests(2)
        started = time.monotonic()
        third = get(p.port)
        assert third.status == 429 and retry_after(third) >= 1
        assert time.monotonic() - started < 0.3  # refused at once, not queued
        assert c1.read_response().status == 200
        assert c2.read_response().status == 200
        assert len(b0.requests) == 2
        # Both slots are free again (and keep-alive connections keep no slot).
        c1.send(request_line("/"))
        c2.send(request_line("/"))
        assert c1.read_response().status == 200
        assert c2.read_response().status == 200
    assert len(b0.requests) == 4


def test_reload_resizes_a_conn_limit_zone_and_keeps_its_counts(
    backends: Backends, proxy: Proxy
) -> None:
    from phoenix_lb.config.schema import PhoenixConfig

    (b0,) = backends(1)
    p = conn_proxy(proxy, b0)
    zone = p.runtime.conn_zones["addr"]
    before = zone.max_entries
    bigger = edge_config(
        [b0.address],
        [route(conn_limit={"zone": "addr", "max": 2})],
        conn_limits={"addr": {"zone_size": "20m"}},
    )
    p.loop.call_soon_threadsafe(p.runtime.reload, PhoenixConfig.model_validate(bigger))
    wait_for(lambda: p.runtime.conn_zones["addr"].max_entries == 2 * before, 5, "resized")
    # The same zone object (requests in flight release into it), resized.
    assert p.runtime.conn_zones["addr"] is zone


def test_limit_conn_slot_of_a_client_that_resets_mid_request_is_released(
    backends: Backends, proxy: Proxy
) -> None:
    (b0,) = backends(1)
    b0.delay = 0.5
    p = conn_proxy(proxy, b0)
    with SourceClient(p.port) as gone, SourceClient(p.port) as stays:
        gone.send(request_line("/"))
        stays.send(request_line("/"))
        b0.wait_for_requests(2)
        set_linger_zero(gone.sock)
        gone.close()  # RST while its request is in flight
        time.sleep(0.1)
        with SourceClient(p.port) as late:
            late.send(request_line("/"))
            b0.wait_for_requests(3, timeout=1.0)
            # `stays` and `late` hold the two slots now.
            assert get(p.port).status == 429
            assert stays.read_response().status == 200
            assert late.read_response().status == 200


def test_limit_conn_slot_of_a_client_that_closes_mid_body_is_released(
    backends: Backends, proxy: Proxy
) -> None:
    (b0,) = backends(1)
    b0.delay = 0.5
    p = conn_proxy(proxy, b0)
    with SourceClient(p.port) as gone, SourceClient(p.port) as stays:
        gone.send(b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        stays.send(request_line("/"))
        b0.wait_for_requests(1)
        assert get(p.port).status == 429  # both slots taken
        gone.shutdown_write()  # FIN inside the body: the request can never complete
        assert gone.is_closed(timeout=2.0)
        late = get(p.port)
        assert late.status == 200, late.status
        assert stays.read_response().status == 200


def test_limit_conn_slot_is_released_when_limit_req_refuses(
    backends: Backends, proxy: Proxy
) -> None:
    (b0,) = backends(1)
    p = proxy(
        edge_config(
            [b0.address],
            [
                route(
                    rate_limit={"zone": "api", "burst": 0, "nodelay": True},
                    conn_limit={"zone": "addr", "max": 1, "status": 503},
                )
            ],
            rate_limits={"api": {"rate": "1r/m"}},
            conn_limits={"addr": {}},
        )
    )
    # One request after the other: 503 would mean a slot leaked, the rate
    # refusals must give theirs back.
    assert [get(p.port).status for _ in range(6)] == [200] + [429] * 5
    assert len(b0.requests) == 1


def test_limit_conn_pipelined_requests_do_not_compete_for_slots(
    backends: Backends, proxy: Proxy
) -> None:
    """Requests pipelined on one connection are answered one at a time, so they
    hold one slot at a time (nginx reads the next one only when the previous
    is done; its limit_conn never refuses a client's pipelined requests)."""
    (b0,) = backends(1)
    b0.delay = 0.05
    p = conn_proxy(proxy, b0, limit=1)
    assert statuses(burst(p.port, 3, connections=1)) == [200, 200, 200]


def test_limit_conn_slot_of_a_client_that_leaves_while_delayed_is_released(
    backends: Backends, proxy: Proxy
) -> None:
    """A request held by limit_req (no nodelay) whose client goes away is over.

    nginx watches the client during the delay (``ngx_http_test_reading``) and
    ends such a request with 499: it never reaches the upstream and its
    limit_conn slot is free at once.
    """
    (b0,) = backends(1)
    p = proxy(
        edge_config(
            [b0.address],
            [
                route(
                    rate_limit={"zone": "api", "burst": 5},
                    conn_limit={"zone": "addr", "max": 1, "status": 503},
                )
            ],
            rate_limits={"api": {"rate": "2r/s"}},
            conn_limits={"addr": {}},
        )
    )
    assert get(p.port, "/first").status == 200
    with SourceClient(p.port) as gone:
        gone.send(request_line("/abandoned"))  # held about 0.5 s
        time.sleep(0.1)
        set_linger_zero(gone.sock)
    time.sleep(0.1)
    third = get(p.port, "/third")  # held about 0.8 s, then proxied
    assert third.status == 200, f"{third.status}: the gone client's slot was not released"
    time.sleep(0.2)
    assert [r.target for r in b0.requests] == ["/first", "/third"]


def test_limits_hold_per_client_address(backends: Backends, proxy: Proxy) -> None:
    (b0,) = backends(1)
    p = proxy(
        edge_config(
            [b0.address],
            [
                route(rate_limit={"zone": "api", "burst": 2, "nodelay": True}),
                route("/slow", conn_limit={"zone": "addr", "max": 1}),
            ],
            rate_limits={"api": {"rate": "1r/s"}},
            conn_limits={"addr": {}},
        )
    )
    for source in (OTHER, THIRD, CLIENT):
        answers = burst(p.port, 6, source=source, connections=2)
        assert sorted(statuses(answers)) == [200] * 3 + [429] * 3, (source, statuses(answers))

    slow = request_line("/slow?delay=0.4")
    with SourceClient(p.port, source=OTHER) as a, SourceClient(p.port, source=THIRD) as b:
        a.send(slow)
        b.send(slow)  # another address: its own slot
        b0.wait_until(lambda be: len([r for r in be.requests if r.path == "/slow"]) == 2)
        assert get(p.port, "/slow", source=OTHER).status == 429
        assert get(p.port, "/slow?delay=0", source=CLIENT).status == 200
        assert a.read_response().status == 200
        assert b.read_response().status == 200


# ---------------------------------------------------------------- allow / deny


ADMIN_TRICKS = [
    "/admin",
    "/admin/",
    "/admin/x?y=1",
    "/%61dmin",
    "/%61%64%6d%69%6e",
    "/x/../admin",
    "/./admin",
    "//admin",
    "/%2e%2e/admin",
    "/x/%2e%2e/admin/",
]


def test_access_rules_allow_and_deny_by_address(backends: Backends, proxy: Proxy) -> None:
    (b0,) = backends(1)
    p = proxy(
        edge_config(
            [b0.address],
            [
                route("/"),
                route("/admin", access=[{"allow": "127.0.0.2"}, {"deny": "all"}]),
                # No `deny all`: no match means deny (stricter than nginx).
                route("/strict", access=[{"allow": "127.0.0.2"}]),
            ],
        )
    )
    for target in [*ADMIN_TRICKS, "/strict"]:
        answer = get(p.port, target, source=CLIENT)
        assert answer.status == 403, (target, answer.status)
    assert get(p.port, "/adminx", source=CLIENT).status == 403  # a prefix, as nginx
    assert b0.requests == []

    for target in ["/admin", "/admin/x", "/%61dmin", "/strict"]:
        assert get(p.port, target, source=OTHER).status == 200, target
    # Decided on the normalized path, forwarded as received.
    assert [r.target for r in b0.requests] == ["/admin", "/admin/x", "/%61dmin", "/strict"]
    assert get(p.port, "/other", source=CLIENT).status == 200


# ---------------------------------------------------------------- real client address


def seen(backend: Backend) -> tuple[list[str], list[str]]:
    """X-Real-IP and X-Forwarded-For values of the last request ``backend`` got."""
    last = backend.requests[-1]
    return last.header_all("X-Real-IP"), last.header_all("X-Forwarded-For")


def test_real_ip_from_a_trusted_peer_drives_headers_access_and_limits(
    backends: Backends, proxy: Proxy
) -> None:
    (b0,) = backends(1)
    p = proxy(
        edge_config(
            [b0.address],
            [
                route("/"),
                route("/admin", access=[{"allow": "203.0.113.7"}, {"deny": "all"}]),
                route("/limited", rate_limit={"zone": "one", "burst": 0, "nodelay": True}),
            ],
            trusted_proxies=["127.0.0.1/32"],
            rate_limits={"one": {"rate": "1r/m"}},
        )
    )
    spoof = [("X-Forwarded-For", "203.0.113.7"), ("X-Real-IP", "6.6.6.6")]
    get(p.port, "/echo", headers=spoof)
    assert seen(b0) == (["203.0.113.7"], ["203.0.113.7, 127.0.0.1"])
    # From an untrusted peer the header is ignored (and the peer appended).
    get(p.port, "/echo", source=OTHER, headers=spoof)
    assert seen(b0) == (["127.0.0.2"], ["203.0.113.7, 127.0.0.2"])
    get(p.port, "/echo")
    assert seen(b0) == (["127.0.0.1"], ["127.0.0.1"])

    def admin(source: str, xff: str | None) -> int:
        headers = [("X-Forwarded-For", xff)] if xff else []
        return get(p.port, "/admin", source=source, headers=headers).status

    assert admin(CLIENT, "203.0.113.7") == 200
    assert admin(CLIENT, "203.0.113.8") == 403
    assert admin(CLIENT, None) == 403
    assert admin(OTHER, "203.0.113.7") == 403

    # Two clients behind the same trusted proxy: two keys.
    for client in ("203.0.113.7", "203.0.113.8"):
        answers = burst(p.port, 2, "/limited", connections=1, headers=[("X-Forwarded-For", client)])
        assert statuses(answers) == [200, 429], client


def test_real_ip_recursive_walks_past_trusted_addresses(backends: Backends, proxy: Proxy) -> None:
    (b0,) = backends(1)
    config = edge_config([b0.address], [route("/")], trusted_proxies=["127.0.0.0/8"])
    p = proxy(config)
    cases = {
        "198.51.100.1, 127.0.0.5": "198.51.100.1",
        "203.0.113.9, 198.51.100.1, 127.0.0.5": "198.51.100.1",
        "127.0.0.9, 127.0.0.5": "127.0.0.9",  # all trusted: the leftmost
        "unknown, 127.0.0.5": "127.0.0.5",  # garbage stops the walk
    }
    for xff, client in cases.items():
        get(p.port, "/echo", headers=[("X-Forwarded-For", xff)])
        assert seen(b0) == ([client], [f"{xff}, 127.0.0.1"]), xff

    flat = proxy({**config, "real_ip_recursive": False})
    get(flat.port, "/echo", headers=[("X-Forwarded-For", "198.51.100.1, 127.0.0.5")])
    assert seen(b0)[0] == ["127.0.0.5"]


# ---------------------------------------------------------------- PROXY protocol

REQUEST = b"GET /echo HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"


def proxy_protocol_config(backend: Backend) -> dict[str, Any]:
    config = make_config([backend.address])
    config["listeners"][0]["proxy_protocol"] = True
    config["trusted_proxies"] = ["127.0.0.1/32"]
    return config


def answered(data: bytes) -> Response:
    (response,) = parse_responses(data)
    return response


def test_proxy_protocol_v1_and_v2_give_the_client_address(backends: Backends, proxy: Proxy) -> None:
    (b0,) = backends(1)
    p = proxy(proxy_protocol_config(b0))
    v1 = proxy_v1("192.0.2.10", "192.0.2.1", 5555, 80)
    assert answered(raw_exchange(p.port, [v1 + REQUEST])).status == 200
    assert seen(b0)[0] == ["192.0.2.10"]

    v2 = proxy_v2("192.0.2.11", "192.0.2.1", 5556, 80)
    assert answered(raw_exchange(p.port, [v2 + REQUEST])).status == 200
    assert seen(b0)[0] == ["192.0.2.11"]

    # Headers split over several writes, then the request.
    for header, client in ((v1, "192.0.2.10"), (v2, "192.0.2.11")):
        pieces = [header[:3], header[3:14], header[14:], REQUEST]
        assert answered(raw_exchange(p.port, pieces, pause=0.05)).status == 200
        assert seen(b0)[0] == [client]

    # v2 LOCAL (the balancer's own health check): the connection's address.
    local = b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x20, 0x00]) + b"\x00\x00"
    assert answered(raw_exchange(p.port, [local + REQUEST])).status == 200
    assert seen(b0)[0] == ["127.0.0.1"]

    # A peer that is not a trusted proxy cannot choose its address.
    assert answered(raw_exchange(p.port, [v1 + REQUEST], source=OTHER)).status == 200
    assert seen(b0)[0] == ["127.0.0.2"]


@pytest.mark.parametrize(
    "data",
    [
        REQUEST,  # no header at all
        b"PROXY TCP4 300.0.2.10 192.0.2.1 5555 80\r\n" + REQUEST,
        b"PROXY TCP4 192.0.2.10 192.0.2.1 5555\r\n" + REQUEST,
        b"PROXY HTTP 192.0.2.10 192.0.2.1 5555 80\r\n" + REQUEST,
        b"\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x0c" + bytes(12) + REQUEST,  # version 3
    ],
    ids=["missing", "bad-address", "missing-port", "bad-protocol", "v2-bad-version"],
)
def test_proxy_protocol_without_a_valid_header_is_closed_unanswered(
    backends: Backends, proxy: Proxy, data: bytes
) -> None:
    (b0,) = backends(1)
    p = proxy(proxy_protocol_config(b0))
    started = time.monotonic()
    assert raw_exchange(p.port, [data]) == b""
    assert time.monotonic() - started < 1.0  # closed at once, not after a timeout
    assert b0.requests == [] and b0.connections_accepted == 0


def test_check_refuses_proxy_protocol_without_trusted_proxies(tmp_path: Path) -> None:
    config = make_config(["127.0.0.1:9001"])
    config["listeners"][0]["proxy_protocol"] = True
    path = tmp_path / "pp.yaml"
    path.write_text(config_yaml(config))
    result = subprocess.run(
        phoenix_lb_command("check", "-c", str(path)),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{path}: listeners[0].proxy_protocol: needs trusted_proxies" in result.stderr


# ---------------------------------------------------------------- security headers

DEFAULT_SECURITY = {
    "X-Frame-Options": ["DENY"],
    "X-Content-Type-Options": ["nosniff"],
    "X-XSS-Protection": ["0"],
    "Strict-Transport-Security": [],
}
NO_SECURITY: dict[str, list[str]] = {name: [] for name in DEFAULT_SECURITY}


def security_of(response: Response) -> dict[str, list[str]]:
    return {name: response.header_all(name) for name in DEFAULT_SECURITY}


def every_kind_of_answer(
    proxy: Proxy, backend: Backend, dead: RefusingPort, security: Any = "default"
) -> dict[int, Response]:
    """One response of each status: upstream 200, 404, 502, 503, 403, 429, 413."""
    config = edge_config(
        [backend.address],
        [
            route("/"),
            route("/dead", "dead"),
            route("/deny", access=[{"deny": "all"}]),
            route("/limited", rate_limit={"zone": "one", "burst": 0, "nodelay": True}),
        ],
        rate_limits={"one": {"rate": "1r/m"}},
        limits={"max_body": "1k"},
    )
    config["upstreams"]["dead"] = {"servers": [{"address": dead.address}]}
    other = {"name": "other", "bind": ["127.0.0.1:0"], "routes": [route("/only")]}
    config["listeners"].append(other)
    if security != "default":
        for listener in config["listeners"]:
            listener["security_headers"] = security
    p = proxy(config)
    other_port = p.runtime.listeners[1].addresses[0][1]
    out = {
        200: get(p.port, "/"),
        404: get(other_port, "/nothing"),
        502: get(p.port, "/dead"),  # refused (and taken out)
        503: get(p.port, "/dead"),  # no server left
        403: get(p.port, "/deny"),
        413: get(p.port, "/", method="POST", body=b"x" * 2000),
    }
    get(p.port, "/limited")
    out[429] = get(p.port, "/limited")
    for status, response in out.items():
        assert response.status == status, (status, response.status)
    out[-1] = get(
        p.port,
        "/headers?X-Frame-Options=SAMEORIGIN&X-Content-Type-Options=none"
        "&X-XSS-Protection=1%3B%20mode%3Dblock",
    )
    assert out[-1].status == 200
    return out


def test_security_headers_on_every_response_and_upstream_values_replaced(
    backends: Backends, proxy: Proxy
) -> None:
    (b0,) = backends(1)
    with RefusingPort() as dead:
        answers = every_kind_of_answer(proxy, b0, dead)
    for status, response in answers.items():
        assert security_of(response) == DEFAULT_SECURITY, (status, response.headers)


def test_security_headers_null_adds_none_and_passes_upstream_values(
    backends: Backends, proxy: Proxy
) -> None:
    (b0,) = backends(1)
    with RefusingPort() as dead:
        answers = every_kind_of_answer(proxy, b0, dead, security=None)
    upstream = answers.pop(-1)
    for status, response in answers.items():
        assert security_of(response) == NO_SECURITY, (status, response.headers)
    assert security_of(upstream) == {
        "X-Frame-Options": ["SAMEORIGIN"],
        "X-Content-Type-Options": ["none"],
        "X-XSS-Protection": ["1; mode=block"],
        "Strict-Transport-Security": [],
    }


def test_security_headers_custom_x_xss_protection_is_honoured(
    backends: Backends, proxy: Proxy
) -> None:
    (b0,) = backends(1)
    with RefusingPort() as dead:
        answers = every_kind_of_answer(
            proxy, b0, dead, security={"x_xss_protection": "1; mode=block"}
        )
    for status, response in answers.items():
        assert security_of(response) == {
            **DEFAULT_SECURITY,
            "X-XSS-Protection": ["1; mode=block"],
        }, (status, response.headers)


def test_hsts_only_on_tls_listeners(backends: Backends, proxy: Proxy, tmp_path: Path) -> None:
    (b0,) = backends(1)
    ca, cert_path, key_path = tls_files(tmp_path)
    config = make_config([b0.address])
    plain = config["listeners"][0]
    secure = dict(
        plain, name="tls", tls={"certificates": [{"cert": str(cert_path), "key": str(key_path)}]}
    )
    config["listeners"] = [plain, secure]
    p = proxy(config)
    tls_port = p.runtime.listeners[1].addresses[0][1]
    assert get(p.port).header_all("Strict-Transport-Security") == []
    answer = tls_get(tls_port, ca, "/headers?Strict-Transport-Security=max-age%3D1")
    assert answer.status == 200
    assert security_of(answer) == {
        **DEFAULT_SECURITY,
        "Strict-Transport-Security": ["max-age=31536000; includeSubDomains"],
    }
