"""PROXY protocol v1/v2 with byte strings from HAProxy's proxy-protocol.txt."""

from __future__ import annotations

import struct

import pytest

from phoenix_lb.http.proxy_protocol import (
    MAX_HEADER,
    SIGNATURE_V2,
    V1_MAX_HEADER,
    ProxyInfo,
    ProxyProtocolError,
    feed_proxy_header,
    parse_proxy_header,
)

# The spec's example, followed by the HTTP request it precedes.
V1_EXAMPLE = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
HTTP = b"GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n"
V1_TCP6_MAX = (
    b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
    b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
)
V1_UNKNOWN_MAX = (
    b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
    b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
)


def v2(ver_cmd: int, fam: int, body: bytes, length: int | None = None) -> bytes:
    n = len(body) if length is None else length
    return SIGNATURE_V2 + bytes([ver_cmd, fam]) + struct.pack("!H", n) + body


V2_TCP4 = v2(0x21, 0x11, bytes([192, 168, 0, 1, 192, 168, 0, 11]) + struct.pack("!HH", 56324, 443))
V2_TCP6 = v2(
    0x21,
    0x21,
    bytes.fromhex("20010db8000000000000000000000001")
    + bytes.fromhex("20010db8000000000000000000000002")
    + struct.pack("!HH", 40000, 8443),
)


def info_tuple(info: ProxyInfo | None) -> tuple[object, ...] | None:
    if info is None:
        return None
    return (info.version, info.family, info.src_addr, info.src_port, info.dst_addr, info.dst_port)


def parsed(data: bytes) -> tuple[tuple[object, ...] | None, int]:
    result = parse_proxy_header(data)
    assert result is not None
    return info_tuple(result[0]), result[1]


# -- constants straight from the specification ------------------------------------


