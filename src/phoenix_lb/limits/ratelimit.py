"""nginx ``limit_req``: a leaky bucket per key, decided from ``(key, now)``.

This mirrors ``ngx_http_limit_req_module.c`` (nginx 1.15.7 and later, the
version with ``delay=``) arithmetic for arithmetic, integers included:

* the zone rate is an integer in milli-requests per second, as nginx stores
  it: ``10r/s`` -> 10000, ``30r/m`` -> 500, ``1r/m`` -> 16 (1000 // 60);
* each key keeps ``excess`` (milli-requests) and ``last`` (milliseconds);
* a request at ``now_ms`` computes::

      ms     = now_ms - last     (< -60000 -> 1, < 0 -> 0: the clock went back)
      excess = max(excess - rate * ms // 1000 + 1000, 0)

  so every request adds 1000 and the bucket drains at ``rate``; the integer
  division is nginx's (a slow rate polled every millisecond never drains:
  16 * 1 // 1000 == 0, same as nginx);
* ``excess > burst * 1000`` -> reject, and the state is *not* updated: a
  rejected request costs nothing, so a client hammering past its limit still
  recovers at ``rate``;
* otherwise the state is stored (``last`` only moves when ``ms != 0``) and the
  request waits ``(excess - delay * 1000) * 1000 // rate`` milliseconds when
  ``excess`` is above the ``delay`` threshold, else passes now.  ``delay`` is
  0 by default (every excess request waits: 0.1 s, 0.2 s, ... at 10r/s);
  ``nodelay`` is an infinite ``delay`` (up to ``burst`` excess requests pass
  at once and are still accounted).
* A key seen for the first time starts with ``excess = 0``: its first
  request is free, so with ``burst=20 nodelay`` exactly 21 of a simultaneous
  flood pass (excess 0, 1000, ..., 20000).

Results are plain floats so the request path allocates nothing: ``PASS``
(0.0), a positive delay in seconds, or ``REJECT`` (-1.0).

Time: ``now`` is seconds from a monotonic clock, rounded to the nearest
millisecond (nginx's own clock, ``ngx_current_msec``, is a millisecond
counter refreshed once per event-loop turn, so sub-millisecond precision
would be false precision; rounding rather than truncating keeps values such as
``4.35`` s, stored as 4.3499999..., on the millisecond the caller meant).

Memory: ``max_entries`` bounds the keys a zone holds (see
``entries_for_zone_size``).  As in ``ngx_http_limit_req_expire``, inserting a
new key first drops up to two least-recently-used entries that have been
idle for 60 s and fully drained; if the zone is still full, the least
recently used entry goes regardless (losing its state lets that one client
start afresh, which is what nginx does when the slab is exhausted).  Keys are
touched on every request, rejected ones included.

Several limits on one route: nginx rejects without accounting anywhere when
any zone is over its burst, otherwise accounts in all and waits the longest
delay.  Routes here carry one ``rate_limit``; chaining is left out until a
configuration needs it.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Final

__all__ = [
    "MIN_ZONE_SIZE",
    "PASS",
    "RATE_STATE_BYTES",
    "REJECT",
    "RateLimit",
    "RateLimitZone",
    "entries_for_zone_size",
    "parse_rate",
]

#: ``check`` result: go on now.
PASS: Final = 0.0
#: ``check`` result: refuse (nginx's ``limit_req_status``; 429 here).
REJECT: Final = -1.0

# nginx's per-key state for limit_req on 64-bit platforms: the rbtree node
# up to ``color`` (32 bytes), ngx_http_limit_req_node_t up to ``data``
# (48 bytes) and the key (4 bytes for $binary_remote_addr) = 84 bytes, which
# the slab allocator rounds up to 128.  The nginx documentation gives the same
# figure: "the state size is ... 128 bytes on 64-bit platforms. One megabyte
# zone can keep about ... 8 thousand 128-byte states."  So ``zone_size: 10m``
# means the same number of clients here as in nginx: 81920.  (A Python entry
# really costs about 250-300 bytes: key object, state object, OrderedDict
# link; 10m therefore uses some 25 MB per zone per process.)
RATE_STATE_BYTES: Final = 128
# nginx refuses zones smaller than 8 pages ("zone ... is too small").
MIN_ZONE_SIZE: Final = 8 * 4096

# nginx: ``nodelay`` sets delay = NGX_MAX_INT_T_VALUE / 1000.  Any value above
# every possible burst will do; this one stays a machine-size int for mypyc.
_NO_DELAY: Final = 1 << 60
# Entries idle this long whose excess has drained may be expired (nginx: 60 s).
_IDLE_MS: Final = 60000
# nginx: a clock that went back more than this counts as 1 ms elapsed.
_BACKWARDS_MS: Final = -60000

_RATE_RE: Final = re.compile(r"([0-9]+)r/([sm])")


def parse_rate(text: object) -> float:
    """Return the requests per second of an nginx rate such as ``10r/s`` or ``30r/m``.

    Like nginx, the count is a whole positive number per second (``r/s``) or
    per minute (``r/m``); slower rates than 1r/s are written per minute.
    Raises ValueError with the reason.
    """
    if not isinstance(text, str):
        raise ValueError("expected a rate such as 10r/s or 30r/m")
    match = _RATE_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"invalid rate {text!r}: write a whole number of requests per second or per "
            "minute, e.g. 10r/s or 30r/m"
        )
    count = int(match.group(1))
    if count <= 0:
        raise ValueError(f"invalid rate {text!r}: must be at least 1 request")
    return float(count) if match.group(2) == "s" else count / 60.0


def entries_for_zone_size(size: int, state_bytes: int = RATE_STATE_BYTES) -> int:
    """Number of keys a zone of ``size`` bytes holds, counted the way nginx counts.

    ``state_bytes`` is what one key costs nginx: ``RATE_STATE_BYTES`` for
    ``limit_req``, ``CONN_STATE_BYTES`` for ``limit_conn``.  Raises ValueError
    below nginx's minimum zone size (32k).
    """
    if state_bytes <= 0:
        raise ValueError("state_bytes must be positive")
    if size < MIN_ZONE_SIZE:
        raise ValueError(
            f"zone size {size} bytes is too small: the minimum is {MIN_ZONE_SIZE // 1024}k "
            "(nginx's 8 pages)"
        )
    return size // state_bytes


def _now_ms(now: float) -> int:
    # Nearest millisecond (see the module docstring).
    return int(now * 1000.0 + 0.5)


class _Entry:
    """One key's bucket: ``excess`` in milli-requests, ``last`` in ms."""

    __slots__ = ("excess", "last")

    def __init__(self, excess: int, last: int) -> None:
        self.excess = excess
        self.last = last


