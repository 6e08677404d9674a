"""Active health checks against real backends (phoenix_lb.health.checker).

The checker runs on a uvloop loop in the test thread; backends run in their
own threads.  Intervals are 0.1-0.3 s so the whole module takes a few seconds.
Results and transitions are recorded in order, so "down after exactly
``fall`` probes" is checked by counting, not by timing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from phoenix_lb.eventloop import new_event_loop
from phoenix_lb.health.checker import CheckSettings, CheckTarget, HealthChecker
from phoenix_lb.health.probe import expect_codes
from phoenix_lb.health.state import Transition
from tests.support import Backend, RefusingPort, SilentPort

_T = TypeVar("_T")

FAST = CheckSettings(interval=0.1, timeout=0.1, rise=2, fall=3)


class Recorder:
    """Every probe result and transition, in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        #: (address, ok, reason, seconds, loop time)
        self.results: list[tuple[str, bool, str, float, float]] = []
        #: (address, transition, how many results of that address came before it, inclusive)
        self.transitions: list[tuple[str, Transition, int]] = []

    def on_result(self, target: CheckTarget, ok: bool, reason: str, seconds: float) -> None:
        self.results.append((target.address, ok, reason, seconds, self.loop.time()))

    def on_transition(self, target: CheckTarget, transition: Transition) -> None:
        self.transitions.append((target.address, transition, len(self.of(target.address))))

    def of(self, address: str) -> list[tuple[bool, str]]:
        return [(ok, reason) for a, ok, reason, _, _ in self.results if a == address]

    async def wait(self, predicate: Callable[[], bool], timeout: float = 3.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.01)


def run(scenario: Callable[[asyncio.AbstractEventLoop], Awaitable[_T]]) -> _T:
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(scenario(runner.get_loop()))


def target(address: str, settings: CheckSettings = FAST, *, host: str | None = None) -> CheckTarget:
    ip, _, port = address.rpartition(":")
    return CheckTarget("app", address, host or ip, int(port), settings)


def start(
    loop: asyncio.AbstractEventLoop, targets: list[CheckTarget], seed: int = 1
) -> tuple[HealthChecker, Recorder]:
    rec = Recorder(loop)
    checker = HealthChecker(
        loop, targets, rec.on_transition, rec.on_result, rng=random.Random(seed)
    )
    checker.start()
    return checker, rec


def streak_before(results: list[tuple[bool, str]], end: int) -> tuple[int, bool]:
    """Length and value of the run of equal ok values ending at results[end - 1]."""
    last = results[end - 1][0]
    n = 0
    while n < end and results[end - 1 - n][0] == last:
        n += 1
    return n, last


def test_failing_health_is_down_after_fall_probes_and_up_after_rise(
    backends: Callable[..., list[Backend]],
) -> None:
    (b,) = backends(1)

    async def scenario(loop: asyncio.AbstractEventLoop) -> Recorder:
        checker, rec = start(loop, [target(b.address)])
        await rec.wait(lambda: len(rec.results) >= 3)
        assert rec.transitions == []
        b.healthy = False
        switched = loop.time()
        await rec.wait(lambda: len(rec.transitions) == 1)
        # fall x interval, +10% jitter, + one probe that may have been under way.
        assert loop.time() - switched < 3 * 0.1 * 1.1 + 0.1 + 0.2
        b.healthy = True
        await rec.wait(lambda: len(rec.transitions) == 2)
        await checker.stop()
        return rec

    rec = run(scenario)
    results = rec.of(b.address)
    (_, down, n_down), (_, up, n_up) = rec.transitions
    assert (down.up, down.reason, down.old, down.new) == (False, "status 503", "up", "down")
    assert (up.up, up.reason) == (True, "status 200")
    # Exactly fall (3) failures in a row caused the down transition, after successes...
    assert streak_before(results, n_down) == (3, False)
    assert results[n_down - 4 : n_down] == [(True, "status 200")] + [(False, "status 503")] * 3
    # ... and exactly rise (2) successes the up transition.
    assert streak_before(results, n_up) == (2, True)
    assert results[n_up - 3] == (False, "status 503")


