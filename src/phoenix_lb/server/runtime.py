"""The data plane of one process: groups, pools and listeners built from a config.

Config models are turned into plain runtime objects once (servers, pools,
groups, per-listener contexts) so that the request path never consults the
config.

Listening sockets are either opened here (one process) or handed in (a
worker gets its share of the master's sockets).  Connections are accepted by
our own loop per socket so that ``worker_connections`` can hold new
connections in the kernel's backlog instead of failing them, as nginx does.

``reload(config)`` swaps in a new configuration without closing a socket:
connections accepted from then on get the new listener context; those
already open finish on the old one (and its groups and pools).

State decided by the control plane (health, drain, resolved addresses)
arrives through ``apply_server_state``; statistics leave through
``stats_snapshot``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from phoenix_lb.access import AccessRules
from phoenix_lb.accesslog import AccessLog, open_access_log
from phoenix_lb.balancing import BalancerOptions
from phoenix_lb.clock import HttpClock
from phoenix_lb.config.schema import (
    AccessLogConfig,
    ListenerConfig,
    PhoenixConfig,
    RouteConfig,
    SecurityHeadersConfig,
    UpstreamConfig,
    split_host_port,
)
from phoenix_lb.http.proxy_protocol import ProxyProtocolError
from phoenix_lb.limits import (
    CONN_STATE_BYTES,
    ConnLimit,
    ConnLimitZone,
    RateLimit,
    RateLimitZone,
    entries_for_zone_size,
    parse_rate,
)
from phoenix_lb.logsetup import listener_error_log
from phoenix_lb.realip import RealIp
from phoenix_lb.server.context import ListenerContext
from phoenix_lb.server.downstream import Downstream
from phoenix_lb.server.h1 import H1Connection
from phoenix_lb.server.h2 import AlpnDispatch
from phoenix_lb.server.proxy_preface import read_proxy_header
from phoenix_lb.server.redirect import RedirectConnection
from phoenix_lb.server.requestid import RequestIds
from phoenix_lb.server.route import Route
from phoenix_lb.server.router import Router
from phoenix_lb.server.sockets import listen_socket
from phoenix_lb.stats import merge_tree
from phoenix_lb.sticky import StickyCookie, StickyTable
from phoenix_lb.tls import TlsContexts, handshake_error_reason
from phoenix_lb.upstream.group import (
    HASH_COOKIE,
    HASH_HEADER,
    HASH_NONE,
    HASH_REMOTE_ADDR,
    HASH_URI,
    UpstreamGroup,
)
from phoenix_lb.upstream.pool import ConnectionPool
from phoenix_lb.upstream.server import Server

log = logging.getLogger("phoenix_lb")


def is_ip(host: str) -> bool:
    """True for an IPv4 or IPv6 literal."""
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return False
    return True


@dataclass
class BoundListener:
    """One configured listener: its sockets, accept loops and current context."""

    name: str
    context: ListenerContext
    sockets: list[socket.socket] = field(default_factory=list)
    #: the configured address of each socket (same order)
    binds: list[str] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    #: contexts replaced by reloads whose connections are still open
    retired: list[ListenerContext] = field(default_factory=list)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The (host, port) actually bound, port 0 resolved."""
        out = []
        for sock in self.sockets:
            name = sock.getsockname()
            out.append((str(name[0]), int(name[1])))
        return out

    def all_contexts(self) -> list[ListenerContext]:
        return [self.context, *self.retired]


