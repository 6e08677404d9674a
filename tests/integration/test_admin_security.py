"""The admin listener against the operator's own browser: DNS rebinding and CSRF.

``phoenix-lb run`` with its admin listener on a free loopback port and no
token (the default), started and stopped by PID through ``opsupport``.  The
requests are what a browser sends when another site's page makes it talk to
http://127.0.0.1:PORT (a foreign Host after DNS rebinding; Origin and
Sec-Fetch-Site on a cross-site POST), sent with http.client or a raw socket,
and then for real from headless Chromium: a page on another origin submits
a form and a no-cors fetch to the control API, and a page reached through a
rebound name asks for the status page.  The browser tests skip without
chromium and chromedriver (fail under CI=true).  The rules themselves are
tested without sockets in tests/unit/admin/test_origin.py; the status page's
own buttons (same origin) in test_status_page.py.
"""

from __future__ import annotations

import http.client
import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support.webdriver import CHROMIUM_ARGS, ChromeDriver, Session, call

from .helpers import config_yaml, free_port, phoenix_lb_command
from .opsupport import AdminAnswer, Phoenix, ops_config, require_binary, running


def request(
    lb: Phoenix, method: str, path: str, headers: dict[str, str] | None = None
) -> AdminAnswer:
    """One request to the admin listener with exactly these extra headers (Host included)."""
    conn = http.client.HTTPConnection("127.0.0.1", lb.admin_port, timeout=5.0)
    try:
        conn.request(
            method, path, body=b"" if method == "POST" else None, headers=dict(headers or {})
        )
        response = conn.getresponse()
        return AdminAnswer(
            response.status, response.read(), {k.lower(): v for k, v in response.getheaders()}
        )
    finally:
        conn.close()


