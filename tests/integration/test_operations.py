"""Operations end to end: ``phoenix-lb run`` as real processes, signals and the admin API.

Each test starts a master (``workers: 2`` where the process model matters,
else ``workers: 1``) with an admin listener on a free port and test backends
from ``tests/support``, and stops everything by PID (``opsupport.Phoenix``).
Load comes from a bounded pool of Python keep-alive clients, or from
``wrk -t1 -c20`` for a few seconds; tests that need wrk skip without it
(fail under ``CI=true``).

With ``workers: 2`` the master steers each client address to one worker, so
the clients send from 127.0.0.1 and 127.0.0.2 to reach both (see
``opsupport``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import metrics_catalogue
from tests.support import Backend

from .helpers import config_yaml, phoenix_lb_command, wait_for
from .opsupport import (
    SOURCES,
    LoadPool,
    Phoenix,
    free_ports,
    get,
    ops_config,
    port_of,
    raw_exchange,
    require_binary,
    running,
)

WRK = "/usr/bin/wrk"


def addresses(backends: list[Backend]) -> list[str]:
    return [b.address for b in backends]


def ctl(
    lb: Phoenix, *args: str, token_file: Path | None = None
) -> subprocess.CompletedProcess[str]:
    extra = ["--token-file", str(token_file)] if token_file else []
    return subprocess.run(
        phoenix_lb_command("ctl", "--admin", lb.admin_address, "--timeout", "10", *extra, *args),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


# ---------------------------------------------------------------- wrk


def parse_wrk(text: str) -> dict[str, int]:
    """Requests, non-2xx and socket errors from wrk's summary."""
    requests = re.search(r"^\s*(\d+) requests in ", text, re.M)
    assert requests, f"cannot parse wrk output:\n{text}"
    out = {"requests": int(requests[1]), "non_2xx": 0, "socket_errors": 0}
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if non_2xx:
        out["non_2xx"] = int(non_2xx[1])
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    if errors:
        out["socket_errors"] = sum(int(g) for g in errors.groups())
    return out


