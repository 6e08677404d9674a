"""Upstream responses with odd or broken framing: what reaches the client.

The upstream here is a raw socket server that answers every request with a
fixed byte string (then keeps the connection, closes it, or resets it), so
that responses no well-behaved test backend would send can be replayed
exactly.  The rule throughout: the client gets a response it can frame, or
a 502, or a visibly cut connection; never bytes it would misread.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support import parse_responses, send_raw

from .conftest import ProxyInstance
from .helpers import make_config


class ScriptedUpstream:
    """Answers each request head with ``answer``, then ``after``: keep, close or reset."""

    def __init__(self, answer: bytes, after: str = "keep") -> None:
        self.answer = answer
        self.after = after
        self.connections = 0
        self.requests = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            buf = b""
            conn.settimeout(5)
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buf += data
                while b"\r\n\r\n" in buf:
                    _, buf = buf.split(b"\r\n\r\n", 1)
                    self.requests += 1
                    conn.sendall(self.answer)
                    if self.after == "close":
                        return
                    if self.after == "reset":
                        # A moment later, so the bytes are read before the RST.
                        threading.Event().wait(0.2)
                        conn.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                        return

    def close(self) -> None:
        self._stop = True
        self.sock.close()


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedUpstream]]:
    made: list[ScriptedUpstream] = []

    def make(answer: bytes, after: str = "keep") -> ScriptedUpstream:
        upstream = ScriptedUpstream(answer, after)
        made.append(upstream)
        return upstream

    yield make
    for upstream in made:
        upstream.close()


Proxy = Callable[[dict[str, Any]], ProxyInstance]
GET = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
GET_CLOSE = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"


def start(proxy: Proxy, upstream: ScriptedUpstream) -> ProxyInstance:
    # max_fails 1 (the default): a response wrongly taken as a failure would
    # take the only server out, and the second request would get 503.
    return proxy(make_config([upstream.address]))


@pytest.mark.parametrize(
    "answer",
    [
        # Content-Length counted in characters, not bytes: one byte too many.
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nh\xc3\xa9llo",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiXYZ",
        b"HTTP/1.1 204 No Content\r\n\r\nstray",
    ],
    ids=["utf8-length", "three-extra", "204-with-body"],
)
def test_bytes_after_a_complete_response_do_not_spoil_it(
    proxy: Proxy, scripted: Callable[..., ScriptedUpstream], answer: bytes
) -> None:
    upstream = scripted(answer)
    p = start(proxy, upstream)
    for _ in range(2):
        (response,) = parse_responses(send_raw(p.port, GET_CLOSE))
        assert response.status in (200, 204)
    # ...but the connection that sent them is not reused.
    assert upstream.connections == 2


@pytest.mark.parametrize(
    "te",
    [b"gzip", b"gzip, chunked", b"chunked, chunked", b"chunked\r\nTransfer-Encoding: gzip"],
)
def test_transfer_encoding_other_than_chunked_gets_502(
    proxy: Proxy, scripted: Callable[..., ScriptedUpstream], te: bytes
) -> None:
    # nginx 1.23+ refuses these too ("upstream sent unknown Transfer-Encoding"):
    # relayed, the client would read framing it cannot parse.
    upstream = scripted(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + te + b"\r\n\r\n0\r\n\r\n", "close"
    )
    p = start(proxy, upstream)
    (response,) = parse_responses(send_raw(p.port, GET_CLOSE))
    assert response.status == 502


def test_chunked_in_any_case_is_relayed(
    proxy: Proxy, scripted: Callable[..., ScriptedUpstream]
) -> None:
    upstream = scripted(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    )
    p = start(proxy, upstream)
    (response,) = parse_responses(send_raw(p.port, GET_CLOSE))
    assert response.status == 200 and response.body == b"ok"


def test_connection_cannot_nominate_content_length_away(
    proxy: Proxy, scripted: Callable[..., ScriptedUpstream]
) -> None:
    upstream = scripted(
        b"HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 2\r\n\r\nok"
    )
    p = start(proxy, upstream)
    # Two pipelined requests: each response must be framed on its own.
    data = send_raw(p.port, GET + GET_CLOSE)
    responses = parse_responses(data)
    assert [(r.status, r.body) for r in responses] == [(200, b"ok"), (200, b"ok")]
    assert all(r.header("content-length") == "2" for r in responses)


def test_a_1xx_with_a_body_gets_502_and_nothing_of_it_leaks(
    proxy: Proxy, scripted: Callable[..., ScriptedUpstream]
) -> None:
    upstream = scripted(
        b"HTTP/1.1 150 X\r\nContent-Length: 3\r\n\r\nabc"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    )
    p = start(proxy, upstream)
    data = send_raw(p.port, GET_CLOSE)
    assert data.startswith(b"HTTP/1.1 502 ")
    assert b"abc" not in data


def test_a_close_delimited_body_cut_by_a_reset_is_not_completed(
    proxy: Proxy, scripted: Callable[..., ScriptedUpstream]
) -> None:
    upstream = scripted(b"HTTP/1.1 200 OK\r\n\r\npartial-body", "reset")
    p = start(proxy, upstream)
    data = send_raw(p.port, GET_CLOSE)
    assert data.startswith(b"HTTP/1.1 200 ")
    # Chunked toward the client, and without the last chunk: visibly cut.
    assert b"partial-body" in data and not data.endswith(b"0\r\n\r\n")


def test_a_close_delimited_body_ended_by_fin_is_complete(
    proxy: Proxy, scripted: Callable[..., ScriptedUpstream]
) -> None:
    upstream = scripted(b"HTTP/1.1 200 OK\r\n\r\nwhole-body", "close")
    p = start(proxy, upstream)
    (response,) = parse_responses(send_raw(p.port, GET_CLOSE))
    assert response.status == 200 and response.body == b"whole-body"


@pytest.mark.parametrize(("fail_on", "second"), [(["error", "timeout"], 503), (["http_503"], 200)])
def test_a_response_cut_mid_body_counts_only_when_fail_on_says_so(
    proxy: Proxy, scripted: Callable[..., ScriptedUpstream], fail_on: list[str], second: int
) -> None:
    upstream = scripted(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789", "close")
    p = proxy(make_config([upstream.address], server_defaults={"max_fails": 1}, fail_on=fail_on))
    # The first response is cut off (the client sees it was: no full body).
    first = send_raw(p.port, GET_CLOSE)
    assert first.startswith(b"HTTP/1.1 200 ") and first.endswith(b"0123456789")
    # With "error" in fail_on that took the only server out for fail_timeout.
    assert send_raw(p.port, GET_CLOSE).startswith(b"HTTP/1.1 %d " % second)
