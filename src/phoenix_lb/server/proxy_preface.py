"""Reading a PROXY protocol header off a socket before its TLS handshake.

On a TLS listener behind an L4 balancer the PROXY header comes first, in the
clear, and the ClientHello follows it, often in the same TCP segment.  The
header must be taken off the socket exactly, leaving every byte after it for
the TLS layer, which starts on the same socket afterwards.  So the socket is
read with ``MSG_PEEK``: once the bytes seen hold a whole header, exactly its
length is consumed.  While the header is incomplete everything seen belongs
to it and is consumed (otherwise a peek would see the same bytes again and
the socket stay readable: a busy loop).

Parsing is ``http/proxy_protocol.py``'s; this module is only the I/O.  The
caller bounds the whole read with a timeout.
"""

from __future__ import annotations

import asyncio
import socket

from phoenix_lb.http.proxy_protocol import (
    MAX_HEADER,
    ProxyInfo,
    ProxyProtocolError,
    parse_proxy_header,
)

__all__ = ["read_proxy_header"]


async def read_proxy_header(
    loop: asyncio.AbstractEventLoop, sock: socket.socket
) -> ProxyInfo | None:
    """Consume the PROXY header at the start of ``sock`` (non-blocking); its ``ProxyInfo``.

    None when the header says to use the connection's own addresses (v1
    UNKNOWN, v2 LOCAL).  Raises ``ProxyProtocolError`` for a malformed
    header or a connection closed before it ended.
    """
    taken = b""
    while True:
        try:
            seen = sock.recv(MAX_HEADER - len(taken), socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            await _readable(loop, sock)
            continue
        if not seen:
            raise ProxyProtocolError("connection closed before the end of the PROXY header")
        data = taken + seen
        parsed = parse_proxy_header(data)
        if parsed is None:
            if len(data) >= MAX_HEADER:
                raise ProxyProtocolError(f"no complete PROXY header in {MAX_HEADER} bytes")
            taken += _take(sock, len(seen))
            continue
        info, used = parsed
        _take(sock, used - len(taken))
        return info


def _take(sock: socket.socket, count: int) -> bytes:
    # The bytes were just peeked, so they are there to be read at once.
    data = b""
    while len(data) < count:
        piece = sock.recv(count - len(data))
        if not piece:
            raise ProxyProtocolError("connection closed before the end of the PROXY header")
        data += piece
    return data


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    waiter: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()

    def ready() -> None:
        if not waiter.done():
            waiter.set_result(None)

    loop.add_reader(fd, ready)
    try:
        await waiter
    finally:
        loop.remove_reader(fd)
