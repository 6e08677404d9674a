"""Builds the live proxy from a validated config and runs it on one event loop.

Config models are turned into plain runtime objects once (servers, pools,
groups, per-listener contexts) so that the request path never consults the
config.  ``Runtime.stop()`` is graceful: listeners close, idle client
connections close, in-flight requests get up to ``shutdown_timeout`` to
finish.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field

from phoenix_lb.accesslog import AccessLog, open_access_log
from phoenix_lb.clock import HttpClock
from phoenix_lb.config.schema import PhoenixConfig, split_host_port
from phoenix_lb.server.context import ListenerContext
from phoenix_lb.server.h1 import H1Connection
from phoenix_lb.server.router import Router
from phoenix_lb.upstream.group import UpstreamGroup
from phoenix_lb.upstream.pool import ConnectionPool
from phoenix_lb.upstream.server import Server

log = logging.getLogger("phoenix_lb")

# Listen backlog: the kernel caps it at net.core.somaxconn anyway (the seed's
# 9.1 raises that to 65535), so ask for plenty.
LISTEN_BACKLOG = 65535


@dataclass
class BoundListener:
    """A listener's sockets and context once started."""

    context: ListenerContext
    servers: list[asyncio.Server] = field(default_factory=list)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The (host, port) actually bound, port 0 resolved."""
        out = []
        for server in self.servers:
            for sock in server.sockets:
                name = sock.getsockname()
                out.append((name[0], name[1]))
        return out


def _is_ip(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return False
    return True


class Runtime:
    """The proxy built from one config: groups, pools, listeners."""

    def __init__(self, config: PhoenixConfig, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.loop = loop
        self.clock = HttpClock(loop)
        self.access_log: AccessLog | None = open_access_log(
            config.access_log.path, config.access_log.format
        )
        self.groups: dict[str, UpstreamGroup] = {}
        self.listeners: list[BoundListener] = []
        self._build_groups()

    def _build_groups(self) -> None:
        for name, upstream in self.config.upstreams.items():
            servers = []
            for index, server_config in enumerate(upstream.servers):
                host, port = split_host_port(server_config.address)
                server = Server(
                    name,
                    index,
                    server_config.address,
                    host,
                    port,
                    weight=server_config.weight,
                    max_fails=server_config.max_fails,
                    fail_timeout=server_config.fail_timeout,
                )
                server.pool = ConnectionPool(
                    self.loop,
                    host,
                    port,
                    max_idle=upstream.keepalive,
                    idle_timeout=upstream.keepalive_timeout,
                    max_requests=upstream.keepalive_requests,
                    read_timeout=self.config.timeouts.read,
                    send_timeout=self.config.timeouts.send,
                )
                servers.append(server)
            self.groups[name] = UpstreamGroup(name, servers, upstream.balance)

    async def resolve(self) -> None:
        """Resolve server host names once; a name that fails marks its server down."""
        for group in self.groups.values():
            for server in group.servers:
                if _is_ip(server.host):
                    continue
                try:
                    infos = await self.loop.getaddrinfo(
                        server.host, server.port, type=socket.SOCK_STREAM
                    )
                except OSError as exc:
                    server.accepting = False
                    log.error(
                        "upstream %s: cannot resolve %s (%s); server marked down",
                        group.name,
                        server.address,
                        exc,
                    )
                    continue
                server.pool.connect_host = str(infos[0][4][0])

    async def start(self) -> None:
        """Resolve names and open every listener."""
        await self.resolve()
        for listener in self.config.listeners:
            routes = [(route.path, self.groups[route.upstream]) for route in listener.routes]
            context = ListenerContext(
                name=listener.name,
                loop=self.loop,
                router=Router(routes),
                timeouts=self.config.timeouts,
                limits=self.config.limits,
                clock=self.clock,
                access_log=self.access_log,
                server_name=listener.server_name,
                logger=log,
            )
            bound = BoundListener(context)
            self.listeners.append(bound)
            for bind in listener.bind:
                host, port = split_host_port(bind, default_host="0.0.0.0", allow_port_zero=True)
                server = await self.loop.create_server(
                    lambda ctx=context: H1Connection(ctx),
                    host,
                    port,
                    family=socket.AF_INET6 if ":" in host else socket.AF_INET,
                    backlog=LISTEN_BACKLOG,
                    reuse_address=True,
                )
                bound.servers.append(server)
                log.info("listener %s: listening on %s", listener.name, bind)

    async def stop(self, timeout: float) -> None:
        """Stop accepting, let in-flight requests finish (up to ``timeout``), close."""
        for bound in self.listeners:
            for server in bound.servers:
                server.close()
        for bound in self.listeners:
            for conn in list(bound.context.connections):
                conn.close_idle()
        deadline = self.loop.time() + timeout
        while self.loop.time() < deadline and any(
            bound.context.connections for bound in self.listeners
        ):
            await asyncio.sleep(0.05)
        for bound in self.listeners:
            for conn in list(bound.context.connections):
                conn.abort()
            for server in bound.servers:
                await server.wait_closed()
        for group in self.groups.values():
            for member in group.servers:
                member.pool.close()
        self.clock.stop()
        if self.access_log is not None:
            self.access_log.close()
