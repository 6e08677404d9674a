"""server/h2.py's pure parts: HTTP/2 request heads as HTTP/1.1, response fields, flood windows.

The protocol itself runs against real clients in tests/integration/test_http2.py.
"""

from __future__ import annotations

import pytest

from phoenix_lb.http.request import RequestError, RequestHead
from phoenix_lb.server.h2 import _lines_to_fields, _Malformed, _request_head, _Window


def head_of(fields: list[tuple[bytes, bytes]], ended: bool) -> RequestHead:
    return _request_head(fields, ended, 100, 16384)


def pseudo(
    method: bytes = b"GET", path: bytes = b"/", authority: bytes | None = b"example.com"
) -> list[tuple[bytes, bytes]]:
    fields = [(b":method", method), (b":scheme", b"https"), (b":path", path)]
    if authority is not None:
        fields.append((b":authority", authority))
    return fields


def test_a_get_becomes_an_http11_head_with_host_from_authority() -> None:
    head = head_of([*pseudo(path=b"/a?b=1"), (b"accept", b"*/*")], True)
    assert head.method == b"GET"
    assert head.target == b"/a?b=1"
    assert head.path == b"/a"
    assert head.host == b"example.com"
    assert head.fields() == [(b"host", b"example.com"), (b"accept", b"*/*")]
    assert not head.has_body
    assert head.version == "2.0"


def test_a_body_without_length_goes_chunked_and_with_length_as_is() -> None:
    assert head_of(pseudo(b"POST"), False).chunked
    sized = head_of([*pseudo(b"POST"), (b"content-length", b"5")], False)
    assert not sized.chunked and sized.content_length == 5


def test_content_length_on_a_request_that_ended_is_malformed() -> None:
    with pytest.raises(_Malformed):
        head_of([*pseudo(b"POST"), (b"content-length", b"5")], True)
    assert head_of([*pseudo(b"POST"), (b"content-length", b"0")], True)


def test_split_cookies_are_joined_and_host_is_not_doubled() -> None:
    fields = [*pseudo(), (b"host", b"example.com"), (b"cookie", b"a=1"), (b"cookie", b"b=2")]
    head = head_of(fields, True)
    assert head.field_values(b"host") == [b"example.com"]
    assert head.field_values(b"cookie") == [b"a=1; b=2"]


@pytest.mark.parametrize(
    "fields",
    [
        pseudo(path=b"https://evil.example/"),
        pseudo(path=b"evil.example:443"),
        pseudo(path=b"*"),
        [(b":method", b"GET"), (b":scheme", b"ftp"), (b":path", b"/"), (b":authority", b"x")],
        [*pseudo(), (b":protocol", b"websocket")],
    ],
)
def test_malformed_pseudo_headers(fields: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(_Malformed):
        head_of(fields, True)


def test_options_asterisk_is_allowed() -> None:
    assert head_of(pseudo(b"OPTIONS", b"*"), True).target == b"*"


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ([(b":method", b"CONNECT"), (b":authority", b"example.com:443")], 405),
        (pseudo(authority=b"a b"), 400),
        (pseudo(authority=b"user@example.com"), 400),
        ([*pseudo(), (b"expect", b"bogus")], 417),
        ([*pseudo(), (b"x-big", b"a" * 20000)], 431),
        ([*pseudo(), *[(b"x-%d" % i, b"v") for i in range(101)]], 431),
    ],
)
def test_http11_rules_still_apply(fields: list[tuple[bytes, bytes]], status: int) -> None:
    with pytest.raises(RequestError) as caught:
        head_of(fields, True)
    assert caught.value.status == status


def test_hop_by_hop_fields_of_a_response_are_dropped_and_names_lowercased() -> None:
    fields: list[tuple[bytes, bytes]] = []
    _lines_to_fields(
        b"\r\nContent-Type: text/plain\r\nConnection: close\r\nKeep-Alive: 5"
        b"\r\nTransfer-Encoding: chunked\r\nSet-Cookie: a=1\r\nSet-Cookie:  b=2 ",
        fields,
    )
    assert fields == [
        (b"content-type", b"text/plain"),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
    ]


def test_window_counts_events_in_a_sliding_period() -> None:
    window = _Window(3, 10.0)
    assert not any(window.hit(t) for t in (0.0, 1.0, 2.0))
    assert window.hit(9.0)  # a fourth within 10 s
    assert not window.hit(10.5)  # the first one (0.0) has left the window
    assert window.hit(10.9)  # 1.0, 2.0 and 10.5 are within 10 s of it


def test_unique_response_values_stay_out_of_the_hpack_table() -> None:
    fields: list[tuple[bytes, bytes]] = []
    _lines_to_fields(b"X-Request-ID: abc-1\r\nSet-Cookie: s=1\r\nX-Frame-Options: DENY\r\n", fields)
    assert [type(f).__name__ for f in fields] == [
        "NeverIndexedHeaderTuple",
        "NeverIndexedHeaderTuple",
        "tuple",
    ]
