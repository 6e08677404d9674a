"""Access log lines and request ids, end to end."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.integration.helpers import make_config
from tests.support.rawhttp import RawClient


def read_lines(path: Path, count: int, timeout: float = 3.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            lines = path.read_text().splitlines()
            if len(lines) >= count:
                return lines
        time.sleep(0.05)
    raise AssertionError(f"{path}: expected {count} lines")


def test_request_id_generated_passed_through_and_returned(backends: Any, proxy: Any) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    with RawClient(p.port) as client:
        generated = client.request("GET", "/").header("x-request-id")
        given = client.request("GET", "/", headers=[("X-Request-ID", "abc-123")])
        bad = client.request("GET", "/", headers=[("X-Request-ID", 'inject"me')])
    assert generated and generated != "abc-123"
    assert given.header("x-request-id") == "abc-123"
    assert bad.header("x-request-id") not in (None, 'inject"me')
    seen = [r.header("x-request-id") for r in b.requests]
    assert seen == [generated, "abc-123", bad.header("x-request-id")]
    assert all(len(r.header_all("x-request-id")) == 1 for r in b.requests)


def test_request_id_echoed_by_the_backend_is_returned_once(backends: Any, proxy: Any) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    with RawClient(p.port) as client:
        # The backend echoes an id of its own choosing: ours replaces it.
        response = client.request(
            "GET", "/headers?X-Request-ID=backend-id", headers=[("X-Request-ID", "abc-123")]
        )
    assert response.status == 200
    assert response.header_all("x-request-id") == ["abc-123"]


def test_request_id_off(backends: Any, proxy: Any) -> None:
    (b,) = backends(1)
    config = make_config([b.address])
    config["listeners"][0]["request_id"] = False
    p = proxy(config)
    with RawClient(p.port) as client:
        response = client.request("GET", "/", headers=[("X-Request-ID", "abc")])
    # Off means hands off: no id of ours, the client's passes unchanged.
    assert response.header("x-request-id") is None
    assert b.requests[0].header_all("x-request-id") == ["abc"]


def test_json_log_has_every_field(backends: Any, proxy: Any, tmp_path: Path) -> None:
    (b,) = backends(1)
    log = tmp_path / "access.json"
    p = proxy(make_config([b.address], access_log={"path": str(log), "format": "json"}))
    with RawClient(p.port) as client:
        client.request(
            "GET", "/status/503", headers=[("User-Agent", "t/1"), ("X-Request-ID", "r1")]
        )
    (line,) = read_lines(log, 1)
    entry = json.loads(line)
    assert entry["status"] == 503
    assert entry["request_id"] == "r1"
    assert entry["upstream_addr"] == b.address
    assert entry["upstream_response_time"] >= 0
    assert entry["user_agent"] == "t/1"
    assert entry["method"] == "GET" and entry["uri"] == "/status/503"
    assert entry["tls"] == ""


def test_combined_log_keeps_the_combined_prefix(backends: Any, proxy: Any, tmp_path: Path) -> None:
    (b,) = backends(1)
    log = tmp_path / "access.log"
    p = proxy(make_config([b.address], access_log={"path": str(log), "format": "combined"}))
    with RawClient(p.port) as client:
        client.request("GET", "/a?b=1", headers=[("Referer", "http://x/"), ("X-Request-ID", "r2")])
    (line,) = read_lines(log, 1)
    assert line.startswith("127.0.0.1 - - [")
    assert '"GET /a?b=1 HTTP/1.1" 200 ' in line
    assert '"http://x/"' in line
    assert f" rid=r2 upstream={b.address} rt=" in line and " urt=" in line and " tls=-" in line


def test_logged_address_is_the_real_client_behind_a_trusted_proxy(
    backends: Any, proxy: Any, tmp_path: Path
) -> None:
    (b,) = backends(1)
    log = tmp_path / "access.json"
    config = make_config([b.address], access_log={"path": str(log), "format": "json"})
    config["trusted_proxies"] = ["127.0.0.1/32"]
    config["listeners"][0]["routes"] = [
        {"path": "/", "upstream": "app"},
        {"path": "/closed", "upstream": "app", "access": [{"deny": "203.0.113.7"}]},
    ]
    p = proxy(config)
    with RawClient(p.port) as client:
        xff = [("X-Forwarded-For", "203.0.113.7")]
        statuses = [client.request("GET", path, headers=xff).status for path in ("/", "/closed")]
    assert statuses == [200, 403]
    entries = [json.loads(line) for line in read_lines(log, 2)]
    # nginx's $remote_addr after realip: the address limits and rules used.
    assert [e["remote_addr"] for e in entries] == ["203.0.113.7", "203.0.113.7"]


def test_listener_access_log_overrides_the_global_one(
    backends: Any, proxy: Any, tmp_path: Path
) -> None:
    (b,) = backends(1)
    main, own = tmp_path / "main.log", tmp_path / "own.log"
    config = make_config([b.address], access_log={"path": str(main), "format": "combined"})
    config["listeners"][0]["access_log"] = {"path": str(own), "format": "json"}
    p = proxy(config)
    with RawClient(p.port) as client:
        client.request("GET", "/")
    read_lines(own, 1)
    assert not main.exists() or main.read_text() == ""


def test_route_with_access_log_false_is_not_logged(
    backends: Any, proxy: Any, tmp_path: Path
) -> None:
    """The seed's /health location: access_log off, other routes still logged."""
    (b,) = backends(1)
    log = tmp_path / "access.json"
    config = make_config([b.address], access_log={"path": str(log), "format": "json"})
    config["listeners"][0]["routes"].insert(
        0, {"path": "/health", "upstream": "app", "access_log": False}
    )
    p = proxy(config)
    with RawClient(p.port) as client:
        for _ in range(3):
            assert client.request("GET", "/health").status == 200
        client.request("GET", "/after")
    (line,) = read_lines(log, 1)
    assert json.loads(line)["uri"] == "/after"
    time.sleep(0.3)  # a late /health line would show up here
    assert len(log.read_text().splitlines()) == 1


