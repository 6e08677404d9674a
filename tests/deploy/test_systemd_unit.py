"""deploy/systemd: the unit passes ``systemd-analyze verify``, is hardened, and its hardening holds.

``systemd-analyze verify`` insists that ExecStart's binary exists, so it runs
on a copy of the unit whose ``/usr/bin/phoenix-lb`` is this venv's console
script.  No systemd manager is needed (these machines have none running):
``verify`` and ``security --offline`` only read files.

``MemoryDenyWriteExecute=yes`` would kill the balancer if anything it loads
asked for memory that is writable and executable (a JIT, old libffi
closures).  The kernel's PR_SET_MDWE (Linux 6.3) enforces the same rule on a
process and its children, so the balancer is run under it here and must
serve a request, and OpenSSL must complete a handshake.
"""

from __future__ import annotations

import contextlib
import http.client
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from phoenix_lb.commands.run import WANTED_NOFILE
from phoenix_lb.config.schema import PhoenixConfig
from tests.deploy import metrics_catalogue
from tests.deploy.tools import require
from tests.support import Backend

SYSTEMD_DIR = metrics_catalogue.ROOT / "deploy" / "systemd"
UNIT = SYSTEMD_DIR / "phoenix-lb.service"
SYSUSERS = SYSTEMD_DIR / "phoenix-lb.sysusers"
INSTALLED_BINARY = "/usr/bin/phoenix-lb"
CONFIG_PATH = "/etc/phoenix-lb/phoenix.yaml"
PHOENIX_LB = Path(sys.executable).with_name("phoenix-lb")

# systemd-analyze security rates exposure from 0 (locked down) to 10; 2.0
# is the top of its "OK" band.  The unit scores 1.5 to 1.6 (what is left is
# being a network service that binds ports 80 and 443).
MAX_EXPOSURE = 2.0


def _unit_settings(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) in order; systemd allows a key more than once."""
    settings = []
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.append((section, key.strip(), value.strip()))
    return settings


SETTINGS = _unit_settings(UNIT.read_text(encoding="utf-8"))


def _values(key: str) -> list[str]:
    return [value for section, name, value in SETTINGS if section == "Service" and name == key]


def _value(key: str) -> str:
    values = _values(key)
    assert len(values) == 1, f"{key}: {values}"
    return values[0]


def _seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "min": 60}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


def test_service_settings() -> None:
    assert _value("Type") == "notify"
    assert _value("NotifyAccess") == "main"
    assert _value("ExecStart") == f"{INSTALLED_BINARY} run -c {CONFIG_PATH}"
    assert _value("ExecStartPre") == f"{INSTALLED_BINARY} check -c {CONFIG_PATH}"
    # Check first, so that a broken config fails `systemctl reload` unsignalled.
    assert _values("ExecReload") == [
        f"{INSTALLED_BINARY} check -c {CONFIG_PATH}",
        "/bin/kill -HUP $MAINPID",
    ]
    assert _value("KillSignal") == "SIGTERM"
    assert _value("KillMode") == "mixed"
    assert _value("Restart") == "on-failure"
    assert _value("User") == "phoenix-lb"


def test_timeouts_and_limits_match_the_code() -> None:
    # systemd must not SIGKILL a graceful stop that is still within shutdown_timeout.
    shutdown_timeout = PhoenixConfig.model_fields["shutdown_timeout"].default
    assert _seconds(_value("TimeoutStopSec")) >= shutdown_timeout + 5
    assert int(_value("LimitNOFILE")) == WANTED_NOFILE


def test_hardening() -> None:
    expected = {
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
        "AmbientCapabilities": "CAP_NET_BIND_SERVICE",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX AF_NETLINK",
        "MemoryDenyWriteExecute": "yes",
        "LockPersonality": "yes",
        "RestrictNamespaces": "yes",
        "SystemCallArchitectures": "native",
        "LogsDirectory": "phoenix-lb",
    }
    for key, value in expected.items():
        assert _value(key) == value, key
    assert _values("SystemCallFilter")[0] == "@system-service"
    # /proc/net (listen queue length) must stay visible.
    assert not _values("ProcSubset")


@pytest.fixture
def verifiable_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart's binary replaced by this venv's phoenix-lb."""
    assert PHOENIX_LB.exists(), PHOENIX_LB
    text = UNIT.read_text(encoding="utf-8").replace(INSTALLED_BINARY, str(PHOENIX_LB))
    unit = tmp_path / UNIT.name
    unit.write_text(text, encoding="utf-8")
    return unit


