"""TLS termination and the HTTPS redirect with real sockets (issue 4, "TLS" and its tests).

Certificates are made per test by trustme (tests/support/certs.py).  The
in-process proxy covers protocol versions, ciphers, SNI, ALPN, resumption and
the redirect; ``phoenix-lb run`` subprocesses cover resumption across two
workers (Python and ``openssl s_client -sess_out/-sess_in``), certificate
reload on SIGHUP and ``phoenix-lb check``; ``testssl`` audits the listener.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.support import Backend
from tests.support.certs import CertFiles, TestCA

from .conftest import ProxyInstance, ProxyProcess
from .edgesupport import proxy_v1, proxy_v2
from .helpers import free_port, make_config, phoenix_lb_command, wait_for

NAME = "example.com"


# -- a small HTTPS client ------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


class TlsClient:
    """One TLS connection sending HTTP/1.1 requests one at a time (keep-alive)."""

    def __init__(
        self,
        port: int,
        ctx: ssl.SSLContext,
        *,
        name: str | None = NAME,
        session: ssl.SSLSession | None = None,
        source: str = "127.0.0.1",
        preface: bytes = b"",
    ) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
        try:
            # A PROXY protocol header goes before the handshake, in the clear.
            raw.sendall(preface)
            self.sock = ctx.wrap_socket(raw, server_hostname=name, session=session)
        except BaseException:
            raw.close()
            raise
        self.file = self.sock.makefile("rb")

    def get(self, path: str = "/", *, host: str = NAME, close: bool = False) -> Reply:
        extra = "Connection: close\r\n" if close else ""
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode())
        return read_reply(self.file)

    @property
    def session(self) -> ssl.SSLSession | None:
        return self.sock.session

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> TlsClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def read_reply(file: Any) -> Reply:
    status_line = file.readline()
    assert status_line.startswith(b"HTTP/1."), status_line
    headers: dict[str, str] = {}
    while True:
        line = file.readline().rstrip(b"\r\n")
        if not line:
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = b""
    if "content-length" in headers:
        body = file.read(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            size = int(file.readline().split(b";")[0], 16)
            chunk = file.read(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    return Reply(int(status_line.split()[1]), headers, body)


@dataclass
class Handshake:
    """What a closed TLS connection negotiated."""

    version: str | None
    cipher: str | None
    session_reused: bool
    session: ssl.SSLSession | None
    der: bytes | None
    alpn: str | None


def https_get(port: int, ctx: ssl.SSLContext, **kwargs: Any) -> tuple[Reply, Handshake]:
    """One request on a fresh connection (closed after): the reply and the handshake."""
    with TlsClient(port, ctx, **kwargs) as client:
        reply = client.get(close=True)
        sock = client.sock
        cipher = sock.cipher()
        return reply, Handshake(
            sock.version(),
            cipher[0] if cipher else None,
            sock.session_reused,
            sock.session,
            sock.getpeercert(binary_form=True),
            sock.selected_alpn_protocol(),
        )


def old_protocol_client(version: ssl.TLSVersion) -> ssl.SSLContext:
    """A client that only speaks ``version`` (TLS 1.0/1.1 need security level 0 to be offered)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # old versions are the point
        ctx.minimum_version = version
        ctx.maximum_version = version
    return ctx


# -- fixtures ------------------------------------------------------------------------


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path)


@pytest.fixture
def site(ca: TestCA) -> CertFiles:
    return ca.issue(NAME, "www.example.com", stem="site")


def tls_config(backend: Backend, *certs: CertFiles, listener: Any = None, **tls: Any) -> Any:
    config = make_config([backend.address])
    config["listeners"][0]["tls"] = {"certificates": [c.entry() for c in certs], **tls}
    config["listeners"][0].update(listener or {})
    return config


