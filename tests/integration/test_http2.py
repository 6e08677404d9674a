"""Downstream HTTP/2 over TLS (issue 4, "HTTP/2" and its tests), with real sockets.

Clients: ``httpx`` with ``http2=True`` for ordinary use, a raw ``h2``
client (``RawH2`` below) for what a polite client never does (invalid
requests, too many streams, rapid reset, floods), and ``curl --http2``.
Certificates are made per test by trustme; the backends speak HTTP/1.1, so
every test also checks what the HTTP/2 request became upstream.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import httpx
import pytest
from hyperframe.frame import ContinuationFrame, GoAwayFrame, HeadersFrame

from tests.support import Backend, pattern_sha256
from tests.support.certs import CertFiles, TestCA

from .conftest import ProxyInstance
from .edgesupport import proxy_v2, secret_file
from .helpers import assert_nothing_reached, make_config, wait_for

HOST = "localhost"

PROTOCOL_ERROR = 1
REFUSED_STREAM = 7
CANCEL = 8
ENHANCE_YOUR_CALM = 11
GET_FIELDS = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"x"), (b":path", b"/")]


# -- a raw HTTP/2 client ---------------------------------------------------------------


@dataclass
class Reply:
    """What came back on one stream."""

    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    ended: bool = False
    reset: int | None = None
    #: DATA frames received (empty ones included)
    data_frames: int = 0

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_all(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.headers if key == name]

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None


class RawH2:
    """A blocking HTTP/2 client on ``h2`` that sends whatever it is told to."""

    def __init__(self, port: int, ca: TestCA, preface: bytes = b"") -> None:
        ctx = ca.client_context()
        ctx.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        raw.sendall(preface)  # a PROXY protocol header, before the handshake
        self.sock = ctx.wrap_socket(raw, server_hostname=HOST)
        assert self.sock.selected_alpn_protocol() == "h2"
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=True,
                header_encoding=None,
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
                validate_inbound_headers=False,
            )
        )
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(32 << 20)
        self.replies: dict[int, Reply] = {}
        #: the server's GOAWAY error code, once received
        self.goaway: int | None = None
        self.closed = False
        self.settings: dict[int, int] = {}
        self._inbox = bytearray()
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(
        self,
        path: str = "/",
        *,
        method: str = "GET",
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        end: bool = True,
        pseudo: list[tuple[str, str]] | None = None,
    ) -> int:
        """Open a stream; END_STREAM after the body unless ``end`` is False."""
        sid = self.conn.get_next_available_stream_id()
        if pseudo is None:
            pseudo = [
                (":method", method),
                (":scheme", "https"),
                (":authority", HOST),
                (":path", path),
            ]
        fields = [(k.encode(), v.encode()) for k, v in pseudo + (headers or [])]
        self.replies[sid] = Reply()
        self.conn.send_headers(sid, fields, end_stream=end and not body)
        if body:
            self.send_body(sid, body, end=end)
        self.flush()
        return sid

    def send_body(self, sid: int, body: bytes, *, end: bool = True) -> None:
        view = memoryview(body)
        while view:
            window = self.conn.local_flow_control_window(sid)
            size = min(window, self.conn.max_outbound_frame_size, len(view))
            if size <= 0:
                self.flush()
                self.read_some()
                continue
            self.conn.send_data(sid, bytes(view[:size]))
            view = view[size:]
            self.flush()
        if end:
            self.conn.end_stream(sid)
        self.flush()

    def read_some(self, timeout: float = 10.0) -> None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 20)
        except TimeoutError:
            return
        except (ConnectionError, ssl.SSLError):
            data = b""
        if not data:
            self.closed = True
            return
        for event in self.conn.receive_data(self._take_goaway(data)):
            self._on_event(event)
        try:
            self.flush()
        except OSError:
            self.closed = True

    def _take_goaway(self, data: bytes) -> bytes:
        """Keep GOAWAY frames from h2, which would refuse every frame after one.

        (The server may finish its open streams after a graceful GOAWAY;
        h2's state machine accepts nothing once it has seen one.)
        """
        self._inbox += data
        out = bytearray()
        buf = self._inbox
        while len(buf) >= 9:
            length = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + length:
                break
            frame = bytes(buf[: 9 + length])
            del buf[: 9 + length]
            if frame[3] == 0x7:  # GOAWAY
                self.goaway = int.from_bytes(frame[13:17], "big")
            else:
                out += frame
        return bytes(out)

    def _on_event(self, event: Any) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            reply = self.replies.setdefault(event.stream_id, Reply())
            reply.headers = list(event.headers)
            reply.status = int(dict(reply.headers)[b":status"])
        elif isinstance(event, h2.events.DataReceived):
            self.replies[event.stream_id].body += event.data
            self.replies[event.stream_id].data_frames += 1
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self.replies[event.stream_id].ended = True
        elif isinstance(event, h2.events.StreamReset):
            self.replies.setdefault(event.stream_id, Reply()).reset = event.error_code
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            for code, change in event.changed_settings.items():
                self.settings[int(code)] = change.new_value

    def wait(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.closed:
                raise AssertionError("connection closed")
            if time.monotonic() > deadline:
                raise AssertionError("timed out")
            self.read_some(max(0.05, deadline - time.monotonic()))

    def response(self, sid: int, timeout: float = 10.0) -> Reply:
        self.wait(lambda: self.replies[sid].done, timeout)
        return self.replies[sid]

    def get(self, path: str = "/", **kwargs: Any) -> Reply:
        return self.response(self.request(path, **kwargs))

    def wait_closed(self, timeout: float = 10.0) -> None:
        """Read until the server closes (GOAWAY then close)."""
        deadline = time.monotonic() + timeout
        while not self.closed:
            if time.monotonic() > deadline:
                raise AssertionError("connection not closed")
            try:
                self.read_some(0.5)
            except h2.exceptions.ProtocolError:
                self.closed = True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> RawH2:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path)


@pytest.fixture
def site(ca: TestCA) -> CertFiles:
    return ca.issue(HOST, "127.0.0.1", stem="site")


def h2_config(backend: Backend, cert: CertFiles, **listener: Any) -> dict[str, Any]:
    config = make_config([backend.address])
    config["listeners"][0]["tls"] = {"certificates": [cert.entry()]}
    config["listeners"][0]["http2"] = True
    config["listeners"][0].update(listener)
    return config


@pytest.fixture
def backend(backends: Callable[..., list[Backend]]) -> Backend:
    return backends(1)[0]


@pytest.fixture
def h2_proxy(
    proxy: Callable[[dict[str, Any]], ProxyInstance], backend: Backend, site: CertFiles
) -> Callable[..., ProxyInstance]:
    def start(**listener: Any) -> ProxyInstance:
        return proxy(h2_config(backend, site, **listener))

    return start


@pytest.fixture
def client(ca: TestCA) -> Iterator[Callable[[ProxyInstance], httpx.Client]]:
    made: list[httpx.Client] = []

    def make(instance: ProxyInstance) -> httpx.Client:
        c = httpx.Client(
            http2=True,
            verify=ca.client_context(),
            base_url=f"https://127.0.0.1:{instance.port}",
            timeout=30,
        )
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def upstream_headers(reply: httpx.Response) -> dict[str, str]:
    """The request headers the backend received (its /echo answer), lowercase names."""
    return {name.lower(): value for name, value in reply.json()["headers"]}


# -- the basics ----------------------------------------------------------------------------


def test_a_small_response_is_one_headers_and_one_data_frame(
    h2_proxy: Callable[..., ProxyInstance], ca: TestCA
) -> None:
    instance = h2_proxy()
    with RawH2(instance.port, ca) as client:
        reply = client.get("/")
    # END_STREAM rides on the body's DATA frame, not on an empty one after it.
    assert reply.status == 200 and reply.body == b"b0\n" and reply.data_frames == 1


def test_refused_h2_requests_are_logged(
    proxy: Callable[[dict[str, Any]], ProxyInstance],
    backend: Backend,
    site: CertFiles,
    ca: TestCA,
    tmp_path: Path,
) -> None:
    log = tmp_path / "access.json"
    config = h2_config(
        backend,
        site,
        routes=[
            {"path": "/open", "upstream": "app", "rate_limit": {"zone": "z"}},
            {"path": "/closed", "upstream": "app", "access": [{"deny": "all"}]},
        ],
    )
    config["access_log"] = {"path": str(log), "format": "json"}
    config["rate_limits"] = {"z": {"rate": "1r/m"}}
    instance = proxy(config)
    with RawH2(instance.port, ca) as client:
        statuses = [client.get(path).status for path in ("/nothing", "/closed", "/open", "/open")]
    assert statuses == [404, 403, 200, 429]
    wait_for(lambda: log.exists() and len(log.read_text().splitlines()) == 4, what="4 lines")
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["uri"], e["status"]) for e in entries] == [
        ("/nothing", 404),
        ("/closed", 403),
        ("/open", 200),
        ("/open", 429),
    ]
    assert all(e["tls"] for e in entries) and entries[3]["body_bytes_sent"] > 0


def test_client_goaway_no_error_lets_its_open_streams_finish(
    h2_proxy: Callable[..., ProxyInstance], ca: TestCA
) -> None:
    instance = h2_proxy()
    with RawH2(instance.port, ca) as client:
        sid = client.request("/slow?delay=0.3")
        # GOAWAY(NO_ERROR) by hand (h2 would stop reading after sending it):
        # "I open no more streams", not "drop the ones I have" (RFC 9113 6.8).
        goaway = GoAwayFrame(0)
        goaway.last_stream_id = 0
        goaway.error_code = 0
        client.sock.sendall(goaway.serialize())
        reply = client.response(sid)
        assert reply.status == 200 and reply.body == b"slow\n"
        # Then the server says goodbye too, and closes.
        client.wait_closed()
        assert client.goaway == 0


def test_proxy_protocol_client_address_reaches_h2_streams(
    proxy: Callable[[dict[str, Any]], ProxyInstance], backend: Backend, site: CertFiles, ca: TestCA
) -> None:
    config = h2_config(backend, site, proxy_protocol=True)
    config["trusted_proxies"] = ["127.0.0.1/32"]
    instance = proxy(config)
    header = proxy_v2("192.0.2.10", "192.0.2.1", 5555, 443)
    with RawH2(instance.port, ca, preface=header) as client:
        assert client.get("/echo").status == 200
    assert backend.requests[-1].header_all("X-Real-IP") == ["192.0.2.10"]


def test_get_over_h2_reaches_the_http11_upstream(
    h2_proxy: Callable[..., ProxyInstance],
    client: Callable[[ProxyInstance], httpx.Client],
    backend: Backend,
) -> None:
    instance = h2_proxy()
    reply = client(instance).get("/echo?x=1", headers={"X-Custom": "yes"})
    assert reply.http_version == "HTTP/2"
    assert reply.status_code == 200
    seen = upstream_headers(reply)
    assert reply.json()["version"] == "HTTP/1.1"
    assert reply.json()["target"] == "/echo?x=1"
    assert seen["host"] == f"127.0.0.1:{instance.port}"
    assert seen["x-forwarded-proto"] == "https"
    assert seen["x-real-ip"] == "127.0.0.1"
    assert seen["x-custom"] == "yes"
    assert not any(name.startswith(":") for name in seen)
    # Security headers as on HTTP/1 responses, and no connection-specific fields.
    assert reply.headers["strict-transport-security"].startswith("max-age=")
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert reply.headers["server"] == "phoenix-lb"
    assert "transfer-encoding" not in reply.headers
    assert "connection" not in reply.headers
    context = instance.runtime.listeners[0].context
    assert context.h2_connections == 1
    assert context.h2_streams == 1
    # Counted like an HTTP/1 request: stats per listener and server.
    wait_for(lambda: sum(instance.server(0).counts) == 1, what="request counted")


def test_http11_still_served_on_an_http2_listener(
    h2_proxy: Callable[..., ProxyInstance], ca: TestCA
) -> None:
    instance = h2_proxy()
    with httpx.Client(verify=ca.client_context()) as http1:
        reply = http1.get(f"https://127.0.0.1:{instance.port}/")
    assert reply.http_version == "HTTP/1.1"
    assert reply.status_code == 200
    assert instance.runtime.listeners[0].context.h2_connections == 0


def test_alpn_offers_h2_only_where_http2_is_on(
    proxy: Callable[[dict[str, Any]], ProxyInstance], backend: Backend, site: CertFiles, ca: TestCA
) -> None:
    instance = proxy(h2_config(backend, site, http2=False))
    with httpx.Client(http2=True, verify=ca.client_context()) as c:
        reply = c.get(f"https://127.0.0.1:{instance.port}/")
    assert reply.http_version == "HTTP/1.1"


def test_post_with_and_without_content_length(
    h2_proxy: Callable[..., ProxyInstance],
    client: Callable[[ProxyInstance], httpx.Client],
) -> None:
    c = client(h2_proxy())
    sized = c.post("/echo", content=b"hello world")
    assert sized.json()["body_len"] == 11
    assert upstream_headers(sized)["content-length"] == "11"
    assert not sized.json()["chunked"]
    streamed = c.post("/echo", content=iter([b"hello ", b"streamed ", b"world"]))
    assert streamed.json()["body_len"] == len(b"hello streamed world")
    assert streamed.json()["chunked"]  # no length: chunked toward HTTP/1.1
    assert "content-length" not in upstream_headers(streamed)


def test_head_and_bodiless_statuses(
    h2_proxy: Callable[..., ProxyInstance],
    client: Callable[[ProxyInstance], httpx.Client],
) -> None:
    c = client(h2_proxy())
    head = c.head("/big?size=3000")
    assert head.status_code == 200
    assert head.headers["content-length"] == "3000"
    assert head.content == b""
    assert c.get("/204").status_code == 204
    chunked = c.get("/big?size=100000&chunked=1")
    assert len(chunked.content) == 100000
    assert "content-length" not in chunked.headers


@pytest.mark.slow
def test_20mb_bodies_both_ways(
    h2_proxy: Callable[..., ProxyInstance],
    client: Callable[[ProxyInstance], httpx.Client],
) -> None:
    size = 20 * 1024 * 1024
    c = client(h2_proxy())
    down = c.get(f"/big?size={size}")
    assert len(down.content) == size
    assert hashlib.sha256(down.content).hexdigest() == pattern_sha256(size)
    body = bytes(range(256)) * (size // 256)
    up = c.post("/sink", content=body)
    assert up.json() == {"body_len": size, "body_sha256": hashlib.sha256(body).hexdigest()}
    chunks = iter([body[i : i + 1_000_000] for i in range(0, size, 1_000_000)])
    up_chunked = c.post("/sink", content=chunks)
    assert up_chunked.json()["body_len"] == size


def test_slow_client_pauses_one_stream_not_the_connection(
    h2_proxy: Callable[..., ProxyInstance], ca: TestCA
) -> None:
    """A stream whose window stays closed holds its upstream; other streams go on."""
    instance = h2_proxy()
    with RawH2(instance.port, ca) as raw:
        stalled = raw.request("/big?size=5000000")
        # Never give the stream window back (the client's default is 65535).
        raw.conn.acknowledge_received_data = lambda *_a, **_k: None  # type: ignore[method-assign]
        raw.wait(lambda: len(raw.replies[stalled].body) >= 65535)
        time.sleep(0.3)
        raw.read_some(0.2)
        assert len(raw.replies[stalled].body) == 65535
        assert raw.get("/").status == 200
        assert not raw.replies[stalled].done
        assert instance.server(0).in_flight == 1


# -- multiplexing --------------------------------------------------------------------------


def test_100_concurrent_streams_share_pooled_upstream_connections(
    h2_proxy: Callable[..., ProxyInstance], ca: TestCA, backend: Backend
) -> None:
    instance = h2_proxy()
    backend.delay = 0.3
    with RawH2(instance.port, ca) as raw:
        started = time.monotonic()
        sids = [raw.request(f"/?n={n}") for n in range(100)]
        replies = [raw.response(sid) for sid in sids]
        elapsed = time.monotonic() - started
        assert [r.status for r in replies] == [200] * 100
        # Concurrent, not one after another (100 x 0.3 s).
        assert elapsed < 5.0
        opened = backend.connections_accepted
        assert opened <= 100
        # A second round reuses the kept-alive upstream connections.
        again = [raw.request(f"/?again={n}") for n in range(50)]
        assert all(raw.response(sid).status == 200 for sid in again)
        assert backend.connections_accepted == opened
    assert len(backend.requests) == 150


def test_streams_beyond_max_concurrent_are_refused(
    h2_proxy: Callable[..., ProxyInstance], ca: TestCA, backend: Backend
) -> None:
    instance = h2_proxy(http2_max_concurrent_streams=10)
    backend.delay = 0.5
    with RawH2(instance.port, ca) as raw:
        raw.wait(lambda: h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS in raw.settings)
        assert raw.settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] == 10
        # Ignore the server's limit (h2 would refuse to open more).
        raw.conn.remote_settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = 1000
        raw.conn.remote_settings.acknowledge()
        sids = [raw.request(f"/?n={n}") for n in range(15)]
        replies = [raw.response(sid) for sid in sids]
        assert sum(r.status == 200 for r in replies) == 10
        assert [r.reset for r in replies].count(REFUSED_STREAM) == 5
        # The connection goes on.
        assert raw.get("/").status == 200
        assert raw.goaway is None


# -- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "pseudo", "headers"),
    [
        ("connection header", None, [("connection", "keep-alive")]),
        ("transfer-encoding", None, [("transfer-encoding", "chunked")]),
        ("upgrade", None, [("upgrade", "websocket")]),
        ("te other than trailers", None, [("te", "gzip")]),
        ("uppercase name", None, [("X-Upper", "1")]),
        ("newline in value", None, [("x-a", "b\r\nx-injected: 1")]),
        ("missing :path", [(":method", "GET"), (":scheme", "https"), (":authority", HOST)], []),
        (
            "pseudo after regular",
            [(":method", "GET"), (":scheme", "https"), (":authority", HOST)],
            [("x-a", "b"), (":path", "/")],
        ),
    ],
)
def test_malformed_requests_end_the_connection_and_reach_nothing(
    h2_proxy: Callable[..., ProxyInstance],
    ca: TestCA,
    backend: Backend,
    name: str,
    pseudo: list[tuple[str, str]] | None,
    headers: list[tuple[str, str]],
) -> None:
    """What h2 rejects is a connection error (GOAWAY PROTOCOL_ERROR, RFC 9113 5.4.1)."""
    instance = h2_proxy()
    with RawH2(instance.port, ca) as raw:
        raw.request("/", pseudo=pseudo, headers=headers)
        raw.wait_closed()
        assert raw.goaway == PROTOCOL_ERROR, name
    assert_nothing_reached(backend)
    # Other connections are not affected.
    with RawH2(instance.port, ca) as other:
        assert other.get("/").status == 200


@pytest.mark.parametrize(
    ("name", "pseudo"),
    [
        ("absolute-form :path", [("GET", "https", HOST, "https://evil.example/")]),
        ("authority-form :path", [("GET", "https", HOST, "evil.example:443")]),
        ("unknown :scheme", [("GET", "gopher", HOST, "/")]),
        ("asterisk outside OPTIONS", [("GET", "https", HOST, "*")]),
        # Into the HTTP/1.1 request line, these would change the path the
        # upstream sees after routing and access rules looked at another.
        ("method with a space", [("GET /admin?", "https", HOST, "/x")]),
        ("method not a token", [("G(E)T", "https", HOST, "/x")]),
        ("path with a space", [("GET", "https", HOST, "/x HTTP/1.1 /admin")]),
        ("path with controls", [("GET", "https", HOST, "/x\x7fy\x01")]),
    ],
)
def test_malformed_pseudo_headers_reset_the_stream_only(
    h2_proxy: Callable[..., ProxyInstance],
    ca: TestCA,
    backend: Backend,
    name: str,
    pseudo: list[tuple[str, str, str, str]],
) -> None:
    instance = h2_proxy()
    method, scheme, authority, path = pseudo[0]
    fields = [(":method", method), (":scheme", scheme), (":authority", authority), (":path", path)]
    with RawH2(instance.port, ca) as raw:
        reply = raw.response(raw.request(pseudo=fields))
        assert reply.reset == PROTOCOL_ERROR, name
        assert raw.get("/").status == 200
    assert len(backend.requests) == 1


@pytest.mark.parametrize(
    ("name", "pseudo", "headers", "status"),
    [
        ("CONNECT", [(":method", "CONNECT"), (":authority", "evil.example:443")], [], 405),
        (
            "invalid authority",
            [(":method", "GET"), (":scheme", "https"), (":authority", "a b"), (":path", "/")],
            [],
            400,
        ),
        (
            "userinfo in authority",
            [(":method", "GET"), (":scheme", "https"), (":authority", "u@h"), (":path", "/")],
            [],
            400,
        ),
        ("unsupported expectation", None, [("expect", "bogus")], 417),
    ],
)
def test_refused_requests_get_an_error_response(
    h2_proxy: Callable[..., ProxyInstance],
    ca: TestCA,
    backend: Backend,
    name: str,
    pseudo: list[tuple[str, str]] | None,
    headers: list[tuple[str, str]],
    status: int,
) -> None:
    instance = h2_proxy()
    with RawH2(instance.port, ca) as raw:
        reply = raw.response(raw.request(pseudo=pseudo, headers=headers))
        assert reply.status == status, name
        assert reply.header(b"x-content-type-options") == b"nosniff"
        assert raw.get("/").status == 200
    assert len(backend.requests) == 1


@pytest.mark.parametrize("declared", [5, 20])
def test_content_length_mismatch_never_completes_upstream(
    h2_proxy: Callable[..., ProxyInstance], ca: TestCA, backend: Backend, declared: int
) -> None:
    instance = h2_proxy()
    with RawH2(instance.port, ca) as raw:
        raw.request(
            "/echo",
            method="POST",
            headers=[("content-length", str(declared))],
            body=b"0123456789",
        )
        raw.wait_closed()
        assert raw.goaway == PROTOCOL_ERROR
    time.sleep(0.3)
    assert backend.requests == []  # a partial request may have been started, then aborted


def test_content_length_on_a_request_without_content_is_a_stream_error(
    h2_proxy: Callable[..., ProxyInstance], ca: TestCA, backend: Backend
) -> None:
    instance = h2_proxy()
    with RawH2(instance.port, ca) as raw:
        reply = raw.response(
            raw.request("/echo", method="POST", headers=[("content-length", "10")])
        )
        assert reply.reset == PROTOCOL_ERROR
        assert raw.get("/").status == 200
    assert len(backend.requests) == 1


def test_header_list_too_large(
    h2_proxy: Callable[..., ProxyInstance], ca: TestCA, backend: Backend
) -> None:
    instance = h2_proxy()
    with RawH2(instance.port, ca) as raw:
        raw.wait(lambda: h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE in raw.settings)
        assert raw.settings[h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE] == 16384
        # Over the limit: 431, as over HTTP/1; the connection stays.
        reply = raw.get("/", headers=[("x-big", "a" * 20000)])
        assert reply.status == 431
        assert raw.get("/").status == 200
        # Far over it (past what the decoder accepts): the connection goes.
        raw.request("/", headers=[(f"x-big-{i}", "b" * 8000) for i in range(12)])
        raw.wait_closed()
        assert raw.goaway == ENHANCE_YOUR_CALM
    assert len(backend.requests) == 1


def test_routing_limits_and_errors_as_http1(
    proxy: Callable[[dict[str, Any]], ProxyInstance], backend: Backend, site: CertFiles, ca: TestCA
) -> None:
    config = h2_config(backend, site)
    config["listeners"][0]["routes"] = [
        {"path": "/api", "upstream": "app"},
        {"path": "/private", "upstream": "app", "access": [{"deny": "all"}]},
    ]
    instance = proxy(config)
    with RawH2(instance.port, ca) as raw:
        assert raw.get("/api/x").status == 200
        missing = raw.get("/nowhere")
        assert missing.status == 404
        assert missing.header(b"strict-transport-security") is not None
        assert missing.body == b"404 Not Found\n"
        assert raw.get("/private").status == 403
        assert raw.get("/nowhere", method="HEAD").body == b""
    assert len(backend.requests) == 1


def test_upstream_down_gives_502_with_security_headers(
    proxy: Callable[[dict[str, Any]], ProxyInstance], site: CertFiles, ca: TestCA
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"
    config = make_config([dead], server_defaults={"max_fails": 0})
    config["listeners"][0]["tls"] = {"certificates": [site.entry()]}
    config["listeners"][0]["http2"] = True
    instance = proxy(config)
    with RawH2(instance.port, ca) as raw:
        reply = raw.get("/")
        assert reply.status == 502
        assert reply.header(b"x-frame-options") == b"DENY"
        assert reply.body.startswith(b"502")


def test_sticky_cookie_on_h2_responses(
    proxy: Callable[[dict[str, Any]], ProxyInstance],
    backends: Callable[..., list[Backend]],
    site: CertFiles,
    ca: TestCA,
    tmp_path: Path,
) -> None:
    first, second = backends(2)
    key = secret_file(tmp_path)
    config = make_config(
        [first.address, second.address],
        sticky={"cookie": "SERVERID", "secret_file": str(key), "cache_control": True},
    )
    config["listeners"][0]["tls"] = {"certificates": [site.entry()]}
    config["listeners"][0]["http2"] = True
    instance = proxy(config)
    with RawH2(instance.port, ca) as raw:
        reply = raw.get("/")
        cookies = reply.header_all(b"set-cookie")
        assert len(cookies) == 1 and cookies[0].startswith(b"SERVERID=")
        assert b"Secure" in cookies[0]
        assert reply.header(b"cache-control") is not None
        pinned = reply.header(b"x-backend")
        value = cookies[0].split(b";")[0].decode()
        # Split cookie fields (RFC 9113 8.2.3) are joined; ours is removed upstream.
        for _ in range(5):
            again = raw.get("/echo", headers=[("cookie", value), ("cookie", "other=1")])
            assert again.header(b"x-backend") == pinned
            assert again.header(b"set-cookie") is None
    forwarded = [r for r in (first.requests + second.requests) if r.target == "/echo"]
    assert forwarded and all(
        [v for k, v in r.headers if k.lower() == "cookie"] == ["other=1"] for r in forwarded
    )


# -- abuse ---------------------------------------------------------------------------------


def test_rapid_reset_gets_goaway_while_another_client_works(
    h2_proxy: Callable[..., ProxyInstance], ca: TestCA, backend: Backend
) -> None:
    instance = h2_proxy()
    backend.delay = 0.05
    results: list[int] = []

    def honest() -> None:
        with RawH2(instance.port, ca) as good:
            for _ in range(20):
                results.append(good.get("/").status)

    worker = threading.Thread(target=honest)
    worker.start()
    with RawH2(instance.port, ca) as attacker:
        for _ in range(1000):
            sid = attacker.conn.get_next_available_stream_id()
            attacker.conn.send_headers(sid, GET_FIELDS)
            attacker.conn.reset_stream(sid, CANCEL)
            try:
                attacker.flush()
            except OSError:
                break
        attacker.wait_closed()
        assert attacker.goaway == ENHANCE_YOUR_CALM
    worker.join(30)
    assert results == [200] * 20
    # The attack was cut short: most streams never reached a backend.
    assert len(backend.requests) < 200 + 20


@pytest.mark.parametrize("frame", ["ping", "settings"])
def test_control_frame_floods_get_goaway(
    h2_proxy: Callable[..., ProxyInstance], ca: TestCA, frame: str
) -> None:
    instance = h2_proxy()
    with RawH2(instance.port, ca) as raw, RawH2(instance.port, ca) as other:
        for i in range(300):
            if frame == "ping":
                raw.conn.ping(i.to_bytes(8, "big"))
            else:
                raw.conn.update_settings({h2.settings.SettingCodes.HEADER_TABLE_SIZE: 4096})
            try:
                raw.flush()
            except OSError:
                break
        raw.wait_closed()
        assert raw.goaway == ENHANCE_YOUR_CALM
        assert other.get("/").status == 200


def test_continuation_flood_gets_goaway(
    h2_proxy: Callable[..., ProxyInstance], ca: TestCA, backend: Backend
) -> None:
    instance = h2_proxy()
    with RawH2(instance.port, ca) as raw:
        block = raw.conn.encoder.encode(GET_FIELDS)
        headers = HeadersFrame(1)
        headers.data = block
        raw.sock.sendall(headers.serialize())
        for _ in range(200):
            cont = ContinuationFrame(1)
            cont.data = b"\x00" * 16000  # never END_HEADERS
            try:
                raw.sock.sendall(cont.serialize())
            except OSError:
                break
        raw.wait_closed()
        assert raw.goaway in (ENHANCE_YOUR_CALM, PROTOCOL_ERROR)
    assert_nothing_reached(backend)


# -- lifecycle and other clients -----------------------------------------------------------


def test_graceful_stop_finishes_open_streams(
    h2_proxy: Callable[..., ProxyInstance], ca: TestCA, backend: Backend
) -> None:
    instance = h2_proxy()
    with RawH2(instance.port, ca) as raw:
        sid = raw.request("/slow?delay=0.5")
        backend.wait_for_requests(1)
        stopping = threading.Thread(target=instance.stop)
        stopping.start()
        reply = raw.response(sid)
        assert reply.status == 200
        assert raw.goaway == 0
        stopping.join(10)


def test_idle_connection_gets_goaway_and_closes(
    proxy: Callable[[dict[str, Any]], ProxyInstance], backend: Backend, site: CertFiles, ca: TestCA
) -> None:
    config = h2_config(backend, site)
    config["timeouts"] = {"keepalive": "0.3s"}
    instance = proxy(config)
    with RawH2(instance.port, ca) as raw:
        assert raw.get("/").status == 200
        raw.wait_closed(5)
        assert raw.goaway == 0


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_http2(h2_proxy: Callable[..., ProxyInstance], ca: TestCA, tmp_path: Path) -> None:
    version = subprocess.run(["curl", "-V"], capture_output=True, text=True).stdout
    if "HTTP2" not in version:
        pytest.skip("curl without HTTP/2")
    instance = h2_proxy()
    ca_file = tmp_path / "ca.pem"
    ca.ca.cert_pem.write_to_path(str(ca_file))
    done = subprocess.run(
        [
            "curl",
            "--http2",
            "-sS",
            "--cacert",
            str(ca_file),
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
            f"https://127.0.0.1:{instance.port}/",
            f"https://127.0.0.1:{instance.port}/big?size=200000",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "2 2002 200"


def test_sent_bytes_count_h2_heads_and_bodies(
    h2_proxy: Callable[..., ProxyInstance], ca: TestCA
) -> None:
    instance = h2_proxy()
    context = instance.runtime.listeners[0].context
    with RawH2(instance.port, ca) as raw:
        reply = raw.get("/big?size=10000")
        assert len(reply.body) == 10000
        # The HEADERS frame (HPACK-compressed) plus the body.
        wait_for(lambda: context.bytes_out > 10000, what="bytes counted")
        assert context.bytes_out < 10000 + 1000
        before = context.bytes_out
        assert raw.get("/x", method="HEAD").status == 200
        wait_for(lambda: context.bytes_out > before, what="head counted")
