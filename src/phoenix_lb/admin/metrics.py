"""Prometheus exposition: worker snapshots summed, control-plane state added.

Workers keep plain counters (``stats.py``) and hand the control plane a JSON
snapshot when it asks (``Runtime.stats_snapshot``).  Here snapshots from all
workers are summed (plus whatever workers that died had counted, so counters
never go backwards) and rendered with ``prometheus_client``'s metric
families into the text format.  Names and labels follow docs/metrics.md.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from phoenix_lb import __version__
from phoenix_lb.stats import (
    BUCKETS,
    CODE_CLASSES,
    METHOD_NAMES,
    N_CLASSES,
    N_METHODS,
    TLS_BUCKETS,
    merge_tree,
)

Snapshot = dict[str, Any]


def _bucket_labels(bounds: tuple[float, ...]) -> list[str]:
    return [repr(b) if b != int(b) else f"{b:.1f}" for b in bounds] + ["+Inf"]


_BUCKET_LABELS = _bucket_labels(BUCKETS)
_TLS_BUCKET_LABELS = _bucket_labels(TLS_BUCKETS)


merge = merge_tree


def merge_all(snapshots: Iterable[Snapshot]) -> Snapshot:
    """Sum any number of snapshots into a new one."""
    total: Snapshot = {}
    for snap in snapshots:
        merge(total, snap)
    return total


def _histogram(
    family: HistogramMetricFamily,
    labels: list[str],
    wire: list[float],
    bucket_labels: list[str] = _BUCKET_LABELS,
) -> None:
    counts = wire[:-1]
    running = 0.0
    buckets = []
    for label, count in zip(bucket_labels, counts, strict=False):
        running += count
        buckets.append((label, running))
    family.add_metric(labels, buckets, wire[-1])


def _request_counts(
    family: CounterMetricFamily,
    counts: list[int],
    listener_names: list[str],
    upstream: str,
    server: str,
) -> None:
    for li, listener in enumerate(listener_names):
        for mi, method in enumerate(METHOD_NAMES):
            base = (li * N_METHODS + mi) * N_CLASSES
            for ci, code in enumerate(CODE_CLASSES):
                if base + ci < len(counts) and counts[base + ci]:
                    family.add_metric([listener, upstream, server, method, code], counts[base + ci])


class SnapshotCollector:
    """A prometheus_client collector over one aggregated snapshot."""

    def __init__(self, snapshot: Snapshot, control: Snapshot) -> None:
        self.snapshot = snapshot
        self.control = control

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        control = self.control
        listeners: list[dict[str, Any]] = snap.get("listeners", [])
        names = [str(item.get("name", "")) for item in control.get("listener_names", [])] or [
            str(item.get("name", "")) for item in listeners
        ]

        requests = CounterMetricFamily(
            "phoenix_http_requests",
            "Requests answered, by listener, upstream, server, method and status class.",
            labels=["listener", "upstream", "server", "method", "code"],
        )
        duration = HistogramMetricFamily(
            "phoenix_http_request_duration_seconds",
            "Time from a complete request head to the end of the response.",
            labels=["listener", "upstream"],
        )
        received = CounterMetricFamily(
            "phoenix_received_bytes", "Bytes received from clients.", labels=["listener"]
        )
        sent = CounterMetricFamily(
            "phoenix_sent_bytes",
            "Bytes sent to clients: response heads and bodies.",
            labels=["listener"],
        )
        connections = GaugeMetricFamily(
            "phoenix_client_connections",
            "Open client connections by state (stub_status reading/writing/waiting).",
            labels=["listener", "state"],
        )
        accepted = CounterMetricFamily(
            "phoenix_client_connections_accepted",
            "Client connections accepted.",
            labels=["listener"],
        )
        handled = CounterMetricFamily(
            "phoenix_client_connections_handled",
            "Client connections handled.",
            labels=["listener"],
        )
        listen_queue = GaugeMetricFamily(
            "phoenix_listen_queue_length",
            "Connections waiting in the kernel's accept queue.",
            labels=["listener"],
        )
        for index, item in enumerate(listeners):
            name = names[index] if index < len(names) else str(item.get("name", ""))
            received.add_metric([name], item.get("bytes_in", 0))
            sent.add_metric([name], item.get("bytes_out", 0))
            for state in ("reading", "writing", "waiting"):
                connections.add_metric([name, state], item.get(state, 0))
            accepted.add_metric([name], item.get("accepted", 0))
            handled.add_metric([name], item.get("accepted", 0))
            _request_counts(requests, item.get("local_counts", []), [name], "", "")
            if "local_durations" in item:
                _histogram(duration, [name, ""], item["local_durations"])
        for name, queue in control.get("listen_queue", {}).items():
            listen_queue.add_metric([name], queue)
        yield from _tls_metrics(listeners, names)

        response = HistogramMetricFamily(
            "phoenix_upstream_response_duration_seconds",
            "Time from sending a request upstream to its response head.",
            labels=["upstream", "server"],
        )
        in_flight = GaugeMetricFamily(
            "phoenix_upstream_in_flight_requests",
            "Requests sent to a server and not yet answered.",
            labels=["upstream", "server"],
        )
        idle = GaugeMetricFamily(
            "phoenix_upstream_pool_idle_connections",
            "Idle keep-alive connections kept for a server.",
            labels=["upstream", "server"],
        )
        waiting = GaugeMetricFamily(
            "phoenix_upstream_waiting_requests",
            "Requests waiting for an upstream connection to open.",
            labels=["upstream"],
        )
        retries = CounterMetricFamily(
            "phoenix_upstream_retries",
            "Attempts sent again after a failure.",
            labels=["upstream", "reason"],
        )
        ejections = CounterMetricFamily(
            "phoenix_upstream_ejections",
            "Times passive failure accounting (max_fails) took a server out.",
            labels=["upstream", "server"],
        )
        upstreams: dict[str, dict[str, Any]] = snap.get("upstreams", {})
        for upstream, data in upstreams.items():
            _request_counts(requests, data.get("counts", []), names, upstream, "")
            for li, wire in enumerate(data.get("durations", [])):
                if li < len(names):
                    _histogram(duration, [names[li], upstream], wire)
            waiting.add_metric([upstream], data.get("waiting", 0))
            for reason, count in sorted(data.get("retries", {}).items()):
                retries.add_metric([upstream, reason], count)
            for address, server in data.get("servers", {}).items():
                _request_counts(requests, server.get("counts", []), names, upstream, address)
                _histogram(response, [upstream, address], server["response_time"])
                in_flight.add_metric([upstream, address], server.get("in_flight", 0))
                idle.add_metric([upstream, address], server.get("idle", 0))
                ejections.add_metric([upstream, address], server.get("ejections", 0))

        per_worker = GaugeMetricFamily(
            "phoenix_worker_client_connections",
            "Open client connections per worker process (each client address is served by "
            "one worker: a skew means few client addresses).",
            labels=["worker"],
        )
        by_worker: dict[str, int] = snap.get("worker_connections", {})
        for worker in sorted(by_worker, key=int):
            per_worker.add_metric([worker], by_worker[worker])

        yield from (requests, duration, received, sent, connections, accepted, handled, per_worker)
        yield from (listen_queue, response, in_flight, idle, waiting, retries, ejections)
        yield from self._control_metrics()

    def _control_metrics(self) -> Iterator[Metric]:
        control = self.control
        up = GaugeMetricFamily(
            "phoenix_upstream_server_up",
            "1 when the server is healthy (health checks pass, its name resolves); "
            "drain and disable do not change it.",
            labels=["upstream", "server"],
        )
        state = GaugeMetricFamily(
            "phoenix_upstream_server_state",
            "1 for the server's current state.",
            labels=["upstream", "server", "state"],
        )
        counts = GaugeMetricFamily(
            "phoenix_upstream_servers",
            "Servers of an upstream by state.",
            labels=["upstream", "state"],
        )
        checks = CounterMetricFamily(
            "phoenix_health_checks",
            "Active health check results.",
            labels=["upstream", "server", "result"],
        )
        per_upstream: dict[str, dict[str, int]] = {}
        for item in control.get("servers", []):
            upstream, address, current = item["upstream"], item["address"], item["state"]
            healthy = item.get("healthy", current in ("up", "backup"))
            up.add_metric([upstream, address], 1 if healthy else 0)
            state.add_metric([upstream, address, current], 1)
            bucket = per_upstream.setdefault(
                upstream, {"up": 0, "down": 0, "draining": 0, "disabled": 0, "backup": 0}
            )
            bucket[current] = bucket.get(current, 0) + 1
            for result, count in item.get("checks", {}).items():
                checks.add_metric([upstream, address, result], count)
        for upstream, by_state in per_upstream.items():
            for name, count in by_state.items():
                counts.add_metric([upstream, name], count)
        yield from (up, state, counts, checks)

        limited = CounterMetricFamily(
            "phoenix_limit_rejected", "Requests refused by a limit.", labels=["zone", "kind"]
        )
        delayed = CounterMetricFamily(
            "phoenix_limit_delayed",
            "Requests held back by a rate limit (burst without nodelay).",
            labels=["zone"],
        )
        totals: dict[str, int] = {}
        for item in self.snapshot.get("listeners", []):
            for key, count in item.get("limited", {}).items():
                totals[key] = totals.get(key, 0) + count
        for key, count in sorted(totals.items()):
            zone, _, kind = key.partition("\0")
            if kind == "delayed":
                delayed.add_metric([zone], count)
            else:
                limited.add_metric([zone, kind], count)
        yield from (limited, delayed)

        workers = GaugeMetricFamily("phoenix_worker_processes", "Worker processes running.")
        workers.add_metric([], control.get("workers", 1))
        restarts = CounterMetricFamily(
            "phoenix_worker_restarts", "Worker processes restarted after they died."
        )
        restarts.add_metric([], control.get("worker_restarts", 0))
        reloads = CounterMetricFamily(
            "phoenix_config_reloads", "Configuration reloads.", labels=["result"]
        )
        reloads.add_metric(["success"], control.get("reloads_ok", 0))
        reloads.add_metric(["failure"], control.get("reloads_failed", 0))
        last_ok = GaugeMetricFamily(
            "phoenix_config_last_reload_successful",
            "1 when the last reload (or the start) succeeded.",
        )
        last_ok.add_metric([], 1 if control.get("last_reload_ok", True) else 0)
        last_time = GaugeMetricFamily(
            "phoenix_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful reload (or the start).",
        )
        last_time.add_metric([], control.get("last_reload_time", 0.0))
        started = GaugeMetricFamily("phoenix_start_time_seconds", "Unix time of the start.")
        started.add_metric([], control.get("start_time", 0.0))
        build = GaugeMetricFamily(
            "phoenix_build_info", "Build information.", labels=["version", "hot_path", "loop"]
        )
        build.add_metric(
            [__version__, str(control.get("hot_path", "")), str(control.get("loop", ""))], 1
        )
        expiry = GaugeMetricFamily(
            "phoenix_tls_certificate_expiry_timestamp_seconds",
            "Unix time when a served certificate expires.",
            labels=["listener", "certificate"],
        )
        for (listener, path), when in control.get("cert_expiry", {}).items():
            expiry.add_metric([listener, path], when)
        yield from (workers, restarts, reloads, last_ok, last_time, started, build, expiry)


def _tls_metrics(listeners: list[dict[str, Any]], names: list[str]) -> Iterator[Metric]:
    """Handshakes (seed 7.1 "SSL handshake time") of the TLS listeners."""
    handshakes = CounterMetricFamily(
        "phoenix_tls_handshakes",
        "Completed TLS handshakes, by protocol version and whether the session was resumed.",
        labels=["listener", "protocol", "resumed"],
    )
    errors = CounterMetricFamily(
        "phoenix_tls_handshake_errors",
        "TLS handshakes that failed, by reason.",
        labels=["listener", "reason"],
    )
    duration = HistogramMetricFamily(
        "phoenix_tls_handshake_duration_seconds",
        "Time from accepting a connection to its completed TLS handshake.",
        labels=["listener"],
    )
    for index, item in enumerate(listeners):
        if not item.get("tls_handshake_time"):
            continue  # a plain HTTP listener
        name = names[index] if index < len(names) else str(item.get("name", ""))
        resumed = item.get("tls_resumed_versions", {})
        for version, count in sorted(item.get("tls_versions", {}).items()):
            again = resumed.get(version, 0)
            handshakes.add_metric([name, version, "false"], count - again)
            handshakes.add_metric([name, version, "true"], again)
        for reason, count in sorted(item.get("tls_handshake_errors", {}).items()):
            errors.add_metric([name, reason], count)
        _histogram(duration, [name], item["tls_handshake_time"], _TLS_BUCKET_LABELS)
    yield from (handshakes, errors, duration)


def render(snapshot: Snapshot, control: Snapshot) -> bytes:
    """The Prometheus text exposition for one scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot, control))
    return generate_latest(registry)


def stub_status(snapshot: Snapshot) -> bytes:
    """nginx ``stub_status`` text from the same numbers."""
    listeners = snapshot.get("listeners", [])
    reading = sum(item.get("reading", 0) for item in listeners)
    writing = sum(item.get("writing", 0) for item in listeners)
    waiting = sum(item.get("waiting", 0) for item in listeners)
    accepted = sum(item.get("accepted", 0) for item in listeners)
    requests = sum(item.get("requests", 0) for item in listeners)
    active = reading + writing + waiting
    return (
        f"Active connections: {active} \n"
        f"server accepts handled requests\n"
        f" {accepted} {accepted} {requests} \n"
        f"Reading: {reading} Writing: {writing} Waiting: {waiting} \n"
    ).encode()


def now() -> float:
    """Wall clock for timestamps in metrics."""
    return time.time()