@pytest.fixture
def tls_proxy(
    backends: Callable[..., list[Backend]],
    proxy: Callable[[dict[str, Any]], ProxyInstance],
    site: CertFiles,
) -> Callable[..., ProxyInstance]:
    def start(*certs: CertFiles, listener: Any = None, **tls: Any) -> ProxyInstance:
        (backend,) = backends(1)
        return proxy(tls_config(backend, *(certs or (site,)), listener=listener, **tls))

    return start


# -- handshakes ------------------------------------------------------------------------


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls12_and_tls13_handshakes_succeed(
    tls_proxy: Callable[..., ProxyInstance], ca: TestCA, version: ssl.TLSVersion
) -> None:
    instance = tls_proxy()
    ctx = ca.client_context(minimum_version=version, maximum_version=version)
    reply, sock = https_get(instance.port, ctx)
    assert reply.status == 200
    assert sock.version == {"TLSv1_2": "TLSv1.2", "TLSv1_3": "TLSv1.3"}[version.name]
    context = instance.runtime.listeners[0].context
    wait_for(lambda: context.tls_handshakes == 1, what="handshake counted")
    assert context.tls_versions == {sock.version: 1}
    assert sum(context.tls_handshake_time.counts) == 1


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_tls10_and_tls11_are_refused(
    tls_proxy: Callable[..., ProxyInstance], version: ssl.TLSVersion
) -> None:
    instance = tls_proxy()
    with pytest.raises(ssl.SSLError):
        https_get(instance.port, old_protocol_client(version))
    context = instance.runtime.listeners[0].context
    wait_for(lambda: context.tls_handshake_errors == {"protocol_version": 1}, what="counted")
    assert context.tls_handshakes == 0


def test_configured_tls12_cipher_is_negotiated_in_server_order(
    tls_proxy: Callable[..., ProxyInstance], ca: TestCA, site: CertFiles
) -> None:
    server_order = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305"
    client_order = "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256"
    instance = tls_proxy(site, ciphers=server_order)
    client = ca.client_context(maximum_version=ssl.TLSVersion.TLSv1_2)
    client.set_ciphers(client_order)
    _, sock = https_get(instance.port, client)
    assert sock.cipher == "ECDHE-ECDSA-AES128-GCM-SHA256"
    # A client offering only ciphers outside the list is refused.
    outside = ca.client_context(maximum_version=ssl.TLSVersion.TLSv1_2)
    outside.set_ciphers("ECDHE-ECDSA-AES256-GCM-SHA384")
    with pytest.raises(ssl.SSLError):
        https_get(instance.port, outside)
    context = instance.runtime.listeners[0].context
    wait_for(lambda: context.tls_handshake_errors == {"no_shared_cipher": 1}, what="counted")


def test_client_order_without_server_preference(
    tls_proxy: Callable[..., ProxyInstance], ca: TestCA, site: CertFiles
) -> None:
    instance = tls_proxy(
        site,
        ciphers="ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305",
        prefer_server_ciphers=False,
    )
    client = ca.client_context(maximum_version=ssl.TLSVersion.TLSv1_2)
    client.set_ciphers("ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256")
    _, sock = https_get(instance.port, client)
    assert sock.cipher == "ECDHE-ECDSA-CHACHA20-POLY1305"


def test_sni_chooses_the_certificate(
    tls_proxy: Callable[..., ProxyInstance], ca: TestCA, site: CertFiles
) -> None:
    api = ca.issue("api.example.com", key_type=trustme.KeyType.RSA)
    instance = tls_proxy(site, api)
    ctx = ca.client_context()
    _, sock = https_get(instance.port, ctx, name="api.example.com")
    assert sock.der == api.der()
    _, sock = https_get(instance.port, ctx, name=NAME)
    assert sock.der == site.der()
    ctx.check_hostname = False
    _, sock = https_get(instance.port, ctx, name=None)  # no SNI: the default certificate
    assert sock.der == site.der()


