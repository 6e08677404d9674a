"""A WebSocket (or any upgraded) connection after ``101 Switching Protocols``.

From the 101 on, the client connection and the upstream connection carry
opaque bytes both ways.  The tunnel copies them with flow control (a side
whose write buffer is full stops the other side's reading, as for bodies),
closes both when either goes away, half-closes when one side sends FIN, and
closes both after ``idle`` seconds without a byte in either direction.

The upstream server counts the tunnel as one request in flight until it
ends, so least_conn sees long-lived WebSocket connections.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from phoenix_lb.server.downstream import Downstream
    from phoenix_lb.server.exchange import Exchange
    from phoenix_lb.upstream.connection import UpstreamConnection


class Tunnel:
    """Byte copying between a client and an upstream connection."""

    __slots__ = (
        "bytes_down",
        "bytes_up",
        "client_eof_seen",
        "closed",
        "down",
        "exchange",
        "idle",
        "up",
        "upstream_eof_seen",
    )

    def __init__(
        self,
        down: Downstream,
        up: UpstreamConnection,
        exchange: Exchange,
        idle: float,
    ) -> None:
        self.down = down
        self.up = up
        self.exchange = exchange
        self.idle = idle
        self.closed = False
        #: each side sent FIN (both: nothing more can flow, close)
        self.client_eof_seen = False
        self.upstream_eof_seen = False
        #: bytes client -> upstream, and upstream -> client
        self.bytes_up = 0
        self.bytes_down = 0
        down.deadline.set_after(idle)

    def from_client(self, data: bytes) -> None:
        if self.closed:
            return
        self.bytes_up += len(data)
        self.down.deadline.set_after(self.idle)
        self.up.write(data)

    def from_upstream(self, data: bytes) -> None:
        if self.closed:
            return
        self.bytes_down += len(data)
        self.down.deadline.set_after(self.idle)
        self.down.write(data)

    def client_eof(self) -> None:
        """The client sent FIN: pass it on, keep the other direction open."""
        self.client_eof_seen = True
        transport = self.up.transport
        if self.upstream_eof_seen or transport is None or not transport.can_write_eof():
            self.close()
        else:
            transport.write_eof()

    def upstream_eof(self) -> None:
        """The upstream sent FIN: pass it on, keep the other direction open."""
        self.upstream_eof_seen = True
        transport = self.down.transport
        if (
            self.client_eof_seen
            or transport is None
            or self.down.closing
            or not transport.can_write_eof()
        ):
            self.close()
        else:
            transport.write_eof()

    def timed_out(self) -> None:
        self.down.ctx.logger.info(
            "tunnel to %s idle for %gs; closing it",
            self.exchange.last_server.address if self.exchange.last_server else "?",
            self.idle,
        )
        self.close()

    def close(self) -> None:
        """End both connections (either side went away, or idle too long)."""
        if self.closed:
            return
        self.closed = True
        self.up.tunnel = None
        self.up.close()
        self.down.tunnel = None
        self.down.abort_after_flush()
        self.exchange.tunnel_ended(self.bytes_down)