def test_backend_receives_exactly_head_health_on_a_new_closed_connection(
    backends: Callable[..., list[Backend]],
) -> None:
    (b,) = backends(1)

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        checker, rec = start(loop, [target(b.address)])
        await rec.wait(lambda: len(rec.results) >= 3)
        await checker.stop()

    run(scenario)
    requests = b.requests
    assert len(requests) >= 3
    for request in requests:
        assert request.raw_head == b"HEAD /health HTTP/1.0\r\n\r\n"
        assert (request.method, request.target, request.version) == ("HEAD", "/health", "HTTP/1.0")
    # One connection per probe, each closed by the checker.
    assert len({r.conn_id for r in requests}) == len(requests)
    b.wait_until(lambda backend: backend.open_connections == 0, timeout=2.0)
    assert b.errors == []


def test_stopped_backend_is_connect_refused_and_comes_back(
    backends: Callable[..., list[Backend]],
) -> None:
    (b,) = backends(1)
    settings = dataclasses.replace(FAST, fall=2, rise=1)

    async def scenario(loop: asyncio.AbstractEventLoop) -> Recorder:
        checker, rec = start(loop, [target(b.address, settings)])
        await rec.wait(lambda: len(rec.results) >= 1)
        await loop.run_in_executor(None, b.stop)
        await rec.wait(lambda: len(rec.transitions) == 1)
        await loop.run_in_executor(None, b.start)  # same port
        await rec.wait(lambda: len(rec.transitions) == 2)
        await checker.stop()
        return rec

    rec = run(scenario)
    (_, down, _), (_, up, _) = rec.transitions
    assert (down.up, down.reason) == (False, "connect refused")
    assert (up.up, up.reason) == (True, "status 200")


def test_silent_port_times_out_within_timeout() -> None:
    settings = CheckSettings(interval=0.3, timeout=0.2, rise=1, fall=1)
    with SilentPort() as silent:

        async def scenario(loop: asyncio.AbstractEventLoop) -> Recorder:
            checker, rec = start(loop, [target(silent.address, settings)])
            await rec.wait(lambda: len(rec.transitions) == 1)
            await checker.stop()
            return rec

        rec = run(scenario)
    (_, ok, reason, seconds, _) = rec.results[0]
    assert (ok, reason) == (False, "timeout")
    assert 0.19 <= seconds < 0.35  # uvloop timers have 1 ms resolution
    assert rec.transitions[0][1].reason == "timeout"


def test_first_probes_are_spread_over_the_interval(backends: Callable[..., list[Backend]]) -> None:
    (b,) = backends(1)
    settings = CheckSettings(interval=0.5, timeout=0.2)
    # Ten servers (distinct identities) that all point at the same backend.
    targets = [
        CheckTarget("app", f"server-{i}:{b.port}", "127.0.0.1", b.port, settings) for i in range(10)
    ]

    async def scenario(loop: asyncio.AbstractEventLoop) -> tuple[float, list[float]]:
        started = loop.time()
        checker, rec = start(loop, targets, seed=42)
        await rec.wait(lambda: len({r[0] for r in rec.results}) == 10)
        await checker.stop()
        firsts: dict[str, float] = {}
        for address, _, _, seconds, at in rec.results:
            firsts.setdefault(address, at - seconds)
        return started, sorted(firsts.values())

    started, firsts = run(scenario)
    offsets = [t - started for t in firsts]
    assert all(0.0 <= o < 0.5 + 0.05 for o in offsets)
    # Not in lockstep: spread over most of the interval, no burst of probes at once.
    assert offsets[-1] - offsets[0] > 0.25
    assert max(sum(1 for o in offsets if w <= o < w + 0.05) for w in offsets) <= 4


def test_tcp_check_connects_without_sending() -> None:
    settings = CheckSettings(type="tcp", interval=0.1, timeout=0.1, rise=1, fall=2)
    with Backend("tcp") as b, RefusingPort() as refusing:

        async def scenario(loop: asyncio.AbstractEventLoop) -> Recorder:
            checker, rec = start(
                loop, [target(b.address, settings), target(refusing.address, settings)]
            )
            await rec.wait(lambda: len(rec.transitions) == 1 and len(rec.of(b.address)) >= 3)
            await checker.stop()
            return rec

        rec = run(scenario)
        b.wait_until(lambda backend: backend.open_connections == 0, timeout=2.0)
        assert b.connections_accepted >= 3
        assert b.requests == [] and b.errors == []
    assert set(rec.of(b.address)) == {(True, "connected")}
    address, transition, n = rec.transitions[0]
    assert (address, transition.up, transition.reason, n) == (
        refusing.address,
        False,
        "connect refused",
        2,
    )