def test_alpn_picks_http11_for_clients_without_h2(
    tls_proxy: Callable[..., ProxyInstance], ca: TestCA, site: CertFiles
) -> None:
    # (HTTP/2 itself: test_http2.py.)
    instance = tls_proxy(site, listener={"http2": True})
    ctx = ca.client_context()
    ctx.set_alpn_protocols(["http/1.1"])
    reply, sock = https_get(instance.port, ctx)
    assert sock.alpn == "http/1.1"
    assert reply.status == 200
    h2_ctx = ca.client_context()
    h2_ctx.set_alpn_protocols(["h2", "http/1.1"])
    with (
        socket.create_connection(("127.0.0.1", instance.port), timeout=5) as raw,
        h2_ctx.wrap_socket(raw, server_hostname=NAME) as tls,
    ):
        assert tls.selected_alpn_protocol() == "h2"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_session_resumption_one_worker(
    tls_proxy: Callable[..., ProxyInstance], ca: TestCA, version: ssl.TLSVersion
) -> None:
    instance = tls_proxy()
    ctx = ca.client_context(maximum_version=version)
    _, first = https_get(instance.port, ctx)
    assert not first.session_reused
    session = first.session
    for _ in range(3):
        reply, again = https_get(instance.port, ctx, session=session)
        assert reply.status == 200
        assert again.session_reused
        session = again.session
    context = instance.runtime.listeners[0].context
    wait_for(lambda: context.tls_resumed == 3, what="resumptions counted")
    assert context.tls_handshakes == 4


def test_x_forwarded_proto_is_https(
    backends: Callable[..., list[Backend]],
    proxy: Callable[[dict[str, Any]], ProxyInstance],
    ca: TestCA,
    site: CertFiles,
) -> None:
    (backend,) = backends(1)
    instance = proxy(tls_config(backend, site))
    reply, _ = https_get(instance.port, ca.client_context())
    assert reply.status == 200
    (request,) = backend.requests
    assert request.header("x-forwarded-proto") == "https"
    assert request.header("host") == NAME


def test_keep_alive_over_tls(tls_proxy: Callable[..., ProxyInstance], ca: TestCA) -> None:
    instance = tls_proxy()
    with TlsClient(instance.port, ca.client_context()) as client:
        for i in range(5):
            assert client.get(f"/n/{i}").status == 200
    context = instance.runtime.listeners[0].context
    assert context.tls_handshakes == 1


def test_failed_handshakes_time_out_and_give_their_slot_back(
    tls_proxy: Callable[..., ProxyInstance], site: CertFiles
) -> None:
    instance = tls_proxy(site, handshake_timeout="300ms")
    runtime = instance.runtime
    with socket.create_connection(("127.0.0.1", instance.port), timeout=5) as plain:
        plain.sendall(b"\x00" * 10)  # warm up: the first failure allocates what stays
        assert plain.recv(100) == b""
    time.sleep(0.2)
    fds_before = len(os.listdir("/proc/self/fd"))
    silent = [socket.create_connection(("127.0.0.1", instance.port)) for _ in range(5)]
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", instance.port), timeout=5) as plain:
            plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert plain.recv(100) == b""  # closed: not TLS
    started = time.monotonic()
    for sock in silent:
        sock.settimeout(5)
        assert sock.recv(100) == b""  # closed by the handshake timeout
        sock.close()
    assert time.monotonic() - started < 3
    context = runtime.listeners[0].context
    wait_for(
        lambda: context.tls_handshake_errors == {"not_tls": 6, "timeout": 5},
        what=f"errors counted ({context.tls_handshake_errors})",
    )
    wait_for(lambda: runtime._connections == 0, what="connection slots released")
    wait_for(lambda: len(os.listdir("/proc/self/fd")) <= fds_before, what="descriptors closed")


