"""Keep-alive connection pool for one server.

Idle connections are a stack (the most recently used is the most likely to
be alive and warm); each one carries its idle deadline, checked on reuse and
enforced by its own lazy timer, so an idle connection is closed after
``idle_timeout`` even if never asked for again.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque

from phoenix_lb.upstream.connection import UpstreamConnection


class ConnectionPool:
    """Idle keep-alive connections to one server, and how to open new ones."""

    __slots__ = (
        "closed",
        "connect_host",
        "connecting",
        "idle",
        "idle_timeout",
        "loop",
        "max_idle",
        "max_requests",
        "opened",
        "port",
        "read_timeout",
        "send_timeout",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        connect_host: str,
        port: int,
        *,
        max_idle: int,
        idle_timeout: float,
        max_requests: int,
        read_timeout: float = 60.0,
        send_timeout: float = 60.0,
    ) -> None:
        self.loop = loop
        #: resolved address used for connecting
        self.connect_host = connect_host
        self.port = port
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.max_requests = max_requests
        self.read_timeout = read_timeout
        self.send_timeout = send_timeout
        self.idle: deque[UpstreamConnection] = deque()
        #: connections opened over the pool's life (for tests and metrics)
        self.opened = 0
        #: connection attempts in progress
        self.connecting = 0
        #: a reload retired this pool: connections coming back are closed
        self.closed = False

    def acquire(self, now: float) -> UpstreamConnection | None:
        """An idle connection ready for a request, or None."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            conn.in_pool = False
            transport = conn.transport
            if (
                transport is None
                or transport.is_closing()
                or now - conn.released_at >= self.idle_timeout
            ):
                conn.close()
                continue
            return conn
        return None

    def release(self, conn: UpstreamConnection, now: float) -> None:
        """Take back a connection whose response was read completely."""
        transport = conn.transport
        if (
            self.closed
            or len(self.idle) >= self.max_idle
            or conn.requests >= self.max_requests
            or transport is None
            or transport.is_closing()
        ):
            conn.close()
            return
        conn.in_pool = True
        conn.released_at = now
        conn.deadline.set(now + self.idle_timeout)
        self.idle.append(conn)

    def discard(self, conn: UpstreamConnection) -> None:
        """Forget an idle connection that closed or expired."""
        if conn.in_pool:
            conn.in_pool = False
            with contextlib.suppress(ValueError):
                self.idle.remove(conn)

    async def open(self, timeout: float) -> UpstreamConnection:
        """Open a new connection; raises OSError or TimeoutError."""
        self.connecting += 1
        try:
            async with asyncio.timeout(timeout):
                _, conn = await self.loop.create_connection(
                    self._new_connection,
                    self.connect_host,
                    self.port,
                    family=socket.AF_INET6 if ":" in self.connect_host else socket.AF_INET,
                )
        finally:
            self.connecting -= 1
        self.opened += 1
        return conn

    def _new_connection(self) -> UpstreamConnection:
        conn = UpstreamConnection(self, self.loop)
        conn.read_timeout = self.read_timeout
        conn.send_timeout = self.send_timeout
        return conn

    def flush_idle(self) -> None:
        """Close the idle connections (the server's address changed); keep pooling."""
        while self.idle:
            conn = self.idle.pop()
            conn.in_pool = False
            conn.close()

    def close(self) -> None:
        """Close every idle connection, and those released later (shutdown, reload)."""
        self.closed = True
        while self.idle:
            conn = self.idle.pop()
            conn.in_pool = False
            conn.close()
