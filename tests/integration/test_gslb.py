"""``phoenix-lb gslb``: the real DNS server on 127.0.0.1, regions' health served locally.

Every DNS packet and every health check goes to 127.0.0.1 only; the VIPs in
answers are documentation addresses (RFC 5737 / RFC 3849) and only data.

Region health endpoints are :class:`tests.support.Backend` servers whose
``/health`` answers 200 or 503 as the test flips ``backend.healthy``.  Since
every test client is 127.0.0.1, region preference is driven with EDNS Client
Subnet (dnspython), or by giving a region the subnet 127.0.0.0/8.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
import yaml

from phoenix_lb.eventloop import new_event_loop
from phoenix_lb.gslb.config import GslbConfig
from phoenix_lb.gslb.health import http_check
from phoenix_lb.gslb.server import GslbService
from tests.support import Backend, RefusingPort, SilentPort

from .helpers import free_port, phoenix_lb_command

_T = TypeVar("_T")

ZONE = "phoenix-orch.example.com"
VIP_1 = "192.0.2.10"
VIP_1_V6 = "2001:db8:1::10"
VIP_2 = "203.0.113.10"
NET_1 = "198.51.100.0/24"  # region-1's clients
NET_2 = "100.64.0.0/16"  # region-2's clients
# Short intervals keep the tests fast; the failover bound scales with them.
INTERVAL = 0.2
RISE = 2
FALL = 3
# Slack on timing assertions: thread scheduling, GIL, a busy CI machine.
SLACK = 1.0


def requires_tool(name: str) -> str:
    """The tool's path; skip (or fail when CI=true) if it is not installed."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian package: see scripts/setup)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI must have it")
        pytest.skip(message)
    return path


# ---------------------------------------------------------------- the server


class GslbInstance:
    """GslbService on a uvloop loop in a background thread."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = GslbConfig.model_validate(config)
        self.loop = new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="gslb-loop", daemon=True)
        self.thread.start()
        self.service = GslbService(self.config, rng=random.Random(7))
        try:
            self.call(self.service.start())
        except BaseException:
            self._shutdown()
            raise
        self.host, self.port = self.service.addresses[0]
        self.admin_port = self.service.admin.address[1]

    def call(self, coro: Coroutine[Any, Any, _T], timeout: float = 10.0) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        try:
            self.call(self.service.stop())
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10.0)
        if not self.thread.is_alive():
            self.loop.close()


@pytest.fixture
def gslb(
    backends: Callable[..., list[Backend]],
) -> Iterator[Callable[[dict[str, Any]], GslbInstance]]:
    """Factory: ``gslb(config_dict)`` starts a GSLB in-process; stopped at teardown.

    It depends on ``backends`` so that the regions' health endpoints outlive
    it: stopping a backend while the GSLB still probes it would cut probes
    in the middle.
    """
    started: list[GslbInstance] = []

    def start(config: dict[str, Any]) -> GslbInstance:
        instance = GslbInstance(config)
        started.append(instance)
        return instance

    yield start
    for instance in reversed(started):
        instance.stop()


def make_config(
    health_1: str,
    health_2: str,
    *,
    subnets_1: list[str] | None = None,
    subnets_2: list[str] | None = None,
    vips_1: list[str] | None = None,
    listen: str = "127.0.0.1:0",
    admin: str = "127.0.0.1:0",
    **overrides: Any,
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "listen": [listen],
        "zone": ZONE,
        "ttl": 5,
        "regions": {
            "region-1": {
                "vips": vips_1 or [VIP_1, VIP_1_V6],
                "health": health_1,
                "subnets": [NET_1] if subnets_1 is None else subnets_1,
            },
            "region-2": {
                "vips": [VIP_2],
                "health": health_2,
                "subnets": [NET_2] if subnets_2 is None else subnets_2,
            },
        },
        "policy": "nearest_healthy",
        "all_down": "return_all",
        "health_check": {"interval": INTERVAL, "timeout": 0.15, "rise": RISE, "fall": FALL},
        "admin": {"bind": admin},
    }
    config.update(overrides)
    return config


@pytest.fixture
def regions(
    backends: Callable[..., list[Backend]],
) -> tuple[Backend, Backend]:
    """The two regions' balancers (their /health), both healthy."""
    one, two = backends(2, names=["region-1-lb", "region-2-lb"])
    return one, two


