"""Per-listener settings and shared objects, flattened for the hot path.

Connections read plain attributes from here instead of walking the config
models on every request.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from phoenix_lb.accesslog import AccessLog
from phoenix_lb.clock import HttpClock
from phoenix_lb.server.router import Router
from phoenix_lb.stats import TLS_BUCKETS, BoundsHistogram, Histogram, request_counts

if TYPE_CHECKING:
    from phoenix_lb.config.schema import LimitsConfig, TimeoutsConfig
    from phoenix_lb.realip import RealIp
    from phoenix_lb.server.requestid import RequestIds
    from phoenix_lb.server.route import Route


class ClientConnection(Protocol):
    """What the runtime needs of a client connection (HTTP/1.x, HTTP/2, the HTTPS redirect)."""

    def stub_state(self) -> int:
        """0 reading a request, 1 writing a response, 2 idle (nginx stub_status)."""
        ...

    def close_idle(self) -> bool:
        """Close now if no request is in progress; True if closed."""
        ...

    def abort(self) -> None:
        """Close at once, dropping whatever is in progress."""
        ...


class ListenerContext:
    """Everything a downstream connection of one listener needs."""

    def __init__(
        self,
        *,
        name: str,
        loop: asyncio.AbstractEventLoop,
        router: Router[Route],
        timeouts: TimeoutsConfig,
        limits: LimitsConfig,
        clock: HttpClock,
        access_log: AccessLog | None,
        scheme: bytes = b"http",
        server_name: str | None = None,
        logger: logging.Logger | None = None,
        index: int = 0,
        realip: RealIp | None = None,
        proxy_protocol: bool = False,
        security_headers: bytes = b"",
        tls: bool = False,
        request_ids: RequestIds | None = None,
    ) -> None:
        self.name = name
        #: position among the listeners (stats blocks are indexed by it)
        self.index = index
        self.loop = loop
        #: the loop's clock, kept as a bound method (cheaper per call)
        self.now: Callable[[], float] = loop.time
        self.router = router
        self.scheme = scheme
        #: a TLS listener (Secure cookies, HSTS)
        self.tls = tls
        #: trusted proxies' view of the client address (None: the peer is the client)
        self.realip = realip
        #: connections start with a PROXY protocol header
        self.proxy_protocol = proxy_protocol
        #: header lines added to every response (``Name: value\r\n``...); the
        #: upstream's values of the same headers are replaced
        self.security_headers = security_headers
        #: where request ids come from (None: this listener adds none)
        self.request_ids = request_ids
        self.server_name = server_name.encode() if server_name else None
        self.clock = clock
        self.access_log = access_log
        self.logger = logger or logging.getLogger("phoenix_lb")
        self.client_header_timeout = timeouts.client_header
        self.client_body_timeout = timeouts.client_body
        self.client_send_timeout = timeouts.client_send
        self.keepalive_timeout = timeouts.keepalive
        self.tunnel_idle = timeouts.tunnel_idle
        self.connect_timeout = timeouts.connect
        self.send_timeout = timeouts.send
        self.read_timeout = timeouts.read
        self.max_header_bytes = limits.max_header_bytes
        self.max_headers = limits.max_headers
        self.max_body = limits.max_body
        #: open client connections, for graceful shutdown
        self.connections: set[ClientConnection] = set()
        #: counters since start
        self.accepted = 0
        self.requests = 0
        self.bytes_in = 0
        self.bytes_out = 0
        #: requests refused or delayed by limits: "zone\0rate|conn|delayed" -> count
        self.limited: dict[str, int] = {}
        #: requests answered by the proxy itself (400, 404, 413...)
        self.local_counts = request_counts(1)
        self.local_durations = Histogram()
        # HTTP/2 (set by the runtime on http2 listeners): ALPN offers h2, and
        # each connection advertises this MAX_CONCURRENT_STREAMS.
        self.http2 = False
        self.http2_max_streams = 128
        #: connections that chose h2, and the streams (requests) they opened
        self.h2_connections = 0
        self.h2_streams = 0
        # TLS listeners (set by the runtime): the context new connections get
        # (swapped with this object on reload) and the handshake deadline.
        self.ssl_context: ssl.SSLContext | None = None
        self.tls_handshake_timeout = 10.0
        #: redirect_https listeners: b"https://" + server_name (None: proxy)
        self.redirect_to: bytes | None = None
        #: completed TLS handshakes, and how many of them resumed a session
        self.tls_handshakes = 0
        self.tls_resumed = 0
        #: completed handshakes by protocol version ("TLSv1.3" -> count)
        self.tls_versions: dict[str, int] = {}
        #: the resumed ones among them, by version
        self.tls_resumed_versions: dict[str, int] = {}
        #: failed handshakes by reason (tls.HANDSHAKE_ERROR_REASONS -> count)
        self.tls_handshake_errors: dict[str, int] = {}
        #: from accept to handshake complete, seconds
        self.tls_handshake_time = BoundsHistogram(TLS_BUCKETS)
