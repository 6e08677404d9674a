"""GSLB counters, their Prometheus exposition, and the admin endpoint.

The query path only adds to plain ints in dicts (:class:`GslbStats`): no
locks, no label lookups, nothing formatted.  prometheus_client reads them at
scrape time through a custom collector registered in a private
:class:`CollectorRegistry` (not the global one, so several servers, or tests,
can live in one process).

Admin endpoint (``admin.bind``, HTTP/1.1, one request per connection):

* ``GET /metrics``: Prometheus text format.
* ``GET /health``: JSON with each region's state; 200 while at least one
  region is healthy, 503 when none is (DNS then follows ``all_down``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from phoenix_lb.admin.origin import AdminHosts, check_request
from phoenix_lb.config.schema import split_host_port
from phoenix_lb.gslb.answer import RCODE_NAMES
from phoenix_lb.gslb.health import RegionMonitor

log = logging.getLogger("phoenix_lb.gslb")

PREFIX = "phoenix_lb_gslb"
#: label value of answers that carry no region (NXDOMAIN, SOA, REFUSED, ...)
NO_REGION = "none"

# A request head bigger than this is not a scraper's; 8 KiB as in nginx's
# large_client_header_buffers for one line.
_MAX_HEAD = 8192
_READ_TIMEOUT = 5.0
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    421: "Misdirected Request",
    503: "Service Unavailable",
}


class GslbStats:
    """Counters bumped on the query path."""

    __slots__ = ("answers", "dropped", "queries", "transitions", "truncated")

    def __init__(self) -> None:
        #: transport ("udp" / "tcp") -> queries received (including malformed ones)
        self.queries: dict[str, int] = {"udp": 0, "tcp": 0}
        #: (region or NO_REGION, rcode name) -> responses
        self.answers: dict[tuple[str, str], int] = {}
        #: reason -> packets dropped without a response
        self.dropped: dict[str, int] = {}
        #: UDP responses sent truncated (TC), so the client retries over TCP
        self.truncated = 0
        #: (region, "up"/"down") -> health transitions
        self.transitions: dict[tuple[str, str], int] = {}

    def answered(self, regions: tuple[str, ...], rcode: int) -> None:
        name = RCODE_NAMES.get(rcode) or str(rcode)
        answers = self.answers
        if not regions:
            key = (NO_REGION, name)
            answers[key] = answers.get(key, 0) + 1
            return
        for region in regions:
            key = (region, name)
            answers[key] = answers.get(key, 0) + 1

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


class _StatsCollector(Collector):
    def __init__(self, stats: GslbStats, monitor: RegionMonitor) -> None:
        self._stats = stats
        self._monitor = monitor

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        queries = CounterMetricFamily(
            f"{PREFIX}_queries", "DNS queries received.", labels=["transport"]
        )
        for transport, count in sorted(stats.queries.items()):
            queries.add_metric([transport], count)
        yield queries
        answers = CounterMetricFamily(
            f"{PREFIX}_answers",
            f"DNS responses by region in the answer ({NO_REGION!r} for none) and rcode.",
            labels=["region", "rcode"],
        )
        for (region, rcode), count in sorted(stats.answers.items()):
            answers.add_metric([region, rcode], count)
        yield answers
        dropped = CounterMetricFamily(
            f"{PREFIX}_dropped", "Packets dropped without a response.", labels=["reason"]
        )
        for reason, count in sorted(stats.dropped.items()):
            dropped.add_metric([reason], count)
        yield dropped
        yield CounterMetricFamily(
            f"{PREFIX}_truncated",
            "UDP responses sent with TC set (client retries over TCP).",
            value=stats.truncated,
        )
        up = GaugeMetricFamily(
            f"{PREFIX}_region_up", "1 if the region passes its health checks.", labels=["region"]
        )
        for name, state in self._monitor.states.items():
            up.add_metric([name], 1.0 if state.up else 0.0)
        yield up
        transitions = CounterMetricFamily(
            f"{PREFIX}_region_transitions",
            "Region health changes, by the state entered.",
            labels=["region", "state"],
        )
        for (name, state_name), count in sorted(stats.transitions.items()):
            transitions.add_metric([name, state_name], count)
        yield transitions


class Metrics:
    """The stats, the region monitor, and their Prometheus registry."""

    def __init__(self, stats: GslbStats, monitor: RegionMonitor) -> None:
        self.stats = stats
        self.monitor = monitor
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_StatsCollector(stats, monitor))
        self.started = time.monotonic()

    def prometheus_text(self) -> bytes:
        return generate_latest(self.registry)

    def health(self) -> tuple[int, dict[str, object]]:
        """(HTTP status, JSON body) for ``/health``."""
        now = time.monotonic()
        regions: dict[str, object] = {}
        for name, state in self.monitor.states.items():
            regions[name] = {
                "up": state.up,
                "last_result": state.last_reason,
                "last_check_ok": state.last_ok,
                "seconds_since_change": round(now - state.changed_at, 3),
            }
        healthy = len(self.monitor.healthy)
        if healthy == len(regions):
            status = "ok"
        elif healthy:
            status = "degraded"
        else:
            status = "down"
        body: dict[str, object] = {"status": status, "regions": regions}
        return (200 if healthy else 503), body


class AdminServer:
    """``/metrics`` and ``/health`` over HTTP/1.1 on the admin bind."""

    def __init__(self, metrics: Metrics, bind: str, allowed_hosts: Iterable[str] = ()) -> None:
        self.metrics = metrics
        self.bind = bind
        host, _ = split_host_port(bind, default_host="0.0.0.0", allow_port_zero=True)
        self.hosts = AdminHosts(host, allowed_hosts)
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        sockname = self._server.sockets[0].getsockname()
        return sockname[0], sockname[1]

    async def start(self) -> None:
        host, port = split_host_port(self.bind, default_host="0.0.0.0", allow_port_zero=True)
        self._server = await asyncio.start_server(
            self._serve, host, port, limit=_MAX_HEAD, reuse_address=True
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            status, content_type, body = self._respond(head, writer.get_extra_info("sockname"))
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            writer.close()
            return
        head_out = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
        ).encode("ascii")
        method = head.split(b" ", 1)[0]
        try:
            writer.write(head_out if method == b"HEAD" else head_out + body)
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    def _respond(self, head: bytes, local: tuple[str, int]) -> tuple[int, str, bytes]:
        lines = head.decode("latin-1").split("\r\n")
        request_line = lines[0].split(" ")
        if len(request_line) != 3:
            return 400, "text/plain", b"bad request\n"
        method, target, version = request_line[0], request_line[1].split("?", 1)[0], request_line[2]
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"only GET and HEAD\n"
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if colon:
                name = name.strip().lower()
                # A repeated field is joined, so a second Host is malformed, not ignored.
                value = value.strip()
                headers[name] = f"{headers[name]}, {value}" if name in headers else value
        refusal = check_request(
            self.hosts, local[:2], method, headers, http_version=version.removeprefix("HTTP/")
        )
        if refusal is not None:
            return refusal.status, "text/plain", refusal.reason.encode() + b"\n"
        if target == "/metrics":
            return 200, CONTENT_TYPE_LATEST, self.metrics.prometheus_text()
        if target == "/health":
            status, body = self.metrics.health()
            return status, "application/json", json.dumps(body, indent=1).encode() + b"\n"
        return 404, "text/plain", b"try /metrics or /health\n"
