"""Active health checks of upstream servers (nginx_upstream_check_module's ``check``).

One task per server probes it every ``interval``: a TCP connect (``tcp``), or a
connect, the configured ``send`` bytes and the status line of the answer
(``http``), the whole probe bounded by ``timeout``.  Each result feeds the
server's :class:`~phoenix_lb.health.state.RiseFall`; only a
:class:`~phoenix_lb.health.state.Transition` is reported, through the
``on_transition`` callback, and logged once.

This module reports facts and owns no server: the control plane decides what a
transition means (stop sending new requests, start the slow-start ramp) and
tells the workers.  See the wiring notes in the class docstring.

Timing.  The first probe of each server waits a random part of ``interval``
(``[0, interval)``) so that N servers are not probed in the same millisecond
after a start or reload; later probes start ``interval`` +-10% after the start
of the previous one (the GSLB checker and HAProxy's ``spread-checks`` use the
same idea).  Probes of one server never overlap: the schema keeps ``timeout``
within ``interval``, so the worst case to mark a dead server down is about
``fall x interval x 1.1``.

Names.  A target whose ``connect_host`` is None (its name never resolved)
fails every probe with reason ``unresolved`` and starts down whatever
``initial_state`` says: the issue asks that such a server start down, and a
server that starts down can only come up through ``rise`` good probes, which
the control plane then hears about as a normal transition.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from phoenix_lb.config.schema import HealthCheckConfig, UpstreamConfig, split_host_port
from phoenix_lb.health.probe import MAX_STATUS_LINE, classify_status, expect_codes, unescape_send
from phoenix_lb.health.state import RiseFall, Transition

__all__ = [
    "JITTER",
    "CheckSettings",
    "CheckTarget",
    "HealthChecker",
    "TargetKey",
    "first_delay",
    "next_delay",
    "probe",
    "targets_from_config",
]

log = logging.getLogger("phoenix_lb")

#: per-round jitter: the next probe starts interval x (1 +- JITTER) after the last
JITTER = 0.1

#: (upstream name, server address as configured): the identity of a checked server
TargetKey = tuple[str, str]


def first_delay(interval: float, u: float) -> float:
    """Delay before a server's first probe, ``u`` uniform in [0, 1): in [0, interval)."""
    return interval * u


def next_delay(interval: float, u: float) -> float:
    """Delay from the start of one probe to the next, ``u`` uniform in [0, 1): +-JITTER."""
    return interval * (1.0 + JITTER * (2.0 * u - 1.0))


@dataclass(frozen=True, slots=True)
class CheckSettings:
    """How to check the servers of one upstream (a compiled ``health_check`` section)."""

    type: Literal["http", "tcp"] = "http"
    interval: float = 3.0
    #: bounds connect + send + status line
    timeout: float = 1.0
    rise: int = 2
    fall: int = 5
    #: raw request bytes (http only)
    send: bytes = b"HEAD /health HTTP/1.0\r\n\r\n"
    #: accepted status codes (http only)
    expect: frozenset[int] = frozenset(range(200, 400))
    initial_up: bool = True
    #: probe this port instead of the server's (None: the server's)
    port: int | None = None

    @classmethod
    def from_config(cls, config: HealthCheckConfig) -> CheckSettings:
        """Compile a validated ``health_check`` section."""
        return cls(
            type=config.type,
            interval=config.interval,
            timeout=config.timeout,
            rise=config.rise,
            fall=config.fall,
            send=unescape_send(config.send),
            expect=expect_codes(config.expect),
            initial_up=config.initial_state == "up",
            port=config.port,
        )


@dataclass(frozen=True, slots=True)
class CheckTarget:
    """One server to check."""

    upstream: str
    #: the server's address as configured ("host:port"): its identity
    address: str
    #: the IP address to connect to; None while the name has never resolved
    connect_host: str | None
    #: the server's port (``settings.port`` overrides it for probes)
    port: int
    settings: CheckSettings

    @property
    def key(self) -> TargetKey:
        return (self.upstream, self.address)

    @property
    def probe_port(self) -> int:
        return self.settings.port if self.settings.port is not None else self.port


