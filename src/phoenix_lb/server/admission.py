"""Which route a request takes and whether it may go there, whatever the protocol.

Both downstream protocols (``H1Connection`` and the HTTP/2 streams of
``server/h2.py``) decide the same way, in this order:

1. the route: the longest matching path prefix, after normalizing a path
   that could hide one (``%``, ``.``, ``//``); none: 404;
2. the client address: the peer, or what a trusted proxy's header says
   (``realip``; a PROXY protocol header was applied on the connection);
3. the route's access rules (403), its concurrency limit (``conn_status``,
   default 429) and its rate limit (``rate_status``, or a delay when the
   zone has burst without ``nodelay``).

The decisions are answered as ``LocalResponse`` objects (status and extra
header lines); each protocol writes them in its own framing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from phoenix_lb.http.path import normalize_path
from phoenix_lb.server.exchange import Exchange, LocalResponse

if TYPE_CHECKING:
    from phoenix_lb.http.request import RequestHead
    from phoenix_lb.server.context import ListenerContext
    from phoenix_lb.server.route import Route


def find_route(ctx: ListenerContext, head: RequestHead) -> Route | None:
    """The route of ``head``'s path (None: no route, answer 404)."""
    router = ctx.router
    route = router.catch_all
    if route is None:
        path = head.path
        # '%', '.' or "//" may hide a prefix; find(), as `in` with a
        # bytes operand first tries (and fails) it as an integer.
        if 37 in path or 46 in path or path.find(b"//") >= 0:
            path = normalize_path(path)
        route = router.route(path)
    return route


def admit(exchange: Exchange, route: Route) -> LocalResponse | None:
    """Real client address, then access rules, concurrency and rate limits.

    None when ``exchange`` may start (its client address, concurrency slot
    and rate-limit delay are set); else the refusal to answer instead.
    """
    down = exchange.down
    head = exchange.head
    ctx = down.ctx
    ip = down.client_ip
    realip = ctx.realip
    if realip is not None and not ctx.proxy_protocol:
        name = realip.header_name
        if name == b"x-forwarded-for":
            value = head.xff
        elif name == b"x-real-ip":
            value = head.x_real_ip
        elif name is None:
            value = None
        else:
            value = head.field(name)
        ip = realip.client_ip(down.peer_ip, value)
    exchange.client_ip = ip
    body_done = not head.has_body
    head_only = head.method == b"HEAD"
    access = route.access
    if access is not None and not access.allowed(ip):
        return LocalResponse(
            down,
            403,
            close=not head.keep_alive,
            head_only=head_only,
            body_done=body_done,
            client_ip=ip,
        )
    conn = route.conn_limit
    if conn is not None and not conn.acquire(ip):
        key = conn.zone.name + "\0conn"
        ctx.limited[key] = ctx.limited.get(key, 0) + 1
        return LocalResponse(
            down,
            route.conn_status,
            close=not head.keep_alive,
            head_only=head_only,
            body_done=body_done,
            client_ip=ip,
            extra=b"Retry-After: 1\r\n",
        )
    rate = route.rate_limit
    if rate is not None:
        now = ctx.now()
        delay = rate.check(ip, now)
        if delay < 0.0:
            if conn is not None:
                conn.release(ip)
            key = rate.zone.name + "\0rate"
            ctx.limited[key] = ctx.limited.get(key, 0) + 1
            return LocalResponse(
                down,
                route.rate_status,
                close=not head.keep_alive,
                head_only=head_only,
                body_done=body_done,
                client_ip=ip,
                extra=b"Retry-After: %d\r\n" % rate.retry_after(ip, now),
            )
        if delay > 0.0:
            key = rate.zone.name + "\0delayed"
            ctx.limited[key] = ctx.limited.get(key, 0) + 1
            exchange.delay = delay
    if conn is not None:
        exchange.conn_limit = conn
    return None
