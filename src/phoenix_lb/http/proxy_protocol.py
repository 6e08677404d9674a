"""PROXY protocol v1 and v2 header parser (HAProxy's proxy-protocol.txt), sans-IO.

A listener with ``proxy_protocol: true`` sits behind an L4 balancer that
prepends one header to every connection, carrying the client's address.
The receiver must not guess whether a header is there (the specification:
"MUST NOT try to guess"), so on such a listener every connection starts with
one, or is closed.

``parse_proxy_header(data)`` takes the bytes received so far and returns:

* ``None``: not enough bytes yet, read more (the header may arrive in
  several reads, which the specification recommends tolerating);
* ``(info, consumed)``: the header is ``data[:consumed]``, the protocol
  (HTTP, TLS) starts at ``data[consumed]``; ``info`` is a ``ProxyInfo``, or
  None when the sender says to use the real connection's addresses (v1
  ``UNKNOWN``, v2 ``LOCAL`` such as health checks, v2 ``UNSPEC`` and the
  families or transports a TCP listener cannot use);
* or raises ``ProxyProtocolError``: the caller closes the connection.

Garbage is refused as soon as a byte disagrees, not after a timeout: the
first bytes must be a prefix of ``PROXY `` or of the v2 signature, the v1
protocol word a prefix of ``TCP4``/``TCP6``/``UNKNOWN``, v1 address bytes
from the right alphabet, a v2 version/command/family byte valid and its
length within bounds as soon as those bytes are in.

Version 1 (text), strictly as specified: ``PROXY TCP4|TCP6 src dst sport
dport\\r\\n`` with single spaces, IPv4 as four decimal numbers without leading
zeros, IPv6 in hexadecimal groups, ports 0..65535 without leading zeros, the
CRLF within the first 107 bytes and no lone CR or LF; ``PROXY UNKNOWN``
followed by anything up to the CRLF.

Version 2 (binary): the 12-byte signature, version 2, command LOCAL or
PROXY, family UNSPEC/INET/INET6/UNIX with transport UNSPEC/STREAM/DGRAM, a
length at least the address block of the family and at most
``MAX_HEADER - 16`` (nginx's NGX_PROXY_PROTOCOL_MAX_HEADER, 4096 bytes in
all); TLVs after the addresses are skipped.

Addresses in ``ProxyInfo`` are text bytes like the peer addresses elsewhere
(``b"192.0.2.1"``, IPv6 compressed; a v2 UNIX address is the socket path).
"""

from __future__ import annotations

import ipaddress
from typing import Final

__all__ = [
    "MAX_HEADER",
    "SIGNATURE_V2",
    "V1_MAX_HEADER",
    "ProxyInfo",
    "ProxyProtocolError",
    "feed_proxy_header",
    "parse_proxy_header",
]

#: The v2 signature: CR LF CR LF NUL CR LF "QUIT" LF.
SIGNATURE_V2: Final = b"\r\n\r\n\x00\r\nQUIT\n"
#: Longest v1 line, CRLF included ("PROXY UNKNOWN" with two full IPv6 addresses).
V1_MAX_HEADER: Final = 107
#: Longest header accepted (v2 with TLVs), as nginx: NGX_PROXY_PROTOCOL_MAX_HEADER.
MAX_HEADER: Final = 4096

_V1_PREFIX: Final = b"PROXY "
# What may follow "PROXY ": the protocol word and the byte after it.
_V1_PROTOCOLS: Final = (b"TCP4 ", b"TCP6 ", b"UNKNOWN ", b"UNKNOWN\r")
# Bytes of the address and port fields of a TCP4/TCP6 line.
_V1_FIELD_BYTES: Final = b"0123456789abcdefABCDEF.: "
_DIGITS: Final = b"0123456789"
_HEX_COLON_DOT: Final = b"0123456789abcdefABCDEF:."

_CMD_LOCAL: Final = 0
_CMD_PROXY: Final = 1
_AF_UNSPEC, _AF_INET, _AF_INET6, _AF_UNIX = 0, 1, 2, 3
_TRANSPORT_UNSPEC, _TRANSPORT_STREAM, _TRANSPORT_DGRAM = 0, 1, 2
# Address block length per family (two addresses and, for IP, two ports).
_ADDRESS_LENGTH: Final = {_AF_INET: 12, _AF_INET6: 36, _AF_UNIX: 216}


class ProxyProtocolError(ValueError):
    """The connection does not start with a valid PROXY protocol header: close it."""