def health_url(backend: Backend) -> str:
    return f"http://{backend.address}/health"


# ---------------------------------------------------------------- client helpers


def ask(
    instance: GslbInstance,
    name: str = ZONE,
    rdtype: str = "A",
    *,
    ecs: str | None = None,
    tcp: bool = False,
    timeout: float = 2.0,
) -> dns.message.Message:
    if ecs is not None:
        address, prefix = ecs.split("/")
        message = dns.message.make_query(
            name, rdtype, use_edns=0, options=[dns.edns.ECSOption(address, int(prefix))]
        )
    else:
        message = dns.message.make_query(name, rdtype, use_edns=False)
    if tcp:
        return dns.query.tcp(message, "127.0.0.1", port=instance.port, timeout=timeout)
    return dns.query.udp(message, "127.0.0.1", port=instance.port, timeout=timeout)


def addresses(response: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in response.answer for rd in rrset)


def ecs_scope(response: dns.message.Message) -> tuple[int, int]:
    (option,) = [o for o in response.options if isinstance(o, dns.edns.ECSOption)]
    return option.srclen, option.scopelen


def wait_for_answer(
    instance: GslbInstance, want: list[str], *, ecs: str | None, timeout: float
) -> float:
    """Seconds until the A answer is ``want``; AssertionError after ``timeout``."""
    started = time.monotonic()
    while True:
        got = addresses(ask(instance, ecs=ecs))
        elapsed = time.monotonic() - started
        if got == want:
            return elapsed
        if elapsed > timeout:
            raise AssertionError(f"answer still {got}, not {want}, after {elapsed:.2f}s")
        time.sleep(0.01)


