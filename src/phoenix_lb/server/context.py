"""Per-listener settings and shared objects, flattened for the hot path.

Connections read plain attributes from here instead of walking the config
models on every request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from phoenix_lb.accesslog import AccessLog
from phoenix_lb.clock import HttpClock
from phoenix_lb.server.router import Router
from phoenix_lb.stats import Histogram, request_counts

if TYPE_CHECKING:
    from phoenix_lb.config.schema import LimitsConfig, TimeoutsConfig
    from phoenix_lb.realip import RealIp
    from phoenix_lb.server.h1 import H1Connection
    from phoenix_lb.server.route import Route


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
        self.server_name = server_name.encode() if server_name else None
        self.clock = clock
        self.access_log = access_log
        self.logger = logger or logging.getLogger("phoenix_lb")
        self.client_header_timeout = timeouts.client_header
        self.client_body_timeout = timeouts.client_body
        self.client_send_timeout = timeouts.client_send
        self.keepalive_timeout = timeouts.keepalive
        self.connect_timeout = timeouts.connect
        self.send_timeout = timeouts.send
        self.read_timeout = timeouts.read
        self.max_header_bytes = limits.max_header_bytes
        self.max_headers = limits.max_headers
        self.max_body = limits.max_body
        #: open client connections, for graceful shutdown
        self.connections: set[H1Connection] = set()
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