def raw(lb: Phoenix, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", lb.admin_port), timeout=5.0) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def states(lb: Phoenix) -> dict[str, str]:
    answer = lb.admin("/api/upstreams")
    assert answer.status == 200, answer
    return {item["server"]: item["state"] for item in answer.json()["app"]}


def action(address: str, verb: str) -> str:
    return f"/api/upstreams/app/servers/{address.replace(':', '%3A')}/{verb}"


# ---------------------------------------------------------------- CSRF


def test_cross_site_posts_are_refused_and_change_nothing(tmp_path: Path, backends: Any) -> None:
    b0, b1 = backends(2)
    with running(tmp_path, ops_config([b0.address, b1.address])) as lb:
        own = f"127.0.0.1:{lb.admin_port}"
        drain = action(b0.address, "drain")
        attacks = [
            # A modern browser: both headers.
            {"Host": own, "Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
            # Another web app on this machine (same site, another port).
            {"Host": own, "Origin": "http://127.0.0.1:3000", "Sec-Fetch-Site": "same-site"},
            # A browser older than Sec-Fetch-Site: Origin alone.
            {"Host": own, "Origin": "http://evil.example"},
            # A sandboxed frame or a file: page.
            {"Host": own, "Origin": "null"},
        ]
        for headers in attacks:
            for path in (drain, "/api/reload", "/api/rollback"):
                answer = request(lb, "POST", path, headers)
                assert answer.status == 403, (headers, path, answer)
                assert answer.headers["content-type"] == "text/plain; charset=utf-8"
                assert b"refused" in answer.body
        assert states(lb) == {b0.address: "up", b1.address: "up"}
        assert lb.metrics().value("phoenix_config_reloads_total") == 0
        assert "admin: refused POST" in lb.stderr_text()

        # curl and phoenix-lb ctl send neither Origin nor Sec-Fetch-Site.
        answer = request(lb, "POST", drain, {"Host": own, "User-Agent": "curl/7.88.1"})
        assert answer.status == 200, answer
        assert states(lb)[b0.address] == "draining"
        done = subprocess.run(
            phoenix_lb_command("ctl", "--admin", own, "enable", "app", b0.address),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert states(lb)[b0.address] == "up"

        # The status page's own buttons: same origin, as Chromium sends it.
        page = {
            "Host": own,
            "Origin": f"http://{own}",
            "Sec-Fetch-Site": "same-origin",
            "Sec-Fetch-Mode": "cors",
        }
        answer = request(lb, "POST", action(b1.address, "disable"), page)
        assert answer.status == 200, answer
        assert states(lb)[b1.address] == "disabled"
        # Reached as localhost, the origin is localhost's.
        local = {**page, "Host": f"localhost:{lb.admin_port}"}
        local["Origin"] = f"http://{local['Host']}"
        assert request(lb, "POST", action(b1.address, "enable"), local).status == 200
        assert states(lb) == {b0.address: "up", b1.address: "up"}


# ---------------------------------------------------------------- DNS rebinding


def test_a_rebound_host_is_refused_on_every_path(tmp_path: Path, backends: Any) -> None:
    (b0,) = backends(1)
    with running(tmp_path, ops_config([b0.address])) as lb:
        port = lb.admin_port
        for path in ("/api/status", "/api/upstreams", "/metrics", "/nginx_status", "/health"):
            for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.nip.io:{port}"):
                answer = request(lb, "GET", path, {"Host": host})
                assert answer.status == 421, (path, host, answer)
                assert answer.headers["content-type"] == "text/plain; charset=utf-8"
                assert b"not a name of this admin listener" in answer.body
                assert b"upstream" not in answer.body and b"phoenix_" not in answer.body
        # A rebound POST never gets as far as the Origin check.
        answer = request(lb, "POST", action(b0.address, "drain"), {"Host": f"evil.example:{port}"})
        assert answer.status == 421
        assert states(lb) == {b0.address: "up"}
        # Two Host fields: not "the last one wins".
        answer = raw(
            lb,
            f"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Host: evil.example:{port}\r\nConnection: close\r\n\r\n".encode(),
        )
        assert answer.startswith(b"HTTP/1.1 421 "), answer[:200]

        # The listener's own names.
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
            assert request(lb, "GET", "/api/status", {"Host": host}).status == 200, host
        # HTTP/1.0 without Host (not a browser) is answered; HTTP/1.1 needs Host.
        answer = raw(lb, b"GET /health HTTP/1.0\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
        answer = raw(lb, b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
        assert answer.endswith(b"HTTP/1.1 requests need a Host header\n")


def test_allowed_hosts_adds_names(tmp_path: Path, backends: Any) -> None:
    (b0,) = backends(1)
    admin_port = free_port()
    config = ops_config(
        [b0.address],
        admin_port=admin_port,
        admin_extra={"allowed_hosts": [f"lb1.test:{admin_port}", "admin.test"]},
    )
    with running(tmp_path, config) as lb:
        for host in (f"lb1.test:{admin_port}", "admin.test", "admin.test:443"):
            assert request(lb, "GET", "/api/status", {"Host": host}).status == 200, host
        assert request(lb, "GET", "/api/status", {"Host": "lb1.test:1"}).status == 421
        # Through a reverse proxy that keeps Host: the HTTPS origin matches.
        proxied = {
            "Host": "admin.test",
            "Origin": "https://admin.test",
            "Sec-Fetch-Site": "same-origin",
        }
        assert request(lb, "POST", action(b0.address, "drain"), proxied).status == 200
        assert states(lb) == {b0.address: "draining"}


def test_check_names_a_bad_allowed_hosts_entry(tmp_path: Path) -> None:
    config = ops_config(["127.0.0.1:9"], admin_extra={"allowed_hosts": ["http://lb1:9000"]})
    path = tmp_path / "bad.yaml"
    path.write_text(config_yaml(config))
    done = subprocess.run(
        phoenix_lb_command("check", "-c", str(path)),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert "admin.allowed_hosts" in done.stderr and "http://lb1:9000" in done.stderr, done.stderr


# ---------------------------------------------------------------- in a real browser

ATTACK_PAGE = """<!doctype html>
<meta charset="utf-8"><title>cat pictures</title>
<iframe name="sink"></iframe>
<form id="csrf" method="POST" action="{admin}{drain}" target="sink"></form>
<script>
  window.formDone = false;
  window.fetchDone = "";
  const sink = document.querySelector("iframe");
  document.getElementById("csrf").submit();
  sink.addEventListener("load", () => {{ window.formDone = true; }});
  fetch("{admin}{disable}", {{method: "POST", mode: "no-cors", body: "x"}})
    .then(() => {{ window.fetchDone = "answered"; }}, (e) => {{ window.fetchDone = "failed"; }});
</script>
"""


class AttackSite:
    """Another web server on this machine, serving one page that attacks the admin API."""

    def __init__(self, page: str) -> None:
        body = page.encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> AttackSite:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5.0)


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[ChromeDriver]:
    chromium = require_binary("/usr/bin/chromium", "chromium")
    chromedriver = require_binary("/usr/bin/chromedriver", "chromium-driver")
    workdir = tmp_path / "browser"
    workdir.mkdir()
    instance = ChromeDriver(chromedriver, chromium, workdir).start()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.mark.parametrize("site", ["localhost", "127.0.0.1"], ids=["cross-site", "same-site"])
def test_a_page_on_another_origin_cannot_drive_the_api(
    tmp_path: Path, backends: Any, driver: ChromeDriver, site: str
) -> None:
    b0, b1 = backends(2)
    with running(tmp_path, ops_config([b0.address, b1.address])) as lb:
        page_text = ATTACK_PAGE.format(
            admin=f"http://127.0.0.1:{lb.admin_port}",
            drain=action(b0.address, "drain"),
            disable=action(b1.address, "disable"),
        )
        with AttackSite(page_text) as attacker:
            page = driver.session()
            page.get(f"http://{site}:{attacker.port}/")
            page.wait(lambda: page.execute("return window.formDone;"), what="the form answered")
            outcome = page.wait(lambda: page.execute("return window.fetchDone;"), what="fetch")
            assert outcome == "answered"  # it reached the listener, and was refused
        assert states(lb) == {b0.address: "up", b1.address: "up"}
        log = lb.stderr_text()
        assert "admin: refused POST" in log and "Sec-Fetch-Site" in log, log[-2000:]


def test_a_rebound_name_gets_no_status_page(
    tmp_path: Path, backends: Any, driver: ChromeDriver
) -> None:
    (b0,) = backends(1)
    # A session whose resolver maps rebind.test to 127.0.0.1: what DNS
    # rebinding achieves once the attacker's short TTL has run out.
    profile = tmp_path / "browser" / "rebind-profile"
    profile.mkdir()
    capabilities = {
        "capabilities": {
            "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": driver.chromium,
                    "args": [
                        *CHROMIUM_ARGS,
                        f"--user-data-dir={profile}",
                        "--host-resolver-rules=MAP rebind.test 127.0.0.1",
                    ],
                },
                "timeouts": {"implicit": 0, "pageLoad": 20000, "script": 10000},
            }
        }
    }
    value = call(driver.base, "POST", "/session", capabilities, 30.0)
    page = Session(driver.base, value["sessionId"], 30.0)
    driver.sessions.append(page)
    with running(tmp_path, ops_config([b0.address])) as lb:
        page.get(f"http://rebind.test:{lb.admin_port}/status")
        text = page.execute("return document.body.innerText;")
        assert "not a name of this admin listener" in text, text
        # Same-origin fetches from that page: refused as well, nothing read.
        # (WebDriver waits for a returned promise.)
        answer = page.execute(
            "return fetch('/api/status').then(async (r) => [r.status, await r.text()]);"
        )
        assert answer[0] == 421 and "upstream" not in answer[1], answer
        # The same browser, through a name the listener has, gets the page.
        page.get(f"http://localhost:{lb.admin_port}/status")
        page.wait(
            lambda: page.find_all("section[data-upstream='app'] tr.server"), what="the server row"
        )