def test_systemd_analyze_verify(verifiable_unit: Path) -> None:
    analyze = require("systemd-analyze", "systemd")
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(verifiable_unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # verify exits 0 on unknown keys and bad values, with a message naming the file.
    complaints = [
        line for line in (result.stdout + result.stderr).splitlines() if UNIT.name in line
    ]
    assert result.returncode == 0, result.stdout + result.stderr
    assert complaints == []


def test_systemd_analyze_security(verifiable_unit: Path) -> None:
    analyze = require("systemd-analyze", "systemd")
    result = subprocess.run(
        [
            analyze,
            "security",
            "--offline=yes",
            "--no-pager",
            f"--threshold={int(MAX_EXPOSURE * 10)}",
            str(verifiable_unit),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Overall exposure level" in result.stdout


def test_sysusers_creates_a_system_user(tmp_path: Path) -> None:
    sysusers = require("systemd-sysusers", "systemd")
    (tmp_path / "etc").mkdir()
    result = subprocess.run(
        [sysusers, f"--root={tmp_path}", str(SYSUSERS)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    passwd = (tmp_path / "etc" / "passwd").read_text().splitlines()
    [entry] = [line.split(":") for line in passwd if line.startswith("phoenix-lb:")]
    assert int(entry[2]) < 1000, "a system user"
    assert entry[6] == "/usr/sbin/nologin"


def test_check_command_of_exec_start_pre_works() -> None:
    # The same command line as ExecStartPre, on the example config.
    result = subprocess.run(
        [str(PHOENIX_LB), "check", "-c", str(metrics_catalogue.ROOT / "examples/minimal.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------- MemoryDenyWriteExecute


# Runs argv[1:] with PR_SET_MDWE (refuse memory that is or becomes both
# writable and executable), inherited across fork and exec.  Exit 77: the
# kernel has no PR_SET_MDWE.
_UNDER_MDWE = """
import ctypes, errno, os, sys
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
    sys.exit(77 if ctypes.get_errno() == errno.EINVAL else 78)
os.execv(sys.argv[1], sys.argv[1:])
"""

# What the balancer loads (and will load for TLS), then a TLS 1.3 handshake
# through OpenSSL in memory, with a certificate made by trustme.
_TLS_UNDER_MDWE = """
import ssl
import cryptography, h2, httptools, prometheus_client, pydantic, trustme, yaml
import phoenix_lb.server.runtime
try:
    import uvloop
except ImportError:
    pass
ca = trustme.CA()
server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ca.issue_cert("lb.example").configure_cert(server_ctx)
client_ctx = ssl.create_default_context()
ca.configure_trust(client_ctx)
bios = [ssl.MemoryBIO() for _ in range(4)]
server = server_ctx.wrap_bio(bios[0], bios[1], server_side=True)
client = client_ctx.wrap_bio(bios[2], bios[3], server_hostname="lb.example")
done = set()
for _ in range(20):
    for name, side, out, peer_in in (("c", client, bios[3], bios[0]),
                                     ("s", server, bios[1], bios[2])):
        try:
            side.do_handshake()
            done.add(name)
        except ssl.SSLWantReadError:
            pass
        peer_in.write(out.read())
    if done == {"c", "s"}:
        break
assert done == {"c", "s"}, done
print(client.version())
"""


def _mdwe_command(*argv: str) -> list[str]:
    return [sys.executable, "-c", _UNDER_MDWE, *argv]


@pytest.fixture
def mdwe() -> None:
    """Skip unless PR_SET_MDWE exists and is enforced."""
    probe = subprocess.run(
        _mdwe_command(
            sys.executable,
            "-c",
            "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_READ|mmap.PROT_WRITE|mmap.PROT_EXEC)",
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if probe.returncode == 77:
        pytest.skip("the kernel has no PR_SET_MDWE (Linux 6.3 or later)")
    # The probe maps writable executable memory: MDWE must refuse it.
    assert probe.returncode == 1 and "PermissionError" in probe.stderr, probe.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def _backend() -> Iterator[Backend]:
    backend = Backend("mdwe").start()
    try:
        yield backend
    finally:
        backend.stop()


def _get(port: int, deadline: float) -> tuple[int, bytes]:
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/")
            response = conn.getresponse()
            result = response.status, response.read()
            conn.close()
            return result
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.mark.usefixtures("mdwe")
def test_balancer_serves_without_writable_executable_memory(tmp_path: Path) -> None:
    port = _free_port()
    with _backend() as backend:
        config = {
            "listeners": [
                {
                    "name": "public",
                    "bind": [f"127.0.0.1:{port}"],
                    "routes": [{"path": "/", "upstream": "app"}],
                }
            ],
            "upstreams": {"app": {"servers": [{"address": backend.address}]}},
            "access_log": {"format": "off"},
        }
        config_path = tmp_path / "phoenix.yaml"
        config_path.write_text(yaml.safe_dump(config))
        stderr_path = tmp_path / "stderr"
        with open(stderr_path, "wb") as stderr:
            proc = subprocess.Popen(
                _mdwe_command(str(PHOENIX_LB), "run", "-c", str(config_path)),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            status, body = _get(port, time.monotonic() + 20)
            assert (status, body) == (200, b"mdwe\n")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise
        assert code == 0, stderr_path.read_text()


@pytest.mark.usefixtures("mdwe")
def test_tls_and_dependencies_load_without_writable_executable_memory() -> None:
    result = subprocess.run(
        _mdwe_command(sys.executable, "-c", _TLS_UNDER_MDWE),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "TLSv1.3"
