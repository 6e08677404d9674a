"""Region health monitoring (phoenix_lb.gslb.health) with a fake check: no sockets."""

from __future__ import annotations

import asyncio
import random

from phoenix_lb.gslb.health import JITTER, RegionMonitor
from phoenix_lb.health.state import Transition


class FakeChecks:
    """Check results set by the test, per URL; counts calls."""

    def __init__(self, **results: bool) -> None:
        self.results = {f"http://{name}/health": ok for name, ok in results.items()}
        self.calls: dict[str, int] = {}

    async def __call__(self, url: str, timeout: float) -> tuple[bool, str]:
        self.calls[url] = self.calls.get(url, 0) + 1
        ok = self.results[url]
        return ok, "status 200" if ok else "status 503"


def monitor(
    checks: FakeChecks, *, interval: float = 10.0, rise: int = 2, fall: int = 3
) -> tuple[RegionMonitor, list[tuple[str, Transition]]]:
    changes: list[tuple[str, Transition]] = []
    now = [100.0]

    def clock() -> float:
        now[0] += 1.0
        return now[0]

    urls = {name.removeprefix("http://").split("/")[0]: name for name in checks.results}
    return (
        RegionMonitor(
            urls,
            interval=interval,
            timeout=1.0,
            rise=rise,
            fall=fall,
            check=checks,
            rng=random.Random(5),
            clock=clock,
            on_change=lambda name, t: changes.append((name, t)),
        ),
        changes,
    )


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_first_check_sets_the_initial_state() -> None:
    checks = FakeChecks(a=True, b=False)
    m, changes = monitor(checks)

    async def go() -> None:
        await m.start()
        try:
            assert m.healthy == frozenset({"a"})
            assert m.states["a"].up and not m.states["b"].up
            assert m.states["b"].last_reason == "status 503"
            assert changes == []  # the initial state is not a change
        finally:
            await m.stop()

    run(go())


def test_fall_and_rise_through_riseFall() -> None:
    checks = FakeChecks(a=True, b=True)
    m, changes = monitor(checks, rise=2, fall=3)

    async def go() -> None:
        await m.start()
        await m.stop()  # drive results by hand from here

    run(go())
    assert m.record("a", False, "timeout") is None
    assert m.record("a", False, "timeout") is None
    assert m.healthy == frozenset({"a", "b"})
    transition = m.record("a", False, "status 503")
    assert transition is not None and not transition.up
    assert m.healthy == frozenset({"b"})
    assert m.record("a", True, "status 200") is None
    assert m.record("a", True, "status 200") is not None
    assert m.healthy == frozenset({"a", "b"})
    assert [(name, t.new) for name, t in changes] == [("a", "down"), ("a", "up")]


def test_healthy_set_is_replaced_not_mutated() -> None:
    checks = FakeChecks(a=True)
    m, _ = monitor(checks, fall=1)
    run(m.start())
    before = m.healthy
    m.record("a", False, "x")
    assert before == frozenset({"a"}) and m.healthy == frozenset()


def test_delay_is_interval_less_up_to_ten_percent() -> None:
    m, _ = monitor(FakeChecks(a=True), interval=2.0)
    delays = [m.next_delay() for _ in range(1000)]
    assert all(2.0 * (1 - JITTER) <= d <= 2.0 for d in delays)
    assert max(delays) - min(delays) > 0.15  # jitter is really there


def test_loop_keeps_checking() -> None:
    checks = FakeChecks(a=True, b=True)

    async def go() -> None:
        m = RegionMonitor(
            {"a": "http://a/health", "b": "http://b/health"},
            interval=0.01,
            timeout=0.01,
            rise=1,
            fall=2,
            check=checks,
        )
        await m.start()
        try:
            checks.results["http://b/health"] = False
            for _ in range(200):
                await asyncio.sleep(0.01)
                if m.healthy == frozenset({"a"}):
                    break
            assert m.healthy == frozenset({"a"})
            assert checks.calls["http://a/health"] >= 3
        finally:
            await m.stop()

    run(go())


def test_a_raising_or_hanging_check_counts_as_failure() -> None:
    async def broken(url: str, timeout: float) -> tuple[bool, str]:
        if "hang" in url:
            await asyncio.sleep(60)
        raise RuntimeError("boom")

    async def go() -> None:
        m = RegionMonitor(
            {"x": "http://x/", "hang": "http://hang/"},
            interval=1.0,
            timeout=0.01,
            rise=1,
            fall=1,
            check=broken,
        )
        await m.start()
        try:
            assert m.healthy == frozenset()
            assert "RuntimeError" in m.states["x"].last_reason
            assert m.states["hang"].last_reason == "timeout"
        finally:
            await m.stop()

    run(go())
