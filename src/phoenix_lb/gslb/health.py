"""Active health checks of each region: HTTP GET of its balancer's ``/health``.

Each region gets one task.  A check is a plain HTTP/1.1 GET with
``Connection: close``; a 2xx status line within ``timeout`` is a success,
anything else (another status, a refused or reset connection, no status line
in time) a failure.  Results feed the region's :class:`RiseFall`, the same
state machine the balancer uses for its servers; only a :class:`Transition`
changes what DNS answers, and it does so by replacing :attr:`RegionMonitor.healthy`
(an immutable set the server reads per query).

Timing.  Checks start ``interval`` apart, measured from the start of the
previous one, less a random 0-10% so that many GSLB instances do not probe in
lockstep; never more, so a region that starts failing is marked down within
``fall x interval`` (+ ``timeout`` when the failures are timeouts).  The
first round runs before the DNS server answers, and each region starts in the
state its first check reported: a region that is down at start is not
announced for the first ``fall`` intervals.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import urlsplit

from phoenix_lb.health.state import RiseFall, Transition

log = logging.getLogger("phoenix_lb.gslb")

#: (url, timeout) -> (ok, reason); must return within about ``timeout``.
CheckFn = Callable[[str, float], Awaitable[tuple[bool, str]]]
#: (region, transition) -> None; called on the loop, must not block.
ChangeFn = Callable[[str, Transition], None]

# A status line is short; a server sending more than this without a newline is
# not an HTTP server.  (h11 caps a whole head at 16 KiB; one line needs far less.)
# Reasons match the balancer's active checks: "status 503", "timeout",
# "connect refused", "connect error: ...", "invalid response".
_MAX_STATUS_LINE = 1024
JITTER = 0.1


async def http_check(url: str, timeout: float) -> tuple[bool, str]:
    """GET ``url``; ``(True, "status 200")`` for 2xx, ``(False, reason)`` otherwise."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    host_header = parts.netloc.rpartition("@")[2]
    request = (
        f"GET {target} HTTP/1.1\r\nHost: {host_header}\r\n"
        "User-Agent: phoenix-lb-gslb\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host,
                port,
                ssl=ssl.create_default_context() if https else None,
                limit=_MAX_STATUS_LINE,
            )
            writer.write(request)
            line = await reader.readline()
    except TimeoutError:
        return False, "timeout"
    except ConnectionRefusedError:
        return False, "connect refused"
    except ValueError:  # the line was longer than the limit
        return False, "status line too long"
    except OSError as exc:
        return False, f"connect error: {exc.strerror or exc.__class__.__name__}"
    finally:
        if writer is not None:
            writer.close()
    fields = line.split(None, 2)
    if len(fields) < 2 or not fields[0].startswith(b"HTTP/") or not fields[1].isdigit():
        if not line:
            return False, "connection closed without a response"
        return False, "invalid response"
    status = int(fields[1])
    return 200 <= status < 300, f"status {status}"


class RegionMonitor:
    """Probes every region's health URL and keeps the set of healthy regions."""

    __slots__ = (
        "_check",
        "_clock",
        "_on_change",
        "_rng",
        "_tasks",
        "fall",
        "healthy",
        "interval",
        "rise",
        "states",
        "timeout",
        "urls",
    )

    def __init__(
        self,
        urls: Mapping[str, str],
        *,
        interval: float,
        timeout: float,
        rise: int,
        fall: int,
        check: CheckFn = http_check,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_change: ChangeFn | None = None,
    ) -> None:
        self.urls = dict(urls)
        self.interval = interval
        self.timeout = timeout
        self.rise = rise
        self.fall = fall
        self._check = check
        self._rng = rng or random.Random()
        self._clock = clock
        self._on_change = on_change
        self.states: dict[str, RiseFall] = {}
        #: names of the regions now up; replaced (never mutated) on each transition
        self.healthy: frozenset[str] = frozenset()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Check every region once (concurrently), then keep checking in the background."""
        names = list(self.urls)
        results = await asyncio.gather(*(self._run_check(name) for name in names))
        now = self._clock()
        for name, (ok, reason) in zip(names, results, strict=True):
            state = RiseFall(self.rise, self.fall, initial_up=ok)
            state.record(ok, reason, now)
            state.changed_at = now
            self.states[name] = state
            log.info("gslb: region %s starts %s (%s)", name, "up" if ok else "down", reason)
        self._publish()
        for name in names:
            task = asyncio.create_task(self._loop(name), name=f"gslb-health-{name}")
            self._tasks.append(task)

    async def stop(self) -> None:
        """Cancel the check tasks and wait for them."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def next_delay(self) -> float:
        """The time to the next check: interval less up to 10% (never more; see above)."""
        return self.interval * (1.0 - JITTER * self._rng.random())

    def record(self, name: str, ok: bool, reason: str) -> Transition | None:
        """Feed one result for ``name`` (used by the loop; tests may call it directly)."""
        transition = self.states[name].record(ok, reason, self._clock())
        if transition is not None:
            self._publish()
            log.warning(
                "gslb: region %s is %s (%s -> %s: %s)",
                name,
                transition.new,
                transition.old,
                transition.new,
                reason,
            )
            if self._on_change is not None:
                self._on_change(name, transition)
        return transition

    def _publish(self) -> None:
        self.healthy = frozenset(name for name, state in self.states.items() if state.up)

    async def _loop(self, name: str) -> None:
        started = self._clock()
        while True:
            due = started + self.next_delay()
            await asyncio.sleep(max(0.0, due - self._clock()))
            started = self._clock()
            ok, reason = await self._run_check(name)
            self.record(name, ok, reason)

    async def _run_check(self, name: str) -> tuple[bool, str]:
        # A check function that misbehaves must not end the region's loop.
        try:
            async with asyncio.timeout(self.timeout + 0.5):
                return await self._check(self.urls[name], self.timeout)
        except TimeoutError:
            return False, "timeout"
        except Exception as exc:
            log.error("gslb: health check of region %s raised %r", name, exc)
            return False, f"error: {exc!r}"