class ProxyInfo:
    """The proxied connection's endpoints, as the sender saw them."""

    __slots__ = ("dst_addr", "dst_port", "family", "src_addr", "src_port", "version")

    def __init__(
        self,
        version: int,
        family: str,
        src_addr: bytes,
        src_port: int,
        dst_addr: bytes,
        dst_port: int,
    ) -> None:
        #: 1 (text) or 2 (binary)
        self.version = version
        #: "TCP4", "TCP6" or "UNIX"
        self.family = family
        #: the client's address as text (b"192.0.2.1"), or a socket path for UNIX
        self.src_addr = src_addr
        self.src_port = src_port
        self.dst_addr = dst_addr
        self.dst_port = dst_port

    def __repr__(self) -> str:
        return (
            f"ProxyInfo(v{self.version} {self.family} {self.src_addr!r}:{self.src_port} -> "
            f"{self.dst_addr!r}:{self.dst_port})"
        )


def parse_proxy_header(data: bytes) -> tuple[ProxyInfo | None, int] | None:
    """Parse the PROXY header at the start of ``data`` (see the module docstring)."""
    if not data:
        return None
    first = data[0]
    if first == 0x50:  # "P"
        return _parse_v1(data)
    if first == 0x0D:  # "\r"
        return _parse_v2(data)
    raise ProxyProtocolError("connection does not start with a PROXY protocol header")


def feed_proxy_header(pending: bytes, data: bytes) -> tuple[bool, ProxyInfo | None, bytes]:
    """``data`` read after ``pending`` at the start of a connection.

    ``(False, None, buffered)``: the header is not complete yet, keep
    ``buffered`` for the next read; ``(True, info, rest)``: complete, ``rest``
    is what follows it.  Raises ``ProxyProtocolError``; the buffered bytes
    stay under ``MAX_HEADER``, since the parser refuses a longer header as
    soon as its length is known.
    """
    buf = pending + data
    parsed = parse_proxy_header(buf)
    if parsed is None:
        return False, None, buf
    info, used = parsed
    return True, info, buf[used:]


# -- version 1 ------------------------------------------------------------


def _parse_v1(data: bytes) -> tuple[ProxyInfo | None, int] | None:
    n = len(data)
    end = data.find(b"\r\n", 0, V1_MAX_HEADER)
    if end < 0:
        _check_v1_partial(data, n)
        if n >= V1_MAX_HEADER:
            raise ProxyProtocolError(
                f"PROXY v1 line has no CRLF in its first {V1_MAX_HEADER} bytes"
            )
        return None
    if not data.startswith(_V1_PREFIX):
        raise ProxyProtocolError("connection does not start with a PROXY protocol header")
    line = data[len(_V1_PREFIX) : end]
    if b"\r" in line or b"\n" in line:
        raise ProxyProtocolError("PROXY v1 line contains a lone CR or LF")
    consumed = end + 2
    if line == b"UNKNOWN" or line.startswith(b"UNKNOWN "):
        # "the receiver must ignore anything presented before the CRLF"
        return (None, consumed)
    parts = line.split(b" ")
    if len(parts) != 5:
        raise ProxyProtocolError(
            "PROXY v1 line must be 'PROXY TCP4|TCP6 <src> <dst> <sport> <dport>' with single spaces"
        )
    protocol, src, dst, sport, dport = parts
    if protocol == b"TCP4":
        family = "TCP4"
        src_addr = _v1_ipv4(src)
        dst_addr = _v1_ipv4(dst)
    elif protocol == b"TCP6":
        family = "TCP6"
        src_addr = _v1_ipv6(src)
        dst_addr = _v1_ipv6(dst)
    else:
        raise ProxyProtocolError(
            f"PROXY v1 protocol must be TCP4, TCP6 or UNKNOWN, not {protocol!r}"
        )
    info = ProxyInfo(1, family, src_addr, _v1_port(sport), dst_addr, _v1_port(dport))
    return (info, consumed)


def _check_v1_partial(data: bytes, n: int) -> None:
    """Refuse an incomplete v1 line as soon as what arrived cannot start a valid one."""
    head = data[: len(_V1_PREFIX)]
    if head != _V1_PREFIX[: len(head)]:
        raise ProxyProtocolError("connection does not start with a PROXY protocol header")
    window = data[:V1_MAX_HEADER]
    # No CRLF in the window: any LF is a lone LF, any CR not at the very end a lone CR.
    cr = window.find(b"\r")
    if b"\n" in window or (0 <= cr < len(window) - 1):
        raise ProxyProtocolError("PROXY v1 line contains a lone CR or LF")
    if n <= len(_V1_PREFIX):
        return
    word = window[len(_V1_PREFIX) :]
    for protocol in _V1_PROTOCOLS:
        m = min(len(word), len(protocol))
        if word[:m] == protocol[:m]:
            break
    else:
        raise ProxyProtocolError("PROXY v1 protocol must be TCP4, TCP6 or UNKNOWN")
    if word[:3] == b"TCP" and len(word) > 5:
        fields = word[5:]
        if fields.endswith(b"\r"):
            fields = fields[:-1]
        if fields.translate(None, _V1_FIELD_BYTES):
            raise ProxyProtocolError("PROXY v1 line has an invalid character in its addresses")