def test_constants_match_the_specification() -> None:
    assert SIGNATURE_V2 == b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"
    assert V1_MAX_HEADER == 107 == len(V1_UNKNOWN_MAX)
    assert len(V1_TCP6_MAX) == 104
    assert len(b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n") == 56
    assert MAX_HEADER == 4096


# -- version 1 ------------------------------------------------------------------------


def test_v1_tcp4_example_then_http() -> None:
    info, consumed = parsed(V1_EXAMPLE + HTTP)
    assert info == (1, "TCP4", b"192.168.0.1", 56324, b"192.168.0.11", 443)
    assert consumed == len(V1_EXAMPLE)
    assert (V1_EXAMPLE + HTTP)[consumed:] == HTTP


def test_v1_tcp4_longest_line() -> None:
    line = b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n"
    assert parsed(line) == (
        (1, "TCP4", b"255.255.255.255", 65535, b"255.255.255.255", 65535),
        56,
    )
    assert parsed(b"PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n")[0] == (
        1,
        "TCP4",
        b"0.0.0.0",
        0,
        b"0.0.0.0",
        0,
    )


def test_v1_tcp6_is_canonicalized() -> None:
    assert parsed(V1_TCP6_MAX) == (
        (
            1,
            "TCP6",
            b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            65535,
            b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            65535,
        ),
        104,
    )
    line = b"PROXY TCP6 2001:DB8:0:0:0:0:0:1 ::1 40000 443\r\n"
    assert parsed(line)[0] == (1, "TCP6", b"2001:db8::1", 40000, b"::1", 443)


def test_v1_unknown_uses_the_real_connection() -> None:
    assert parse_proxy_header(b"PROXY UNKNOWN\r\n" + HTTP) == (None, 15)
    assert parse_proxy_header(V1_UNKNOWN_MAX) == (None, 107)
    assert parse_proxy_header(b"PROXY UNKNOWN whatever the sender put\r\n") == (None, 39)


@pytest.mark.parametrize("header", [V1_EXAMPLE, V1_TCP6_MAX, V1_UNKNOWN_MAX, b"PROXY UNKNOWN\r\n"])
def test_v1_split_across_reads(header: bytes) -> None:
    data = header + HTTP
    for cut in range(len(header)):
        assert parse_proxy_header(data[:cut]) is None, cut
    result = parse_proxy_header(data)
    assert result is not None and result[1] == len(header)


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY TCP4 192.168.0.01 192.168.0.11 56324 443\r\n",  # leading zero
        b"PROXY TCP4 192.168.0.1 192.168.0.11 056324 443\r\n",
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 65536\r\n",
        b"PROXY TCP4 192.168.0.256 192.168.0.11 56324 443\r\n",
        b"PROXY TCP4 192.168.0 192.168.0.11 56324 443\r\n",
        b"PROXY TCP4 192.168.0.1  192.168.0.11 56324 443\r\n",  # two spaces
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443 \r\n",
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324\r\n",
        b"PROXY TCP4 2001:db8::1 2001:db8::2 56324 443\r\n",
        b"PROXY TCP6 192.168.0.1 192.168.0.11 56324 443\r\n",
        b"PROXY TCP6 2001:db8::1::2 ::1 1 2\r\n",
        b"PROXY TCP4 192.168.0.1 192.168.0.11 -1 443\r\n",
        b"PROXY TCP4 192.168.0.1 192.168.0.11 +1 443\r\n",
        b"PROXY TCP5 192.168.0.1 192.168.0.11 56324 443\r\n",
        b"PROXY tcp4 192.168.0.1 192.168.0.11 56324 443\r\n",
        b"PROXY UNKNOWNX\r\n",
        b"PROXY \r\n",
        b"PROXY\r\n",
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\n",  # LF alone
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\r\n",
        b"PROXY TCP4 192.168.0.1\r192.168.0.11 56324 443\r\n",
    ],
)
def test_v1_strictness(line: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(line + HTTP)


def test_v1_without_crlf_in_107_bytes_is_refused() -> None:
    line = b"PROXY UNKNOWN " + b"f" * 93
    assert len(line) == 107
    assert parse_proxy_header(line[:106]) is None
    with pytest.raises(ProxyProtocolError, match="no CRLF in its first 107 bytes"):
        parse_proxy_header(line)
    # A CRLF that ends at byte 108 is one byte too far.
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(b"PROXY UNKNOWN " + b"f" * 92 + b"\r\n")


@pytest.mark.parametrize(
    "garbage",
    [
        b"G",
        b"GET / HTTP/1.1\r\n",
        b"\x16\x03\x01\x02\x00",  # a TLS ClientHello
        b"PROXX",
        b"proxy",
        b"PROXY  ",
        b"PROXY TCP5",
        b"PROXY UNKNOWX",
        b"PROXY TCP4 192.168.0.1 x",
        b"PROXY TCP4 192.168.0.1\n",
        b"PROXY TCP4 192.168.0.1\rx",
        b"\r\n\r\n\x01",
        b"\n",
    ],
)
def test_garbage_is_refused_immediately(garbage: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(garbage)


def test_empty_input_needs_more() -> None:
    assert parse_proxy_header(b"") is None


# -- version 2 ------------------------------------------------------------------------


def test_v2_tcp4() -> None:
    assert parsed(V2_TCP4 + HTTP) == ((2, "TCP4", b"192.168.0.1", 56324, b"192.168.0.11", 443), 28)


def test_v2_tcp6() -> None:
    assert parsed(V2_TCP6 + HTTP) == ((2, "TCP6", b"2001:db8::1", 40000, b"2001:db8::2", 8443), 52)


def test_v2_unix_stream() -> None:
    src = b"/run/lb.sock".ljust(108, b"\x00")
    dst = b"/run/phoenix.sock".ljust(108, b"\x00")
    header = v2(0x21, 0x31, src + dst)
    assert parsed(header + HTTP) == ((2, "UNIX", b"/run/lb.sock", 0, b"/run/phoenix.sock", 0), 232)


def test_v2_tlvs_are_skipped() -> None:
    addresses = bytes([192, 0, 2, 1, 192, 0, 2, 2]) + struct.pack("!HH", 1234, 80)
    tlvs = b"\x04\x00\x03abc" + b"\x05\x00\x04" + b"uid1"  # NOOP, UNIQUE_ID
    header = v2(0x21, 0x11, addresses + tlvs)
    assert parsed(header + HTTP) == (
        (2, "TCP4", b"192.0.2.1", 1234, b"192.0.2.2", 80),
        16 + 12 + 13,
    )


def test_v2_local_uses_the_real_connection_and_skips_its_bytes() -> None:
    assert parse_proxy_header(v2(0x20, 0x00, b"") + HTTP) == (None, 16)
    # "Receivers MUST always consider this field to skip the appropriate number of bytes"
    assert parse_proxy_header(v2(0x20, 0x11, b"\x00" * 12) + HTTP) == (None, 28)


@pytest.mark.parametrize("fam", [0x00, 0x01, 0x10, 0x12, 0x22, 0x32])
def test_v2_unspec_and_datagrams_use_the_real_connection(fam: int) -> None:
    body = b"\x00" * 216
    assert parse_proxy_header(v2(0x21, fam, body) + HTTP) == (None, 16 + 216)


@pytest.mark.parametrize(
    "header", [V2_TCP4, V2_TCP6, v2(0x20, 0x00, b""), v2(0x21, 0x11, b"\x00" * 40)]
)
def test_v2_split_across_reads(header: bytes) -> None:
    data = header + HTTP
    for cut in range(len(header)):
        assert parse_proxy_header(data[:cut]) is None, cut
    result = parse_proxy_header(data)
    assert result is not None and result[1] == len(header)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (v2(0x11, 0x11, b"\x00" * 12), "version 1"),
        (v2(0x31, 0x11, b"\x00" * 12), "version 3"),
        (v2(0x22, 0x11, b"\x00" * 12), "command 2 is unassigned"),
        (v2(0x21, 0x41, b"\x00" * 12), "family/transport byte 0x41"),
        (v2(0x21, 0x13, b"\x00" * 12), "family/transport byte 0x13"),
        (v2(0x21, 0x11, b"\x00" * 11), "shorter than the 12-byte"),
        (v2(0x21, 0x21, b"\x00" * 12), "shorter than the 36-byte"),
        (v2(0x21, 0x31, b"\x00" * 200), "shorter than the 216-byte"),
    ],
)
def test_v2_invalid_headers(data: bytes, message: str) -> None:
    with pytest.raises(ProxyProtocolError, match=message):
        parse_proxy_header(data)


