"""Worker processes under concurrent control traffic.

Stats scrapes and reloads travel over the same master<->worker channel; a
reply must reach the request that asked for it even when several overlap.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.support import Backend

from .conftest import ProxyProcess
from .edgesupport import get, start_lb
from .helpers import make_config


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