def test_initial_state_down_needs_rise_successes(backends: Callable[..., list[Backend]]) -> None:
    (b,) = backends(1)
    settings = dataclasses.replace(FAST, rise=3, initial_up=False)

    async def scenario(loop: asyncio.AbstractEventLoop) -> tuple[bool, Recorder]:
        checker, rec = start(loop, [target(b.address, settings)])
        initially_up = checker.states()[("app", b.address)].up
        await rec.wait(lambda: len(rec.transitions) == 1)
        await checker.stop()
        return initially_up, rec

    initially_up, rec = run(scenario)
    assert not initially_up
    (_, transition, n) = rec.transitions[0]
    assert (transition.up, transition.reason, n) == (True, "status 200", 3)


def test_unresolved_target_starts_down_until_its_address_is_set(
    backends: Callable[..., list[Backend]],
) -> None:
    (b,) = backends(1)
    address = f"pod-0.app.svc:{b.port}"
    unresolved = CheckTarget("app", address, None, b.port, dataclasses.replace(FAST, rise=1))

    async def scenario(loop: asyncio.AbstractEventLoop) -> Recorder:
        checker, rec = start(loop, [unresolved])
        assert not checker.states()[("app", address)].up
        await rec.wait(lambda: len(rec.results) >= 2)
        checker.set_connect_host("app", address, "127.0.0.1")  # what the resolver found
        await rec.wait(lambda: len(rec.transitions) == 1)
        await checker.stop()
        return rec

    rec = run(scenario)
    assert rec.of(address)[:2] == [(False, "unresolved")] * 2
    assert rec.transitions[0][1].up and rec.transitions[0][1].reason == "status 200"


@pytest.mark.parametrize(
    ("send", "expect", "result"),
    [
        (b"GET /status/404 HTTP/1.0\r\n\r\n", ["2xx", "3xx"], (False, "status 404")),
        (b"GET /status/404 HTTP/1.0\r\n\r\n", [404], (True, "status 404")),
        (b"GET /health HTTP/1.1\r\nHost: app\r\n\r\n", ["2xx"], (True, "status 200")),
        (b"GET /close HTTP/1.0\r\n\r\n", ["2xx"], (False, "closed without response")),
    ],
)
def test_send_and_expect(
    backends: Callable[..., list[Backend]],
    send: bytes,
    expect: list[object],
    result: tuple[bool, str],
) -> None:
    (b,) = backends(1)
    settings = dataclasses.replace(FAST, send=send, expect=expect_codes(expect))

    async def scenario(loop: asyncio.AbstractEventLoop) -> Recorder:
        checker, rec = start(loop, [target(b.address, settings)])
        await rec.wait(lambda: len(rec.results) >= 1)
        await checker.stop()
        return rec

    assert run(scenario).of(b.address)[0] == result
    assert b.requests[0].raw_head == send


def test_probe_port_override_and_reload(backends: Callable[..., list[Backend]]) -> None:
    app, admin = backends(2)
    # The server takes traffic on app's port; its health lives on admin's port.
    settings = dataclasses.replace(FAST, port=admin.port, fall=1)

    async def scenario(loop: asyncio.AbstractEventLoop) -> Recorder:
        checker, rec = start(loop, [target(app.address, settings)])
        await rec.wait(lambda: len(rec.results) >= 2)
        admin.healthy = False
        await rec.wait(lambda: len(rec.transitions) == 1)
        # Reload with a slower interval: the server stays down (state kept).
        checker.update_targets([target(app.address, dataclasses.replace(settings, interval=0.2))])
        assert not checker.states()[("app", app.address)].up
        admin.healthy = True
        await rec.wait(lambda: len(rec.transitions) == 2)
        # Reload without the server: its probes stop.
        checker.update_targets([])
        count = len(rec.results)
        await asyncio.sleep(0.3)
        assert len(rec.results) == count
        await checker.stop()
        return rec

    rec = run(scenario)
    assert app.requests == []
    assert [t.up for _, t, _ in rec.transitions] == [False, True]
