"""nginx ``limit_conn``: concurrent requests per key, decided from the key alone.

As in ``ngx_http_limit_conn_module.c``: a key's count goes up when a request
is admitted and down when it ends; a request is refused when the count has
reached ``max``; an entry whose count drops to 0 is deleted, so the zone holds
only keys with something in flight.

nginx counts, in HTTP, requests whose header has been read, not idle
keep-alive connections ("a connection is counted only if it has a request
being processed by the server and the whole request header has already been
read"); each HTTP/2 stream counts on its own.  The caller therefore acquires
once the request head is complete and releases exactly once when that
request is finished, whatever way it ends (including a ``limit_req``
rejection or a client that went away): the same zone object it acquired
from, even across a configuration reload.

Memory: at most ``max_entries`` keys (``entries_for_zone_size(size,
CONN_STATE_BYTES)`` from ``ratelimit``).  Every entry is active by construction,
so none is ever evicted; when the zone is full a new key is refused, which is
nginx's behaviour when the slab cannot allocate a node.
"""

from __future__ import annotations

from typing import Final

__all__ = ["CONN_STATE_BYTES", "ConnLimit", "ConnLimitZone"]

# nginx: "The stored state occupies ... always 64 bytes on 64-bit platforms"
# (rbtree node to ``color`` 32 bytes, ngx_http_limit_conn_node_t header 4
# bytes, the key, rounded up by the slab allocator).
CONN_STATE_BYTES: Final = 64


class ConnLimitZone:
    """A named ``limit_conn_zone``: in-flight counts per key."""

    __slots__ = ("_counts", "max_entries", "name")

    def __init__(self, name: str, max_entries: int) -> None:
        if max_entries <= 0:
            raise ValueError(f"zone {name!r} must hold at least one entry")
        self.name = name
        self.max_entries = max_entries
        self._counts: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self._counts)

    def count(self, key: bytes) -> int:
        """Requests of ``key`` in flight."""
        return self._counts.get(key, 0)

    def acquire(self, key: bytes, limit: int) -> bool:
        """Admit one more request of ``key`` unless ``limit`` are in flight (or the zone is full).

        On True the caller owes exactly one ``release(key)``.  An empty key is
        not limited (nginx skips empty keys) and its release is a no-op.
        """
        if not key:
            return True
        counts = self._counts
        n = counts.get(key, 0)
        if n == 0:
            if len(counts) >= self.max_entries:
                return False
            counts[key] = 1
            return True
        if n >= limit:
            return False
        counts[key] = n + 1
        return True

    def release(self, key: bytes) -> None:
        """One admitted request of ``key`` ended; a key back at 0 is deleted.

        A key that holds nothing (never acquired, or an empty key) is ignored
        rather than raising on the request path.
        """
        counts = self._counts
        n = counts.get(key, 0)
        if n > 1:
            counts[key] = n - 1
        elif n == 1:
            del counts[key]


class ConnLimit:
    """A route's ``conn_limit: {zone, max}`` bound to its zone."""

    __slots__ = ("limit", "zone")

    def __init__(self, zone: ConnLimitZone, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"max must be at least 1 (got {limit})")
        self.zone = zone
        self.limit = limit

    def acquire(self, key: bytes) -> bool:
        """Admit one request of ``key``; True means a ``release`` is owed."""
        return self.zone.acquire(key, self.limit)

    def release(self, key: bytes) -> None:
        """The admitted request of ``key`` ended."""
        self.zone.release(key)
