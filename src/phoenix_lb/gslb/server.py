"""The DNS server: UDP and TCP listeners around :class:`QueryHandler`, and the service.

:class:`QueryHandler` turns one query's bytes into one response's bytes (or
None: drop) and does no I/O; the protocols only move bytes.  Per query, in
order, each step bounded by the packet size:

1. Fewer than 12 bytes (no header), more than ``MAX_QUERY`` bytes, or the QR
   bit set (a response: answering it could loop two servers): dropped.
2. Opcode other than QUERY: NOTIMP.  Not exactly one question, more than
   ``MAX_EXTRA_RECORDS`` other records, or anything dnslib cannot parse:
   FORMERR (header only, as BIND and Knot do).  A query seen before (same
   bytes after the id, transport, healthy regions and, for nearest_healthy,
   resolver) is answered from the packet cache with its new id.
3. EDNS (RFC 6891): more than one OPT or an OPT not owned by the root:
   FORMERR; version above 0: BADVERS.  The response carries an OPT when the
   query did, with the DO bit copied (RFC 3225) and ECS echoed (RFC 7871) with
   the scope the answer has; a malformed ECS option is FORMERR (RFC 7871 6).
4. :meth:`Zone.answer <phoenix_lb.gslb.answer.Zone.answer>` decides.
5. Size: UDP responses are limited to 512 bytes without EDNS, else to the
   client's advertised size capped at ``UDP_PAYLOAD`` (1232, the DNS flag day
   2020 value, which avoids IP fragmentation).  A response that does not fit
   is sent with TC set and no records, and the client retries over TCP
   (2-byte length framing, RFC 1035 4.2.2 / RFC 7766), where it can be 64 KiB.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import random
import socket
import struct
import time
from collections.abc import Callable
from typing import Any, Protocol

import dnslib  # type: ignore[import-untyped]

from phoenix_lb.config.schema import split_host_port
from phoenix_lb.gslb.answer import (
    AAAA,
    FORMERR,
    NOERROR,
    NOTIMP,
    NS,
    NXDOMAIN,
    A,
    Client,
    IPNetwork,
    Record,
    Soa,
    Zone,
)
from phoenix_lb.gslb.config import GslbConfig
from phoenix_lb.gslb.health import CheckFn, RegionMonitor, http_check
from phoenix_lb.gslb.metrics import AdminServer, GslbStats, Metrics
from phoenix_lb.health.state import Transition

log = logging.getLogger("phoenix_lb.gslb")

HEADER = struct.Struct("!HHHHHH")
HEADER_SIZE = 12
# A query is a header, one name (at most 255 bytes) and a few small records;
# 4096 leaves room for EDNS padding (RFC 7830) and cookies.  Larger: dropped.
MAX_QUERY = 4096
# OPT, maybe TSIG and a cookie; a query has no business carrying more records.
MAX_EXTRA_RECORDS = 8
#: largest UDP response sent (DNS flag day 2020; what BIND, Unbound, Knot default to)
UDP_PAYLOAD = 1232
#: largest UDP response to a query without EDNS (RFC 1035 2.3.4)
CLASSIC_UDP = 512
TCP_MAX = 65535
OPT = 41
ECS_CODE = 8
BADVERS = 16
#: TCP connections idle longer than this are closed (RFC 7766 6.2.3: "a few seconds")
TCP_IDLE_TIMEOUT = 10.0
#: entries in the packet cache before it is emptied and starts again (at most
#: a few hundred bytes each: a few MB)
PACKET_CACHE_SIZE = 10_000
#: more concurrent TCP connections than this are refused by closing at once
MAX_TCP_CONNECTIONS = 1024
# Kernel receive buffer asked for each UDP socket, to ride out bursts (capped by
# net.core.rmem_max; Unbound's so-rcvbuf advice is 4m).
UDP_RCVBUF = 4 * 1024 * 1024

_QR = 0x8000
_OPCODE_MASK = 0x7800
_RD = 0x0100
_TC = 0x0200


class HealthView(Protocol):
    """Where the handler reads region health (a :class:`RegionMonitor`)."""

    @property
    def healthy(self) -> frozenset[str]: ...


class BadQuery(Exception):
    """The query is malformed: answer FORMERR."""


def parse_ecs(data: bytes) -> IPNetwork:
    """The client network of an ECS option (RFC 7871 6); :class:`BadQuery` if malformed."""
    if len(data) < 4:
        raise BadQuery("ECS option shorter than 4 bytes")
    family, source, _scope = struct.unpack_from("!HBB", data)
    address = data[4:]
    if family == 1:
        bits = 32
    elif family == 2:
        bits = 128
    else:
        raise BadQuery(f"ECS family {family} unknown")
    if source > bits:
        raise BadQuery(f"ECS source prefix {source} longer than {bits}")
    if len(address) != (source + 7) // 8:
        raise BadQuery("ECS address length does not match its source prefix")
    if source % 8 and address[-1] & (0xFF >> (source % 8)):
        raise BadQuery("ECS address has bits set beyond its source prefix")
    packed = address + bytes(bits // 8 - len(address))
    if family == 1:
        return ipaddress.IPv4Network((packed, source))
    return ipaddress.IPv6Network((packed, source))


def ecs_option(network: IPNetwork, scope: int) -> bytes:
    """ECS option data echoing ``network`` with ``scope`` (RFC 7871 7.2.1)."""
    source = network.prefixlen
    family = 1 if network.version == 4 else 2
    address = network.network_address.packed[: (source + 7) // 8]
    return struct.pack("!HBB", family, source, scope) + address


def _label_text(labels: tuple[bytes, ...]) -> str:
    # dnslib has checked that labels are UTF-8.  Only ASCII letters fold
    # (RFC 4343): "\u212a8s" is not "k8s".  A dot (and a backslash) inside a
    # label is escaped so that the name never compares equal to one with more
    # labels.
    return ".".join(
        label.lower().decode().replace("\\", "\\\\").replace(".", "\\.") for label in labels
    )


# response without its id, regions answered, rcode, truncated
_Cached = tuple[bytes, tuple[str, ...], int, bool]


class QueryHandler:
    """Query bytes in, response bytes out (None: send nothing)."""

    __slots__ = ("_by_source", "_cache", "_cached_for", "_health", "_rng", "_rrs", "stats", "zone")

    def __init__(
        self,
        zone: Zone,
        health: HealthView,
        stats: GslbStats,
        rng: random.Random,
        *,
        packet_cache: bool = True,
    ) -> None:
        self.zone = zone
        self._health = health
        self.stats = stats
        self._rng = rng
        # The packet cache (PowerDNS Authoritative has the same): a response is
        # a function of the query bytes after the id, the transport, the
        # healthy set and (nearest_healthy only) the resolver's address, so it
        # is kept by those and sent again with the new id: about 6x the rate of
        # parsing and packing with dnslib each time.  Not for ``weighted``,
        # whose answers are random by design.
        self._cache: dict[tuple[bytes, str, bool], _Cached] | None = (
            {} if packet_cache and zone.policy != "weighted" else None
        )
        self._cached_for: frozenset[str] | None = None
        self._by_source = zone.policy == "nearest_healthy"
        # dnslib RRs by record, built on first use: the records come from the
        # config, so this stays as small as the zone.
        self._rrs: dict[Record, Any] = {}

    def handle(self, data: bytes, source: str, tcp: bool) -> bytes | None:
        """The response to the query ``data`` from ``source`` (an IP address)."""
        self.stats.queries["tcp" if tcp else "udp"] += 1
        if len(data) < HEADER_SIZE:
            self.stats.drop("no header")
            return None
        if len(data) > MAX_QUERY:
            self.stats.drop("too large")
            return None
        qid, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(data)
        if flags & _QR:
            self.stats.drop("not a query")
            return None
        if flags & _OPCODE_MASK:
            return self._bare(qid, flags, NOTIMP)
        if qdcount != 1 or ancount + nscount + arcount > MAX_EXTRA_RECORDS:
            return self._bare(qid, flags, FORMERR)
        cache = self._cache
        key: tuple[bytes, str, bool] | None = None
        if cache is not None:
            healthy = self._health.healthy
            if healthy is not self._cached_for:  # a health transition: forget everything
                cache.clear()
                self._cached_for = healthy
            key = (data[2:], source if self._by_source else "", tcp)
            hit = cache.get(key)
            if hit is not None:
                tail, regions, rcode, truncated = hit
                self.stats.answered(regions, rcode)
                self.stats.truncated += truncated
                return data[:2] + tail
        try:
            message = dnslib.DNSRecord.parse(data)
        except Exception:  # dnslib raises DNSError, but also others on odd input
            return self._bare(qid, flags, FORMERR)
        try:
            out, regions, rcode, truncated = self._respond(message, qid, flags, source, tcp)
        except BadQuery:
            return self._bare(qid, flags, FORMERR)
        self.stats.answered(regions, rcode)
        self.stats.truncated += truncated
        if cache is not None and key is not None:
            if len(cache) >= PACKET_CACHE_SIZE:
                cache.clear()
            cache[key] = (out[2:], regions, rcode, truncated)
        return out

    def _respond(
        self, message: Any, qid: int, flags: int, source: str, tcp: bool
    ) -> tuple[bytes, tuple[str, ...], int, bool]:
        """(response, regions answered, rcode, truncated)."""
        opt = None
        for rr in message.ar:
            if rr.rtype == OPT:
                if opt is not None:
                    raise BadQuery("more than one OPT record")
                opt = rr
        question = message.questions[0]
        header = dnslib.DNSHeader(id=qid, qr=1, rd=(flags & _RD) >> 8)
        reply = dnslib.DNSRecord(header, q=question)
        limit = TCP_MAX if tcp else CLASSIC_UDP
        subnet: IPNetwork | None = None
        do = ""
        if opt is not None:
            if opt.rname.label:
                raise BadQuery("OPT record not owned by the root")
            limit = TCP_MAX if tcp else min(max(opt.rclass, CLASSIC_UDP), UDP_PAYLOAD)
            do = "do" if opt.ttl & 0x8000 else ""
            if (opt.ttl >> 16) & 0xFF:
                # RFC 6891 6.1.3: we speak EDNS version 0 only.
                reply.add_ar(dnslib.EDNS0(udp_len=UDP_PAYLOAD, ext_rcode=BADVERS >> 4, flags=do))
                return bytes(reply.pack()), (), BADVERS, False
            for option in opt.rdata:
                if option.code == ECS_CODE:
                    if subnet is not None:
                        raise BadQuery("more than one ECS option")
                    subnet = parse_ecs(option.data)
        client = Client(_address(source), subnet)
        answer = self.zone.answer(
            _label_text(question.qname.label),
            question.qtype,
            question.qclass,
            client,
            self._health.healthy,
            self._rng,
        )
        header.rcode = answer.rcode
        header.aa = 1 if answer.rcode in (NOERROR, NXDOMAIN) else 0
        rrs = self._rrs
        for record in answer.answer:
            reply.add_answer(rrs.get(record) or self._rr(record))
        for record in answer.authority:
            reply.add_auth(rrs.get(record) or self._rr(record))
        for record in answer.additional:
            reply.add_ar(rrs.get(record) or self._rr(record))
        edns = None
        if opt is not None:
            options = []
            if subnet is not None:
                options.append(dnslib.EDNSOption(ECS_CODE, ecs_option(subnet, answer.scope)))
            edns = dnslib.EDNS0(udp_len=UDP_PAYLOAD, flags=do, opts=options)
            reply.add_ar(edns)
        out: bytes = bytes(reply.pack())
        truncated = len(out) > limit
        if truncated:
            out = self._truncated(header, question, edns)
        return out, answer.regions, answer.rcode, truncated

    def _truncated(self, header: Any, question: Any, edns: Any) -> bytes:
        """The response with TC set and no records but the OPT (RFC 2181 9)."""
        header.tc = 1
        reply = dnslib.DNSRecord(header, q=question)
        if edns is not None:
            reply.add_ar(edns)
        out: bytes = bytes(reply.pack())
        return out

    def _bare(self, qid: int, flags: int, rcode: int) -> bytes:
        """A header-only response: same id, opcode and RD; QR set; ``rcode``."""
        self.stats.answered((), rcode)
        return HEADER.pack(qid, _QR | (flags & (_OPCODE_MASK | _RD)) | rcode, 0, 0, 0, 0)

    def _rr(self, record: Record) -> Any:
        data = record.data
        rdata: Any
        if isinstance(data, str) and record.rtype == A:
            rdata = dnslib.A(data)
        elif isinstance(data, str) and record.rtype == AAAA:
            rdata = dnslib.AAAA(data)
        elif isinstance(data, str) and record.rtype == NS:
            rdata = dnslib.NS(data + ".")
        elif isinstance(data, Soa):
            times = (data.serial, data.refresh, data.retry, data.expire, data.minimum)
            rdata = dnslib.SOA(data.mname + ".", data.rname + ".", times)
        else:  # pragma: no cover - answer.py produces only the types above
            raise ValueError(f"cannot encode {record}")
        rr = dnslib.RR(record.name + ".", record.rtype, ttl=record.ttl, rdata=rdata)
        self._rrs[record] = rr
        return rr


_addresses: dict[str, ipaddress.IPv4Address | ipaddress.IPv6Address | None] = {}


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    # Parsing an address costs more than a dict lookup; resolvers are few.
    found = _addresses.get(text, False)
    if found is not False:
        return found  # type: ignore[return-value]
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(text)
    except ValueError:
        address = None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a v4 client on a dual-stack socket
    if len(_addresses) > 65536:
        _addresses.clear()
    _addresses[text] = address
    return address


# -- transports --------------------------------------------------------------


class _ErrorLog:
    """Logs unexpected handler errors at most once per 10 s (a flood must not flood the log)."""

    __slots__ = ("_next", "suppressed")

    def __init__(self) -> None:
        self._next = 0.0
        self.suppressed = 0

    def report(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now < self._next:
            self.suppressed += 1
            return
        self._next = now + 10.0
        log.error(
            "gslb: error handling a query (%d more suppressed)", self.suppressed, exc_info=exc
        )
        self.suppressed = 0


class UdpProtocol(asyncio.DatagramProtocol):
    """One UDP socket: each datagram is a query, answered at once."""

    def __init__(self, handler: QueryHandler, errors: _ErrorLog) -> None:
        self._handler = handler
        self._errors = errors
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            out = self._handler.handle(data, addr[0], False)
        except Exception as exc:  # never let one packet stop the server
            self._handler.stats.drop("error")
            self._errors.report(exc)
            return
        if out is not None and self._transport is not None:
            self._transport.sendto(out, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a client that left: nothing to do.
        if log.isEnabledFor(logging.DEBUG):
            log.debug("gslb: UDP error: %s", exc)


class TcpProtocol(asyncio.Protocol):
    """One TCP connection: length-prefixed queries, answered in order (RFC 7766)."""

    __slots__ = ("_buffer", "_errors", "_handler", "_idle", "_last", "_peer", "_server", "_t")

    def __init__(self, server: DnsListeners) -> None:
        self._server = server
        self._handler = server.handler
        self._errors = server.errors
        self._buffer = bytearray()
        self._t: asyncio.Transport | None = None
        self._peer = ""
        self._last = 0.0
        self._idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._t = transport  # type: ignore[assignment]
        connections = self._server.connections
        if len(connections) >= MAX_TCP_CONNECTIONS:
            self._handler.stats.drop("too many tcp connections")
            transport.close()
            return
        connections.add(self)
        peer = transport.get_extra_info("peername")
        self._peer = peer[0] if peer else ""
        loop = asyncio.get_running_loop()
        self._last = loop.time()
        # One timer per connection, re-armed only when it fires (a deadline,
        # not a timer per query).
        self._idle = loop.call_later(TCP_IDLE_TIMEOUT, self._check_idle)

    def data_received(self, data: bytes) -> None:
        transport = self._t
        if transport is None or transport.is_closing():
            return
        buffer = self._buffer
        buffer += data
        while len(buffer) >= 2:
            size = (buffer[0] << 8) | buffer[1]
            if len(buffer) < 2 + size:
                break  # at most 64 KiB + 1 waits here
            query = bytes(buffer[2 : 2 + size])
            del buffer[: 2 + size]
            # The idle clock restarts per whole query, not per byte: a
            # client trickling one message cannot hold the connection.
            self._last = asyncio.get_running_loop().time()
            try:
                out = self._handler.handle(query, self._peer, True)
            except Exception as exc:
                self._handler.stats.drop("error")
                self._errors.report(exc)
                out = None
            if out is None:
                # Nothing sensible to say, and the stream may be out of step.
                transport.close()
                return
            transport.write(len(out).to_bytes(2, "big") + out)

    def pause_writing(self) -> None:
        # The client does not read its answers: stop reading its queries.
        if self._t is not None:
            self._t.pause_reading()

    def resume_writing(self) -> None:
        if self._t is not None and not self._t.is_closing():
            self._t.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _check_idle(self) -> None:
        loop = asyncio.get_running_loop()
        left = self._last + TCP_IDLE_TIMEOUT - loop.time()
        if left > 0:
            self._idle = loop.call_later(left, self._check_idle)
        elif self._t is not None:
            self._idle = None
            self._t.close()


class DnsListeners:
    """UDP sockets and TCP servers on every ``listen`` address, same port for both."""

    def __init__(self, handler: QueryHandler, listen: list[str]) -> None:
        self.handler = handler
        self.listen = listen
        self.errors = _ErrorLog()
        self.connections: set[TcpProtocol] = set()
        self.udp: list[asyncio.DatagramTransport] = []
        self.tcp: list[asyncio.Server] = []
        #: (host, port) bound for each listen entry, UDP and TCP alike
        self.addresses: list[tuple[str, int]] = []

    async def start(self) -> None:
        for entry in self.listen:
            host, port = split_host_port(entry, default_host="0.0.0.0", allow_port_zero=True)
            # Port 0 (tests): UDP picks a port, TCP must get the same one, so
            # that a client retrying a truncated answer over TCP finds us.
            for attempt in range(20):
                udp = await self._bind_udp(host, port)
                bound = udp.get_extra_info("sockname")[1]
                try:
                    tcp = await asyncio.get_running_loop().create_server(
                        lambda: TcpProtocol(self),
                        host,
                        bound,
                        reuse_address=True,
                        backlog=1024,
                    )
                except OSError as exc:
                    udp.close()
                    if port == 0 and exc.errno == errno.EADDRINUSE and attempt < 19:
                        continue
                    raise
                self.udp.append(udp)
                self.tcp.append(tcp)
                self.addresses.append((host, bound))
                break

    async def _bind_udp(self, host: str, port: int) -> asyncio.DatagramTransport:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            # The kernel caps the size at net.core.rmem_max; it rarely refuses.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
            sock.bind((host, port))
            sock.setblocking(False)
            transport, _ = await loop.create_datagram_endpoint(
                lambda: UdpProtocol(self.handler, self.errors), sock=sock
            )
        except BaseException:
            sock.close()
            raise
        return transport

    async def stop(self) -> None:
        for udp in self.udp:
            udp.close()
        for server in self.tcp:
            server.close()
        for connection in list(self.connections):
            if connection._t is not None:
                connection._t.close()
        for server in self.tcp:
            await server.wait_closed()
        self.udp.clear()
        self.tcp.clear()


class GslbService:
    """Everything ``phoenix-lb gslb`` runs: health checks, DNS listeners, admin endpoint."""

    def __init__(
        self,
        config: GslbConfig,
        *,
        rng: random.Random | None = None,
        check: CheckFn = http_check,
        serial: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.rng = rng or random.Random()
        self.zone = Zone.from_config(config, serial=int(time.time()) if serial is None else serial)
        self.stats = GslbStats()
        hc = config.health_check
        self.monitor = RegionMonitor(
            {name: region.health for name, region in config.regions.items()},
            interval=hc.interval,
            timeout=hc.timeout,
            rise=hc.rise,
            fall=hc.fall,
            check=check,
            rng=self.rng,
            clock=clock,
            on_change=self._changed,
        )
        self.handler = QueryHandler(self.zone, self.monitor, self.stats, self.rng)
        self.listeners = DnsListeners(self.handler, list(config.listen))
        self.metrics = Metrics(self.stats, self.monitor)
        self.admin = AdminServer(self.metrics, config.admin.bind, config.admin.allowed_hosts)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Where DNS is answered (UDP and TCP on each)."""
        return self.listeners.addresses

    async def start(self) -> None:
        """Check every region once, then open the admin endpoint and the DNS listeners."""
        await self.monitor.start()
        try:
            await self.admin.start()
            await self.listeners.start()
        except BaseException:
            await self.stop()
            raise
        if not self.config.nameservers:
            log.warning(
                "gslb: no nameservers configured; NS answers name ns1.%s, which has no "
                "address (set gslb.nameservers to the names the parent zone delegates to)",
                self.zone.name,
            )

    async def stop(self) -> None:
        await self.listeners.stop()
        await self.admin.stop()
        await self.monitor.stop()

    def _changed(self, region: str, transition: Transition) -> None:
        key = (region, transition.new)
        self.stats.transitions[key] = self.stats.transitions.get(key, 0) + 1