def _is_ip(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return False
    return True


def targets_from_config(
    upstreams: Mapping[str, UpstreamConfig],
    connect_hosts: Mapping[TargetKey, str | None] | None = None,
) -> list[CheckTarget]:
    """A target for every server of every upstream that has a ``health_check``.

    ``connect_hosts`` gives the resolved address of servers configured by
    name (e.g. :meth:`phoenix_lb.upstream.resolver.Resolver.addresses`); an
    IP literal is its own connect host, a name missing from it is unresolved.
    """
    hosts = connect_hosts or {}
    out: list[CheckTarget] = []
    for name, upstream in upstreams.items():
        if upstream.health_check is None:
            continue
        settings = CheckSettings.from_config(upstream.health_check)
        for server in upstream.servers:
            host, port = split_host_port(server.address)
            key = (name, server.address)
            connect = hosts.get(key, host if _is_ip(host) else None)
            out.append(CheckTarget(name, server.address, connect, port, settings))
    return out


async def probe(host: str, port: int, settings: CheckSettings) -> tuple[bool, str]:
    """Check one server once: ``(ok, reason)``; never raises (except CancelledError).

    The socket is closed after each probe, whatever happened.
    """
    writer: asyncio.StreamWriter | None = None
    phase = "connect"
    try:
        async with asyncio.timeout(settings.timeout):
            reader, writer = await asyncio.open_connection(host, port, limit=MAX_STATUS_LINE)
            if settings.type == "tcp":
                return True, "connected"
            phase = "receive"
            writer.write(settings.send)
            line = await reader.readuntil(b"\n")
    except TimeoutError:
        return False, "timeout"
    except ConnectionRefusedError:
        return False, "connect refused"
    except asyncio.IncompleteReadError as exc:
        return False, "invalid response" if exc.partial else "closed without response"
    except asyncio.LimitOverrunError:
        return False, "invalid response"
    except OSError as exc:
        return False, f"{phase} error: {exc.strerror or exc.__class__.__name__}"
    finally:
        if writer is not None:
            writer.close()
    return classify_status(line, settings.expect)


class _Entry:
    """A target, its state and its task (mutable; owned by the checker)."""

    __slots__ = ("state", "target", "task")

    def __init__(self, target: CheckTarget, state: RiseFall) -> None:
        self.target = target
        self.state = state
        self.task: asyncio.Task[None] | None = None


TransitionFn = Callable[[CheckTarget, Transition], None]
ResultFn = Callable[[CheckTarget, bool, str, float], None]


class HealthChecker:
    """Probes every target in the background and reports transitions.

    Callbacks run on ``loop`` and must not block:

    * ``on_transition(target, transition)`` once per state change (already
      logged here);
    * ``on_result(target, ok, reason, seconds)`` after every probe, with how
      long it took (for metrics).

    Wiring for the control plane:

    * At start (and for targets added by :meth:`update_targets`), a server's
      initial health is ``states()[key].up``: ``initial_state``, except that
      unresolved targets start down.
    * On a transition to down, stop giving the server new requests
      (``accepting = False``; in-flight requests finish); to up, accept again
      and call ``mark_recovered(now)`` so ``slow_start`` ramps it in.
    * When the resolver reports a new address, call :meth:`set_connect_host`
      (and update the pools' ``connect_host``).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        targets: list[CheckTarget],
        on_transition: TransitionFn,
        on_result: ResultFn | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.loop = loop
        self._on_transition = on_transition
        self._on_result = on_result
        self._rng = rng or random.Random()
        self._entries: dict[TargetKey, _Entry] = {}
        self._running = False
        for target in targets:
            self._entries[target.key] = _Entry(target, self._new_state(target))

    @staticmethod
    def _new_state(target: CheckTarget) -> RiseFall:
        settings = target.settings
        initial_up = settings.initial_up and target.connect_host is not None
        return RiseFall(settings.rise, settings.fall, initial_up=initial_up)

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        """Start probing every target (each after its own random first delay)."""
        self._running = True
        for entry in self._entries.values():
            if entry.task is None:
                self._spawn(entry)

    async def stop(self) -> None:
        """Cancel every probe task and wait for them to end."""
        self._running = False
        tasks = [entry.task for entry in self._entries.values() if entry.task is not None]
        for entry in self._entries.values():
            entry.task = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def update_targets(self, targets: list[CheckTarget]) -> None:
        """Replace the target list (config reload).

        A target whose (upstream, address) was already checked keeps its
        rise/fall state (a reload does not make a down server up, nor the
        reverse); if its settings or probe port changed, its task restarts
        with a new first delay.  Removed targets stop being probed.
        """
        new = {target.key: target for target in targets}
        for key in [key for key in self._entries if key not in new]:
            task = self._entries.pop(key).task
            if task is not None:
                task.cancel()
        for key, target in new.items():
            existing = self._entries.get(key)
            if existing is None:
                entry = self._entries[key] = _Entry(target, self._new_state(target))
                if self._running:
                    self._spawn(entry)
                continue
            entry = existing
            old = entry.target
            entry.target = target
            entry.state.rise = target.settings.rise
            entry.state.fall = target.settings.fall
            if (old.settings, old.probe_port) != (target.settings, target.probe_port):
                if entry.task is not None:
                    entry.task.cancel()
                    entry.task = None
                if self._running:
                    self._spawn(entry)

    def set_connect_host(self, upstream: str, address: str, host: str | None) -> None:
        """Probe ``(upstream, address)`` at ``host`` from its next probe on (DNS changed)."""
        entry = self._entries.get((upstream, address))
        if entry is not None:
            entry.target = dataclasses.replace(entry.target, connect_host=host)

    # ------------------------------------------------------------------ queries

    def states(self) -> dict[TargetKey, RiseFall]:
        """The rise/fall state of every target (live objects: read, do not write)."""
        return {key: entry.state for key, entry in self._entries.items()}

    def targets(self) -> list[CheckTarget]:
        """The current targets (with their current connect hosts)."""
        return [entry.target for entry in self._entries.values()]

    # ------------------------------------------------------------------ probing

    def _spawn(self, entry: _Entry) -> None:
        upstream, address = entry.target.key
        entry.task = self.loop.create_task(
            self._run(entry), name=f"health-check {upstream}/{address}"
        )

    async def _run(self, entry: _Entry) -> None:
        loop = self.loop
        rng = self._rng
        await asyncio.sleep(first_delay(entry.target.settings.interval, rng.random()))
        while True:
            target = entry.target
            started = loop.time()
            if target.connect_host is None:
                ok, reason = False, "unresolved"
            else:
                ok, reason = await probe(target.connect_host, target.probe_port, target.settings)
            now = loop.time()
            self.record(entry.target, ok, reason, now, now - started)
            due = started + next_delay(target.settings.interval, rng.random())
            await asyncio.sleep(max(0.0, due - loop.time()))

    def record(
        self, target: CheckTarget, ok: bool, reason: str, now: float, seconds: float = 0.0
    ) -> Transition | None:
        """Feed one probe result (the probe tasks call this; tests may too)."""
        entry = self._entries.get(target.key)
        if entry is None:  # removed by a reload while its probe ran
            return None
        if self._on_result is not None:
            try:
                self._on_result(target, ok, reason, seconds)
            except Exception:
                log.exception("health check result callback failed")
        transition = entry.state.record(ok, reason, now)
        if transition is None:
            return None
        if transition.up:
            log.info("upstream %s: server %s is up (was down): %s", *target.key, transition.reason)
        else:
            log.warning(
                "upstream %s: server %s is down (was up): %s", *target.key, transition.reason
            )
        try:
            self._on_transition(target, transition)
        except Exception:
            log.exception("health check transition callback failed")
        return transition