class Runtime:
    """The proxy built from one config: groups, pools, listeners."""

    def __init__(
        self,
        config: PhoenixConfig,
        loop: asyncio.AbstractEventLoop,
        *,
        sockets: Mapping[str, list[socket.socket]] | None = None,
        secrets: Mapping[str, str] | None = None,
    ) -> None:
        self.loop = loop
        #: sticky cookie keys per upstream (resolved by the control plane)
        self.secrets: dict[str, str] = dict(secrets or {})
        #: limit zones by name; kept across reloads when unchanged, as nginx
        #: keeps its shared zones
        self.rate_zones: dict[str, RateLimitZone] = {}
        self.conn_zones: dict[str, ConnLimitZone] = {}
        self.clock = HttpClock(loop)
        #: pre-opened sockets per listener name (a worker's share), or None
        self._given_sockets = sockets
        self.listeners: list[BoundListener] = []
        self.config = config
        self.access_log: AccessLog | None = None
        #: open access logs by (path, format): listeners sharing one share it
        self._logs: dict[tuple[str, str], AccessLog] = {}
        self.request_ids = RequestIds()
        self.groups: dict[str, UpstreamGroup] = {}
        #: retired groups whose connections may still finish
        self._old_groups: list[dict[str, UpstreamGroup]] = []
        #: final counters of retired contexts (by listener) and groups
        self._carried_listeners: dict[str, dict[str, Any]] = {}
        self._carried_upstreams: dict[str, Any] = {}
        self._rng = random.Random()
        self._stopping = False
        self._capacity = asyncio.Event()
        self._capacity.set()
        self._connections = 0
        self._last_state: dict[str, dict[str, dict[str, Any]]] = {}
        #: SSL contexts of the TLS listeners, kept across reloads while their
        #: settings and files are unchanged (sessions and tickets stay valid)
        self.tls = TlsContexts()
        self._ssl_contexts: dict[str, ssl.SSLContext] = {}
        #: TLS handshakes in progress: a task each, so the accept loop never waits
        self._handshakes: set[asyncio.Task[None]] = set()
        self._configure(config)

    # -- building ------------------------------------------------------------

    def _configure(self, config: PhoenixConfig) -> None:
        self.config = config
        previous = self._logs
        self._logs = {}
        self.access_log = self._log(config.access_log, previous)
        for listener in config.listeners:
            if listener.access_log is not None:
                self._log(listener.access_log, previous)
        self._stale_logs = [log for key, log in previous.items() if key not in self._logs]
        self.groups = self._build_groups(config)
        self.worker_connections = config.worker_connections
        self.realip = (
            RealIp(config.trusted_proxies, config.real_ip_header, config.real_ip_recursive)
            if config.trusted_proxies
            else None
        )
        self._build_zones(config)

    def _log(
        self, config: AccessLogConfig, previous: dict[tuple[str, str], AccessLog]
    ) -> AccessLog | None:
        if config.format == "off":
            return None
        key = (config.path, config.format)
        existing = self._logs.get(key) or previous.get(key)
        if existing is None:
            existing = open_access_log(config.path, config.format)
            if existing is None:
                return None
        self._logs[key] = existing
        return existing

    def _build_zones(self, config: PhoenixConfig) -> None:
        rate: dict[str, RateLimitZone] = {}
        for name, zone in config.rate_limits.items():
            per_second = parse_rate(zone.rate)
            entries = entries_for_zone_size(zone.zone_size)
            old = self.rate_zones.get(name)
            if old is not None and old.max_entries == entries and old.rate_per_second == per_second:
                rate[name] = old
            else:
                rate[name] = RateLimitZone(name, per_second, entries)
        conn: dict[str, ConnLimitZone] = {}
        for name, czone in config.conn_limits.items():
            entries = entries_for_zone_size(czone.zone_size, CONN_STATE_BYTES)
            old_conn = self.conn_zones.get(name)
            if old_conn is None:
                conn[name] = ConnLimitZone(name, entries)
            else:
                # Counts in flight must survive a reload, or releases would
                # miss: the zone stays, with its new size.
                old_conn.max_entries = entries
                conn[name] = old_conn
        self.rate_zones, self.conn_zones = rate, conn

    def _build_groups(self, config: PhoenixConfig) -> dict[str, UpstreamGroup]:
        listeners = len(config.listeners)
        groups: dict[str, UpstreamGroup] = {}
        for name, upstream in config.upstreams.items():
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
                    listeners=listeners,
                )
                server.name = server_config.address
                server.backup = bool(getattr(server_config, "backup", False))
                server.slow_start = float(getattr(server_config, "slow_start", 0.0))
                server.pool = ConnectionPool(
                    self.loop,
                    host,
                    port,
                    max_idle=upstream.keepalive,
                    idle_timeout=upstream.keepalive_timeout,
                    max_requests=upstream.keepalive_requests,
                    read_timeout=config.timeouts.read,
                    send_timeout=config.timeouts.send,
                )
                servers.append(server)
            group = UpstreamGroup(
                name,
                servers,
                upstream.balance,
                BalancerOptions(self._rng),
                listeners=listeners,
            )
            self._policy(group, upstream)
            groups[name] = group
        return groups

    def _policy(self, group: UpstreamGroup, upstream: UpstreamConfig) -> None:
        """Sticky sessions, hash key and failure accounting of one upstream."""
        sticky = upstream.sticky
        if sticky is not None:
            secret = self.secrets.get(group.name)
            if secret is None:
                from phoenix_lb.secrets import sticky_secret

                secret = sticky_secret(sticky, self.config.state_dir, None).decode("latin-1")
                self.secrets[group.name] = secret
            secure = sticky.secure if isinstance(sticky.secure, bool) else sticky.secure == "true"
            cookie = StickyCookie(
                sticky.cookie,
                sticky.expires,
                sticky.domain,
                sticky.path,
                sticky.httponly,
                secure,
                sticky.samesite,
                secret=secret.encode("latin-1"),
            )
            group.sticky = StickyTable(cookie, [s.address for s in group.servers])
            group.sticky_cache_control = sticky.cache_control
            group.sticky_secure_on_tls = sticky.secure == "auto"
        key = upstream.hash_key
        if key is None:
            group.hash_kind = HASH_NONE
        elif key == "remote_addr":
            group.hash_kind = HASH_REMOTE_ADDR
        elif key == "uri":
            group.hash_kind = HASH_URI
        elif key.startswith("header:"):
            group.hash_kind = HASH_HEADER
            group.hash_name = key[7:].strip().lower().encode()
        else:
            group.hash_kind = HASH_COOKIE
            group.hash_name = key[7:].strip().encode()
        fail_on = set(upstream.fail_on)
        group.count_errors = "error" in fail_on
        group.count_timeouts = "timeout" in fail_on
        group.fail_statuses = frozenset(
            int(kind[5:]) for kind in fail_on if kind.startswith("http_")
        )
        group.try_all = upstream.all_down == "try_all"

    def _route(self, route: RouteConfig) -> Route:
        access = None
        if route.access:
            access = AccessRules(
                [(verb, target) for rule in route.access for verb, target in rule.items()]
            )
        rate = None
        rate_status = 429
        if route.rate_limit is not None:
            ref = route.rate_limit
            rate = RateLimit(self.rate_zones[ref.zone], ref.burst, ref.nodelay, ref.delay)
            rate_status = ref.status
        conn = None
        conn_status = 429
        if route.conn_limit is not None:
            cref = route.conn_limit
            conn = ConnLimit(self.conn_zones[cref.zone], cref.max)
            conn_status = cref.status
        return Route(
            self.groups[route.upstream],
            access=access,
            rate_limit=rate,
            rate_status=rate_status,
            conn_limit=conn,
            conn_status=conn_status,
            log=route.access_log,
        )

    def _context(self, index: int, listener: ListenerConfig) -> ListenerContext:
        routes = [(route.path, self._route(route)) for route in listener.routes]
        tls = listener.tls is not None
        context = ListenerContext(
            name=listener.name,
            loop=self.loop,
            router=Router(routes),
            timeouts=self.config.timeouts,
            limits=self.config.limits,
            clock=self.clock,
            access_log=(
                self._logs.get((listener.access_log.path, listener.access_log.format))
                if listener.access_log is not None
                else self.access_log
            ),
            scheme=b"https" if tls else b"http",
            server_name=listener.server_name,
            logger=(
                log
                if listener.error_log is None
                else listener_error_log(listener.name, listener.error_log)
            ),
            index=index,
            realip=self.realip,
            proxy_protocol=listener.proxy_protocol,
            security_headers=security_header_lines(listener.security_headers, tls),
            tls=tls,
            request_ids=self.request_ids if listener.request_id else None,
        )
        if listener.tls is not None:
            context.ssl_context = self._ssl_contexts[listener.name]
            context.tls_handshake_timeout = listener.tls.handshake_timeout
            # HTTP/2 by ALPN (tls.py offers h2): AlpnDispatch picks the protocol.
            context.http2 = listener.http2
            context.http2_max_streams = listener.http2_max_concurrent_streams
        if listener.redirect_https and listener.server_name:
            context.redirect_to = b"https://" + listener.server_name.encode("idna")
        return context

    # -- running -------------------------------------------------------------

    async def resolve(self) -> None:
        """Resolve server host names once; a name that fails marks its server down.

        (Used when no control plane re-resolves names, e.g. embedded tests.)
        """
        for group in self.groups.values():
            for server in group.servers:
                if is_ip(server.host):
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

    async def start(self, *, resolve: bool = True) -> None:
        """Open (or adopt) every listener's sockets and start accepting."""
        if resolve:
            await self.resolve()
        self._ssl_contexts = self.tls.prepare(self.config)
        for index, listener in enumerate(self.config.listeners):
            bound = BoundListener(listener.name, self._context(index, listener))
            self.listeners.append(bound)
            if self._given_sockets is not None:
                bound.sockets = list(self._given_sockets.get(listener.name, []))
                bound.binds = list(listener.bind)
            else:
                for bind in listener.bind:
                    self._open(bound, bind)
            for sock in bound.sockets:
                bound.tasks.append(self.loop.create_task(self._accept_loop(bound, sock)))

    def _open(self, bound: BoundListener, bind: str) -> socket.socket:
        host, port = split_host_port(bind, default_host="0.0.0.0", allow_port_zero=True)
        sock = listen_socket(host, port, self.config.listen_backlog)
        bound.sockets.append(sock)
        bound.binds.append(bind)
        log.info("listener %s: listening on %s", bound.name, bind)
        return sock

    async def _accept_loop(self, bound: BoundListener, sock: socket.socket) -> None:
        loop = self.loop
        while not self._stopping:
            if self._connections >= self.worker_connections:
                # Like nginx: stop accepting; new connections wait in the
                # kernel's backlog until a slot frees.
                self._capacity.clear()
                await self._capacity.wait()
                continue
            try:
                conn, _ = await loop.sock_accept(sock)
            except asyncio.CancelledError:
                raise
            except OSError as exc:
                if self._stopping:
                    return
                # EMFILE/ENFILE: out of descriptors; back off instead of spinning.
                log.error("listener %s: accept failed: %s", bound.name, exc)
                await asyncio.sleep(0.1)
                continue
            context = bound.context
            ssl_context = context.ssl_context
            if ssl_context is not None:
                # A handshake takes a round trip or more (up to its timeout
                # for a client that sends nothing): never in this loop.  Its
                # worker_connections slot is taken here, before the next
                # accept looks at the count.
                self._connections += 1
                task = loop.create_task(self._handshake(context, ssl_context, conn))
                self._handshakes.add(task)
                task.add_done_callback(self._handshakes.discard)
                continue
            try:
                await loop.connect_accepted_socket(
                    lambda ctx=context: self._new_connection(ctx),  # type: ignore[misc]
                    conn,
                )
            except OSError as exc:
                conn.close()
                log.debug("listener %s: connection setup failed: %s", bound.name, exc)

    async def _handshake(
        self, context: ListenerContext, ssl_context: ssl.SSLContext, conn: socket.socket
    ) -> None:
        """Run one TLS handshake and count it on the listener context."""
        loop = self.loop
        started = loop.time()
        made: list[asyncio.Protocol] = []
        proxied_ip = b""
        if context.proxy_protocol:
            # The PROXY header comes before the ClientHello, in the clear.
            try:
                proxied = await self._proxy_preface(context, conn)
            except BaseException:
                self._connection_closed()
                raise
            if proxied is None:
                self._connection_closed()
                return
            proxied_ip = proxied
            started = loop.time()

        def factory() -> asyncio.Protocol:
            # Called before the handshake; the slot taken at accept is the
            # protocol's from now on (given back when it closes).
            protocol = self._new_connection(context, counted=True)
            if proxied_ip and isinstance(protocol, (Downstream, AlpnDispatch)):
                protocol.proxied_ip = proxied_ip
            made.append(protocol)
            return protocol

        try:
            transport, _ = await loop.connect_accepted_socket(
                factory,
                conn,
                ssl=ssl_context,
                ssl_handshake_timeout=context.tls_handshake_timeout,
            )
        except BaseException as exc:
            # The protocol never saw connection_made (or was never made), so
            # it will never see connection_lost: give the slot back here.
            if not made or getattr(made[0], "transport", None) is None:
                self._connection_closed()
            if conn.fileno() >= 0 and not made:
                conn.close()
            if not isinstance(exc, Exception):
                raise  # cancelled (stopping)
            reason = handshake_error_reason(exc)
            errors = context.tls_handshake_errors
            errors[reason] = errors.get(reason, 0) + 1
            if log.isEnabledFor(logging.DEBUG):
                log.debug("listener %s: TLS handshake failed (%s): %s", context.name, reason, exc)
            return
        context.tls_handshake_time.observe(loop.time() - started)
        context.tls_handshakes += 1
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            version = ssl_object.version() or "unknown"
            context.tls_versions[version] = context.tls_versions.get(version, 0) + 1
            if ssl_object.session_reused:
                context.tls_resumed += 1
                resumed = context.tls_resumed_versions
                resumed[version] = resumed.get(version, 0) + 1

    async def _proxy_preface(self, context: ListenerContext, conn: socket.socket) -> bytes | None:
        """Read the PROXY header of a TLS connection: the client address to use.

        b"" means the peer's own (no address given, or the peer is not a
        trusted proxy); None that the connection was closed (bad header,
        timeout).
        """
        try:
            peer = conn.getpeername()[0].encode()
            async with asyncio.timeout(context.tls_handshake_timeout):
                info = await read_proxy_header(self.loop, conn)
        except (ProxyProtocolError, OSError, TimeoutError) as exc:
            log.info(
                "listener %s: bad PROXY protocol header: %s", context.name, str(exc) or "timeout"
            )
            conn.close()
            return None
        realip = context.realip
        if info is not None and realip is not None and realip.trusted(peer):
            return info.src_addr
        return b""

    def _new_connection(self, context: ListenerContext, counted: bool = False) -> asyncio.Protocol:
        """The protocol for a new client connection; ``counted``: its slot is already taken."""
        if not counted:
            self._connections += 1
        if context.redirect_to is not None:
            return RedirectConnection(context, self._connection_closed)
        if context.http2:
            # Made before the TLS handshake; becomes H2Connection or
            # H1Connection once ALPN has chosen.
            return AlpnDispatch(context, self._connection_closed)
        return H1Connection(context, self._connection_closed)

    def _connection_closed(self) -> None:
        self._connections -= 1
        if not self._capacity.is_set():
            self._capacity.set()

    # -- state from the control plane ----------------------------------------

    def apply_server_state(self, state: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> None:
        """Apply {upstream: {address: {accepting, sticky_ok, connect_host, recovered_at}}}."""
        self._last_state = {u: {a: dict(v) for a, v in s.items()} for u, s in state.items()}
        for groups in [self.groups, *self._old_groups]:
            _apply(groups, state, self.loop.time())

    # -- reload --------------------------------------------------------------

    def reload(self, config: PhoenixConfig) -> None:
        """Serve new connections with ``config``; open ones finish on the old one.

        Listeners and addresses may come and go when this runtime owns its
        sockets: removed addresses stop accepting first (their connections
        drain), then new ones are bound.  A worker (given sockets) only
        swaps contexts; the master replaces workers when addresses change.
        Raises OSError when a new address cannot be bound; the old
        configuration then keeps running.
        """
        wanted = {listener.name: list(listener.bind) for listener in config.listeners}
        if self._given_sockets is not None:
            current = {bound.name: bound.binds for bound in self.listeners}
            if current != wanted:
                raise ValueError("listener addresses changed: workers must be replaced")
        else:
            self._check_bindable(wanted)
        # Certificates are re-read here; a bad one refuses the reload before
        # anything changes.
        self._ssl_contexts = self.tls.prepare(config)
        old_groups = self.groups
        old_log = None
        old_config = self.config
        self._configure(config)
        _apply(self.groups, self._last_state, self.loop.time())
        self._old_groups.append(old_groups)
        if self._given_sockets is None:
            self._rebind(wanted)
        by_name = {bound.name: bound for bound in self.listeners}
        listeners = []
        for index, listener in enumerate(config.listeners):
            bound = by_name[listener.name]
            bound.retired.append(bound.context)
            bound.context = self._context(index, listener)
            listeners.append(bound)
        self.listeners = listeners
        self.loop.create_task(self._retire(old_groups, old_log))
        del old_config

    def _check_bindable(self, wanted: dict[str, list[str]]) -> None:
        """Fail before changing anything if a new address is taken by another process."""
        held = {bind for bound in self.listeners for bind in bound.binds}
        for binds in wanted.values():
            for bind in binds:
                if bind in held:
                    continue
                host, port = split_host_port(bind, default_host="0.0.0.0", allow_port_zero=True)
                probe = listen_socket(host, port, 1)
                probe.close()

    def _rebind(self, wanted: dict[str, list[str]]) -> None:
        # Close what goes away first: an address may move between listeners.
        for bound in list(self.listeners):
            keep = wanted.get(bound.name, [])
            for i in reversed(range(len(bound.sockets))):
                if bound.binds[i] not in keep:
                    bound.tasks[i].cancel()
                    bound.sockets[i].close()
                    log.info("listener %s: stopped listening on %s", bound.name, bound.binds[i])
                    del bound.tasks[i], bound.sockets[i], bound.binds[i]
            if bound.name not in wanted:
                self.listeners.remove(bound)
        by_name = {bound.name: bound for bound in self.listeners}
        for index, (name, binds) in enumerate(wanted.items()):
            target = by_name.get(name)
            if target is None:
                target = BoundListener(name, self._context(index, self.config.listeners[index]))
                self.listeners.append(target)
            for bind in binds:
                if bind not in target.binds:
                    sock = self._open(target, bind)
                    target.tasks.append(self.loop.create_task(self._accept_loop(target, sock)))

    async def _retire(self, groups: dict[str, UpstreamGroup], access_log: AccessLog | None) -> None:
        """Close the old config's pools and log once its connections are gone."""
        for group in groups.values():
            for server in group.servers:
                server.pool.close()
        deadline = self.loop.time() + max(self.config.shutdown_timeout, 1.0)
        while self.loop.time() < deadline:
            busy = any(server.in_flight for group in groups.values() for server in group.servers)
            if not busy:
                break
            await asyncio.sleep(0.2)
        for group in groups.values():
            for server in group.servers:
                server.pool.close()
        gone = {
            bound.name: [ctx for ctx in bound.retired if not ctx.connections]
            for bound in self.listeners
        }
        for bound in self.listeners:
            bound.retired = [ctx for ctx in bound.retired if ctx.connections]
        if groups in self._old_groups:
            self._old_groups.remove(groups)
            self._carry(gone, groups)
        else:
            self._carry(gone, None)
        for stale in self._stale_logs:
            stale.close()
        self._stale_logs = []

    def reopen_logs(self) -> None:
        """SIGUSR1: reopen the log files (after logrotate moved them)."""
        for access_log in self._logs.values():
            access_log.reopen()
        for listener in self.config.listeners:
            if listener.error_log is not None:
                listener_error_log(listener.name, listener.error_log)

    # -- stats ---------------------------------------------------------------

    def stats_snapshot(self) -> dict[str, Any]:
        """Counters of this process as plain JSON-able data (admin/metrics.py sums them).

        Counters of contexts and groups that reloads retired are carried,
        so that totals never go backwards (nginx keeps its counters in
        shared memory across reloads too).
        """
        listeners = []
        for bound in self.listeners:
            entry = _listener_stats(bound.name, bound.all_contexts())
            carried = self._carried_listeners.get(bound.name)
            if carried is not None:
                merge_tree(entry, carried)
            listeners.append(entry)
        upstreams = _upstream_stats([self.groups, *self._old_groups])
        # Servers passive failure accounting has taken out (max_fails) right
        # now; summed over workers, a count of the workers that rest them.
        now = self.loop.time()
        for name, group in self.groups.items():
            servers = upstreams[name]["servers"]
            for server in group.servers:
                servers[server.address]["resting"] = 1 if now <= server.rest_until else 0
        for name, carried in self._carried_upstreams.items():
            if name in upstreams:
                merge_tree(upstreams[name], carried)
        return {"listeners": listeners, "upstreams": upstreams, "connections": self._connections}

    def _carry(
        self, contexts: dict[str, list[ListenerContext]], groups: dict[str, UpstreamGroup] | None
    ) -> None:
        """Keep the final counters of retired contexts and groups."""
        for name, gone in contexts.items():
            if gone:
                entry = _listener_stats(name, gone)
                previous = self._carried_listeners.get(name)
                self._carried_listeners[name] = (
                    entry if previous is None else merge_tree(previous, entry)
                )
        if groups is not None:
            merge_tree(self._carried_upstreams, _upstream_stats([groups]))

    # -- stopping ------------------------------------------------------------

    def stop_accepting(self) -> None:
        """Stop taking new connections and close the listening sockets.

        Closed at once, as nginx does: a socket left open while requests
        drain would let the kernel complete handshakes nobody accepts, and
        new clients would hang instead of being refused (and retried
        elsewhere by whatever is in front).  A worker closes its own copies;
        the master closes its copies when it tells the workers to stop.
        """
        self._stopping = True
        self._capacity.set()
        for bound in self.listeners:
            for task in bound.tasks:
                task.cancel()
            bound.tasks = []
            for sock in bound.sockets:
                sock.close()
        for handshake in list(self._handshakes):
            handshake.cancel()

    async def stop(self, timeout: float) -> None:
        """Stop accepting, let in-flight requests finish (up to ``timeout``), close."""
        self.stop_accepting()
        contexts = [ctx for bound in self.listeners for ctx in bound.all_contexts()]
        for ctx in contexts:
            for conn in list(ctx.connections):
                conn.close_idle()
        deadline = self.loop.time() + timeout
        while self.loop.time() < deadline and any(ctx.connections for ctx in contexts):
            await asyncio.sleep(0.05)
        for ctx in contexts:
            for conn in list(ctx.connections):
                conn.abort()
        for groups in [self.groups, *self._old_groups]:
            for group in groups.values():
                for member in group.servers:
                    member.pool.close()
        self.clock.stop()
        for access_log in self._logs.values():
            access_log.close()


def security_header_lines(config: SecurityHeadersConfig | None, tls: bool) -> bytes:
    """The listener's security headers as ready ``Name: value\r\n`` lines."""
    if config is None:
        return b""
    lines = []
    if tls and config.strict_transport_security:
        lines.append(b"Strict-Transport-Security: " + config.strict_transport_security.encode())
    if config.x_frame_options:
        lines.append(b"X-Frame-Options: " + config.x_frame_options.encode())
    if config.x_content_type_options:
        lines.append(b"X-Content-Type-Options: " + config.x_content_type_options.encode())
    if config.x_xss_protection:
        lines.append(b"X-XSS-Protection: " + config.x_xss_protection.encode())
    return b"".join(line + b"\r\n" for line in lines)


def _apply(
    groups: Mapping[str, UpstreamGroup],
    state: Mapping[str, Mapping[str, Mapping[str, Any]]],
    now: float,
) -> None:
    for upstream, servers in state.items():
        group = groups.get(upstream)
        if group is None:
            continue
        for server in group.servers:
            item = servers.get(server.address)
            if item is None:
                continue
            accepting = bool(item.get("accepting", True))
            if accepting and not server.accepting:
                server.mark_recovered(now)
            server.accepting = accepting
            server.sticky_ok = bool(item.get("sticky_ok", accepting))
            host = item.get("connect_host")
            if isinstance(host, str) and host and host != server.pool.connect_host:
                # The name now points elsewhere (a pod moved): new connections
                # go to the new address, idle ones to the old are dropped.
                server.pool.connect_host = host
                server.pool.flush_idle()


def _add(into: list[int], other: list[int]) -> list[int]:
    if not into:
        return list(other)
    return [a + b for a, b in zip(into, other, strict=False)]


def _add_f(into: list[float], other: list[float]) -> list[float]:
    if not into:
        return list(other)
    return [a + b for a, b in zip(into, other, strict=False)]


def _listener_stats(name: str, contexts: list[ListenerContext]) -> dict[str, Any]:
    """One listener's counters over ``contexts`` (the current one and retired ones)."""
    reading = writing = waiting = 0
    accepted = requests = bytes_in = bytes_out = 0
    local_counts: list[int] = []
    local_durations: list[float] = []
    limited: dict[str, int] = {}
    handshakes = resumed = 0
    tls_versions: dict[str, int] = {}
    tls_resumed: dict[str, int] = {}
    tls_errors: dict[str, int] = {}
    tls_time: list[float] = []
    for ctx in contexts:
        for conn in ctx.connections:
            state = conn.stub_state()
            if state == 0:
                reading += 1
            elif state == 1:
                writing += 1
            else:
                waiting += 1
        accepted += ctx.accepted
        requests += ctx.requests
        bytes_in += ctx.bytes_in
        bytes_out += ctx.bytes_out
        local_counts = _add(local_counts, ctx.local_counts)
        for key, count in ctx.limited.items():
            limited[key] = limited.get(key, 0) + count
        local_durations = _add_f(local_durations, ctx.local_durations.to_wire())
        if ctx.ssl_context is not None:
            handshakes += ctx.tls_handshakes
            resumed += ctx.tls_resumed
            for key, count in ctx.tls_versions.items():
                tls_versions[key] = tls_versions.get(key, 0) + count
            for key, count in ctx.tls_resumed_versions.items():
                tls_resumed[key] = tls_resumed.get(key, 0) + count
            for key, count in ctx.tls_handshake_errors.items():
                tls_errors[key] = tls_errors.get(key, 0) + count
            tls_time = _add_f(tls_time, ctx.tls_handshake_time.to_wire())
    return {
        "name": name,
        "reading": reading,
        "writing": writing,
        "waiting": waiting,
        "accepted": accepted,
        "requests": requests,
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
        "local_counts": local_counts,
        "local_durations": local_durations,
        "limited": limited,
        "tls_handshakes": handshakes,
        "tls_resumed": resumed,
        "tls_versions": tls_versions,
        "tls_resumed_versions": tls_resumed,
        "tls_handshake_errors": tls_errors,
        "tls_handshake_time": tls_time,
    }


def _upstream_stats(groups_list: list[dict[str, UpstreamGroup]]) -> dict[str, Any]:
    """Counters per upstream over ``groups_list`` (the current groups and retired ones)."""
    upstreams: dict[str, Any] = {}
    for groups in groups_list:
        for name, group in groups.items():
            entry = upstreams.setdefault(
                name,
                {"counts": [], "durations": [], "retries": {}, "waiting": 0, "servers": {}},
            )
            entry["counts"] = _add(entry["counts"], group.counts)
            durations = entry["durations"]
            for li, hist in enumerate(group.durations):
                wire = hist.to_wire()
                if li < len(durations):
                    durations[li] = _add_f(durations[li], wire)
                else:
                    durations.append(wire)
            for reason, count in group.retries.items():
                entry["retries"][reason] = entry["retries"].get(reason, 0) + count
            for server in group.servers:
                pool = server.pool
                entry["waiting"] += pool.connecting
                item = entry["servers"].setdefault(
                    server.address,
                    {
                        "counts": [],
                        "response_time": [],
                        "in_flight": 0,
                        "idle": 0,
                        "requests": 0,
                        "failures": 0,
                        "ejections": 0,
                        "opened": 0,
                    },
                )
                item["counts"] = _add(item["counts"], server.counts)
                item["response_time"] = _add_f(
                    item["response_time"], server.response_time.to_wire()
                )
                item["in_flight"] += server.in_flight
                item["idle"] += len(pool.idle)
                item["requests"] += server.requests
                item["failures"] += server.failures
                item["ejections"] += server.ejections
                item["opened"] += pool.opened
    return upstreams
