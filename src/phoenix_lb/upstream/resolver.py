"""Periodic resolution of server host names, off the event loop.

Servers may be configured by name (``master-orchestrator-0.master-orchestrator:8080``,
a Kubernetes StatefulSet pod).  The :class:`Resolver` resolves every name once
at start and again every ``resolve_interval``, and reports *changes only*
through ``on_change(upstream, address, ip_or_none)``; the first resolution of
each name counts as a change.

What a failure means (the choice, and why):

* A name that has **never** resolved is reported as None: the issue asks that
  such a server start down without stopping the balancer (HAProxy refuses to
  start unless told ``init-addr none``; we always behave like that).
* A name that resolved before and now fails (DNS timeout, NXDOMAIN during a
  pod restart) **keeps its last good address**, like nginx's ``resolve``
  (HAProxy's ``resolvers`` would mark the server down after ``hold nx``).
  A transient DNS problem must not take healthy servers out; if the address
  really is dead, health checks and passive checks find out.  The failure is
  logged once (and the recovery once), not every interval.
* When a name has several addresses, the current one is kept as long as it is
  still among them, so round-robin DNS answers do not make the server hop
  between addresses (and drop its keep-alive pool) every interval.
  Otherwise the first address in resolver order is taken.

IP literals are reported once, in the first round, and never resolved.

Resolution uses ``loop.getaddrinfo`` (the default executor's threads), which
honours ``/etc/hosts``, ``/etc/resolv.conf`` search domains and ``ndots``: the
short Kubernetes names above depend on search domains.  getaddrinfo does not
return the record's TTL, so names are re-resolved every ``interval``; set
``resolve_interval`` to the TTL of the records (CoreDNS serves pod records
with a 5 s TTL by default) to follow moves faster.  Tests inject ``resolve``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from phoenix_lb.config.schema import UpstreamConfig, split_host_port

__all__ = [
    "ChangeFn",
    "NameEntry",
    "ResolveFn",
    "Resolver",
    "getaddrinfo_resolve",
    "names_from_config",
]

log = logging.getLogger("phoenix_lb")

#: (host, port) -> addresses in preference order; raises OSError (or returns []) on failure
ResolveFn = Callable[[str, int], Awaitable[list[str]]]
#: (upstream, address, ip or None) -> None; called on the loop, must not block
ChangeFn = Callable[[str, str, str | None], None]

#: per-round jitter, so that many balancers do not query DNS in lockstep
JITTER = 0.1
# glibc's resolver gives up after timeout:5 x attempts:2 per nameserver; a
# lookup still pending after this counts as failed (its thread is left to end).
RESOLVE_TIMEOUT = 15.0


@dataclass(frozen=True, slots=True)
class NameEntry:
    """A server configured by address; ``host`` may be a name or an IP literal."""

    upstream: str
    address: str
    host: str
    port: int


def _is_ip(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return False
    return True


def names_from_config(upstreams: Mapping[str, UpstreamConfig]) -> list[NameEntry]:
    """Every server configured by host name (IP literals need no resolver)."""
    out = []
    for name, upstream in upstreams.items():
        for server in upstream.servers:
            host, port = split_host_port(server.address)
            if not _is_ip(host):
                out.append(NameEntry(name, server.address, host, port))
    return out


def getaddrinfo_resolve(loop: asyncio.AbstractEventLoop) -> ResolveFn:
    """A resolve function using ``loop.getaddrinfo`` (runs in the default executor)."""

    async def resolve(host: str, port: int) -> list[str]:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        out: list[str] = []
        for info in infos:
            ip = str(info[4][0])
            if ip not in out:
                out.append(ip)
        return out

    return resolve


class _Name:
    __slots__ = ("current", "entry", "failing", "reported")

    def __init__(self, entry: NameEntry) -> None:
        self.entry = entry
        #: the address reported last; None before the first success
        self.current: str | None = None
        #: True once on_change has been called for this name
        self.reported = False
        #: inside a run of failures (logged once)
        self.failing = False


class Resolver:
    """Resolves server names now and every ``interval``; reports address changes."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        names: list[tuple[str, str, str, int]] | list[NameEntry],
        on_change: ChangeFn,
        interval: float = 30.0,
        *,
        resolve: ResolveFn | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.loop = loop
        self.interval = interval
        self._on_change = on_change
        self._resolve = resolve or getaddrinfo_resolve(loop)
        self._rng = rng or random.Random()
        self._names: dict[tuple[str, str], _Name] = {}
        self._task: asyncio.Task[None] | None = None
        #: rounds completed (the first one reports every name)
        self.rounds = 0
        self.update_names(names)

    # ------------------------------------------------------------------ control

    def update_names(self, names: list[tuple[str, str, str, int]] | list[NameEntry]) -> None:
        """Replace the names (config reload); unchanged ones keep their address.

        New names are resolved in the next round (call :meth:`refresh` to
        resolve them at once).
        """
        new: dict[tuple[str, str], _Name] = {}
        for item in names:
            entry = item if isinstance(item, NameEntry) else NameEntry(*item)
            key = (entry.upstream, entry.address)
            old = self._names.get(key)
            if old is not None and old.entry == entry:
                new[key] = old
            else:
                new[key] = _Name(entry)
        self._names = new

    async def refresh(self) -> None:
        """Resolve every name once, concurrently, and report changes.

        Await it before opening listeners so that servers start with their
        addresses (or down when a name does not resolve).
        """
        pending = [
            name for name in self._names.values() if not (name.reported and _is_ip(name.entry.host))
        ]
        await asyncio.gather(*(self._refresh_one(name) for name in pending))
        self.rounds += 1

    def start(self) -> None:
        """Re-resolve in the background every ``interval`` (+-10%).

        The first round runs at once unless :meth:`refresh` already ran.
        """
        if self._task is None:
            self._task = self.loop.create_task(self._run(), name="resolver")

    async def stop(self) -> None:
        """Stop the background task and wait for it."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def addresses(self) -> dict[tuple[str, str], str | None]:
        """The current address of every (upstream, address); None if never resolved."""
        return {key: name.current for key, name in self._names.items()}

    # ------------------------------------------------------------------ rounds

    async def _run(self) -> None:
        if self.rounds == 0:
            await self.refresh()
        while True:
            u = self._rng.random()
            await asyncio.sleep(self.interval * (1.0 + JITTER * (2.0 * u - 1.0)))
            await self.refresh()

    async def _refresh_one(self, name: _Name) -> None:
        entry = name.entry
        if _is_ip(entry.host):
            self._report(name, entry.host)
            return
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT):
                found = await self._resolve(entry.host, entry.port)
            if not found:
                raise OSError("no addresses")
        except (OSError, TimeoutError) as exc:
            self._failed(name, exc)
            return
        except Exception as exc:  # a broken resolve function must not end the loop
            log.exception("resolving %s failed unexpectedly", entry.host)
            self._failed(name, exc)
            return
        if name.failing:
            name.failing = False
            log.info("upstream %s: %s resolves again", entry.upstream, entry.address)
        ip = name.current if name.current in found else found[0]
        self._report(name, ip)

    def _failed(self, name: _Name, exc: BaseException) -> None:
        entry = name.entry
        if isinstance(exc, TimeoutError):
            reason = "timeout"
        elif isinstance(exc, OSError) and exc.strerror:
            reason = exc.strerror  # gaierror(-2, "Name or service not known")
        else:
            reason = str(exc) or type(exc).__name__
        if not name.failing:
            name.failing = True
            if name.current is None:
                log.error(
                    "upstream %s: cannot resolve %s (%s); server down until it resolves",
                    entry.upstream,
                    entry.address,
                    reason,
                )
            else:
                log.warning(
                    "upstream %s: cannot resolve %s (%s); keeping its last address %s",
                    entry.upstream,
                    entry.address,
                    reason,
                    name.current,
                )
        if not name.reported:
            self._report(name, None)

    def _report(self, name: _Name, ip: str | None) -> None:
        if name.reported and ip == name.current:
            return
        entry = name.entry
        if name.reported and ip is not None and name.current is not None:
            log.info(
                "upstream %s: %s moved from %s to %s",
                entry.upstream,
                entry.address,
                name.current,
                ip,
            )
        name.current = ip
        name.reported = True
        try:
            self._on_change(entry.upstream, entry.address, ip)
        except Exception:
            log.exception("resolver change callback failed")