def test_refusals_are_logged(backends: Any, proxy: Any, tmp_path: Path) -> None:
    """404 (no route), 403 (access rules) and 429 (rate limit) appear in the log."""
    (b,) = backends(1)
    log = tmp_path / "access.json"
    config = make_config([b.address], access_log={"path": str(log), "format": "json"})
    listener = config["listeners"][0]
    listener["routes"] = [
        {"path": "/open", "upstream": "app", "rate_limit": {"zone": "z"}},
        {"path": "/closed", "upstream": "app", "access": [{"deny": "all"}]},
    ]
    config["rate_limits"] = {"z": {"rate": "1r/m"}}
    p = proxy(config)
    with RawClient(p.port) as client:
        statuses = [
            client.request("GET", path, headers=[("X-Request-ID", f"r{i}")]).status
            for i, path in enumerate(["/nothing", "/closed", "/open", "/open"])
        ]
    assert statuses == [404, 403, 200, 429]
    entries = [json.loads(line) for line in read_lines(log, 4)]
    assert [(e["uri"], e["status"]) for e in entries] == [
        ("/nothing", 404),
        ("/closed", 403),
        ("/open", 200),
        ("/open", 429),
    ]
    assert [e["request_id"] for e in entries] == ["r0", "r1", "r2", "r3"]
    refused = entries[3]
    assert refused["upstream_addr"] == "" and refused["body_bytes_sent"] > 0


def test_listener_error_log_gets_its_upstream_errors(proxy: Any, tmp_path: Path) -> None:
    from tests.support import RefusingPort

    errors = tmp_path / "edge-errors.log"
    with RefusingPort() as dead:
        config = make_config([dead.address])
        config["listeners"][0]["error_log"] = {"path": str(errors), "level": "info"}
        p = proxy(config)
        with RawClient(p.port) as client:
            assert client.request("GET", "/").status == 502
    deadline = time.monotonic() + 3.0
    while dead.address not in (errors.read_text() if errors.exists() else ""):
        assert time.monotonic() < deadline, "no upstream error in the listener's log"
        time.sleep(0.02)