def _v1_number(text: bytes, limit: int, what: str) -> int:
    if not text or len(text) > 5 or text.translate(None, _DIGITS):
        raise ProxyProtocolError(f"PROXY v1 {what} {text!r} is not a decimal number")
    if len(text) > 1 and text[0] == 0x30:
        raise ProxyProtocolError(f"PROXY v1 {what} {text!r} has a leading zero")
    value = int(text)
    if value > limit:
        raise ProxyProtocolError(f"PROXY v1 {what} {text!r} is out of range")
    return value


def _v1_ipv4(text: bytes) -> bytes:
    octets = text.split(b".")
    if len(octets) != 4:
        raise ProxyProtocolError(f"PROXY v1 TCP4 address {text!r} is not a dotted quad")
    for octet in octets:
        if len(octet) > 3:
            raise ProxyProtocolError(f"PROXY v1 TCP4 address {text!r} is not a dotted quad")
        _v1_number(octet, 255, "IPv4 address byte")
    return text


def _v1_ipv6(text: bytes) -> bytes:
    if not text or text.translate(None, _HEX_COLON_DOT):
        raise ProxyProtocolError(f"PROXY v1 TCP6 address {text!r} is not an IPv6 address")
    try:
        addr = ipaddress.IPv6Address(text.decode("ascii"))
    except ValueError:
        raise ProxyProtocolError(f"PROXY v1 TCP6 address {text!r} is not an IPv6 address") from None
    return addr.compressed.encode("ascii")


def _v1_port(text: bytes) -> int:
    return _v1_number(text, 65535, "port")


# -- version 2 ------------------------------------------------------------


def _parse_v2(data: bytes) -> tuple[ProxyInfo | None, int] | None:
    n = len(data)
    head = data[: len(SIGNATURE_V2)]
    if head != SIGNATURE_V2[: len(head)]:
        raise ProxyProtocolError("connection does not start with a PROXY protocol header")
    if n > 12:
        version, command = data[12] >> 4, data[12] & 0x0F
        if version != 2:
            raise ProxyProtocolError(f"PROXY v2 header announces version {version}")
        if command not in (_CMD_LOCAL, _CMD_PROXY):
            raise ProxyProtocolError(f"PROXY v2 command {command} is unassigned")
    else:
        return None
    if n > 13:
        family, transport = data[13] >> 4, data[13] & 0x0F
        if family > _AF_UNIX or transport > _TRANSPORT_DGRAM:
            raise ProxyProtocolError(f"PROXY v2 family/transport byte 0x{data[13]:02x} is invalid")
    else:
        return None
    if n < 16:
        return None
    length = (data[14] << 8) | data[15]
    total = 16 + length
    if total > MAX_HEADER:
        raise ProxyProtocolError(f"PROXY v2 header of {total} bytes exceeds {MAX_HEADER}")
    addressed = command == _CMD_PROXY and family != _AF_UNSPEC and transport != _TRANSPORT_UNSPEC
    if addressed and length < _ADDRESS_LENGTH[family]:
        raise ProxyProtocolError(
            f"PROXY v2 length {length} is shorter than the {_ADDRESS_LENGTH[family]}-byte "
            "address block of its family"
        )
    if n < total:
        return None
    # LOCAL (health checks), UNSPEC, and datagrams (meaningless on a stream
    # listener; the specification lets a receiver treat what it does not
    # implement as UNSPEC): use the real connection.
    if not addressed or transport != _TRANSPORT_STREAM:
        return (None, total)
    if family == _AF_INET:
        src = b"%d.%d.%d.%d" % (data[16], data[17], data[18], data[19])
        dst = b"%d.%d.%d.%d" % (data[20], data[21], data[22], data[23])
        ports = 24
        name = "TCP4"
    elif family == _AF_INET6:
        src = ipaddress.IPv6Address(data[16:32]).compressed.encode("ascii")
        dst = ipaddress.IPv6Address(data[32:48]).compressed.encode("ascii")
        ports = 48
        name = "TCP6"
    else:
        src = data[16:124].split(b"\x00", 1)[0]
        dst = data[124:232].split(b"\x00", 1)[0]
        return (ProxyInfo(2, "UNIX", src, 0, dst, 0), total)
    sport = (data[ports] << 8) | data[ports + 1]
    dport = (data[ports + 2] << 8) | data[ports + 3]
    return (ProxyInfo(2, name, src, sport, dst, dport), total)
