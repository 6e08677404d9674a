"""Pipelined requests are answered strictly in order (issue 2, "Data path")."""

from __future__ import annotations

from tests.support import RawClient, parse_responses, send_raw

from .helpers import chunked, make_config, request_bytes


def _pipeline() -> tuple[bytes, list[str], list[tuple[str, str]]]:
    """Ten requests: slow and fast, with and without bodies; expected (kind, detail)."""
    data = b""
    methods: list[str] = []
    expected: list[tuple[str, str]] = []
    for i in range(10):
        if i % 3 == 0:
            data += request_bytes("GET", f"/slow?delay=0.05&i={i}")
            methods.append("GET")
            expected.append(("slow", ""))
        elif i % 3 == 1:
            data += request_bytes("GET", f"/echo?i={i}")
            methods.append("GET")
            expected.append(("echo", f"/echo?i={i}"))
        else:
            body = f"body-{i}".encode() * (i + 1)
            data += request_bytes("POST", f"/echo?i={i}", body=body)
            methods.append("POST")
            expected.append(("post", f"/echo?i={i}:{len(body)}"))
    return data, methods, expected


def _check(responses, expected) -> None:
    assert len(responses) == len(expected)
    for i, (resp, (kind, detail)) in enumerate(zip(responses, expected, strict=True)):
        assert resp.status == 200, (i, resp.status)
        if kind == "slow":
            assert resp.text == "slow\n", i
        elif kind == "echo":
            assert resp.json()["target"] == detail, i
        else:
            info = resp.json()
            assert f"{info['target']}:{info['body_len']}" == detail, i
            assert info["method"] == "POST"


def test_pipelined_requests_answered_in_order(backends, proxy) -> None:
    bs = backends(2)
    p = proxy(make_config([b.address for b in bs]))
    data, _methods, expected = _pipeline()
    with RawClient(p.port) as client:
        client.send(data)
        responses = [client.read_response() for _ in expected]
        assert not client.is_closed(timeout=0.1)
    _check(responses, expected)
    assert sum(len(b.requests) for b in bs) == 10


def test_pipelined_requests_then_close(backends, proxy) -> None:
    """The last pipelined request says close: every response comes, then the close."""
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    data, methods, expected = _pipeline()
    data += request_bytes("GET", "/echo?last", headers=[("Connection", "close")])
    raw = send_raw(p.port, data)
    responses = parse_responses(raw, [*methods, "GET"])
    _check(responses[:-1], expected)
    assert responses[-1].json()["target"] == "/echo?last"
    assert not responses[-1].keep_alive


def test_pipelined_request_split_across_writes(backends, proxy) -> None:
    """Requests cut at arbitrary byte boundaries (one byte at a time for the first one)."""
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    data = request_bytes("GET", "/echo?a") + request_bytes("POST", "/echo?b", body=b"x" * 100)
    with RawClient(p.port) as client:
        for i in range(40):
            client.send(data[i : i + 1])
        client.send(data[40:])
        first = client.read_response()
        second = client.read_response()
    assert first.json()["target"] == "/echo?a"
    assert second.json()["target"] == "/echo?b"
    assert second.json()["body_len"] == 100


def test_pipelined_chunked_bodies(backends, proxy) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    bodies = [b"a" * 10, b"b" * 70000, b"c" * 5]
    data = b"".join(
        request_bytes("POST", f"/echo?i={i}", headers=[("Transfer-Encoding", "chunked")])
        + chunked(body, piece=4096)
        for i, body in enumerate(bodies)
    )
    with RawClient(p.port) as client:
        client.send(data)
        responses = [client.read_response() for _ in bodies]
    for i, (resp, body) in enumerate(zip(responses, bodies, strict=True)):
        info = resp.json()
        assert info["target"] == f"/echo?i={i}"
        assert info["body_len"] == len(body)
    assert [r.body for r in b.requests] == bodies


def test_pipelined_error_keeps_order(backends, proxy) -> None:
    """A bad request after good ones: the good ones are answered first, then 400, then close."""
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    data = (
        request_bytes("GET", "/slow?delay=0.1")
        + request_bytes("GET", "/echo?two")
        + b"GET / HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n"
        + request_bytes("GET", "/echo?never")
    )
    raw = send_raw(p.port, data)
    responses = parse_responses(raw)
    assert [r.status for r in responses] == [200, 200, 400]
    assert responses[0].text == "slow\n"
    assert responses[1].json()["target"] == "/echo?two"
    assert [r.target for r in b.requests] == ["/slow?delay=0.1", "/echo?two"]
