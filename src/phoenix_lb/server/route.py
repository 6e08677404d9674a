"""What a path prefix maps to: the upstream, and the decisions taken before a server is picked.

Access rules, the connection limit and the rate limit run in that order for
every request routed here (nginx runs limits first; refusing a denied client
without spending its rate allowance is the kinder order for everyone else).
"""

from __future__ import annotations

from phoenix_lb.access import AccessRules
from phoenix_lb.limits import ConnLimit, RateLimit
from phoenix_lb.upstream.group import UpstreamGroup


class Route:
    """A route's upstream group and its admission decisions (each may be None)."""

    __slots__ = (
        "access",
        "conn_limit",
        "conn_status",
        "group",
        "log",
        "rate_limit",
        "rate_status",
    )

    def __init__(
        self,
        group: UpstreamGroup,
        *,
        access: AccessRules | None = None,
        rate_limit: RateLimit | None = None,
        rate_status: int = 429,
        conn_limit: ConnLimit | None = None,
        conn_status: int = 429,
        log: bool = True,
    ) -> None:
        self.group = group
        #: False: requests here are not written to the access log
        self.log = log
        self.access = access
        self.rate_limit = rate_limit
        self.rate_status = rate_status
        self.conn_limit = conn_limit
        self.conn_status = conn_status

    @property
    def plain(self) -> bool:
        """No decision to take: the request goes straight to balancing."""
        return self.access is None and self.rate_limit is None and self.conn_limit is None