def test_v2_errors_come_before_waiting_for_the_body() -> None:
    # Bad version byte as soon as byte 13 is in.
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(SIGNATURE_V2 + b"\x11")
    # Bad family byte as soon as byte 14 is in.
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(SIGNATURE_V2 + b"\x21\xff")
    # Too long or too short as soon as the length is in, without the body.
    with pytest.raises(ProxyProtocolError, match="exceeds 4096"):
        parse_proxy_header(SIGNATURE_V2 + b"\x21\x11" + struct.pack("!H", MAX_HEADER - 15))
    with pytest.raises(ProxyProtocolError, match="shorter"):
        parse_proxy_header(SIGNATURE_V2 + b"\x21\x11\x00\x04")
    # The largest allowed header only needs more data.
    assert (
        parse_proxy_header(SIGNATURE_V2 + b"\x21\x11" + struct.pack("!H", MAX_HEADER - 16)) is None
    )


def test_v2_largest_header_is_accepted() -> None:
    body = bytes([192, 0, 2, 1, 192, 0, 2, 2]) + struct.pack("!HH", 1, 2)
    body += b"\x04" + struct.pack("!H", MAX_HEADER - 16 - 12 - 3) + b"\x00" * (MAX_HEADER - 31)
    result = parse_proxy_header(v2(0x21, 0x11, body))
    assert result is not None and result[1] == MAX_HEADER


def test_v2_signature_mismatch_at_any_position() -> None:
    for i in range(len(SIGNATURE_V2)):
        bad = bytearray(SIGNATURE_V2)
        bad[i] ^= 0x40
        with pytest.raises(ProxyProtocolError):
            parse_proxy_header(bytes(bad[: i + 1]))


def test_proxy_info_repr() -> None:
    result = parse_proxy_header(V1_EXAMPLE)
    assert result is not None
    assert "192.168.0.1" in repr(result[0]) and "TCP4" in repr(result[0])


def test_feed_keeps_an_incomplete_header_then_returns_what_follows() -> None:
    header = b"PROXY TCP4 192.0.2.10 192.0.2.1 5555 80\r\n"
    complete, info, pending = feed_proxy_header(b"", header[:9])
    assert (complete, info, pending) == (False, None, header[:9])
    complete, info, rest = feed_proxy_header(pending, header[9:] + b"GET /")
    assert complete and info is not None and info.src_addr == b"192.0.2.10"
    assert rest == b"GET /"
