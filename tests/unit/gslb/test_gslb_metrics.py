"""GSLB counters and their Prometheus text (phoenix_lb.gslb.metrics): no sockets."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from phoenix_lb.gslb.health import RegionMonitor
from phoenix_lb.gslb.metrics import GslbStats, Metrics
from phoenix_lb.health.state import RiseFall


def make_metrics() -> tuple[GslbStats, RegionMonitor, Metrics]:
    stats = GslbStats()
    monitor = RegionMonitor(
        {"r1": "http://a/", "r2": "http://b/"}, interval=1.0, timeout=0.5, rise=1, fall=1
    )
    monitor.states = {"r1": RiseFall(1, 1), "r2": RiseFall(1, 1, initial_up=False)}
    monitor.healthy = frozenset({"r1"})
    return stats, monitor, Metrics(stats, monitor)


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.prometheus_text().decode()):
        for sample in family.samples:
            out[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_counters_reach_the_exposition() -> None:
    stats, _, metrics = make_metrics()
    stats.queries["udp"] += 3
    stats.answered(("r1",), 0)
    stats.answered(("r1", "r2"), 0)
    stats.answered((), 3)
    stats.drop("no header")
    stats.truncated += 2
    stats.transitions["r2", "down"] = 1
    got = samples(metrics)
    p = "phoenix_lb_gslb"
    assert got[f"{p}_queries_total", (("transport", "udp"),)] == 3
    assert got[f"{p}_queries_total", (("transport", "tcp"),)] == 0
    assert got[f"{p}_answers_total", (("rcode", "NOERROR"), ("region", "r1"))] == 2
    assert got[f"{p}_answers_total", (("rcode", "NOERROR"), ("region", "r2"))] == 1
    assert got[f"{p}_answers_total", (("rcode", "NXDOMAIN"), ("region", "none"))] == 1
    assert got[f"{p}_dropped_total", (("reason", "no header"),)] == 1
    assert got[f"{p}_truncated_total", ()] == 2
    assert got[f"{p}_region_up", (("region", "r1"),)] == 1
    assert got[f"{p}_region_up", (("region", "r2"),)] == 0
    assert got[f"{p}_region_transitions_total", (("region", "r2"), ("state", "down"))] == 1


def test_health_json() -> None:
    _, monitor, metrics = make_metrics()
    status, body = metrics.health()
    assert status == 200 and body["status"] == "degraded"
    regions = body["regions"]
    assert isinstance(regions, dict) and regions["r1"]["up"] is True
    monitor.healthy = frozenset()
    assert metrics.health()[0] == 503 and metrics.health()[1]["status"] == "down"
    monitor.healthy = frozenset({"r1", "r2"})
    assert metrics.health()[1]["status"] == "ok"


def test_registries_are_private() -> None:
    a = make_metrics()[2]
    b = make_metrics()[2]
    assert a.registry is not b.registry
    assert b"python_gc" not in a.prometheus_text()  # not the global default registry
