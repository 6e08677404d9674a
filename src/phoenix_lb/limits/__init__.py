"""Request and connection limits (nginx ``limit_req`` and ``limit_conn``), pure.

Nothing here reads a clock or touches a socket: every decision takes the
key (normally the client address) and, for rates, ``now`` in seconds from a
monotonic clock the caller owns.  Zones hold the per-key state, bounded by a
number of entries derived from an nginx-like ``zone_size``.

Zones live in one process.  Limits that must hold "for the client across
all workers" need every request of a client to reach the same worker (or
state shared between workers); that choice belongs to the server layer, not
to these decisions.
"""

from phoenix_lb.limits.connlimit import CONN_STATE_BYTES, ConnLimit, ConnLimitZone
from phoenix_lb.limits.ratelimit import (
    MIN_ZONE_SIZE,
    PASS,
    RATE_STATE_BYTES,
    REJECT,
    RateLimit,
    RateLimitZone,
    entries_for_zone_size,
    parse_rate,
)

__all__ = [
    "CONN_STATE_BYTES",
    "MIN_ZONE_SIZE",
    "PASS",
    "RATE_STATE_BYTES",
    "REJECT",
    "ConnLimit",
    "ConnLimitZone",
    "RateLimit",
    "RateLimitZone",
    "entries_for_zone_size",
    "parse_rate",
]
