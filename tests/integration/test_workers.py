"""Worker processes under concurrent control traffic.

Stats scrapes and reloads travel over the same master<->worker channel; a
reply must reach the request that asked for it even when several overlap.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from tests.support import Backend

from .conftest import ProxyProcess
from .edgesupport import get, start_lb
from .helpers import config_yaml, make_config, wait_for


def test_reloads_complete_while_stats_are_scraped(
    backends: Callable[[int], list[Backend]],
    run_proxy_subprocess: Callable[..., ProxyProcess],
    tmp_path: Path,
) -> None:
    (backend,) = backends(1)
    lb = start_lb(run_proxy_subprocess, tmp_path, make_config([backend.address]), workers=2)
    stop = threading.Event()
    errors: list[BaseException] = []

    def scrape() -> None:
        deadline = time.monotonic() + 30.0
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                lb.api("/api/status")
            except BaseException as exc:  # reported below
                errors.append(exc)
                return

    scrapers = [threading.Thread(target=scrape) for _ in range(2)]
    for thread in scrapers:
        thread.start()
    try:
        for done in range(1, 9):
            lb.process.proc.send_signal(signal.SIGHUP)
            # Each reload answers within a few seconds, never the 30 s
            # worker timeout a lost reply would cost.
            deadline = time.monotonic() + 8.0
            while lb.api("/api/status")["reloads"]["ok"] < done:
                assert time.monotonic() < deadline, f"reload {done} hung:\n{lb.stderr()}"
                time.sleep(0.05)
    finally:
        stop.set()
        for thread in scrapers:
            thread.join(timeout=10)
    assert errors == []
    assert get(lb.port, "/").status == 200


def test_sighup_while_workers_start_is_kept_for_after_the_start(
    backends: Callable[[int], list[Backend]],
    run_proxy_subprocess: Callable[..., ProxyProcess],
) -> None:
    (backend,) = backends(1)
    config = make_config([backend.address])
    config["listeners"][0]["bind"] = ["127.0.0.1:{port}"]
    config["workers"] = 2
    config["error_log"] = {"path": "stderr", "level": "info"}
    process = run_proxy_subprocess(config_yaml(config), wait=False)
    # Sent before the master can have finished starting its workers (the
    # default action of SIGHUP would end it).
    wait_for(lambda: "listening on" in process.stderr_text(), 20, "sockets open")
    os.kill(process.pid, signal.SIGHUP)
    process.wait_ready()
    wait_for(lambda: "reload done" in process.stderr_text(), 20, "the kept reload")
    assert process.proc.poll() is None
    assert get(process.port, "/").status == 200


def test_worker_that_cannot_start_says_why_at_once(
    backends: Callable[[int], list[Backend]],
    run_proxy_subprocess: Callable[..., ProxyProcess],
    tmp_path: Path,
) -> None:
    """A restarted worker whose certificate went bad reports it, not a 30 s timeout."""
    from tests.support.certs import TestCA

    ca = TestCA(tmp_path)
    files = ca.issue("example.com", stem="site")
    (backend,) = backends(1)
    config = make_config([backend.address])
    config["listeners"][0]["bind"] = ["127.0.0.1:{port}"]
    config["listeners"][0]["tls"] = {
        "certificates": [{"cert": str(files.cert), "key": str(files.key)}]
    }
    config["workers"] = 2
    config["error_log"] = {"path": "stderr", "level": "info"}
    process = run_proxy_subprocess(config_yaml(config))
    wait_for(lambda: " started (" in process.stderr_text(), 20, "master started")
    files.key.write_text("not a key\n")
    victim = psutil.Process(process.pid).children()[0].pid
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: "cannot start" in process.stderr_text(), 10, "the worker's reason")
    assert process.proc.poll() is None  # the master stays, the other worker serves


def test_drain_answers_once_every_worker_has_it(
    backends: Callable[[int], list[Backend]],
    run_proxy_subprocess: Callable[..., ProxyProcess],
    tmp_path: Path,
) -> None:
    """`ctl drain && deploy`: no request reaches the server after drain returned."""
    b0, b1 = backends(2)
    lb = start_lb(run_proxy_subprocess, tmp_path, make_config([b0.address, b1.address]), workers=2)
    for round_ in range(3):
        result = lb.ctl("drain", "app", b0.address)
        assert result.returncode == 0, result.stderr
        before = len(b0.requests)
        for index in range(20):
            source = "127.0.0.1" if index % 2 else "127.0.0.2"
            assert get(lb.port, "/", source=source).status == 200
        assert len(b0.requests) == before, f"round {round_}: the drained server got requests"
        assert lb.ctl("enable", "app", b0.address).returncode == 0
