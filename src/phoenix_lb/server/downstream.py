"""What an exchange needs from the client side, whatever the protocol.

An ``Exchange`` answers one request; the client side is an HTTP/1.x
connection (``H1Connection``) or one HTTP/2 stream (``server/h2.py``).  Both
derive from this class.  It is a concrete base class rather than a Protocol
so that the compiled build reads these attributes as struct fields and calls
the methods through a vtable, keeping the HTTP/1 hot path as fast as when
the exchange knew only ``H1Connection``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from phoenix_lb.deadline import Deadline

if TYPE_CHECKING:
    from phoenix_lb.server.context import ListenerContext
    from phoenix_lb.server.tunnel import Tunnel
    from phoenix_lb.upstream.group import UpstreamGroup


class Downstream(asyncio.Protocol):
    """The client side of exchanges: one connection, or one stream of one."""

    __slots__ = (
        "client_ip",
        "close_after",
        "closing",
        "ctx",
        "deadline",
        "loop",
        "peer_ip",
        "proxied_ip",
        "tls_version",
        "transport",
        "tunnel",
        "write_paused",
    )

    def __init__(self, ctx: ListenerContext, deadline: Deadline) -> None:
        self.ctx = ctx
        self.loop = ctx.loop
        self.transport: asyncio.Transport | None = None
        #: the address of the connection's peer
        self.peer_ip = b""
        #: the client's address: the peer, or what a trusted PROXY header said
        self.client_ip = b""
        #: a trusted PROXY header's client address read before the TLS
        #: handshake (server/proxy_preface.py), set before connection_made
        self.proxied_ip = b""
        #: no more writes: the transport is closed or closing
        self.closing = False
        #: close once the response in progress is complete
        self.close_after = False
        #: the client does not read fast enough (its write buffer is full)
        self.write_paused = False
        #: the WebSocket tunnel this connection became after a 101 (HTTP/1 only)
        self.tunnel: Tunnel | None = None
        self.deadline = deadline
        #: the negotiated TLS version ("" on plain connections), for logs
        self.tls_version = ""

    # -- what exchanges call (overridden) -------------------------------------

    def write(self, data: bytes) -> None:
        """Send bytes of an HTTP/1.1 response."""
        raise NotImplementedError

    def write_many(self, data: list[bytes]) -> None:
        """Send several buffers of an HTTP/1.1 response at once."""
        raise NotImplementedError

    def pause_reading(self, reason: int) -> None:
        """Stop taking request bytes for ``reason`` (until resume_reading)."""
        raise NotImplementedError

    def resume_reading(self, reason: int) -> None:
        """``reason`` no longer holds."""
        raise NotImplementedError

    def abort(self) -> None:
        """Break off: the response cannot be completed."""
        raise NotImplementedError

    def abort_after_flush(self) -> None:
        """Close once what is buffered is written."""
        raise NotImplementedError

    def exchange_done(self, responder: object, keep_alive: bool) -> None:
        """The response is complete."""
        raise NotImplementedError

    def default_host(self, group: UpstreamGroup) -> bytes:
        """Host for a request without one: server_name, else the upstream name."""
        return self.ctx.server_name or group.name.encode()