def start_wrk(port: int, seconds: int, connections: int = 20) -> subprocess.Popen[str]:
    require_binary(WRK, "wrk")
    return subprocess.Popen(
        [WRK, "-t1", f"-c{connections}", f"-d{seconds}s", f"http://127.0.0.1:{port}/"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish_wrk(proc: subprocess.Popen[str], seconds: int) -> tuple[dict[str, int], str]:
    try:
        output, _ = proc.communicate(timeout=seconds + 20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    assert proc.returncode == 0, output
    return parse_wrk(output), output


# ---------------------------------------------------------------- worker processes


def test_killed_worker_is_replaced_and_only_its_clients_notice(
    tmp_path: Path, backends: Any
) -> None:
    per_source = 4
    with running(tmp_path, ops_config(addresses(backends(2)), workers=2)) as lb:
        before = lb.worker_pids()
        assert len(before) == 2, before
        with LoadPool(lb.port, per_source=per_source) as pool:
            wait_for(
                lambda: all(r.ok >= 20 for r in pool.results.values()), 10, "load on both workers"
            )
            # A scrape just before: the master keeps a dead worker's last
            # numbers, so the totals must not drop below these.
            counted = lb.metrics().value("phoenix_http_requests_total")
            victim = before[0]
            os.kill(victim, signal.SIGKILL)
            wait_for(
                lambda: len(lb.worker_pids()) == 2 and victim not in lb.worker_pids(),
                10,
                "a replacement worker",
            )
            replaced_at = time.monotonic()
            # Service continues on both workers after the replacement.
            wait_for(
                lambda: all(
                    sum(t > replaced_at for t in r.ok_times) >= 20 for r in pool.results.values()
                ),
                10,
                "requests served after the replacement",
            )
        after = lb.worker_pids()
        assert victim not in after and len(set(after) - set(before)) == 1, (before, after)
        metrics = lb.metrics()
        assert metrics.value("phoenix_worker_restarts_total") == 1
        assert metrics.value("phoenix_worker_processes") == 2
        assert metrics.value("phoenix_http_requests_total") > counted
        assert "exited with status -9" in lb.stderr_text()

    # Clients of the other worker saw nothing; clients of the killed worker
    # lost at most the one request each had on it (their connection died).
    hit = {source: r for source, r in pool.results.items() if r.failed}
    assert len(hit) <= 1, {s: r.errors for s, r in hit.items()}
    for source, result in hit.items():
        assert result.failed <= per_source, (source, result.errors)
    total_ok = sum(r.ok for r in pool.results.values())
    assert total_ok > 100


# ---------------------------------------------------------------- reload


def copied(config: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of a config dict."""
    new: dict[str, Any] = json.loads(json.dumps(config))
    return new


def weighted(config: dict[str, Any], weights: list[int]) -> dict[str, Any]:
    new = copied(config)
    for server, weight in zip(new["upstreams"]["app"]["servers"], weights, strict=True):
        server["weight"] = weight
    return new


@pytest.mark.parametrize("workers", [1, 2])
def test_reloads_under_wrk_load_fail_nothing(tmp_path: Path, backends: Any, workers: int) -> None:
    require_binary(WRK, "wrk")
    config = ops_config(addresses(backends(2)), workers=workers)
    seconds = 6
    with running(tmp_path, config) as lb:
        wrk = start_wrk(lb.port, seconds)
        try:
            for weights in ([3, 1], [1, 3], [2, 2]):
                time.sleep(1.2)
                lb.reload(weighted(config, weights))
        finally:
            result, output = finish_wrk(wrk, seconds)
        metrics = lb.metrics()
        assert metrics.value("phoenix_config_reloads_total", result="success") == 3
        assert metrics.value("phoenix_config_reloads_total", result="failure") == 0
        assert lb.proc is not None and lb.proc.poll() is None
        # New connections see the last config and the proxy still answers.
        assert get(lb.port)[0] == 200
    assert result["requests"] > 500, output
    assert result["non_2xx"] == 0, output
    assert result["socket_errors"] == 0, output


@pytest.mark.parametrize("workers", [1, 2])
def test_reload_to_a_new_address_moves_the_listener(
    tmp_path: Path, backends: Any, workers: int
) -> None:
    old_port, new_port = free_ports(2)
    config = ops_config(addresses(backends(1)), workers=workers, port=old_port)
    with running(tmp_path, config) as lb:
        assert get(old_port)[0] == 200
        old_workers = lb.worker_pids()
        moved = copied(config)
        moved["listeners"][0]["bind"] = [f"127.0.0.1:{new_port}"]
        lb.reload(moved)
        assert get(new_port)[0] == 200
        assert get(new_port, source=SOURCES[1])[0] == 200

        def old_refused() -> bool:
            try:
                socket.create_connection(("127.0.0.1", old_port), timeout=1).close()
            except ConnectionRefusedError:
                return True
            return False

        wait_for(old_refused, 5, f"the old address {old_port} to stop listening")
        if workers > 1:
            # A new generation of workers holds the new sockets; the old one exits.
            wait_for(
                lambda: (
                    not set(old_workers) & set(lb.worker_pids())
                    and len(lb.worker_pids()) == workers
                ),
                10,
                "the old workers to exit",
            )
        assert lb.metrics().value("phoenix_worker_restarts_total") == 0


def test_invalid_config_on_reload_keeps_serving(tmp_path: Path, backends: Any) -> None:
    config = ops_config(addresses(backends(1)), workers=2)
    with running(tmp_path, config) as lb:
        broken = copied(config)
        broken["upstreams"]["app"]["servers"][0]["weight"] = 0
        lb.config_path.write_text(config_yaml(broken))
        lb.signal(signal.SIGHUP)
        wait_for(
            lambda: lb.metrics().value("phoenix_config_reloads_total", result="failure") == 1,
            10,
            "the failed reload to be counted",
        )
        metrics = lb.metrics()
        assert metrics.value("phoenix_config_last_reload_successful") == 0
        assert metrics.value("phoenix_config_reloads_total", result="success") == 0
        for source in SOURCES:
            assert get(lb.port, source=source)[0] == 200

        done = ctl(lb, "reload")
        assert done.returncode == 1, done
        expected = f"{lb.config_path}: upstreams.app.servers[0].weight: must be at least 1"
        assert expected in done.stderr, done.stderr
        assert "the running configuration stays in effect" in done.stderr
        assert lb.metrics().value("phoenix_config_reloads_total", result="failure") == 2
        assert "reload refused" in lb.stderr_text()
        assert get(lb.port)[0] == 200

        # Fixed again: the next reload succeeds and the gauge recovers.
        lb.reload(config)
        assert lb.metrics().value("phoenix_config_last_reload_successful") == 1


def test_ctl_rollback_returns_to_the_previous_config(tmp_path: Path, backends: Any) -> None:
    first, second = backends(2)
    config = ops_config([first.address], workers=2)
    with running(tmp_path, config) as lb:
        refused = ctl(lb, "rollback")
        assert refused.returncode == 1, refused
        assert "no previous configuration" in refused.stderr

        moved = copied(config)
        moved["upstreams"]["app"]["servers"][0]["address"] = second.address
        lb.reload(moved)
        assert all(get(lb.port, source=s)[1] == b"b1\n" for s in SOURCES)

        done = ctl(lb, "rollback")
        assert done.returncode == 0, done.stderr
        # Every worker runs the first config again, and the file says so, so
        # that the next reload does not bring the rolled-back one back.
        assert all(get(lb.port, source=s)[1] == b"b0\n" for s in SOURCES)
        assert second.address not in lb.config_path.read_text()
        assert lb.metrics().value("phoenix_config_reloads_total", result="success") == 2


def test_ready_is_sent_to_systemd_once_listening(
    tmp_path: Path, backends: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Type=notify: systemd starts the next unit, and a reload counts as done,
    # only once READY=1 arrives on $NOTIFY_SOCKET.
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(15)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        config = ops_config(addresses(backends(1)), workers=2)
        with running(tmp_path, config) as lb:
            message = sock.recv(4096).decode()
            assert "READY=1" in message.splitlines()
            assert f"MAINPID={lb.pid}" in message.splitlines()
            assert get(lb.port)[0] == 200


# ---------------------------------------------------------------- signals


def _connect_outcome(port: int) -> str:
    """What a new client sees: refused, or served (status), or accepted and never answered."""
    try:
        status, _, _ = get(port, timeout=1.0)
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "hung"
    except OSError as exc:
        return f"error {exc!r}"
    except Exception as exc:  # http.client: connection closed without an answer
        return f"closed {exc!r}"
    return f"served {status}"


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_finishes_in_flight_requests_then_exits_0(
    tmp_path: Path, backends: Any, workers: int
) -> None:
    (backend,) = backends(1)
    config = ops_config([backend.address], workers=workers, shutdown_timeout="6s")
    lb = Phoenix(tmp_path, config)
    try:
        lb.start()
        outcome: dict[str, Any] = {}

        def slow() -> None:
            try:
                outcome["status"], outcome["body"], _ = get(lb.port, "/slow?delay=2", timeout=10)
            except Exception as exc:  # reported by the assertion below
                outcome["error"] = repr(exc)

        client = threading.Thread(target=slow)
        client.start()
        backend.wait_for_requests(1, timeout=5)
        signalled = time.monotonic()
        lb.signal(signal.SIGTERM)
        client.join(10)
        code = lb.wait(10)
        elapsed = time.monotonic() - signalled
    finally:
        lb.stop()
    assert outcome.get("status") == 200, outcome
    assert code == 0, lb.stderr_text()
    # The slow request took 2 s; the process did not wait for shutdown_timeout.
    assert elapsed < 4.0, elapsed
    assert "shutting down" in lb.stderr_text()


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_refuses_new_connections_while_draining(
    tmp_path: Path, backends: Any, workers: int
) -> None:
    (backend,) = backends(1)
    config = ops_config([backend.address], workers=workers, shutdown_timeout="6s")
    lb = Phoenix(tmp_path, config)
    try:
        lb.start()
        client = threading.Thread(target=lambda: _quiet(get, lb.port, "/slow?delay=2", timeout=10))
        client.start()
        backend.wait_for_requests(1, timeout=5)
        lb.signal(signal.SIGTERM)
        time.sleep(0.3)
        after_term = _connect_outcome(lb.port)
        client.join(10)
    finally:
        lb.stop()
    assert after_term == "refused", after_term


def _quiet(function: Any, *args: Any, **kwargs: Any) -> None:
    # The outcome is not what this client is for.
    with contextlib.suppress(Exception):
        function(*args, **kwargs)


def test_sigquit_exits_at_once(tmp_path: Path, backends: Any) -> None:
    (backend,) = backends(1)
    config = ops_config([backend.address], workers=2, shutdown_timeout="20s")
    lb = Phoenix(tmp_path, config)
    try:
        lb.start()
        workers = lb.worker_pids()
        errors: list[str] = []

        def slow() -> None:
            try:
                get(lb.port, "/slow?delay=8", timeout=15)
                errors.append("the slow request completed")
            except Exception as exc:  # expected: the connection is cut
                errors.append(repr(exc))

        client = threading.Thread(target=slow)
        client.start()
        backend.wait_for_requests(1, timeout=5)
        signalled = time.monotonic()
        lb.signal(signal.SIGQUIT)
        code = lb.wait(5)
        elapsed = time.monotonic() - signalled
        client.join(10)
        wait_for(lambda: not any(_alive(pid) for pid in workers), 5, "the workers to exit")
    finally:
        lb.stop()
    assert elapsed < 3.0, elapsed
    assert code == 0, lb.stderr_text()
    assert errors and errors[0] != "the slow request completed", errors


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_sigusr1_reopens_the_access_log(tmp_path: Path, backends: Any) -> None:
    log_path = tmp_path / "access.log"
    config = ops_config(
        addresses(backends(1)),
        workers=2,
        access_log={"path": str(log_path), "format": "combined"},
    )
    with running(tmp_path, config) as lb:
        for source in SOURCES:
            assert get(lb.port, "/before", source=source)[0] == 200
        wait_for(
            lambda: log_path.exists() and log_path.read_text().count("/before") == 2,
            5,
            "the first lines",
        )
        rotated = tmp_path / "access.log.1"
        log_path.rename(rotated)
        lb.signal(signal.SIGUSR1)
        wait_for(log_path.exists, 5, "the access log to be reopened at its path")
        for source in SOURCES:
            assert get(lb.port, "/after", source=source)[0] == 200
        wait_for(lambda: log_path.read_text().count("/after") == 2, 5, "new lines in the new file")
        old = rotated.read_text()
        assert old.count("/before") == 2 and "/after" not in old
        assert "/before" not in log_path.read_text()


# ---------------------------------------------------------------- metrics


def _request(method: str, path: str, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
    if body:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def test_connections_per_worker_show_where_clients_landed(tmp_path: Path, backends: Any) -> None:
    with running(tmp_path, ops_config(addresses(backends(1)), workers=2)) as lb:
        opened: list[socket.socket] = []
        try:
            # Three keep-alive clients from one address, one from the other.
            for source in (SOURCES[0], SOURCES[0], SOURCES[0], SOURCES[1]):
                sock = socket.create_connection(
                    ("127.0.0.1", lb.port), timeout=5, source_address=(source, 0)
                )
                opened.append(sock)
                sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                assert sock.recv(4096).startswith(b"HTTP/1.1 200")

            def per_worker() -> list[float]:
                families = lb.metrics().families
                (family,) = [f for f in families if f.name == "phoenix_worker_client_connections"]
                return sorted(sample.value for sample in family.samples)

            # Each address is served by one worker, the two by different ones.
            wait_for(lambda: per_worker() == [1, 3], 5, "connections counted per worker")
        finally:
            for sock in opened:
                sock.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_metrics_match_the_requests_sent(tmp_path: Path, backends: Any, workers: int) -> None:
    servers = backends(2)
    # (method, path, body, status class): 12 requests, 4 statuses, from both sources.
    plan = [
        ("GET", "/", b"", "2xx"),
        ("GET", "/status/201", b"", "2xx"),
        ("POST", "/echo", b"x" * 1000, "2xx"),
        ("GET", "/status/404", b"", "4xx"),
        ("GET", "/status/503", b"", "5xx"),
        ("HEAD", "/", b"", "2xx"),
    ] * 2
    with running(tmp_path, ops_config(addresses(servers), workers=workers)) as lb:
        sent = received = 0
        for index, (method, path, body, _) in enumerate(plan):
            request = _request(method, path, body)
            answer = raw_exchange(lb.port, request, source=SOURCES[index % 2])
            assert answer.startswith(b"HTTP/1.1 "), answer
            sent += len(request)
            received += len(answer)
        # Counted when the response ends; the last one may still be closing.
        wait_for(
            lambda: lb.metrics().value("phoenix_http_requests_total") == len(plan),
            5,
            "every request counted",
        )
        m = lb.metrics()

    by_class: dict[str, int] = {}
    for _, _, _, code in plan:
        by_class[code] = by_class.get(code, 0) + 1
    for code, count in by_class.items():
        assert m.value("phoenix_http_requests_total", code=code) == count, code
    assert m.value("phoenix_http_requests_total", method="POST") == 2
    assert m.value("phoenix_http_requests_total", method="HEAD") == 2
    for backend in servers:
        seen = len(backend.requests)
        assert seen > 0
        assert m.value("phoenix_http_requests_total", server=backend.address) == seen
        assert (
            m.value("phoenix_upstream_response_duration_seconds_count", server=backend.address)
            == seen
        )
    assert sum(len(b.requests) for b in servers) == len(plan)
    assert m.value("phoenix_http_request_duration_seconds_count", upstream="app") == len(plan)
    assert m.value("phoenix_http_request_duration_seconds_bucket", upstream="app", le="+Inf") == (
        len(plan)
    )
    assert m.value("phoenix_client_connections_accepted_total") == len(plan)
    assert m.value("phoenix_received_bytes_total", listener="test") == sent
    assert 0 < m.value("phoenix_sent_bytes_total", listener="test") <= received
    assert m.value("phoenix_worker_processes") == workers


def test_metrics_of_local_answers_and_upstream_times(tmp_path: Path, backends: Any) -> None:
    (backend,) = backends(1)
    config = ops_config([backend.address], timeouts={"read": "500ms"})
    config["listeners"][0]["routes"] = [
        {"path": "/drip", "upstream": "app"},
        {"path": "/hang", "upstream": "app"},
    ]
    with running(tmp_path, config) as lb:
        # Answered by the balancer itself: counted under their own method.
        assert get(lb.port, "/nothing")[0] == 404
        assert raw_exchange(lb.port, _request("POST", "/nothing", b"x")).startswith(
            b"HTTP/1.1 404 "
        )
        # A body that takes 0.4 s after its head; a server that never answers.
        assert get(lb.port, "/drip?count=3&interval=0.2")[0] == 200
        assert get(lb.port, "/hang")[0] == 504
        wait_for(lambda: lb.metrics().value("phoenix_http_requests_total") == 4, 5, "4 requests")
        m = lb.metrics()
    assert m.value("phoenix_http_requests_total", upstream="", method="GET") == 1
    assert m.value("phoenix_http_requests_total", upstream="", method="POST") == 1
    assert m.value("phoenix_http_request_duration_seconds_count", upstream="") == 2
    # One observation per attempt, the failed one included; to the last byte.
    server = backend.address
    assert m.value("phoenix_upstream_response_duration_seconds_count", server=server) == 2
    assert m.value("phoenix_upstream_response_duration_seconds_sum", server=server) >= 0.85


def test_sent_bytes_count_heads_and_bodies(tmp_path: Path, backends: Any) -> None:
    with running(tmp_path, ops_config(addresses(backends(1)))) as lb:
        received = 0
        for path in ("/", "/status/404", "/big?size=5000"):
            received += len(raw_exchange(lb.port, _request("GET", path)))
        wait_for(
            lambda: lb.metrics().value("phoenix_http_requests_total") == 3, 5, "3 requests counted"
        )
        assert lb.metrics().value("phoenix_sent_bytes_total") == received


@pytest.mark.parametrize("workers", [1, 2])
def test_counters_survive_a_reload(tmp_path: Path, backends: Any, workers: int) -> None:
    config = ops_config(addresses(backends(2)), workers=workers)
    with running(tmp_path, config) as lb:
        for index in range(10):
            assert get(lb.port, source=SOURCES[index % 2])[0] == 200
        wait_for(lambda: lb.metrics().value("phoenix_http_requests_total") == 10, 5, "10 requests")
        before = lb.metrics()
        lb.reload(weighted(config, [2, 1]))
        time.sleep(0.5)
        after = lb.metrics()
    for name in (
        "phoenix_http_requests_total",
        "phoenix_client_connections_accepted_total",
        "phoenix_received_bytes_total",
        "phoenix_upstream_response_duration_seconds_count",
    ):
        assert after.value(name) >= before.value(name), name


def test_every_emitted_metric_is_documented(tmp_path: Path, backends: Any) -> None:
    catalogue = metrics_catalogue.load()
    documented = {}
    for metric in catalogue.values():
        # The text parser names counter families without "_total".
        name = metric.name.removesuffix("_total") if metric.type == "counter" else metric.name
        documented[name] = metric
    with running(tmp_path, ops_config(addresses(backends(2)), workers=2)) as lb:
        for source in SOURCES:
            get(lb.port, source=source)
            get(lb.port, "/status/500", source=source)
        families = lb.metrics().families
    emitted = {f.name: f for f in families if f.name.startswith("phoenix_")}
    assert emitted, "no phoenix_ metrics"
    undocumented = sorted(set(emitted) - set(documented))
    assert not undocumented, f"emitted but not in docs/metrics.md: {undocumented}"
    for name, family in emitted.items():
        metric = documented[name]
        assert family.type == metric.type, (name, family.type, metric.type)
        labels = {k for s in family.samples for k in s.labels if k != "le"}
        if family.samples:
            assert labels == set(metric.labels), (name, sorted(labels), metric.labels)


def test_nginx_status_parses_as_stub_status(tmp_path: Path, backends: Any) -> None:
    with running(tmp_path, ops_config(addresses(backends(1)), workers=2)) as lb:
        for index in range(6):
            assert get(lb.port, source=SOURCES[index % 2])[0] == 200
        # One connection held open (idle keep-alive) shows as Waiting.
        with socket.create_connection(("127.0.0.1", lb.port)) as idle:
            idle.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            assert idle.recv(65536).startswith(b"HTTP/1.1 200")

            def stub() -> dict[str, int]:
                answer = lb.admin("/nginx_status")
                assert answer.status == 200
                assert answer.headers["content-type"].startswith("text/plain")
                return metrics_catalogue.parse_stub_status(answer.body.decode())

            wait_for(lambda: stub()["requests"] == 7, 5, "7 requests in stub_status")
            numbers = stub()
        assert numbers["accepts"] == numbers["handled"] == 7
        assert numbers["waiting"] == 1 and numbers["active"] == 1, numbers
        assert numbers["reading"] + numbers["writing"] == 0, numbers


# ---------------------------------------------------------------- health, drain, auth


def test_reload_that_adds_or_removes_health_checks_settles_server_health(
    tmp_path: Path, backends: Any
) -> None:
    b0, b1 = backends(2)
    checked = ops_config([b0.address, b1.address])
    checked["upstreams"]["app"]["health_check"] = {
        "interval": "100ms",
        "timeout": "100ms",
        "rise": 1,
        "fall": 1,
    }
    unchecked = copied(checked)
    del unchecked["upstreams"]["app"]["health_check"]

    def states() -> dict[str, str]:
        servers = lb.admin("/api/status").json()["upstreams"][0]["servers"]
        return {s["address"]: s["state"] for s in servers}

    b1.healthy = False
    with running(tmp_path, checked) as lb:
        wait_for(lambda: states()[b1.address] == "down", 5, "b1 marked down")
        # Checks removed: nothing would ever bring b1 back, so it is up.
        lb.reload(unchecked)
        assert states() == {b0.address: "up", b1.address: "up"}
        # Checks back, with b1 still failing them: down again after one probe.
        lb.reload(checked)
        wait_for(lambda: states()[b1.address] == "down", 5, "b1 down again")
        b1.healthy = True
        wait_for(lambda: states()[b1.address] == "up", 5, "b1 back up")


def test_servers_out_by_max_fails_count_as_down(tmp_path: Path) -> None:
    # Nothing listens on either address: max_fails 1 takes each out for 30s.
    dead = [f"127.0.0.1:{port}" for port in free_ports(2)]
    config = ops_config(dead, workers=2)
    for server in config["upstreams"]["app"]["servers"]:
        server.update(max_fails=1, fail_timeout="30s")
    with running(tmp_path, config) as lb:
        assert lb.admin("/health").status == 200
        statuses = [get(lb.port, source=SOURCES[0])[0] for _ in range(3)]
        assert statuses[0] == 502 and statuses[-1] == 503
        # keepalived and the global tier must see it: the balancer serves
        # nothing but 503s, whatever active checks (none here) would say.
        wait_for(lambda: lb.admin("/health").status == 503, 5, "/health to say 503")
        assert lb.admin("/health").json()["reasons"] == ["upstream app: no server up"]
        metrics = lb.metrics()
        for address in dead:
            assert metrics.value("phoenix_upstream_server_up", server=address) == 0
            assert metrics.value("phoenix_upstream_server_state", server=address, state="down")
        servers = lb.admin("/api/status").json()["upstreams"][0]["servers"]
        assert {s["state"] for s in servers} == {"down"}


def test_reload_moves_the_error_log(tmp_path: Path, backends: Any) -> None:
    (backend,) = backends(1)
    dead = f"127.0.0.1:{free_ports(1)[0]}"
    config = ops_config([backend.address, dead], workers=2)
    with running(tmp_path, config) as lb:
        moved = copied(config)
        error_log = tmp_path / "error.log"
        moved["error_log"] = {"path": str(error_log), "level": "info"}
        lb.reload(moved)
        done = ctl(lb, "drain", "app", backend.address)
        assert done.returncode == 0, done.stderr
        # A worker's line too: its only server left refuses connections.
        assert get(lb.port)[0] == 502
        wait_for(
            lambda: (
                error_log.exists()
                and "#master:" in error_log.read_text()
                and "#worker " in error_log.read_text()
            ),
            5,
            "master and worker lines in the new error log",
        )


def test_ctl_finds_a_bare_port_admin_and_refuses_a_wrong_port(
    tmp_path: Path, backends: Any
) -> None:
    config = ops_config(addresses(backends(1)))
    admin_port = port_of(config["admin"]["bind"])
    config["admin"]["bind"] = str(admin_port)  # a bare port: loopback
    with running(tmp_path, config) as lb:
        by_config = subprocess.run(
            phoenix_lb_command("ctl", "-c", str(lb.config_path), "status"),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert by_config.returncode == 0, by_config.stderr
        assert "health: ok" in by_config.stdout
        # Pointed at the proxy listener instead: a clear line, exit 2.
        wrong = ctl_at(f"127.0.0.1:{lb.port}", "status")
        assert wrong.returncode == 2
        assert "not as a phoenix-lb admin listener" in wrong.stderr
        assert "Traceback" not in wrong.stderr


def ctl_at(admin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        phoenix_lb_command("ctl", "--admin", admin, "--timeout", "10", *args),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_health_and_drain_through_ctl(tmp_path: Path, backends: Any) -> None:
    b0, b1 = backends(2)
    with running(tmp_path, ops_config([b0.address, b1.address], workers=2)) as lb:
        health = lb.admin("/health")
        assert health.status == 200 and health.json()["status"] == "ok"

        done = ctl(lb, "drain", "app", b0.address)
        assert done.returncode == 0, done.stderr
        assert "draining" in done.stdout
        # The master pushes the state to the workers; give the message a moment.
        time.sleep(0.3)
        b0.reset()
        b1.reset()
        for index in range(10):
            assert get(lb.port, source=SOURCES[index % 2])[0] == 200
        assert len(b0.requests) == 0
        assert len(b1.requests) == 10
        states = {
            s["address"]: s["state"]
            for s in lb.admin("/api/status").json()["upstreams"][0]["servers"]
        }
        assert states == {b0.address: "draining", b1.address: "up"}
        assert lb.admin("/health").status == 200

        # Every server out: /health says why, with 503.
        done = ctl(lb, "disable", "app", "1")
        assert done.returncode == 0, done.stderr
        health = lb.admin("/health")
        assert health.status == 503
        assert health.headers["content-type"] == "application/json"
        assert health.json() == {"status": "unavailable", "reasons": ["upstream app: no server up"]}

        for server in ("0", b1.address):
            done = ctl(lb, "enable", "app", server)
            assert done.returncode == 0, done.stderr
        assert lb.admin("/health").status == 200
        time.sleep(0.3)
        b0.reset()
        for index in range(6):
            assert get(lb.port, source=SOURCES[index % 2])[0] == 200
        assert len(b0.requests) > 0

        unknown = ctl(lb, "drain", "app", "127.0.0.1:1")
        assert unknown.returncode == 1
        assert "no server" in unknown.stderr


def test_server_up_ignores_operator_state(tmp_path: Path, backends: Any) -> None:
    b0, b1 = backends(2)
    with running(tmp_path, ops_config([b0.address, b1.address])) as lb:
        path = f"/api/upstreams/app/servers/{b0.address.replace(':', '%3A')}/drain"
        assert lb.admin(path, method="POST").status == 200
        m = lb.metrics()
    assert m.value("phoenix_upstream_server_state", server=b0.address, state="draining") == 1
    assert m.value("phoenix_upstream_server_up", server=b0.address) == 1


def test_admin_token(tmp_path: Path, backends: Any) -> None:
    token = "s3cret-token-0123456789"
    token_file = tmp_path / "admin.token"
    token_file.write_text(token + "\n")
    token_file.chmod(stat.S_IRUSR | stat.S_IWUSR)
    config = ops_config(addresses(backends(1)), admin_extra={"auth_token_file": str(token_file)})
    with running(tmp_path, config) as lb:
        assert lb.admin("/health").status == 200
        for path in ("/metrics", "/nginx_status", "/api/status"):
            refused = lb.admin(path)
            assert refused.status == 401, (path, refused)
            assert "authentication required" in refused.json()["error"]
            wrong = lb.admin(path, token="wrong-token-0123456789")
            assert wrong.status == 401, (path, wrong)
            right = lb.admin(path, token=token)
            assert right.status == 200, (path, right)
        assert lb.admin("/api/reload", method="POST").status == 401
        # The page itself is public (it asks for the token); its data is not.
        assert lb.admin("/status").status == 200

        without = ctl(lb, "status")
        assert without.returncode == 1, without
        with_token = ctl(lb, "status", token_file=token_file)
        assert with_token.returncode == 0, with_token
        assert "health: ok" in with_token.stdout, with_token


def test_check_refuses_a_public_admin_listener_without_token(tmp_path: Path) -> None:
    config = ops_config(["127.0.0.1:9"])
    config["admin"] = {"bind": "0.0.0.0:9000"}
    path = tmp_path / "public.yaml"
    path.write_text(config_yaml(config))
    done = subprocess.run(
        phoenix_lb_command("check", "-c", str(path)),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert "admin" in done.stderr and "auth_token_file" in done.stderr, done.stderr

    token_file = tmp_path / "token"
    token_file.write_text("x" * 32)
    token_file.chmod(0o600)
    config["admin"]["auth_token_file"] = str(token_file)
    path.write_text(config_yaml(config))
    done = subprocess.run(
        phoenix_lb_command("check", "-c", str(path)),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_worker_connections_makes_extra_clients_wait(tmp_path: Path, backends: Any) -> None:
    (backend,) = backends(1)
    config = ops_config([backend.address], worker_connections=5)
    results: list[int | str] = []
    lock = threading.Lock()

    def slow() -> None:
        status: int | str
        try:
            status = get(lb.port, "/slow?delay=1", timeout=15)[0]
        except Exception as exc:  # counted as a failure below
            status = repr(exc)
        with lock:
            results.append(status)

    with running(tmp_path, config) as lb:
        started = time.monotonic()
        clients = [threading.Thread(target=slow) for _ in range(10)]
        for client in clients:
            client.start()
        # At most 5 at once reach the backend; the rest wait in the backlog.
        time.sleep(0.6)
        assert len(backend.requests) <= 5
        for client in clients:
            client.join(20)
        elapsed = time.monotonic() - started
        stub = metrics_catalogue.parse_stub_status(lb.admin("/nginx_status").body.decode())
    assert results == [200] * 10, results
    assert elapsed >= 1.9, elapsed  # two waves of 1 s
    assert stub["accepts"] == 10