class RateLimitZone:
    """A named ``limit_req_zone``: the rate and the per-key buckets.

    ``rate_per_second`` as returned by ``parse_rate``; it is stored the nginx
    way, as whole milli-requests per second (``rate``).
    """

    __slots__ = ("_entries", "max_entries", "name", "rate", "rate_per_second")

    def __init__(self, name: str, rate_per_second: float, max_entries: int) -> None:
        # The epsilon turns 3r/m (0.05 * 1000 = 50.000000000000007 or
        # 49.99999...) into nginx's exact 3000 // 60 = 50; true fractions
        # (1r/m = 16.67) are at least 1/60 away from an integer.
        rate = int(rate_per_second * 1000.0 + 1e-6) if rate_per_second > 0 else 0
        if rate <= 0:
            raise ValueError(f"rate of zone {name!r} must be at least 1r/m")
        if max_entries <= 0:
            raise ValueError(f"zone {name!r} must hold at least one entry")
        self.name = name
        self.rate_per_second = rate_per_second
        #: milli-requests per second, an integer as in nginx
        self.rate = rate
        self.max_entries = max_entries
        # Least recently used first.
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: bytes) -> bool:
        return key in self._entries

    def clear(self) -> None:
        """Forget every key."""
        self._entries.clear()

    def check(self, key: bytes, now: float, burst: int, nodelay: bool = False) -> float:
        """Account one request of ``key`` at ``now``: ``PASS``, a delay in seconds, or ``REJECT``.

        ``burst`` is the number of excess requests tolerated (nginx
        ``burst=``); with ``nodelay`` they pass at once instead of waiting.
        An empty key is not limited (nginx skips empty keys).
        """
        return self.check_milli(key, now, burst * 1000, _NO_DELAY if nodelay else 0)

    def check_milli(self, key: bytes, now: float, burst_milli: int, delay_milli: int) -> float:
        """``check`` with nginx's internal units: burst and delay thresholds in milli-requests.

        ``RateLimit`` precomputes these so the request path multiplies nothing.
        """
        if not key:
            return PASS
        now_ms = _now_ms(now)
        entries = self._entries
        entry = entries.get(key)
        if entry is None:
            self._insert(key, now_ms)
            return PASS
        entries.move_to_end(key)
        ms = now_ms - entry.last
        if ms < 0:
            ms = 1 if ms < _BACKWARDS_MS else 0
        rate = self.rate
        excess = entry.excess - rate * ms // 1000 + 1000
        if excess < 0:
            excess = 0
        if excess > burst_milli:
            return REJECT
        entry.excess = excess
        if ms:
            entry.last = now_ms
        if excess <= delay_milli:
            return PASS
        return ((excess - delay_milli) * 1000 // rate) / 1000.0

    def retry_after(self, key: bytes, now: float, burst: int) -> int:
        """Whole seconds (rounded up) until a request of ``key`` would pass; 0 if it would now.

        For the ``Retry-After`` header of a rejection; reads the state without
        changing it or the LRU order.
        """
        entry = self._entries.get(key)
        if entry is None:
            return 0
        # Passes when excess - rate * ms // 1000 + 1000 <= burst * 1000,
        # i.e. when the drain rate * ms // 1000 reaches ``need``.
        need = entry.excess + 1000 - burst * 1000
        if need <= 0:
            return 0
        ms_needed = -(-need * 1000 // self.rate)
        wait_ms = entry.last + ms_needed - _now_ms(now)
        if wait_ms <= 0:
            return 0
        return -(-wait_ms // 1000)

    def _insert(self, key: bytes, now_ms: int) -> None:
        entries = self._entries
        # nginx: expire(ctx, 1) before allocating, expire(ctx, 0) when the
        # slab is full.
        self._expire(now_ms, False)
        if len(entries) >= self.max_entries:
            self._expire(now_ms, True)
        entries[key] = _Entry(0, now_ms)

    def _expire(self, now_ms: int, force: bool) -> None:
        """Drop the LRU entry when ``force``, then up to two idle, drained ones."""
        entries = self._entries
        n = 0 if force else 1
        while n < 3 and entries:
            key = next(iter(entries))
            if n != 0:
                entry = entries[key]
                ms = now_ms - entry.last
                if ms < 0:
                    ms = -ms
                if ms < _IDLE_MS:
                    return
                if entry.excess - self.rate * ms // 1000 > 0:
                    return
            n += 1
            del entries[key]


class RateLimit:
    """A route's ``rate_limit: {zone, burst, nodelay, delay}`` bound to its zone.

    ``delay`` is nginx's two-stage threshold (``delay=N``: the first N excess
    requests pass at once, the rest up to ``burst`` wait); ``nodelay`` means
    no excess request waits.  ``check`` is the per-request call.
    """

    __slots__ = ("_burst_milli", "_delay_milli", "burst", "delay", "nodelay", "zone")

    def __init__(
        self, zone: RateLimitZone, burst: int = 0, nodelay: bool = False, delay: int = 0
    ) -> None:
        if burst < 0:
            raise ValueError(f"burst must not be negative (got {burst})")
        if delay < 0:
            raise ValueError(f"delay must not be negative (got {delay})")
        if nodelay and delay:
            raise ValueError("nodelay and delay exclude each other")
        self.zone = zone
        self.burst = burst
        self.nodelay = nodelay
        self.delay = delay
        self._burst_milli = burst * 1000
        self._delay_milli = _NO_DELAY if nodelay else delay * 1000

    def check(self, key: bytes, now: float) -> float:
        """``PASS``, a delay in seconds, or ``REJECT`` for one request of ``key`` at ``now``."""
        return self.zone.check_milli(key, now, self._burst_milli, self._delay_milli)

    def retry_after(self, key: bytes, now: float) -> int:
        """Seconds for ``Retry-After`` after a rejection (see ``RateLimitZone.retry_after``)."""
        return self.zone.retry_after(key, now, self.burst)
