"""deploy/logrotate/phoenix-lb: logrotate accepts it, rotates, and sends SIGUSR1 to the service.

The snippet runs on a copy whose log directory is a temporary one and whose
owner is the current user; ``systemctl`` (which the postrotate script asks
for the service's main PID) is a stub printing the PID of a stand-in process,
which must receive SIGUSR1 exactly once for all the files rotated.
"""

from __future__ import annotations

import grp
import os
import pwd
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.deploy import metrics_catalogue
from tests.deploy.tools import require

SNIPPET = metrics_catalogue.ROOT / "deploy" / "logrotate" / "phoenix-lb"
LOG_DIR = "/var/log/phoenix-lb"

# Counts SIGUSR1 into a file; says "ready" once the handler is installed.
_MAIN_PROCESS = """
import signal, sys, time
count = 0
def on_usr1(signum, frame):
    global count
    count += 1
    open(sys.argv[1], "w").write(str(count))
signal.signal(signal.SIGUSR1, on_usr1)
print("ready", flush=True)
while True:
    time.sleep(1)
"""


def _local_copy(tmp_path: Path) -> tuple[Path, Path]:
    """The snippet with its paths and owner made local; returns (config, log dir)."""
    logs = tmp_path / "log"
    logs.mkdir()
    owner = f"{pwd.getpwuid(os.getuid()).pw_name} {grp.getgrgid(os.getgid()).gr_name}"
    text = SNIPPET.read_text(encoding="utf-8")
    assert LOG_DIR in text and "phoenix-lb phoenix-lb" in text
    text = text.replace(LOG_DIR, str(logs)).replace("phoenix-lb phoenix-lb", owner)
    if os.getuid() != 0:
        # Only root can switch users; as another user, rotate as that user.
        text = "\n".join(line for line in text.splitlines() if not line.strip().startswith("su "))
    config = tmp_path / "logrotate.conf"
    config.write_text(text + "\n")
    return config, logs


def test_snippet_sends_sigusr1_from_postrotate() -> None:
    text = SNIPPET.read_text(encoding="utf-8")
    postrotate = text.split("postrotate", 1)[1].split("endscript", 1)[0]
    assert 'kill -USR1 "$pid"' in postrotate
    assert "MainPID" in postrotate
    assert "sharedscripts" in text  # one signal for all the files


def test_logrotate_parses_it(tmp_path: Path) -> None:
    logrotate = require("logrotate", "logrotate")
    config, logs = _local_copy(tmp_path)
    (logs / "access.log").write_text("x\n")
    result = subprocess.run(
        [logrotate, "--debug", "--state", str(tmp_path / "state"), str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "error" not in result.stderr.lower(), result.stderr


def test_rotation_reopens_logs_with_sigusr1(tmp_path: Path) -> None:
    logrotate = require("logrotate", "logrotate")
    config, logs = _local_copy(tmp_path)
    for name in ("access.log", "error.log"):
        (logs / name).write_text(f"{name} line\n")
    signals = tmp_path / "usr1"
    main = subprocess.Popen(
        [sys.executable, "-c", _MAIN_PROCESS, str(signals)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert main.stdout is not None
        assert main.stdout.readline() == "ready\n"
        stub_bin = tmp_path / "bin"
        stub_bin.mkdir()
        systemctl = stub_bin / "systemctl"
        systemctl.write_text(f"#!/bin/sh\necho {main.pid}\n")
        systemctl.chmod(0o755)
        result = subprocess.run(
            [logrotate, "--force", "--state", str(tmp_path / "state"), str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PATH": f"{stub_bin}:{os.environ.get('PATH', '')}"},
        )
        assert result.returncode == 0, result.stderr
        deadline = time.monotonic() + 10
        while not signals.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # a second, wrong signal would arrive by now
        assert signals.read_text() == "1"
        assert main.poll() is None
    finally:
        main.send_signal(signal.SIGTERM)
        main.wait(timeout=10)
        if main.stdout is not None:
            main.stdout.close()
    names = sorted(path.name for path in logs.iterdir())
    # New empty files (create), the old ones renamed with a date (dateext).
    assert [name for name in names if name.endswith(".log")] == ["access.log", "error.log"]
    assert len(names) == 4, names
    assert (logs / "access.log").read_text() == ""


@pytest.mark.parametrize("pid", ["", "0"])
def test_postrotate_is_quiet_when_the_service_is_not_running(tmp_path: Path, pid: str) -> None:
    # systemctl prints MainPID=0 (or nothing) for a stopped service: no kill.
    text = SNIPPET.read_text(encoding="utf-8")
    script = text.split("postrotate", 1)[1].split("endscript", 1)[0]
    stub_bin = tmp_path / "bin"
    stub_bin.mkdir()
    (stub_bin / "systemctl").write_text(f"#!/bin/sh\necho {pid}\n")
    (stub_bin / "systemctl").chmod(0o755)
    result = subprocess.run(
        ["/bin/sh", "-ec", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": f"{stub_bin}:{os.environ.get('PATH', '')}"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
