"""docs/metrics.md: the metric catalogue follows Prometheus conventions and can be emitted.

The catalogue is the contract the code, the alert rules and the dashboard
share; these tests keep its names conventional and check that
``prometheus_client`` can register each metric exactly as documented and that
``promtool check metrics`` finds nothing to lint in the result.
"""

from __future__ import annotations

import re
import subprocess

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy import metrics_catalogue
from tests.deploy.metrics_catalogue import METRICS_DOC, Metric
from tests.deploy.tools import require

CATALOGUE = metrics_catalogue.load()

# What the operations issue asks for, by the names the code must emit.
REQUIRED = {
    "phoenix_http_requests_total": ("listener", "upstream", "server", "method", "code"),
    "phoenix_http_request_duration_seconds": ("listener", "upstream"),
    "phoenix_upstream_response_duration_seconds": ("upstream", "server"),
    "phoenix_client_connections": ("listener", "state"),
    "phoenix_client_connections_accepted_total": ("listener",),
    "phoenix_client_connections_handled_total": ("listener",),
    "phoenix_upstream_in_flight_requests": ("upstream", "server"),
    "phoenix_upstream_pool_idle_connections": ("upstream", "server"),
    "phoenix_upstream_server_up": ("upstream", "server"),
    "phoenix_upstream_server_state": ("upstream", "server", "state"),
    "phoenix_upstream_servers": ("upstream", "state"),
    "phoenix_health_checks_total": ("upstream", "server", "result"),
    "phoenix_upstream_ejections_total": ("upstream", "server"),
    "phoenix_upstream_retries_total": ("upstream", "reason"),
    "phoenix_limit_rejected_total": ("zone", "kind"),
    "phoenix_tls_handshakes_total": ("listener", "protocol", "resumed"),
    "phoenix_tls_handshake_duration_seconds": ("listener",),
    "phoenix_upstream_waiting_requests": ("upstream",),
    "phoenix_listen_queue_length": ("listener",),
    "phoenix_received_bytes_total": ("listener",),
    "phoenix_sent_bytes_total": ("listener",),
    "phoenix_worker_restarts_total": (),
    "phoenix_config_reloads_total": ("result",),
    "phoenix_config_last_reload_successful": (),
    "phoenix_config_last_reload_success_timestamp_seconds": (),
    "phoenix_tls_certificate_expiry_timestamp_seconds": ("listener", "certificate"),
    "phoenix_build_info": ("version", "hot_path", "loop"),
}

# Labels that Prometheus or the scrape itself owns.
RESERVED_LABELS = {"le", "quantile", "job", "instance"}
UNITS = ("_seconds", "_bytes")
WORKERS = {"sum", "live sum", "one", "per worker"}


def _documented_labels() -> set[str]:
    """Label names of the "Labels" table (rows whose first cell starts with a backquote)."""
    text = METRICS_DOC.read_text(encoding="utf-8")
    section = text.split("## Labels", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)`", section, flags=re.MULTILINE))


def test_catalogue_has_what_the_issue_asks_for() -> None:
    for name, labels in REQUIRED.items():
        assert name in CATALOGUE, f"{name} missing from docs/metrics.md"
        assert CATALOGUE[name].labels == labels, name


@pytest.mark.parametrize("metric", CATALOGUE.values(), ids=lambda m: m.name)
def test_name_follows_prometheus_conventions(metric: Metric) -> None:
    assert re.fullmatch(r"phoenix_[a-z][a-z0-9]*(_[a-z0-9]+)*", metric.name)
    if metric.type == "counter":
        assert metric.name.endswith("_total")
    else:
        assert not metric.name.endswith("_total")
    if metric.type == "histogram":
        assert metric.name.endswith(UNITS), "a histogram measures something: name its base unit"
    assert not re.search(r"_(milliseconds|ms|kilobytes|kb|minutes)(_|$)", metric.name)
    if "timestamp" in metric.name:
        assert metric.name.endswith("_timestamp_seconds")
    if metric.name.endswith("_info"):
        assert metric.type == "gauge"
    assert metric.workers in WORKERS
    assert metric.meaning


@pytest.mark.parametrize("metric", CATALOGUE.values(), ids=lambda m: m.name)
def test_labels_are_documented_and_not_reserved(metric: Metric) -> None:
    documented = _documented_labels()
    for label in metric.labels:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", label)
        assert label not in RESERVED_LABELS
        assert label in documented, f"label {label} of {metric.name} not in the Labels table"


def _register(registry: CollectorRegistry, metric: Metric) -> None:
    """Create ``metric`` as the code will, and give it one sample."""
    kind = {"counter": Counter, "gauge": Gauge, "histogram": Histogram}[metric.type]
    instrument = kind(metric.name, metric.meaning, metric.labels, registry=registry)
    child = instrument.labels(*(["x"] * len(metric.labels))) if metric.labels else instrument
    if metric.type == "histogram":
        child.observe(0.1)
    elif metric.type == "counter":
        child.inc()
    else:
        child.set(1)


def _exposition() -> str:
    registry = CollectorRegistry()
    for metric in CATALOGUE.values():
        _register(registry, metric)
    return generate_latest(registry).decode()


def test_prometheus_client_emits_exactly_the_documented_names() -> None:
    families = {family.name: family for family in text_string_to_metric_families(_exposition())}
    samples = {
        sample.name
        for family in families.values()
        for sample in family.samples
        if not sample.name.endswith("_created")
    }
    assert samples == set(metrics_catalogue.series_names(CATALOGUE))
    for metric in CATALOGUE.values():
        # The parser names counter families without _total.
        family = families[metric.name.removesuffix("_total")]
        assert family.type == metric.type


def test_promtool_finds_nothing_to_lint() -> None:
    promtool = require("promtool", "prometheus")
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=_exposition(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "", result.stdout


def test_stub_status_example_is_nginx_format() -> None:
    text = METRICS_DOC.read_text(encoding="utf-8")
    example = text.split("```text\n", 1)[1].split("```", 1)[0]
    assert metrics_catalogue.parse_stub_status(example) == {
        "active": 291,
        "accepts": 16630948,
        "handled": 16630948,
        "requests": 31070465,
        "reading": 6,
        "writing": 179,
        "waiting": 106,
    }


def test_stub_status_parser_rejects_near_misses() -> None:
    good = "Active connections: 1 \nserver accepts handled requests\n 1 1 1 \n"
    good += "Reading: 0 Writing: 1 Waiting: 0 \n"
    metrics_catalogue.parse_stub_status(good)
    for bad in (good.replace(" \n", "\n"), good.rstrip("\n"), good.replace("Waiting", "Idle")):
        with pytest.raises(ValueError):
            metrics_catalogue.parse_stub_status(bad)


def test_parser_rejects_malformed_rows() -> None:
    with pytest.raises(ValueError, match="expected 6 cells"):
        metrics_catalogue.parse("| `phoenix_x_total` | counter | |\n")
    with pytest.raises(ValueError, match="unknown type"):
        metrics_catalogue.parse("| `phoenix_x` | summary | | sum | m | e |\n")
    with pytest.raises(ValueError, match="twice"):
        metrics_catalogue.parse("| `phoenix_x` | gauge | | one | m | e |\n" * 2)