def http_get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_tcp_client_trickling_one_message_is_cut_off(
    gslb: Callable[..., GslbInstance],
    regions: tuple[Backend, Backend],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import phoenix_lb.gslb.server as gslb_server

    monkeypatch.setattr(gslb_server, "TCP_IDLE_TIMEOUT", 0.6)
    one, two = regions
    instance = gslb(make_config(health_url(one), health_url(two)))
    with socket.create_connection((instance.host, instance.port), timeout=5) as sock:
        sock.sendall(b"\x00\x64")  # a 100-byte message that never completes
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < 4:
            try:
                sock.sendall(b"x")
            except OSError:
                closed = True
                break
            sock.settimeout(0.2)
            try:
                if sock.recv(16) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
        # Idle is counted between whole queries, not reset by each byte.
        assert closed and time.monotonic() - started < 2.5


def test_admin_refuses_foreign_host_names(
    gslb: Callable[..., GslbInstance], regions: tuple[Backend, Backend]
) -> None:
    one, two = regions
    config = make_config(health_url(one), health_url(two))
    config["admin"]["allowed_hosts"] = ["gslb.example.net"]
    instance = gslb(config)
    port = instance.admin_port

    def status_for(host: str) -> int:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(f"GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            return int(sock.makefile("rb").readline().split()[1])

    # A name that resolves here through DNS rebinding is refused; the names
    # of the endpoint itself, IP literals and allowed names are served.
    assert status_for("evil.example") == 421
    assert status_for(f"localhost:{port}") == 200
    assert status_for("192.0.2.1:8080") == 200
    assert status_for("gslb.example.net") == 200


# ---------------------------------------------------------------- region preference


def test_region_by_client_subnet(
    gslb: Callable[..., GslbInstance], regions: tuple[Backend, Backend]
) -> None:
    one, two = regions
    instance = gslb(make_config(health_url(one), health_url(two)))
    response = ask(instance, ecs="198.51.100.23/24")
    assert response.rcode() == dns.rcode.NOERROR and response.flags & dns.flags.AA
    assert addresses(response) == [VIP_1]
    assert ecs_scope(response) == (24, 24)
    assert addresses(ask(instance, ecs="100.64.7.0/24")) == [VIP_2]
    # A client in neither region's networks gets both (nearest_healthy's fallback).
    assert addresses(ask(instance, ecs="192.0.2.0/24")) == [VIP_1, VIP_2]
    assert addresses(ask(instance, rdtype="AAAA", ecs="198.51.100.0/24")) == [VIP_1_V6]
    assert addresses(ask(instance, ecs="198.51.100.0/24", tcp=True)) == [VIP_1]


def test_region_by_resolver_address_and_ecs_preferred(
    gslb: Callable[..., GslbInstance], regions: tuple[Backend, Backend]
) -> None:
    one, two = regions
    instance = gslb(make_config(health_url(one), health_url(two), subnets_2=["127.0.0.0/8"]))
    assert addresses(ask(instance)) == [VIP_2]  # we are 127.0.0.1: region-2
    assert addresses(ask(instance, tcp=True)) == [VIP_2]
    # ECS wins over the resolver's own address.
    assert addresses(ask(instance, ecs="198.51.100.0/24")) == [VIP_1]
    # ECS with source prefix 0: the client asked not to be located; the resolver is.
    assert addresses(ask(instance, ecs="0.0.0.0/0")) == [VIP_2]


# ---------------------------------------------------------------- health: failover, recovery


def test_failover_within_interval_times_fall_and_recovery_after_rise(
    gslb: Callable[..., GslbInstance], regions: tuple[Backend, Backend]
) -> None:
    one, two = regions
    instance = gslb(make_config(health_url(one), health_url(two)))
    client = "198.51.100.0/24"
    assert addresses(ask(instance, ecs=client)) == [VIP_1]

    one.healthy = False
    bound = INTERVAL * FALL
    took = wait_for_answer(instance, [VIP_2], ecs=client, timeout=bound + SLACK)
    print(
        f"\nfailover: region-1 out of DNS {took:.3f}s after its /health turned 503 "
        f"(bound interval x fall = {bound:.2f}s)"
    )
    assert took > INTERVAL * (FALL - 1) * 0.9 - 0.05, "marked down before `fall` failures"
    assert instance.service.monitor.states["region-1"].last_reason == "status 503"

    one.healthy = True
    bound = INTERVAL * RISE
    took = wait_for_answer(instance, [VIP_1], ecs=client, timeout=bound + SLACK)
    print(
        f"recovery: region-1 back {took:.3f}s after /health returned 200 "
        f"(bound interval x rise = {bound:.2f}s)"
    )

    status, body = http_get(instance.admin_port, "/metrics")
    assert status == 200
    text = body.decode()
    assert 'phoenix_lb_gslb_region_transitions_total{region="region-1",state="down"} 1.0' in text
    assert 'phoenix_lb_gslb_region_transitions_total{region="region-1",state="up"} 1.0' in text


def test_health_check_timeout_and_refused_mark_region_down(
    gslb: Callable[..., GslbInstance], regions: tuple[Backend, Backend]
) -> None:
    one, _ = regions
    with SilentPort() as silent:
        instance = gslb(make_config(health_url(one), f"http://{silent.address}/health"))
        assert instance.service.monitor.states["region-2"].last_reason == "timeout"
        assert instance.service.monitor.healthy == frozenset({"region-1"})
        # region-2's own clients go to region-1 while it is down.
        assert addresses(ask(instance, ecs="100.64.0.0/16")) == [VIP_1]


def test_http_check_results(regions: tuple[Backend, Backend]) -> None:
    one, _ = regions

    async def garbage_server() -> tuple[asyncio.Server, int]:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"SSH-2.0-OpenSSH\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        return server, server.sockets[0].getsockname()[1]

    async def go() -> list[tuple[bool, str]]:
        server, port = await garbage_server()
        try:
            with RefusingPort() as refusing, SilentPort() as silent:
                results = [await http_check(health_url(one), 1.0)]
                one.healthy = False
                results.append(await http_check(health_url(one), 1.0))
                results.append(await http_check(f"http://{refusing.address}/health", 1.0))
                results.append(await http_check(f"http://{silent.address}/health", 0.1))
                results.append(await http_check(f"http://127.0.0.1:{port}/health", 1.0))
            return results
        finally:
            server.close()
            await server.wait_closed()

    loop = new_event_loop()
    try:
        results = loop.run_until_complete(go())
    finally:
        loop.close()
    assert results == [
        (True, "status 200"),
        (False, "status 503"),
        (False, "connect refused"),
        (False, "timeout"),
        (False, "invalid response"),
    ]
    assert one.requests[0].header("Host") == one.address
    assert one.requests[0].header("Connection") == "close"


# ---------------------------------------------------------------- all down


def test_all_down_return_all(
    gslb: Callable[..., GslbInstance], regions: tuple[Backend, Backend]
) -> None:
    one, two = regions
    one.healthy = two.healthy = False
    instance = gslb(make_config(health_url(one), health_url(two)))
    response = ask(instance, ecs="198.51.100.0/24")
    assert response.rcode() == dns.rcode.NOERROR
    assert addresses(response) == [VIP_1, VIP_2]
    assert ecs_scope(response) == (24, 0)  # same answer for everyone
    status, body = http_get(instance.admin_port, "/health")
    assert status == 503 and b'"status": "down"' in body


def test_all_down_servfail_then_back(
    gslb: Callable[..., GslbInstance], regions: tuple[Backend, Backend]
) -> None:
    one, two = regions
    one.healthy = two.healthy = False
    instance = gslb(make_config(health_url(one), health_url(two), all_down="servfail"))
    assert ask(instance).rcode() == dns.rcode.SERVFAIL
    assert ask(instance, rdtype="SOA").rcode() == dns.rcode.NOERROR  # the zone itself still answers
    two.healthy = True
    wait_for_answer(instance, [VIP_2], ecs=None, timeout=INTERVAL * RISE + SLACK)
    status, body = http_get(instance.admin_port, "/health")
    assert status == 200 and b'"status": "degraded"' in body


# ---------------------------------------------------------------- names, types


def test_nxdomain_refused_soa_ns(
    gslb: Callable[..., GslbInstance], regions: tuple[Backend, Backend]
) -> None:
    one, two = regions
    instance = gslb(
        make_config(
            health_url(one),
            health_url(two),
            nameservers={f"ns1.{ZONE}": ["192.0.2.53"], "ns2.example.net": []},
        )
    )
    for tcp in (False, True):
        response = ask(instance, f"nope.{ZONE}", tcp=tcp)
        assert response.rcode() == dns.rcode.NXDOMAIN and response.flags & dns.flags.AA
        assert response.authority[0].rdtype == dns.rdatatype.SOA
        response = ask(instance, "www.example.org", tcp=tcp)
        assert response.rcode() == dns.rcode.REFUSED
        soa = ask(instance, rdtype="SOA", tcp=tcp).answer[0]
        assert soa[0].mname.to_text() == f"ns1.{ZONE}." and soa.ttl == 5
        ns = ask(instance, rdtype="NS", tcp=tcp)
        assert sorted(rd.target.to_text() for rd in ns.answer[0]) == [
            f"ns1.{ZONE}.",
            "ns2.example.net.",
        ]
        assert [rrset.to_text() for rrset in ns.additional] == [f"ns1.{ZONE}. 5 IN A 192.0.2.53"]
        assert addresses(ask(instance, f"ns1.{ZONE}", tcp=tcp)) == ["192.0.2.53"]
        mx = ask(instance, rdtype="MX", tcp=tcp)
        assert mx.rcode() == dns.rcode.NOERROR and mx.answer == []


def test_aaaa(gslb: Callable[..., GslbInstance], regions: tuple[Backend, Backend]) -> None:
    one, two = regions
    instance = gslb(make_config(health_url(one), health_url(two)))
    assert addresses(ask(instance, rdtype="AAAA", ecs="198.51.100.0/24")) == [VIP_1_V6]
    # region-2 has no IPv6 VIP: its clients get no AAAA (and use A).
    response = ask(instance, rdtype="AAAA", ecs="100.64.0.0/16")
    assert response.rcode() == dns.rcode.NOERROR and response.answer == []
    assert addresses(ask(instance, rdtype="AAAA", ecs="2001:db8:ffff::/48")) == [VIP_1_V6]


# ---------------------------------------------------------------- truncation


MANY = [f"192.0.{2 + i // 250}.{1 + i % 250}" for i in range(120)]


def test_large_answer_truncated_then_tcp(
    gslb: Callable[..., GslbInstance], regions: tuple[Backend, Backend]
) -> None:
    one, two = regions
    instance = gslb(make_config(health_url(one), health_url(two), vips_1=MANY))
    udp = ask(instance, ecs="198.51.100.0/24")
    assert udp.flags & dns.flags.TC and udp.answer == []
    query = dns.message.make_query(
        ZONE, "A", use_edns=0, options=[dns.edns.ECSOption("198.51.100.0", 24)]
    )
    response, used_tcp = dns.query.udp_with_fallback(
        query, "127.0.0.1", port=instance.port, timeout=2
    )
    assert used_tcp and not response.flags & dns.flags.TC
    assert len(addresses(response)) == len(MANY)
    assert instance.service.stats.truncated >= 2


def test_dig_retries_over_tcp_and_reads_everything(
    gslb: Callable[..., GslbInstance], regions: tuple[Backend, Backend]
) -> None:
    dig = requires_tool("dig")
    one, two = regions
    instance = gslb(make_config(health_url(one), health_url(two), vips_1=MANY))
    result = subprocess.run(
        [
            dig,
            "@127.0.0.1",
            "-p",
            str(instance.port),
            ZONE,
            "A",
            "+subnet=198.51.100.0/24",
            "+tries=1",
            "+time=3",
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    assert "Truncated, retrying in TCP mode" in result.stdout, result.stdout
    assert (
        "status: NOERROR" in result.stdout and "CLIENT-SUBNET: 198.51.100.0/24/24" in result.stdout
    )
    answers = [line for line in result.stdout.splitlines() if "\tIN\tA\t" in line]
    assert len(answers) == len(MANY)
    short = subprocess.run(
        [
            dig,
            "@127.0.0.1",
            "-p",
            str(instance.port),
            ZONE,
            "A",
            "+short",
            "+tries=1",
            "+subnet=100.64.0.0/16",
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    assert short.stdout.split() == [VIP_2]


# ---------------------------------------------------------------- malformed input


def udp_exchange(port: int, data: bytes, timeout: float = 0.3) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(data, ("127.0.0.1", port))
        try:
            return sock.recv(65535)
        except TimeoutError:
            return None


def test_malformed_packets_formerr_or_dropped_and_server_keeps_answering(
    gslb: Callable[..., GslbInstance], regions: tuple[Backend, Backend]
) -> None:
    one, two = regions
    instance = gslb(make_config(health_url(one), health_url(two)))
    port = instance.port
    valid = dns.message.make_query(ZONE, "A").to_wire()

    # Truncated headers: nothing to answer to.
    for size in range(12):
        assert udp_exchange(port, valid[:size], timeout=0.05) is None
    # A header with a question that is cut off: FORMERR, same id.
    reply = udp_exchange(port, valid[:20], timeout=2.0)
    assert reply is not None and reply[:2] == valid[:2]
    assert reply[2] & 0x80 and reply[3] & 0x0F == dns.rcode.FORMERR

    # Random bytes and mangled queries, fired without waiting.
    rng = random.Random(99)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        for i in range(2000):
            if i % 2:
                data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 200)))
            else:
                buf = bytearray(valid)
                buf[rng.randrange(2, len(buf))] = rng.getrandbits(8)
                data = bytes(buf)
            with contextlib.suppress(BlockingIOError):
                sock.sendto(data, ("127.0.0.1", port))
            if i % 100 == 0:
                time.sleep(0.005)  # let the server keep up; the point is content, not rate
        time.sleep(0.2)
        while True:  # every reply has QR set and is a header at least
            try:
                data = sock.recv(65535)
            except BlockingIOError:
                break
            assert len(data) >= 12 and data[2] & 0x80

    # Over TCP: garbage inside a valid length prefix gets FORMERR or a close.
    with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
        junk = b"\x12\x34" + bytes(range(40))
        conn.sendall(len(junk).to_bytes(2, "big") + junk)
        head = conn.recv(2)
        if head:
            body = conn.recv(int.from_bytes(head, "big"))
            assert body[:2] == b"\x12\x34" and body[3] & 0x0F in (
                dns.rcode.FORMERR,
                dns.rcode.NOTIMP,
            )
    with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
        conn.sendall(b"\x00\x05abcde")  # 5 bytes: no header; the server closes
        assert conn.recv(10) == b""

    # Still answering, and nothing crashed.
    assert addresses(ask(instance, ecs="198.51.100.0/24")) == [VIP_1]
    assert addresses(ask(instance, ecs="198.51.100.0/24", tcp=True)) == [VIP_1]
    assert instance.service.stats.dropped.get("error", 0) == 0
    assert instance.thread.is_alive()


def test_tcp_pipelined_queries_on_one_connection(
    gslb: Callable[..., GslbInstance], regions: tuple[Backend, Backend]
) -> None:
    one, two = regions
    instance = gslb(make_config(health_url(one), health_url(two)))
    queries = [dns.message.make_query(ZONE, "A", id=i) for i in range(50)]
    wire = b"".join(len(w).to_bytes(2, "big") + w for w in (q.to_wire() for q in queries))
    with socket.create_connection(("127.0.0.1", instance.port), timeout=5) as conn:
        conn.sendall(wire)
        buf = b""
        ids = []
        while len(ids) < 50:
            chunk = conn.recv(65535)
            assert chunk, "connection closed early"
            buf += chunk
            while len(buf) >= 2 and len(buf) >= 2 + int.from_bytes(buf[:2], "big"):
                size = int.from_bytes(buf[:2], "big")
                ids.append(dns.message.from_wire(buf[2 : 2 + size]).id)
                buf = buf[2 + size :]
    assert ids == list(range(50))


# ---------------------------------------------------------------- flood


@dataclass
class FloodResult:
    sent: int
    answered: int
    errors: int
    seconds: float

    @property
    def qps(self) -> float:
        return self.answered / self.seconds if self.seconds else 0.0


class _FloodProtocol(asyncio.DatagramProtocol):
    """Keeps ``window`` queries in flight on one socket until ``count`` are answered.

    Query ``n`` is ``templates[(offset + n) % len(templates)]`` with id ``n``.
    """

    def __init__(
        self,
        templates: list[bytes],
        offset: int,
        count: int,
        window: int,
        done: asyncio.Future[None],
    ) -> None:
        self.templates = [template[2:] for template in templates]
        self.offset = offset
        self.count = count
        self.window = window
        self.done = done
        self.sent = 0
        self.answered = 0
        self.errors = 0
        self.pending: set[int] = set()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        for _ in range(min(self.window, self.count)):
            self._send()

    def _send(self) -> None:
        qid = self.sent
        self.sent += 1
        self.pending.add(qid)
        assert self.transport is not None
        templates = self.templates
        template = templates[(self.offset + qid) % len(templates)]
        self.transport.sendto(qid.to_bytes(2, "big") + template)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        qid = int.from_bytes(data[:2], "big")
        if qid not in self.pending:
            self.errors += 1
            return
        self.pending.discard(qid)
        self.answered += 1
        # QR set, NOERROR, at least one answer record.
        if not data[2] & 0x80 or data[3] & 0x0F or data[6:8] == b"\x00\x00":
            self.errors += 1
        if self.sent < self.count:
            self._send()
        elif not self.pending and not self.done.done():
            self.done.set_result(None)


def ecs_query(network: str) -> bytes:
    address, prefix = network.split("/")
    query = dns.message.make_query(
        ZONE, "A", use_edns=0, options=[dns.edns.ECSOption(address, int(prefix))]
    )
    return query.to_wire()


async def flood(
    port: int,
    total: int,
    templates: list[bytes],
    *,
    sockets: int = 4,
    window: int = 32,
    limit: float = 30.0,
) -> FloodResult:
    """``total`` queries over ``sockets`` UDP sockets, ``window`` in flight on each.

    128 in flight in all stays well inside the server's 4 MiB receive buffer
    (and the 208 KiB default), so no query is lost to a full socket.
    """
    loop = asyncio.get_running_loop()
    per_socket = total // sockets
    assert per_socket <= 65536  # query ids are unique per socket
    clients: list[_FloodProtocol] = []
    started = time.perf_counter()
    for index in range(sockets):
        done: asyncio.Future[None] = loop.create_future()

        def factory(
            done: asyncio.Future[None] = done, offset: int = index * per_socket
        ) -> _FloodProtocol:
            return _FloodProtocol(templates, offset, per_socket, window, done)

        _, protocol = await loop.create_datagram_endpoint(factory, remote_addr=("127.0.0.1", port))
        clients.append(protocol)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(c.done for c in clients)), timeout=limit)
    seconds = time.perf_counter() - started
    for client in clients:
        if client.transport is not None:
            client.transport.close()
    return FloodResult(
        sent=sum(c.sent for c in clients),
        answered=sum(c.answered for c in clients),
        errors=sum(c.errors for c in clients),
        seconds=seconds,
    )


def run_flood(port: int, total: int, templates: list[bytes], limit: float = 30.0) -> FloodResult:
    loop = new_event_loop()
    try:
        return loop.run_until_complete(flood(port, total, templates, limit=limit))
    finally:
        loop.close()


@pytest.fixture
def gslb_process(tmp_path: Path, regions: tuple[Backend, Backend]) -> Iterator[tuple[int, int]]:
    """``phoenix-lb gslb -c FILE`` as a child process: (dns port, admin port)."""
    one, two = regions
    port, admin = free_port(), free_port()
    config = {
        "gslb": make_config(
            health_url(one), health_url(two), listen=f"127.0.0.1:{port}", admin=f"127.0.0.1:{admin}"
        ),
        "error_log": {"path": "stderr", "level": "warning"},
    }
    # Production-like checks: 1 s apart with a 1 s timeout.
    config["gslb"]["health_check"].update({"interval": 1.0, "timeout": 1.0})
    path = tmp_path / "gslb.yaml"
    path.write_text(yaml.safe_dump(config))
    stderr_path = tmp_path / "gslb.stderr"
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(
            phoenix_lb_command("gslb", "-c", str(path)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 15
        while True:
            probe = dns.message.make_query(ZONE, "SOA")
            try:
                dns.query.udp(probe, "127.0.0.1", port=port, timeout=0.2)
                break
            except dns.exception.Timeout:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"gslb did not start:\n{stderr_path.read_text()}")
        yield port, admin
    finally:
        if proc.poll() is None:
            proc.terminate()  # SIGTERM to this child, by its pid
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    assert proc.returncode == 0, stderr_path.read_text()


def test_flood_of_20000_queries_answered_without_errors(gslb_process: tuple[int, int]) -> None:
    port, admin = gslb_process
    total = 20_000
    # Clients of region-1 behind 64 resolvers' worth of ECS networks: the
    # packet cache answers most of them, as it would for real resolvers.
    templates = [ecs_query(f"198.51.100.{i * 4}/30") for i in range(64)]
    result = run_flood(port, total, templates)
    print(
        f"\nflood: {result.answered}/{total} answered, {result.errors} errors, "
        f"{result.seconds:.2f}s: {result.qps:,.0f} queries/s (phoenix-lb gslb over UDP, "
        "4 sockets x 32 in flight, Python asyncio client on the same machine)"
    )
    assert result.errors == 0
    assert result.answered == total
    assert result.seconds < 30.0

    # Every query different (a distinct client /24 each, no region matches):
    # each one is parsed and packed by dnslib, the worst case.
    distinct = 4_000
    templates = [ecs_query(f"10.{i // 256}.{i % 256}.0/24") for i in range(distinct)]
    uncached = run_flood(port, distinct, templates)
    print(
        f"flood, every query distinct (packet cache misses): {uncached.answered}/{distinct} "
        f"answered, {uncached.errors} errors: {uncached.qps:,.0f} queries/s"
    )
    assert uncached.errors == 0 and uncached.answered == distinct

    status, body = http_get(admin, "/metrics")
    assert status == 200
    text = body.decode()
    assert 'phoenix_lb_gslb_answers_total{rcode="NOERROR",region="region-1"} ' in text
    # A query flood must not take regions down (health checks share the loop).
    assert "phoenix_lb_gslb_region_transitions_total{" not in text, text
    print(_reference_figure(port))


def _reference_figure(port: int) -> str:
    """dnsperf (C, from DNS-OARC) against the same server, when it is installed."""
    dnsperf = shutil.which("dnsperf")
    if dnsperf is None:
        return "reference: dnsperf not installed (Debian package dnsperf); no native figure"
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as data:
        data.write(f"{ZONE} A\n")
    result = subprocess.run(
        [dnsperf, "-s", "127.0.0.1", "-p", str(port), "-d", data.name, "-l", "3", "-q", "64"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    os.unlink(data.name)
    for line in result.stdout.splitlines():
        if "Queries per second" in line:
            return (
                "reference: dnsperf (C client, 3 s, 64 in flight) against the same server: "
                + " ".join(line.split())
            )
    return f"reference: dnsperf gave no figure: {result.stdout[-300:]} {result.stderr[-300:]}"


# ---------------------------------------------------------------- command line


def test_check_option_and_config_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text((Path(__file__).resolve().parents[2] / "examples" / "gslb.yaml").read_text())
    ok = subprocess.run(
        phoenix_lb_command("gslb", "-c", str(good), "--check"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ok.returncode == 0 and ok.stdout.strip() == f"{good}: gslb configuration ok"
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "gslb:\n  listen: [127.0.0.1:5353]\n  zone: x.example\n  polcy: failover\n"
        "  regions: {r1: {vips: [192.0.2.1], health: 'http://127.0.0.1:1/'}}\n"
    )
    failed = subprocess.run(
        phoenix_lb_command("gslb", "-c", str(bad), "--check"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert failed.returncode == 1
    assert failed.stderr.strip() == (
        f"{bad}: gslb.polcy: unknown key (did you mean 'policy'?) (line 4)"
    )


def test_process_serves_dig_and_stops_on_sigterm(gslb_process: tuple[int, int]) -> None:
    dig = requires_tool("dig")
    port, admin = gslb_process
    result = subprocess.run(
        [
            dig,
            "@127.0.0.1",
            "-p",
            str(port),
            ZONE,
            "A",
            "+short",
            "+tries=1",
            "+subnet=198.51.100.0/24",
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    assert result.stdout.split() == [VIP_1]
    status, body = http_get(admin, "/health")
    assert status == 200 and b'"status": "ok"' in body
    # The fixture's teardown asserts a clean exit on SIGTERM.