def test_slow_handshakes_do_not_hold_up_others(
    tls_proxy: Callable[..., ProxyInstance], ca: TestCA
) -> None:
    instance = tls_proxy()
    silent = [socket.create_connection(("127.0.0.1", instance.port)) for _ in range(20)]
    try:
        started = time.monotonic()
        reply, _ = https_get(instance.port, ca.client_context())
        assert reply.status == 200
        # Waiting behind them would take a handshake_timeout (10 s) at least.
        assert time.monotonic() - started < 5.0
    finally:
        for sock in silent:
            sock.close()


# -- the redirect ------------------------------------------------------------------------


@pytest.fixture
def redirect_port(
    backends: Callable[..., list[Backend]], proxy: Callable[[dict[str, Any]], ProxyInstance]
) -> int:
    (backend,) = backends(1)
    config = make_config([backend.address])
    config["listeners"].append(
        {
            "name": "http",
            "bind": ["127.0.0.1:0"],
            "server_name": "phoenix-orch.example.com",
            "redirect_https": True,
        }
    )
    instance = proxy(config)
    return instance.runtime.listeners[1].addresses[0][1]


def raw_exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out


def test_redirect_uses_server_name_never_the_host_header(redirect_port: int) -> None:
    answer = raw_exchange(
        redirect_port,
        b"GET /api/v1/jobs?state=running&x=%2F HTTP/1.1\r\nHost: evil.example.net\r\n"
        b"Connection: close\r\n\r\n",
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 301 Moved Permanently"
    assert b"Location: https://phoenix-orch.example.com/api/v1/jobs?state=running&x=%2F" in lines
    assert b"Connection: close" in lines
    assert b"evil" not in answer
    length = [line for line in lines if line.startswith(b"Content-Length: ")]
    assert length == [b"Content-Length: %d" % len(body)]
    # The listener's security headers, without HSTS (plain HTTP).
    assert b"X-Frame-Options: DENY" in lines
    assert not any(line.lower().startswith(b"strict-transport-security") for line in lines)


def test_redirect_keeps_the_connection_alive_and_answers_in_order(redirect_port: int) -> None:
    answer = raw_exchange(
        redirect_port,
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
        b"HEAD /b HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        b"GET http://evil.example.net/d?e=f HTTP/1.1\r\nHost: x\r\n\r\n"
        b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    locations = [line for line in answer.split(b"\r\n") if line.startswith(b"Location: ")]
    assert locations == [
        b"Location: https://phoenix-orch.example.com/a",
        b"Location: https://phoenix-orch.example.com/b",
        b"Location: https://phoenix-orch.example.com/c",
        b"Location: https://phoenix-orch.example.com/d?e=f",
        b"Location: https://phoenix-orch.example.com/",
    ]
    assert answer.count(b"HTTP/1.1 301 ") == 5
    assert answer.count(b"<html>") == 4  # not for HEAD


def test_redirect_many_pipelined_requests_are_not_one_big_head(redirect_port: int) -> None:
    # 600 small requests (about 24 KiB) in one write, the last one cut short:
    # each head is small, whatever arrived in the same read before it.
    batch = b"GET /p HTTP/1.1\r\nHost: x\r\n\r\n" * 599 + b"GET /last HTTP/1.1\r\nHo"
    with socket.create_connection(("127.0.0.1", redirect_port), timeout=5) as sock:
        sock.sendall(batch)
        time.sleep(0.2)
        sock.sendall(b"st: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.count(b"HTTP/1.1 301 ") == 600
    assert (
        answer.endswith(b"</html>\n")
        and b"Location: https://phoenix-orch.example.com/last" in answer
    )


def test_redirect_http10_closes_and_bad_requests_get_400(redirect_port: int) -> None:
    answer = raw_exchange(redirect_port, b"GET /x HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 301 ")
    assert b"Connection: close\r\n" in answer
    assert raw_exchange(redirect_port, b"NOT HTTP\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
    assert raw_exchange(redirect_port, big).startswith(b"HTTP/1.1 431 ")


# -- worker processes, reload, check -----------------------------------------------------

SUBPROCESS_CONFIG = """\
workers: {workers}
listeners:
  - name: https
    bind: ["127.0.0.1:{{port}}"]
    server_name: example.com
    routes: [{{path: /, upstream: app}}]
    tls:
      certificates:
        - {{cert: tls/site.crt, key: tls/site.key}}
      protocols: [TLSv1.2, TLSv1.3]
      ciphers: ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256
      prefer_server_ciphers: true
      session_cache: 10m
      session_timeout: 10m
upstreams:
  app:
    servers: [{{address: "{backend}"}}]
access_log: {{format: "off"}}
error_log: {{level: info}}
admin: null
"""


@pytest.fixture
def tls_dir(tmp_path: Path) -> Path:
    # Relative certificate paths: resolved against the config file's directory.
    (tmp_path / "tls").mkdir()
    return tmp_path / "tls"


def start_subprocess(
    run_proxy_subprocess: Callable[..., ProxyProcess], backend: Backend, workers: int
) -> ProxyProcess:
    return run_proxy_subprocess(SUBPROCESS_CONFIG.format(workers=workers, backend=backend.address))


def send_sighup(process: ProxyProcess) -> None:
    """SIGHUP once the master handles it (before "started" it would still end the process)."""
    wait_for(lambda: " started (" in process.stderr_text(), 20, "master started")
    os.kill(process.pid, signal.SIGHUP)


def openssl_session_reused(port: int, ca_file: Path, session_file: Path, *args: str) -> list[str]:
    """Two ``openssl s_client`` runs: -sess_out, then -sess_in; their New/Reused lines."""
    request = b"GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n"
    lines = []
    for flag in ("-sess_out", "-sess_in"):
        out = subprocess.run(
            [
                "openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                "-servername", NAME, "-CAfile", str(ca_file), "-ign_eof",
                flag, str(session_file), *args,
            ],
            input=request,
            capture_output=True,
            timeout=20,
            check=False,
        )  # fmt: skip
        found = [
            line
            for line in out.stdout.decode(errors="replace").splitlines()
            if line.startswith(("New,", "Reused,"))
        ]
        assert found, out.stdout.decode(errors="replace") + out.stderr.decode(errors="replace")
        lines.append(found[0])
    return lines


@pytest.mark.parametrize("workers", [1, 2])
def test_resumption_across_reconnects_with_workers(
    run_proxy_subprocess: Callable[..., ProxyProcess],
    backends: Callable[..., list[Backend]],
    tmp_path: Path,
    tls_dir: Path,
    workers: int,
) -> None:
    ca = TestCA(tls_dir)
    ca.issue(NAME, stem="site")
    ca_file = tmp_path / "ca.pem"
    ca.ca.cert_pem.write_to_path(str(ca_file))
    (backend,) = backends(1)
    process = start_subprocess(run_proxy_subprocess, backend, workers)
    # Each client address is steered to one worker, whose session cache and
    # ticket keys then always resume it: every reconnect must resume.
    # 127.0.0.1 and 127.0.0.2 land on different workers (address % 2).
    for source in ("127.0.0.1", "127.0.0.2"):
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            ctx = ca.client_context(maximum_version=version)
            _, first = https_get(process.port, ctx, source=source)
            session = first.session
            for _ in range(10):
                reply, again = https_get(process.port, ctx, session=session, source=source)
                assert reply.status == 200
                assert again.session_reused, (source, version)
                session = again.session
    if shutil.which("openssl") is None:
        return
    for args in ((), ("-tls1_2",), ("-tls1_2", "-no_ticket")):
        first, second = openssl_session_reused(
            process.port, ca_file, tmp_path / f"sess{len(args)}.pem", *args
        )
        assert first.startswith("New,"), first
        assert second.startswith("Reused,"), (args, second)


@pytest.mark.parametrize("workers", [1, 2])
def test_certificates_are_reloaded_on_sighup_without_dropping_connections(
    run_proxy_subprocess: Callable[..., ProxyProcess],
    backends: Callable[..., list[Backend]],
    tls_dir: Path,
    workers: int,
) -> None:
    ca = TestCA(tls_dir)
    old = ca.issue(NAME, stem="site")
    old_der = old.der()
    (backend,) = backends(1)
    process = start_subprocess(run_proxy_subprocess, backend, workers)
    ctx = ca.client_context()
    with TlsClient(process.port, ctx) as kept:
        assert kept.get().status == 200
        assert kept.sock.getpeercert(binary_form=True) == old_der
        renewed = ca.issue(NAME, stem="site")  # same file names, new certificate
        assert renewed.der() != old_der
        send_sighup(process)
        wait_for(lambda: "reload done" in process.stderr_text(), 10, "reload")
        assert "reloaded certificate" in process.stderr_text()
        # New connections get the new certificate...
        _, sock = https_get(process.port, ctx)
        assert sock.der == renewed.der()
        # ...and the connection opened before the reload still works.
        for _ in range(3):
            assert kept.get().status == 200
    assert process.proc.poll() is None


def test_reload_with_a_broken_key_keeps_the_old_certificate(
    run_proxy_subprocess: Callable[..., ProxyProcess],
    backends: Callable[..., list[Backend]],
    tls_dir: Path,
) -> None:
    ca = TestCA(tls_dir)
    site = ca.issue(NAME, stem="site")
    (backend,) = backends(1)
    process = start_subprocess(run_proxy_subprocess, backend, 1)
    other = ca.issue(NAME, stem="other")
    site.key.write_bytes(other.key.read_bytes())  # no longer matches site.crt
    send_sighup(process)
    wait_for(lambda: "reload refused" in process.stderr_text(), 10, "refusal")
    assert "does not belong to the certificate" in process.stderr_text()
    _, sock = https_get(process.port, ca.client_context())
    assert sock.der == site.der()


def run_check(config_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        phoenix_lb_command("check", "-c", str(config_path)),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_check_reports_certificate_problems(tmp_path: Path, tls_dir: Path) -> None:
    ca = TestCA(tls_dir)
    ca.issue(NAME, stem="site")
    config_path = tmp_path / "phoenix.yaml"
    config_path.write_text(
        SUBPROCESS_CONFIG.format(workers=1, backend="127.0.0.1:9").replace("{port}", "8443")
    )
    ok = run_check(config_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == f"{config_path}: configuration ok"

    site_key = tls_dir / "site.key"
    site_key.unlink()
    missing = run_check(config_path)
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        f"{config_path}: listeners[0].tls.certificates[0].key: {site_key}: no such file"
    )

    other = ca.issue(NAME, stem="other")
    site_key.write_bytes(other.key.read_bytes())
    mismatch = run_check(config_path)
    assert mismatch.returncode == 1
    assert (
        f"{config_path}: listeners[0].tls.certificates[0].key: {site_key}: this private key "
        "does not belong to the certificate" in mismatch.stderr
    )

    import datetime

    now = datetime.datetime.now(datetime.UTC)
    ca.issue(
        NAME,
        stem="site",
        not_before=now - datetime.timedelta(days=100),
        not_after=now - datetime.timedelta(days=10, hours=1),
    )
    expired = run_check(config_path)
    assert expired.returncode == 0, expired.stderr  # a warning: the balancer would start
    assert expired.stderr.startswith(
        f"WARNING {config_path}: listeners[0].tls.certificates[0].cert: "
        f"{tls_dir / 'site.crt'} expired 10 days ago ("
    )
    assert "configuration ok" in expired.stdout


def test_run_refuses_to_start_with_a_missing_key(
    run_proxy_subprocess: Callable[..., ProxyProcess],
    backends: Callable[..., list[Backend]],
    tls_dir: Path,
) -> None:
    ca = TestCA(tls_dir)
    site = ca.issue(NAME, stem="site")
    site.key.unlink()
    (backend,) = backends(1)
    process = run_proxy_subprocess(
        SUBPROCESS_CONFIG.format(workers=2, backend=backend.address), wait=False
    )
    assert process.proc.wait(20) == 1
    assert f"listeners[0].tls.certificates[0].key: {site.key}: no such file" in (
        process.stderr_text()
    )


# -- testssl ------------------------------------------------------------------------------

# Findings about the test's own certificate (made by trustme: untrusted CA,
# no CRL/OCSP, a 1000-year validity, no match for 127.0.0.1), not about how
# the listener is configured.
TESTSSL_CERTIFICATE_FINDINGS = frozenset(
    {"cert_trust", "cert_chain_of_trust", "cert_validityPeriod", "cert_revocation"}
)


@pytest.mark.slow
def test_testssl_finds_nothing_high(
    tls_proxy: Callable[..., ProxyInstance], tmp_path: Path, ca: TestCA
) -> None:
    if shutil.which("testssl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("testssl is not installed (Debian package testssl.sh)")
        pytest.skip("testssl is not installed (Debian package testssl.sh)")
    rsa = ca.issue(NAME, key_type=trustme.KeyType.RSA)
    ecdsa = ca.issue(NAME, key_type=trustme.KeyType.ECDSA)
    instance = tls_proxy(
        ecdsa, rsa, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"
    )
    report = tmp_path / "testssl.json"
    # Protocols, cipher categories, forward secrecy, server preference,
    # server defaults and vulnerabilities: about a minute.
    result = subprocess.run(
        [
            "testssl", "--quiet", "--color", "0", "--warnings", "off", "--nodns", "min",
            "--severity", "HIGH", "--jsonfile", str(report),
            "-p", "-s", "-f", "-P", "-S", "-U",
            f"127.0.0.1:{instance.port}",
        ],
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )  # fmt: skip
    assert report.exists(), result.stdout + result.stderr
    findings = json.loads(report.read_text())
    bad = [
        f"{item['severity']} {item['id']}: {item['finding']}"
        for item in findings
        if item.get("severity") in ("HIGH", "CRITICAL")
        # "cert_trust <cert#2>": one finding per certificate
        and str(item.get("id")).split(" ")[0] not in TESTSSL_CERTIFICATE_FINDINGS
    ]
    assert not bad, "\n".join(bad)
    assert instance.runtime.listeners[0].context.tls_handshakes > 0


def test_handshake_metrics_and_certificate_expiry(
    run_proxy_subprocess: Callable[..., ProxyProcess],
    backends: Callable[..., list[Backend]],
    tmp_path: Path,
    tls_dir: Path,
) -> None:
    """Seed 7.1 "SSL handshake time": counters by version and resumption, failures by
    reason, the duration histogram and the expiry gauge, summed over both workers."""
    ca = TestCA(tls_dir)
    ca.issue(NAME, stem="site")
    (backend,) = backends(1)
    admin = free_port()
    config = SUBPROCESS_CONFIG.format(workers=2, backend=backend.address).replace(
        "admin: null", f'admin: {{bind: "127.0.0.1:{admin}"}}'
    )
    process = run_proxy_subprocess(config)
    wait_for(lambda: " started (" in process.stderr_text(), 20, "master started")
    for source in ("127.0.0.1", "127.0.0.2"):
        ctx = ca.client_context(maximum_version=ssl.TLSVersion.TLSv1_2)
        _, first = https_get(process.port, ctx, source=source)
        _, again = https_get(process.port, ctx, session=first.session, source=source)
        assert again.session_reused
        https_get(process.port, ca.client_context(), source=source)
    with socket.create_connection(("127.0.0.1", process.port), timeout=5) as plain:
        plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        plain.recv(100)  # closed unanswered
    text = scrape_metrics(admin)
    handshakes = 'phoenix_tls_handshakes_total{listener="https",'
    assert f'{handshakes}protocol="TLSv1.2",resumed="false"}} 2.0' in text
    assert f'{handshakes}protocol="TLSv1.2",resumed="true"}} 2.0' in text
    assert f'{handshakes}protocol="TLSv1.3",resumed="false"}} 2.0' in text
    assert 'phoenix_tls_handshake_duration_seconds_bucket{le="0.001",listener="https"}' in text
    assert 'phoenix_tls_handshake_errors_total{listener="https",reason="not_tls"} 1.0' in text
    assert 'phoenix_tls_handshake_duration_seconds_count{listener="https"} 6.0' in text
    expiry = [
        line
        for line in text.splitlines()
        if line.startswith("phoenix_tls_certificate_expiry_timestamp_seconds{")
    ]
    assert len(expiry) == 1 and 'listener="https"' in expiry[0]
    assert float(expiry[0].rsplit(" ", 1)[1]) > time.time() + 86400


def scrape_metrics(admin_port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=10) as answer:
        return str(answer.read().decode())


# -- PROXY protocol in front of TLS ------------------------------------------------------


@pytest.fixture
def proxied_tls(
    backends: Callable[..., list[Backend]],
    proxy: Callable[[dict[str, Any]], ProxyInstance],
    site: CertFiles,
) -> ProxyInstance:
    (backend,) = backends(1)
    config = tls_config(backend, site, listener={"proxy_protocol": True, "http2": True})
    config["trusted_proxies"] = ["127.0.0.1/32"]
    return proxy(config)


@pytest.mark.parametrize("version", [1, 2])
def test_proxy_protocol_header_before_the_tls_handshake(
    proxied_tls: ProxyInstance, ca: TestCA, version: int
) -> None:
    # An L4 balancer sends the PROXY header, then passes the client's TLS
    # bytes through (here in the same segment as the ClientHello).
    header = (proxy_v1 if version == 1 else proxy_v2)("192.0.2.10", "192.0.2.1", 5555, 443)
    with TlsClient(proxied_tls.port, ca.client_context(), preface=header) as client:
        replies = [client.get("/echo"), client.get("/echo")]
    for reply in replies:
        assert reply.status == 200
        fields = json.loads(reply.body)["headers"]
        assert [v for k, v in fields if k.lower() == "x-real-ip"] == ["192.0.2.10"]
    context = proxied_tls.runtime.listeners[0].context
    wait_for(lambda: context.tls_handshakes == 1, what="handshake counted")


def test_tls_listener_with_proxy_protocol_refuses_a_connection_without_header(
    proxied_tls: ProxyInstance, ca: TestCA
) -> None:
    started = time.monotonic()
    # A ClientHello where the header should be: closed at its first byte.
    with pytest.raises((ssl.SSLError, OSError)):
        https_get(proxied_tls.port, ca.client_context())
    assert time.monotonic() - started < 2.0
    context = proxied_tls.runtime.listeners[0].context
    assert context.tls_handshakes == 0


def test_reading_proxy_headers_holds_worker_connections_slots(
    backends: Callable[..., list[Backend]],
    proxy: Callable[[dict[str, Any]], ProxyInstance],
    site: CertFiles,
    ca: TestCA,
) -> None:
    (backend,) = backends(1)
    config = tls_config(backend, site, listener={"proxy_protocol": True}, handshake_timeout="1s")
    config["trusted_proxies"] = ["127.0.0.1/32"]
    config["worker_connections"] = 2
    instance = proxy(config)
    # Two connections that never send their header fill both slots until
    # handshake_timeout closes them; the next client waits in the backlog.
    silent = [socket.create_connection(("127.0.0.1", instance.port)) for _ in range(2)]
    try:
        time.sleep(0.2)
        started = time.monotonic()
        header = proxy_v1("192.0.2.10", "192.0.2.1", 5555, 443)
        with TlsClient(instance.port, ca.client_context(), preface=header) as client:
            assert client.get("/").status == 200
        assert time.monotonic() - started >= 0.6
    finally:
        for sock in silent:
            sock.close()
