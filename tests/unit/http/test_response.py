"""Response head rules: what the client sees of an upstream response head."""

import pytest

from phoenix_lb.http.response import (
    BODY_CHUNKED,
    BODY_LENGTH,
    BODY_NONE,
    BODY_UNTIL_CLOSE,
    analyze_response,
    body_mode,
    build_client_head,
)

DATE = b"Date: Sun, 29 Nov 2026 00:00:00 GMT\r\n"


def client_head(headers, status=200, method=b"GET", version="1.1", keep_alive=True):
    head = analyze_response(status, headers)
    mode = body_mode(head, method, version)
    return head, mode, build_client_head(head, mode, keep_alive, version, DATE)


def fields(raw: bytes) -> list[tuple[bytes, bytes]]:
    lines = raw.split(b"\r\n")[1:]
    out = []
    for line in lines:
        if not line:
            break
        name, _, value = line.partition(b":")
        out.append((name, value.strip()))
    return out


def test_hop_by_hop_dropped_and_server_replaced() -> None:
    _, mode, raw = client_head(
        [
            (b"Server", b"nginx/1.22.1"),
            (b"Connection", b"keep-alive"),
            (b"Keep-Alive", b"timeout=5"),
            (b"Proxy-Connection", b"keep-alive"),
            (b"TE", b"trailers"),
            (b"Trailer", b"X-Checksum"),
            (b"Upgrade", b"h2c"),
            (b"Content-Type", b"text/plain"),
            (b"Content-Length", b"5"),
        ]
    )
    assert mode == BODY_LENGTH
    names = [n.lower() for n, _ in fields(raw)]
    assert names == [b"server", b"content-type", b"content-length", b"date"]
    assert (b"Server", b"phoenix-lb") in fields(raw)
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n") and raw.endswith(b"\r\n\r\n")


def test_names_matched_case_insensitively_and_values_kept_verbatim() -> None:
    _, _, raw = client_head(
        [
            (b"cOnNeCtIoN", b"close"),
            (b"SERVER", b"x"),
            (b"x-Custom", b"A  b"),
            (b"content-length", b"0"),
        ]
    )
    assert fields(raw)[:3] == [
        (b"Server", b"phoenix-lb"),
        (b"x-Custom", b"A  b"),
        (b"content-length", b"0"),
    ]


def test_date_kept_when_present_added_when_missing() -> None:
    _, _, raw = client_head(
        [(b"Date", b"Mon, 01 Jan 2024 00:00:00 GMT"), (b"Content-Length", b"0")]
    )
    assert raw.count(b"Date:") == 1 and b"Mon, 01 Jan 2024" in raw
    _, _, raw = client_head([(b"Content-Length", b"0")])
    assert DATE in raw


def test_chunked_upstream_to_http11_client_keeps_its_transfer_encoding() -> None:
    head, mode, raw = client_head([(b"Transfer-Encoding", b"Chunked")])
    assert head.chunked and not head.has_length and mode == BODY_CHUNKED
    assert not head.te_invalid
    assert (b"Transfer-Encoding", b"Chunked") in fields(raw)


@pytest.mark.parametrize(
    "lines",
    [
        [(b"Transfer-Encoding", b"gzip")],
        [(b"Transfer-Encoding", b"gzip, chunked")],
        [(b"Transfer-Encoding", b"chunked"), (b"Transfer-Encoding", b"chunked")],
    ],
)
def test_transfer_encoding_other_than_one_chunked_is_invalid(
    lines: list[tuple[bytes, bytes]],
) -> None:
    # Like nginx 1.23+: the exchange answers 502 instead of relaying framing
    # the client could misread (gzip alone is close-delimited, for example).
    assert analyze_response(200, lines).te_invalid


def test_chunked_upstream_to_http10_client_is_close_delimited() -> None:
    _, mode, raw = client_head(
        [(b"Transfer-Encoding", b"chunked")], version="1.0", keep_alive=False
    )
    assert mode == BODY_UNTIL_CLOSE
    assert b"transfer-encoding" not in raw.lower()
    assert raw.endswith(b"Connection: close\r\n\r\n")


def test_close_delimited_upstream_is_chunked_for_http11() -> None:
    head, mode, raw = client_head([(b"Content-Type", b"text/plain")])
    assert mode == BODY_CHUNKED and head.te_line == b""
    assert (b"Transfer-Encoding", b"chunked") in fields(raw)


def test_head_and_304_keep_length_metadata_without_body() -> None:
    head, mode, raw = client_head([(b"Content-Length", b"1234")], method=b"HEAD")
    assert mode == BODY_NONE and head.has_length
    assert (b"Content-Length", b"1234") in fields(raw)
    _, mode, _ = client_head([(b"ETag", b'"x"')], status=304)
    assert mode == BODY_NONE
    _, mode, _ = client_head([], status=204)
    assert mode == BODY_NONE


def test_connection_close_and_nominated_fields() -> None:
    head, _, raw = client_head(
        [
            (b"Connection", b"close, X-Internal"),
            (b"X-Internal", b"secret"),
            (b"X-Public", b"1"),
            (b"Content-Length", b"0"),
        ]
    )
    assert head.close
    assert b"X-Internal" not in raw and b"secret" not in raw and b"X-Public: 1" in raw


def test_http10_keep_alive_is_spelled_out() -> None:
    _, _, raw = client_head([(b"Content-Length", b"0")], version="1.0", keep_alive=True)
    assert raw.endswith(b"Connection: keep-alive\r\n\r\n")


def test_head_without_fields() -> None:
    head = analyze_response(200, [])
    assert head.forward == [b""] and not head.has_length
    assert body_mode(head, b"GET", "1.1") == BODY_CHUNKED


def test_upstream_security_headers_replaced_only_when_asked() -> None:
    headers = [
        (b"X-Frame-Options", b"SAMEORIGIN"),
        (b"Strict-Transport-Security", b"max-age=1"),
        (b"X-Content-Type-Options", b"nosniff"),
        (b"X-XSS-Protection", b"1"),
        (b"Content-Length", b"0"),
    ]
    kept = build_client_head(analyze_response(200, headers), BODY_LENGTH, True, "1.1", DATE)
    assert b"SAMEORIGIN" in kept and b"max-age=1" in kept
    ours = b"X-Frame-Options: DENY\r\n"
    head = analyze_response(200, headers, strip_security=True)
    raw = build_client_head(head, BODY_LENGTH, True, "1.1", DATE, ours)
    assert raw.count(b"X-Frame-Options") == 1 and b"DENY" in raw
    assert b"SAMEORIGIN" not in raw and b"Strict-Transport" not in raw
    assert b"X-XSS-Protection" not in raw


def test_upstream_request_id_is_dropped_only_when_we_set_ours() -> None:
    headers = [(b"X-Request-Id", b"theirs"), (b"Content-Length", b"0")]
    kept = build_client_head(analyze_response(200, headers), BODY_LENGTH, True, "1.1", DATE)
    assert b"X-Request-Id: theirs" in kept
    head = analyze_response(200, headers, strip_request_id=True)
    raw = build_client_head(head, BODY_LENGTH, True, "1.1", DATE, b"X-Request-ID: ours\r\n")
    assert raw.count(b"X-Request") == 1 and b"ours" in raw
