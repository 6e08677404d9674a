"""An upstream group: named servers behind one balancing algorithm, and backups.

Primary servers are picked by the configured algorithm.  Backup servers
(``backup: true``) get requests only when no primary can take this attempt
(all unavailable, or all already tried by the request), by smooth weighted
round robin among themselves (nginx ``backup``; the seed's "Backup: Round
Robin").  Since every pick asks the primaries first, traffic goes back to
them as soon as one is available again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from phoenix_lb.balancing import Balancer, BalancerOptions, make_balancer
from phoenix_lb.balancing.round_robin import RoundRobin
from phoenix_lb.stats import Histogram, request_counts
from phoenix_lb.sticky import StickyTable
from phoenix_lb.upstream.server import Server

# hash_key kinds.
HASH_NONE: Final = 0
HASH_REMOTE_ADDR: Final = 1
HASH_URI: Final = 2
HASH_HEADER: Final = 3
HASH_COOKIE: Final = 4


class UpstreamGroup:
    """Servers of one upstream and the balancers choosing among them."""

    __slots__ = (
        "backup_balancer",
        "balancer",
        "count_errors",
        "count_timeouts",
        "counts",
        "durations",
        "fail_statuses",
        "feedback",
        "hash_kind",
        "hash_name",
        "name",
        "retries",
        "servers",
        "sticky",
        "sticky_cache_control",
        "sticky_secure_on_tls",
        "try_all",
    )

    def __init__(
        self,
        name: str,
        servers: Sequence[Server],
        balance: str,
        options: BalancerOptions | None = None,
        listeners: int = 1,
    ) -> None:
        self.name = name
        self.servers = list(servers)
        #: requests that ended without any server (no live upstream...)
        self.counts = request_counts(listeners)
        #: whole-request time per listener
        self.durations = [Histogram() for _ in range(listeners)]
        #: attempts sent again after a failure, by reason
        self.retries: dict[str, int] = {}
        # Policy, set by the runtime from the upstream's config.
        #: sticky cookie ids of the servers, or None without sticky sessions
        self.sticky: StickyTable | None = None
        self.sticky_cache_control = True
        #: sticky.secure: auto, Secure on TLS listeners (true and false are fixed)
        self.sticky_secure_on_tls = True
        #: what requests hash on (HASH_* below) and the header/cookie name
        self.hash_kind = HASH_NONE
        self.hash_name = b""
        #: upstream statuses that count as failures (fail_on http_50x)
        self.fail_statuses: frozenset[int] = frozenset()
        self.count_errors = True
        self.count_timeouts = True
        #: all_down: try_all (nginx) instead of an immediate 503
        self.try_all = False
        #: the balancer learns from response times (ewma)
        self.feedback = balance == "ewma"
        for server in self.servers:
            # The stable identity hashing (and sticky ids) use: the address
            # as configured, unless the runtime named the server otherwise.
            if not server.name:
                server.name = server.address
        primaries = [s for s in self.servers if not s.backup]
        backups = [s for s in self.servers if s.backup]
        self.balancer: Balancer = make_balancer(balance, primaries, options)
        self.backup_balancer: RoundRobin | None = RoundRobin(backups) if backups else None

    def pick(self, now: float, tried: int, key: bytes = b"") -> Server | None:
        """A server for the next attempt of a request, or None when none is available.

        ``tried`` is the request's bitmask of ``Server.index``; ``key`` its
        hash key (only the ``hash`` algorithm reads it).
        """
        server = self.balancer.pick(now, tried, key)
        if server is None:
            backup = self.backup_balancer
            if backup is not None:
                server = backup.pick(now, tried, key)
        return server  # type: ignore[return-value]

    def pinned(self, index: int, now: float, tried: int) -> Server | None:
        """The server at ``index`` (a sticky cookie's) if it may take this attempt.

        None when the index is out of range, the server is unavailable or
        the request already tried it: the caller then picks by balancing.
        """
        if index < 0 or index >= len(self.servers) or (tried >> index) & 1:
            return None
        server = self.servers[index]
        # sticky_ok, not accepting: a draining server keeps its pinned clients.
        return server if server.sticky_ok and now > server.rest_until else None

    def pick_any(self, tried: int) -> Server | None:
        """``all_down: try_all``: any server not tried yet, available or not (nginx)."""
        for server in self.servers:
            if not (tried >> server.index) & 1 and server.sticky_ok:
                return server
        for server in self.servers:
            if not (tried >> server.index) & 1:
                return server
        return None

    def any_available(self, now: float) -> bool:
        """True when at least one server may take requests."""
        return any(s.is_available(now) for s in self.servers)

    def on_failure(self, server: Server, now: float) -> bool:
        """Count a failed attempt; True when it took the server out."""
        if server.backup:
            backup = self.backup_balancer
            if backup is not None:
                backup.on_failure(server)
        else:
            self.balancer.on_failure(server)
        return server.on_failure(now)

    def on_response(self, server: Server, seconds: float, now: float) -> None:
        """``server`` sent a response head ``seconds`` after the request went out."""
        if not server.backup:
            self.balancer.on_response(server, seconds, now)
