"""Resolver: changes only, last good address kept, never-resolved names reported None.

DNS is replaced by an injected resolve function (the sandbox has no name
server, and /etc/hosts is not ours to edit); rounds are driven with
``refresh()``, except the one test of the background task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from phoenix_lb.upstream.resolver import NameEntry, Resolver

_T = TypeVar("_T")

POD = ("app", "pod-0.svc:8080", "pod-0.svc", 8080)


class FakeDns:
    """Answers from a table; a missing name raises like getaddrinfo does (EAI_NONAME)."""

    def __init__(self) -> None:
        self.records: dict[str, list[str]] = {}
        self.queries: list[tuple[str, int]] = []

    def set(self, name: str, ips: list[str] | None) -> None:
        if ips is None:
            self.records.pop(name, None)
        else:
            self.records[name] = ips

    async def __call__(self, host: str, port: int) -> list[str]:
        self.queries.append((host, port))
        await asyncio.sleep(0)
        if host not in self.records:
            raise OSError(-2, "Name or service not known")
        return list(self.records[host])


def run(factory: Callable[[asyncio.AbstractEventLoop], Awaitable[_T]]) -> _T:
    async def main() -> _T:
        return await factory(asyncio.get_running_loop())

    return asyncio.run(main())


Changes = list[tuple[str, str, str | None]]


def make(
    loop: asyncio.AbstractEventLoop, dns: FakeDns, names: list[tuple[str, str, str, int]]
) -> tuple[Resolver, Changes]:
    changes: Changes = []
    resolver = Resolver(
        loop, names, lambda u, a, ip: changes.append((u, a, ip)), interval=30.0, resolve=dns
    )
    return resolver, changes


def test_first_resolution_reported_then_only_changes() -> None:
    dns = FakeDns()
    dns.set("pod-0.svc", ["10.0.0.1"])

    async def scenario(loop: asyncio.AbstractEventLoop) -> Changes:
        resolver, changes = make(loop, dns, [POD])
        await resolver.refresh()
        await resolver.refresh()  # same answer: nothing reported
        dns.set("pod-0.svc", ["10.0.0.9"])  # the pod moved
        await resolver.refresh()
        await resolver.refresh()
        assert resolver.addresses() == {("app", "pod-0.svc:8080"): "10.0.0.9"}
        return changes

    assert run(scenario) == [
        ("app", "pod-0.svc:8080", "10.0.0.1"),
        ("app", "pod-0.svc:8080", "10.0.0.9"),
    ]
    assert dns.queries == [("pod-0.svc", 8080)] * 4


def test_transient_failure_keeps_the_last_good_address(caplog: pytest.LogCaptureFixture) -> None:
    dns = FakeDns()
    dns.set("pod-0.svc", ["10.0.0.1"])

    async def scenario(loop: asyncio.AbstractEventLoop) -> Changes:
        resolver, changes = make(loop, dns, [POD])
        await resolver.refresh()
        dns.set("pod-0.svc", None)
        for _ in range(3):
            await resolver.refresh()
        assert resolver.addresses() == {("app", "pod-0.svc:8080"): "10.0.0.1"}
        dns.set("pod-0.svc", ["10.0.0.1"])
        await resolver.refresh()
        return changes

    with caplog.at_level(logging.INFO, logger="phoenix_lb"):
        changes = run(scenario)
    assert changes == [("app", "pod-0.svc:8080", "10.0.0.1")]
    messages = [r.getMessage() for r in caplog.records]
    # Logged once when it starts failing and once when it recovers, not every round.
    assert [m for m in messages if "cannot resolve" in m] == [
        "upstream app: cannot resolve pod-0.svc:8080 (Name or service not known); "
        "keeping its last address 10.0.0.1"
    ]
    assert [m for m in messages if "resolves again" in m] == [
        "upstream app: pod-0.svc:8080 resolves again"
    ]


def test_never_resolved_name_reported_none_once_then_its_address() -> None:
    dns = FakeDns()

    async def scenario(loop: asyncio.AbstractEventLoop) -> Changes:
        resolver, changes = make(loop, dns, [POD])
        await resolver.refresh()
        await resolver.refresh()
        assert resolver.addresses() == {("app", "pod-0.svc:8080"): None}
        dns.set("pod-0.svc", ["10.0.0.5"])
        await resolver.refresh()
        return changes

    assert run(scenario) == [("app", "pod-0.svc:8080", None), ("app", "pod-0.svc:8080", "10.0.0.5")]


def test_empty_answer_and_hanging_or_broken_resolver_count_as_failures(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("phoenix_lb.upstream.resolver.RESOLVE_TIMEOUT", 0.05)

    async def empty(host: str, port: int) -> list[str]:
        return []

    async def hang(host: str, port: int) -> list[str]:
        await asyncio.sleep(10)
        return ["10.0.0.1"]

    async def broken(host: str, port: int) -> list[str]:
        raise RuntimeError("bug")

    async def scenario(loop: asyncio.AbstractEventLoop) -> Changes:
        changes: Changes = []
        for fn in (empty, hang, broken):
            resolver = Resolver(
                loop, [POD], lambda u, a, ip: changes.append((u, a, ip)), resolve=fn
            )
            await resolver.refresh()
        return changes

    assert run(scenario) == [("app", "pod-0.svc:8080", None)] * 3


def test_current_address_kept_while_still_in_the_answer() -> None:
    dns = FakeDns()
    dns.set("rr.svc", ["10.0.0.1", "10.0.0.2"])
    name = ("app", "rr.svc:80", "rr.svc", 80)

    async def scenario(loop: asyncio.AbstractEventLoop) -> Changes:
        resolver, changes = make(loop, dns, [name])
        await resolver.refresh()
        dns.set("rr.svc", ["10.0.0.2", "10.0.0.1"])  # round-robin DNS reorders
        await resolver.refresh()
        dns.set("rr.svc", ["10.0.0.3", "10.0.0.2"])  # still there
        await resolver.refresh()
        dns.set("rr.svc", ["10.0.0.3", "10.0.0.4"])  # gone: take the first
        await resolver.refresh()
        return changes

    assert run(scenario) == [("app", "rr.svc:80", "10.0.0.1"), ("app", "rr.svc:80", "10.0.0.3")]


def test_ip_literals_reported_once_and_never_resolved() -> None:
    dns = FakeDns()
    names = [("app", "10.0.0.1:80", "10.0.0.1", 80), ("app", "[::1]:80", "::1", 80)]

    async def scenario(loop: asyncio.AbstractEventLoop) -> Changes:
        resolver, changes = make(loop, dns, names)
        await resolver.refresh()
        await resolver.refresh()
        return changes

    assert run(scenario) == [("app", "10.0.0.1:80", "10.0.0.1"), ("app", "[::1]:80", "::1")]
    assert dns.queries == []


def test_update_names_keeps_known_names_and_resolves_new_ones() -> None:
    dns = FakeDns()
    dns.set("pod-0.svc", ["10.0.0.1"])
    dns.set("pod-1.svc", ["10.0.0.2"])
    pod1 = NameEntry("app", "pod-1.svc:8080", "pod-1.svc", 8080)

    async def scenario(loop: asyncio.AbstractEventLoop) -> Changes:
        resolver, changes = make(loop, dns, [POD])
        await resolver.refresh()
        resolver.update_names([NameEntry(*POD), pod1])
        await resolver.refresh()
        assert set(resolver.addresses()) == {("app", "pod-0.svc:8080"), ("app", "pod-1.svc:8080")}
        resolver.update_names([pod1])
        await resolver.refresh()
        assert resolver.addresses() == {("app", "pod-1.svc:8080"): "10.0.0.2"}
        return changes

    assert run(scenario) == [
        ("app", "pod-0.svc:8080", "10.0.0.1"),
        ("app", "pod-1.svc:8080", "10.0.0.2"),
    ]


def test_background_rounds_follow_a_move() -> None:
    dns = FakeDns()
    dns.set("pod-0.svc", ["10.0.0.1"])

    async def scenario(loop: asyncio.AbstractEventLoop) -> Changes:
        changes: Changes = []
        moved = asyncio.Event()

        def on_change(u: str, a: str, ip: str | None) -> None:
            changes.append((u, a, ip))
            if ip == "10.0.0.9":
                moved.set()

        resolver = Resolver(loop, [POD], on_change, interval=0.05, resolve=dns)
        resolver.start()
        await asyncio.sleep(0.01)
        dns.set("pod-0.svc", ["10.0.0.9"])
        async with asyncio.timeout(2.0):
            await moved.wait()
        await resolver.stop()
        return changes

    assert run(scenario) == [
        ("app", "pod-0.svc:8080", "10.0.0.1"),
        ("app", "pod-0.svc:8080", "10.0.0.9"),
    ]
