#!/usr/bin/env python3
"""Peer benchmark: phoenix-lb against nginx as the load balancer, on one machine.

Three nginx backends answer a small fixed body on 127.0.0.1.  In front of
them, phoenix-lb (A) and nginx (B) take turns as the balancer, A B A B for
``--rounds`` rounds, each configured alike (least_conn, 64 idle upstream
keep-alive connections, one worker, no access log) and each driven by the
same ``wrk -t1 -c50 --latency`` run.  On a 2-core machine the balancer is
pinned to core 0 and wrk plus the backends to core 1, so the balancer's core
is the one that saturates and the throughput ratio compares the two
balancers' cost per request; each process's CPU use is recorded so that
claim can be checked run by run.

``--idle`` instead opens N idle keep-alive client connections to phoenix-lb
and reports its resident memory per connection.

``--workers 2`` compares phoenix-lb ``workers: 2`` with nginx
``worker_processes 2``.  Nothing is pinned then (two balancer workers on a
2-core machine leave no core to give wrk and the backends), so the result is
whole-machine throughput.  phoenix-lb steers each client address to one
worker, so wrk's threads connect to different local addresses
(``--client-addresses``) to spread over both workers, as real clients do.

``--metrics-overhead`` runs phoenix-lb only, A B A B: A with nothing
scraping, B with a scraper fetching the admin ``/metrics`` every second
(``--scrape-interval``), and reports the throughput cost of being scraped;
then it measures the CPU one scrape costs on an idle balancer, the figure
that run-to-run noise cannot hide.  The counters themselves are always
kept (there is no switch to turn them off); their per-request cost is inside
every phoenix-lb number, and the peer comparison with nginx is where it
shows.

Standard library only (Linux /proc for CPU and memory).  Every process
started here is stopped by PID at the end, on errors and on Ctrl-C too, and
every wait is bounded.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import ipaddress
import json
import os
import platform
import re
import resource
import select
import selectors
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

LB = Literal["phoenix", "nginx"]
LB_ORDER: tuple[LB, ...] = ("phoenix", "nginx")  # A then B in every round

HOST = "127.0.0.1"
BACKEND_COUNT = 3
BODY_MARKER = b"hello from mo-"  # every backend body starts with this
RESULTS_DIR = Path(__file__).resolve().parent / "results"

# Targets from issue 2, printed next to the measurements.
TARGET_RPS_RATIO = 0.6
TARGET_P99_RATIO = 1.5
TARGET_IDLE_BYTES_PER_CONN = 16 * 1024
# Issue 5: metrics may cost under 5% of throughput.
TARGET_METRICS_OVERHEAD_PERCENT = 5.0
SCRAPE_COST_SAMPLES = 200  # back-to-back scrapes of an idle balancer
SATURATED_CPU_PERCENT = 90.0  # below this the LB core was not the bottleneck
# Busy time on a core beyond its pinned processes (kernel work for loopback
# plus anything else running); 2-3% on a quiet 2-vCPU VM.
OTHER_CPU_PERCENT = 10.0

STOP_TIMEOUT_S = 10.0  # SIGTERM -> SIGKILL escalation
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A failure with a message for the user; main() prints it and exits 1."""


class SetupError(BenchError):
    """A missing tool or an unusable machine; main() exits 2."""


# --------------------------------------------------------------------------
# /proc readers


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the ``(comm)`` field, or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # comm may contain spaces and parentheses; it ends at the last ')'.
    return raw[raw.rindex(b")") + 2 :].decode().split()


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (all its threads), in seconds."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    # stat(5): utime and stime are fields 14 and 15; fields[0] is field 3.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def descendants(root: int) -> list[int]:
    """PIDs of every live descendant of ``root`` (scanning /proc, no psutil)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    todo = [root]
    while todo:
        kids = children.get(todo.pop(), [])
        found.extend(kids)
        todo.extend(kids)
    return found


def process_tree(root: int) -> list[int]:
    return [root, *descendants(root)]


def status_kb(pid: int) -> dict[str, int]:
    """The ``kB`` lines of /proc/PID/status (VmRSS, VmHWM, ...), empty if gone."""
    values: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return values
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB":
            values[key] = int(parts[0])
    return values


def core_times() -> dict[int, tuple[int, int]]:
    """(busy, total) jiffies per core from /proc/stat."""
    times: dict[int, tuple[int, int]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        # user nice system idle iowait irq softirq steal [guest guest_nice];
        # guest time is already counted in user, so it is left out.
        ticks = [int(v) for v in values[:8]]
        total = sum(ticks)
        times[int(name[3:])] = (total - ticks[3] - ticks[4], total)
    return times


def core_busy_percent(
    before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]
) -> dict[int, float]:
    busy: dict[int, float] = {}
    for core, (b1, t1) in after.items():
        b0, t0 = before.get(core, (b1, t1))
        busy[core] = 100.0 * (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0
    return busy


# --------------------------------------------------------------------------
# Processes


@dataclass(slots=True)
class Managed:
    """A process started by the benchmark, with the files that explain it."""

    name: str
    proc: subprocess.Popen[bytes]
    logs: tuple[Path, ...]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 15) -> str:
        out: list[str] = []
        for path in self.logs:
            try:
                text = path.read_text(errors="replace").rstrip()
            except OSError:
                continue
            if text:
                out.append(f"--- {path} ---")
                out.extend(text.splitlines()[-lines:])
        return "\n".join(out) if out else "(no output)"


class ProcessSet:
    """Starts processes (pinned to one core, or not) and stops every one of them by PID.

    Children get their own session, so a Ctrl-C in the terminal reaches only
    this script, which then stops them in reverse start order.
    """

    def __init__(self, taskset: str) -> None:
        self._taskset = taskset
        self._running: list[Managed] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cpu: int | None,
        stdout: Path,
        extra_logs: Sequence[Path] = (),
        cwd: Path | None = None,
    ) -> Managed:
        # taskset execs the program, so the PID is the program's own.
        pin = [self._taskset, "-c", str(cpu)] if cpu is not None else []
        with stdout.open("wb") as out:
            proc = subprocess.Popen(
                [*pin, *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                start_new_session=True,
            )
        managed = Managed(name, proc, (stdout, *extra_logs))
        self._running.append(managed)
        return managed

    def stop(self, managed: Managed) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; descendants too, by PID."""
        proc = managed.proc
        kids = descendants(proc.pid) if proc.poll() is None else []
        if proc.poll() is None:
            _signal(proc.pid, signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                print(
                    f"  {managed.name} (pid {proc.pid}) ignored SIGTERM; killing", file=sys.stderr
                )
                _signal(proc.pid, signal.SIGKILL)
                proc.wait(STOP_TIMEOUT_S)
        # Workers normally exit with their master; give them a moment, then kill.
        deadline = time.monotonic() + 2.0
        while kids and time.monotonic() < deadline:
            kids = [pid for pid in kids if _alive(pid)]
            time.sleep(0.02)
        for pid in kids:
            _signal(pid, signal.SIGKILL)
        if managed in self._running:
            self._running.remove(managed)

    def stop_all(self) -> None:
        for managed in reversed(list(self._running)):
            try:
                self.stop(managed)
            except Exception as exc:  # keep stopping the others
                print(
                    f"  could not stop {managed.name} (pid {managed.pid}): {exc}", file=sys.stderr
                )


def _signal(pid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.kill(pid, sig)


def _alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def wait_exit_unreaped(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait until ``proc`` exits but leave it a zombie, so /proc still has its CPU times.

    A pidfd turns readable at exit without reaping; polling waitid(WNOWAIT) is
    the fallback for kernels older than 5.3.
    """
    try:
        pidfd = os.pidfd_open(proc.pid)
    except OSError:
        pass
    else:
        try:
            readable, _, _ = select.select([pidfd], [], [], timeout)
            return bool(readable)
        finally:
            os.close(pidfd)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None:
                return True
        except ChildProcessError:
            return True
        time.sleep(0.01)
    return False


def free_ports(count: int) -> list[int]:
    """Ports the kernel hands out for 127.0.0.1, all distinct (sockets held until all chosen)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


# --------------------------------------------------------------------------
# Configurations


def _nginx_main(
    prefix: Path, *, master: bool, nofile: int, worker_connections: int, workers: int = 1
) -> str:
    temp_paths = "\n".join(
        f"    {kind}_temp_path {prefix / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""\
daemon off;
master_process {"on" if master else "off"};
worker_processes {workers};
worker_rlimit_nofile {nofile};
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;

events {{
    worker_connections {worker_connections};
}}

http {{
    access_log off;
    server_tokens off;
{temp_paths}
    keepalive_timeout 75s;
    # Clients keep their connections for the whole run (nginx's default of
    # 1000 would make wrk reconnect, which the other balancer is not asked to).
    keepalive_requests 1000000;
"""


def nginx_backend_conf(prefix: Path, port: int, index: int) -> str:
    # master_process off: one process per backend, nothing idle on core 1.
    return (
        _nginx_main(prefix, master=False, nofile=8192, worker_connections=4096)
        + f"""
    server {{
        listen {HOST}:{port} reuseport backlog=4096;
        location / {{
            default_type text/plain;
            return 200 "hello from mo-{index}\\n";
        }}
    }}
}}
"""
    )


def nginx_lb_conf(
    prefix: Path,
    port: int,
    upstreams: Sequence[int],
    max_clients: int,
    *,
    workers: int = 1,
    hosts: Sequence[str] = (HOST,),
) -> str:
    servers = "\n".join(f"        server {HOST}:{p};" for p in upstreams)
    listen = "\n".join(f"        listen {host}:{port} backlog=4096;" for host in hosts)
    worker_connections = max(4096, max_clients + 1024)
    # A master and its workers: nginx as it is deployed (one shared listening
    # socket per address, no reuseport: nginx's default).  The X-Forwarded-*
    # headers are the work phoenix-lb does on every request too.
    return (
        _nginx_main(
            prefix,
            master=True,
            nofile=worker_connections + 1024,
            worker_connections=worker_connections,
            workers=workers,
        )
        + f"""
    upstream backends {{
        least_conn;
{servers}
        keepalive 64;
        keepalive_requests 1000000;
    }}

    server {{
{listen}
        location / {{
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
}}
"""
    )


def phoenix_conf(
    port: int,
    upstreams: Sequence[int],
    *,
    workers: int = 1,
    hosts: Sequence[str] = (HOST,),
    admin_port: int | None = None,
) -> str:
    servers = "\n".join(f'      - {{address: "{HOST}:{p}"}}' for p in upstreams)
    binds = ", ".join(f'"{host}:{port}"' for host in hosts)
    admin = f'{{bind: "{HOST}:{admin_port}"}}' if admin_port else "null"
    return f"""\
workers: {workers}
listeners:
  - name: bench
    bind: [{binds}]
    routes:
      - {{path: /, upstream: backends}}
upstreams:
  backends:
    balance: least_conn
    keepalive: 64
    servers:
{servers}
access_log: {{format: "off"}}
admin: {admin}
"""


# --------------------------------------------------------------------------
# HTTP probes


def body_complete(buf: bytes) -> bool | None:
    """Whether ``buf`` holds a whole response: True/False by Content-Length or chunked
    framing; None when the body runs until the connection closes."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return False
    head, body = buf[:head_end].lower(), buf[head_end + 4 :]
    length = re.search(rb"\r\ncontent-length:\s*(\d+)", head)
    if length:
        return len(body) >= int(length[1])
    if re.search(rb"\r\ntransfer-encoding:[^\r]*chunked", head):
        return body.endswith(b"0\r\n\r\n")
    return None


def http_get(port: int, timeout: float) -> bytes | None:
    """One ``GET /`` (Connection: close); the raw response, or None on any error."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            buf = b""
            # Stop at the end of the framed response rather than waiting for the close.
            while not body_complete(buf) and (data := sock.recv(65536)):
                buf += data
            return buf
    except OSError:
        return None


def answers_ok(response: bytes | None) -> bool:
    if not response:
        return False
    status_line = response.split(b"\r\n", 1)[0].split()
    return len(status_line) >= 2 and status_line[1] == b"200" and BODY_MARKER in response


def wait_ready(managed: Managed, port: int, timeout: float) -> None:
    """Poll until ``GET /`` on ``port`` returns a backend's 200, or raise."""
    deadline = time.monotonic() + timeout
    response: bytes | None = None
    while True:
        code = managed.proc.poll()
        if code is not None:
            raise BenchError(
                f"{managed.name} exited with status {code} before answering on port {port}:\n"
                + managed.log_tail()
            )
        response = http_get(port, timeout=1.0)
        if answers_ok(response):
            return
        if time.monotonic() > deadline:
            got = repr(response[:200]) if response else "no response"
            raise BenchError(
                f"{managed.name} did not answer 200 on {HOST}:{port} within {timeout:g}s "
                f"({got}):\n{managed.log_tail()}"
            )
        time.sleep(0.05)


# --------------------------------------------------------------------------
# wrk


_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}  # to milliseconds
_TIME = r"([\d.]+)(us|ms|s|m|h)\b"


@dataclass(frozen=True, slots=True)
class WrkResult:
    rps: float
    requests: int
    latency_ms: dict[str, float]  # avg, p50, p75, p90, p99
    socket_errors: dict[str, int]  # connect, read, write, timeout
    non_2xx: int


def to_ms(value: str, unit: str) -> float:
    return float(value) * _TIME_UNITS[unit]


def parse_wrk(text: str) -> WrkResult:
    """Parse ``wrk --latency`` output (units us/ms/s/m/h as wrk prints them)."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    requests = re.search(r"^\s*(\d+) requests in ", text, re.M)
    if rps is None or requests is None:
        raise BenchError(f"cannot parse wrk output:\n{text}")
    latency: dict[str, float] = {}
    avg = re.search(rf"^\s+Latency\s+{_TIME}", text, re.M)
    if avg:
        latency["avg"] = to_ms(avg[1], avg[2])
    for pct, value, unit in re.findall(rf"^\s+(50|75|90|99)(?:\.0+)?%\s+{_TIME}", text, re.M):
        latency[f"p{pct}"] = to_ms(value, unit)
    if "p99" not in latency:
        raise BenchError(f"wrk printed no latency distribution (was --latency given?):\n{text}")
    errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if sock:
        errors = dict(zip(errors, (int(g) for g in sock.groups()), strict=True))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return WrkResult(
        rps=float(rps[1]),
        requests=int(requests[1]),
        latency_ms=latency,
        socket_errors=errors,
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
    )


# --------------------------------------------------------------------------
# The benchmark


@dataclass(frozen=True, slots=True)
class Tools:
    nginx: str
    wrk: str | None
    taskset: str
    phoenix: Path | None


@dataclass(frozen=True, slots=True)
class WrkWindow:
    """What was sampled around one wrk run."""

    wall: float
    cores: dict[int, tuple[int, int]]  # core_times() when wrk exited
    wrk_cpu_percent: float


@dataclass(slots=True)
class Run:
    """One measured wrk run against one balancer (or one variant of phoenix-lb)."""

    round: int
    lb: str  # a Variant
    rps: float
    requests: int
    latency_ms: dict[str, float]
    socket_errors: dict[str, int]
    non_2xx: int
    wall_s: float
    lb_cpu_percent: float  # whole process tree, % of one core
    lb_process_cpu_percent: dict[int, float]
    backends_cpu_percent: float  # sum of the three
    wrk_cpu_percent: float
    core_busy_percent: dict[int, float]
    # Core busy time not used by the pinned processes: other programs on the
    # machine, kernel threads.  More than a few percent makes the run noisy.
    # Pinned runs only (by core); unpinned runs have machine_other_percent.
    other_cpu_percent: dict[int, float]
    # All cores together, in % of one core (200 = both cores of 2 busy).
    machine_busy_percent: float
    machine_other_percent: float
    wrk_output: str
    # --metrics-overhead: scrapes of /metrics during the measured window.
    scrapes: int = 0
    scrape_ms_median: float | None = None
    scrape_bytes: int = 0


class Scraper:
    """Fetches the admin /metrics every ``interval`` seconds in a thread, like Prometheus."""

    def __init__(self, port: int, interval: float) -> None:
        self.port = port
        self.interval = interval
        self.stop_event = threading.Event()
        self.times_ms: list[float] = []
        self.sizes: list[int] = []
        self.failures = 0
        self.thread = threading.Thread(target=self._run, name="scraper", daemon=True)

    def scrape_once(self) -> bool:
        """One ``GET /metrics`` on a new connection; records its time and size."""
        request = (
            f"GET /metrics HTTP/1.1\r\nHost: {HOST}:{self.port}\r\nConnection: close\r\n\r\n"
        ).encode()
        t0 = time.monotonic()
        try:
            with socket.create_connection((HOST, self.port), timeout=5.0) as sock:
                sock.sendall(request)
                buf = b""
                while not body_complete(buf) and (data := sock.recv(65536)):
                    buf += data
            ok = buf.startswith(b"HTTP/1.1 200")
        except OSError:
            ok = False
        if ok:
            self.times_ms.append((time.monotonic() - t0) * 1000)
            self.sizes.append(len(buf))
        else:
            self.failures += 1
        return ok

    def _run(self) -> None:
        while not self.stop_event.is_set():
            t0 = time.monotonic()
            self.scrape_once()
            self.stop_event.wait(max(0.0, self.interval - (time.monotonic() - t0)))

    def mark(self) -> int:
        """Index of the next scrape, to count those of one window."""
        return len(self.times_ms)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(10.0)


# What each variant runs: (balancer, scraped).  Pairs are compared A over B.
VARIANTS: dict[str, tuple[LB, bool]] = {
    "phoenix": ("phoenix", False),
    "nginx": ("nginx", False),
    "phoenix+scrape": ("phoenix", True),
}


@dataclass(slots=True)
class Bench:
    """State shared by the benchmark phases: options, tools, processes, temp dir."""

    args: argparse.Namespace
    tools: Tools
    procs: ProcessSet
    tmp: Path
    lbs: list[str]  # variants, in the order each round runs them
    backend_ports: list[int] = field(default_factory=list)
    backends: list[Managed] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: addresses the balancer listens on, one per wrk thread in turn
    client_hosts: list[str] = field(default_factory=lambda: [HOST])

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        print(f"WARNING: {message}", file=sys.stderr)

    @property
    def pinned(self) -> bool:
        """One balancer worker: pinned to its core.  More: nothing is pinned."""
        return bool(self.args.workers == 1)

    @property
    def lb_cpu(self) -> int | None:
        return int(self.args.lb_cpu) if self.pinned else None

    @property
    def client_cpu(self) -> int | None:
        return int(self.args.client_cpu) if self.pinned else None

    # -- processes ----------------------------------------------------------

    def nginx_argv(self, prefix: Path, conf: Path) -> list[str]:
        # -e: the error log from the first line on, not Debian's /var/log/nginx.
        return [self.tools.nginx, "-p", f"{prefix}/", "-c", str(conf), "-e", f"{prefix}/error.log"]

    def start_backends(self) -> None:
        self.backend_ports = free_ports(BACKEND_COUNT)
        for index, port in enumerate(self.backend_ports, start=1):
            prefix = self.tmp / f"backend-{index}"
            prefix.mkdir()
            conf = prefix / "nginx.conf"
            conf.write_text(nginx_backend_conf(prefix, port, index))
            self.backends.append(
                self.procs.start(
                    f"backend mo-{index}",
                    self.nginx_argv(prefix, conf),
                    cpu=self.client_cpu,
                    stdout=prefix / "stdout.log",
                    extra_logs=[prefix / "error.log"],
                )
            )
        for managed, port in zip(self.backends, self.backend_ports, strict=True):
            wait_ready(managed, port, self.args.ready_timeout)

    def start_lb(
        self, lb: LB, tag: str, max_clients: int = 0, *, admin: bool = False
    ) -> tuple[Managed, int, int | None]:
        """Start a balancer; (process, port, admin port or None)."""
        port, admin_port = free_ports(2)
        prefix = self.tmp / f"{lb}-{tag}"
        prefix.mkdir()
        workers = int(self.args.workers)
        if lb == "nginx":
            conf = prefix / "nginx.conf"
            conf.write_text(
                nginx_lb_conf(
                    prefix,
                    port,
                    self.backend_ports,
                    max_clients,
                    workers=workers,
                    hosts=self.client_hosts,
                )
            )
            argv = self.nginx_argv(prefix, conf)
            logs = [prefix / "error.log"]
            admin = False
        else:
            assert self.tools.phoenix is not None
            conf = prefix / "phoenix.yaml"
            conf.write_text(
                phoenix_conf(
                    port,
                    self.backend_ports,
                    workers=workers,
                    hosts=self.client_hosts,
                    admin_port=admin_port if admin else None,
                )
            )
            argv = [str(self.tools.phoenix), "run", "-c", str(conf)]
            logs = []
        managed = self.procs.start(
            f"{lb} LB",
            argv,
            cpu=self.lb_cpu,
            stdout=prefix / "stdout.log",
            extra_logs=logs,
            cwd=prefix,
        )
        wait_ready(managed, port, self.args.ready_timeout)
        return managed, port, admin_port if admin else None

    # -- throughput ---------------------------------------------------------

    def wrk_script(self, port: int, directory: Path) -> Path | None:
        """A wrk script giving each thread its own balancer address, or None for one address."""
        if len(self.client_hosts) < 2:
            return None
        hosts = ", ".join(f'"{host}"' for host in self.client_hosts)
        script = directory / "addresses.lua"
        script.write_text(
            "-- Each wrk thread connects to the next address in turn, so the\n"
            "-- connections come from (and steer by) different client addresses.\n"
            f"local hosts = {{{hosts}}}\n"
            "local n = 0\n"
            "function setup(thread)\n"
            "  n = n % #hosts + 1\n"
            f'  thread.addr = wrk.lookup(hosts[n], "{port}")[1]\n'
            "end\n"
        )
        return script

    def wrk_threads(self) -> int:
        threads = int(self.args.threads or (2 if not self.pinned else 1))
        return max(threads, len(self.client_hosts))

    def run_wrk(self, port: int, duration: int, log: Path) -> tuple[WrkWindow, WrkResult]:
        """One wrk run; wall time, per-core busy time and wrk's CPU are taken the
        moment wrk exits, before it is reaped (a zombie still has its CPU times)."""
        assert self.tools.wrk is not None
        script = self.wrk_script(port, log.parent)
        argv = [
            self.tools.wrk,
            f"-t{self.wrk_threads()}",
            f"-c{self.args.connections}",
            f"-d{duration}s",
            "--latency",
            *(["-s", str(script)] if script else []),
            f"http://{HOST}:{port}/",
        ]
        t0 = time.monotonic()
        managed = self.procs.start("wrk", argv, cpu=self.client_cpu, stdout=log)
        if not wait_exit_unreaped(managed.proc, duration + 30.0):
            self.procs.stop(managed)
            raise BenchError(f"wrk did not finish within {duration + 30}s")
        wall = time.monotonic() - t0
        window = WrkWindow(wall, core_times(), 100.0 * (cpu_seconds(managed.pid) or 0.0) / wall)
        code = managed.proc.wait(STOP_TIMEOUT_S)
        self.procs.stop(managed)
        if code != 0:
            raise BenchError(f"wrk exited with status {code}:\n{managed.log_tail()}")
        return window, parse_wrk(log.read_text())

    def measure(self, variant: str, round_no: int) -> Run:
        """Start the variant's balancer, warm it up, measure one wrk run with everyone's
        CPU (and scrape it meanwhile if the variant says so), stop it."""
        lb, scraped = VARIANTS[variant]
        tag = f"r{round_no}" + ("-scraped" if scraped else "")
        managed, port, admin_port = self.start_lb(lb, tag, admin=bool(self.args.metrics_overhead))
        log_dir = self.tmp / f"{lb}-{tag}"
        scraper: Scraper | None = None
        try:
            if scraped:
                assert admin_port is not None
                scraper = Scraper(admin_port, self.args.scrape_interval)
                scraper.start()
            if self.args.warmup > 0:
                self.run_wrk(port, self.args.warmup, log_dir / "wrk-warmup.log")
            backend_pids = [pid for b in self.backends for pid in process_tree(b.pid)]
            lb0 = {pid: cpu_seconds(pid) for pid in process_tree(managed.pid)}
            be0 = {pid: cpu_seconds(pid) for pid in backend_pids}
            cores0 = core_times()
            first_scrape = scraper.mark() if scraper else 0
            window, result = self.run_wrk(port, self.args.duration, log_dir / "wrk.log")
            last_scrape = scraper.mark() if scraper else 0
            lb_cpu = _cpu_percent(lb0, window.wall)
            backends_cpu = sum(_cpu_percent(be0, window.wall).values())
        finally:
            if scraper is not None:
                scraper.stop()
            self.procs.stop(managed)
        lb_total = sum(lb_cpu.values())
        busy = core_busy_percent(cores0, window.cores)
        machine = sum(busy.values())
        other: dict[int, float] = {}
        if self.lb_cpu is not None and self.client_cpu is not None:
            lb_core, client_core = self.lb_cpu, self.client_cpu
            other = {
                lb_core: round(max(0.0, busy[lb_core] - lb_total), 1),
                client_core: round(
                    max(0.0, busy[client_core] - backends_cpu - window.wrk_cpu_percent), 1
                ),
            }
        scrape_ms = scraper.times_ms[first_scrape:last_scrape] if scraper else []
        run = Run(
            round=round_no,
            lb=variant,
            rps=result.rps,
            requests=result.requests,
            latency_ms=result.latency_ms,
            socket_errors=result.socket_errors,
            non_2xx=result.non_2xx,
            wall_s=round(window.wall, 3),
            lb_cpu_percent=round(lb_total, 1),
            lb_process_cpu_percent={pid: round(v, 1) for pid, v in lb_cpu.items()},
            backends_cpu_percent=round(backends_cpu, 1),
            wrk_cpu_percent=round(window.wrk_cpu_percent, 1),
            core_busy_percent={c: round(v, 1) for c, v in busy.items()},
            other_cpu_percent=other,
            machine_busy_percent=round(machine, 1),
            machine_other_percent=round(
                max(0.0, machine - lb_total - backends_cpu - window.wrk_cpu_percent), 1
            ),
            wrk_output=(log_dir / "wrk.log").read_text(),
            scrapes=len(scrape_ms),
            scrape_ms_median=round(_median(scrape_ms), 2) if scrape_ms else None,
            scrape_bytes=scraper.sizes[-1] if scraper and scraper.sizes else 0,
        )
        errors = sum(run.socket_errors.values())
        if errors or run.non_2xx:
            self.warn(
                f"round {round_no} {variant}: {errors} socket errors {run.socket_errors}, "
                f"{run.non_2xx} non-2xx responses"
            )
        if scraper is not None and scraper.failures:
            self.warn(f"round {round_no} {variant}: {scraper.failures} scrapes failed")
        return run

    def throughput(self) -> dict[str, Any]:
        runs: list[Run] = []
        self.start_backends()
        where = f"core {self.client_cpu}" if self.pinned else "not pinned"
        print(f"backends: {', '.join(f'{HOST}:{p}' for p in self.backend_ports)} ({where})")
        for round_no in range(1, self.args.rounds + 1):
            for variant in self.lbs:
                run = self.measure(variant, round_no)
                runs.append(run)
                print(format_run(run, self.args.rounds, self.lb_cpu, self.client_cpu))
        summary = summarize(runs, self.lbs, self.lb_cpu, self.client_cpu)
        if self.args.metrics_overhead:
            summary["scrape_interval_s"] = self.args.scrape_interval
            summary["scrape_cost"] = self.scrape_cost()
        print_summary(summary, self.lbs)
        self.check_conditions(summary)
        return {"runs": [asdict(r) for r in runs], "summary": summary}

    def scrape_cost(self, scrapes: int = SCRAPE_COST_SAMPLES) -> dict[str, Any]:
        """CPU the balancer spends per scrape, measured on an idle balancer.

        Throughput differences of a few percent drown in run-to-run noise on
        a shared machine; CPU time per scrape does not.  At one scrape per
        ``interval`` the share of a saturated core it takes is
        cpu_per_scrape / interval: the expected throughput cost."""
        managed, port, admin_port = self.start_lb("phoenix", "scrape-cost", admin=True)
        assert admin_port is not None
        try:
            # Some traffic first, so every series exists and has values.
            self.run_wrk(port, 1, self.tmp / "phoenix-scrape-cost" / "wrk.log")
            scraper = Scraper(admin_port, 0.0)
            pids = process_tree(managed.pid)
            before = {pid: cpu_seconds(pid) for pid in pids}
            t0 = time.monotonic()
            for _ in range(scrapes):
                if not scraper.scrape_once():
                    raise BenchError(f"a scrape of {HOST}:{admin_port}/metrics failed")
            wall = time.monotonic() - t0
            used = sum(_cpu_percent(before, wall).values()) * wall / 100.0
        finally:
            self.procs.stop(managed)
        cpu_ms = 1000.0 * used / scrapes
        share = 100.0 * cpu_ms / 1000.0 / self.args.scrape_interval
        return {
            "scrapes": scrapes,
            "cpu_ms_per_scrape": round(cpu_ms, 3),
            "wall_ms_per_scrape": round(1000.0 * wall / scrapes, 3),
            "bytes_per_scrape": scraper.sizes[-1] if scraper.sizes else 0,
            "core_percent_at_interval": round(share, 3),
        }

    def check_conditions(self, summary: dict[str, Any]) -> None:
        """Warn when other programs shared the cores, or a balancer was not the one
        saturating its core: in both cases the ratio misleads."""
        if not self.pinned:
            cores = len(os.sched_getaffinity(0))
            for variant in self.lbs:
                s = summary[variant]
                if s["machine_other_percent_max"] > OTHER_CPU_PERCENT:
                    self.warn(
                        f"during the {variant} runs up to {s['machine_other_percent_max']:.0f}% "
                        "of a core went to processes other than the benchmark's; run on a "
                        "quiet machine"
                    )
                busy = s["machine_busy_percent_median"]
                if busy < SATURATED_CPU_PERCENT * cores:
                    self.warn(
                        f"during the {variant} runs the machine was only {busy:.0f}% busy "
                        f"(of {100 * cores}%): something other than CPU limited the throughput"
                    )
            return
        for variant in self.lbs:
            s = summary[variant]
            for core, key in ((self.args.lb_cpu, "lb"), (self.args.client_cpu, "client")):
                other = s[f"{key}_core_other_percent_max"]
                if other > OTHER_CPU_PERCENT:
                    self.warn(
                        f"during the {variant} runs up to {other:.0f}% of core {core} went to "
                        "processes other than the benchmark's; run on a quiet machine"
                    )
            cpu, client = s["lb_cpu_percent_median"], s["client_core_busy_percent_median"]
            if cpu >= SATURATED_CPU_PERCENT:
                continue
            if VARIANTS[variant][0] == "phoenix":
                consequence = (
                    "phoenix-lb was not CPU-bound, so its throughput is limited by something "
                    "else and the ratio does not measure its cost per request"
                )
            else:
                consequence = (
                    "nginx's throughput is a lower bound and the phoenix/nginx ratio "
                    "flatters phoenix-lb"
                )
            self.warn(
                f"{variant} LB used {cpu:.0f}% of core {self.args.lb_cpu} (median, below "
                f"{SATURATED_CPU_PERCENT:.0f}%; core {self.args.client_cpu} with wrk and the "
                f"backends was {client:.0f}% busy): {consequence}"
            )

    # -- idle connections ---------------------------------------------------

    def idle(self) -> dict[str, Any]:
        count: int = self.args.idle_conns
        raise_nofile(count + 1024)
        self.start_backends()
        results: dict[str, Any] = {}
        for lb in self.lbs:
            managed, port, _ = self.start_lb(VARIANTS[lb][0], "idle", max_clients=count)
            try:
                results[lb] = self.idle_one(managed, port, count)
            finally:
                self.procs.stop(managed)
            print_idle(lb, results[lb])
        return {"idle": results}

    def idle_one(self, managed: Managed, port: int, count: int) -> dict[str, Any]:
        # A few requests first, so the baseline includes the upstream pool
        # and whatever the first requests allocate.
        for _ in range(20):
            http_get(port, timeout=2.0)
        time.sleep(0.5)
        pids = process_tree(managed.pid)
        before = {pid: status_kb(pid) for pid in pids}
        t0 = time.monotonic()
        try:
            conns = open_idle_connections(port, count, timeout=self.args.idle_timeout)
        except BenchError as exc:
            raise BenchError(f"{managed.name}: {exc}\n{managed.log_tail()}") from None
        try:
            opened_s = time.monotonic() - t0
            time.sleep(self.args.idle_hold)
            pids = process_tree(managed.pid)
            after = {pid: status_kb(pid) for pid in pids}
            still_open = count_open(conns)
        finally:
            for sock in conns:
                sock.close()
        rss_before = sum(s.get("VmRSS", 0) for s in before.values())
        rss_after = sum(s.get("VmRSS", 0) for s in after.values())
        if still_open < count:
            self.warn(f"{count - still_open} of {count} idle connections were closed by the LB")
        return {
            "connections": count,
            "open_seconds": round(opened_s, 2),
            "still_open": still_open,
            "rss_before_kb": rss_before,
            "rss_after_kb": rss_after,
            "peak_rss_kb": sum(s.get("VmHWM", 0) for s in after.values()),
            "bytes_per_connection": round((rss_after - rss_before) * 1024 / count),
            "processes": {
                pid: {"VmRSS_kb": s.get("VmRSS", 0), "VmHWM_kb": s.get("VmHWM", 0)}
                for pid, s in after.items()
            },
        }


def _cpu_percent(before: dict[int, float | None], wall: float) -> dict[int, float]:
    """CPU used since ``before`` by each PID, as a percentage of one core."""
    used: dict[int, float] = {}
    for pid, start in before.items():
        now = cpu_seconds(pid)
        if start is not None and now is not None:
            used[pid] = 100.0 * (now - start) / wall
    return used


# --------------------------------------------------------------------------
# Idle keep-alive connections (selectors; no threads, bounded in time)

_IDLE_REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
_IDLE_BATCH = 256  # connections in flight at once: well under the listen backlog


def response_complete(buf: bytes) -> bool | None:
    """True when ``buf`` holds one whole keep-alive 200; None if the LB will close."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return False
    head = buf[:head_end].lower()
    if not head.startswith(b"http/1.1 200"):
        raise BenchError(f"idle connection got {buf[:head_end].splitlines()[0]!r}")
    if re.search(rb"\r\nconnection:[^\r]*\bclose\b", head):
        return None
    return body_complete(buf)  # None: read-until-close framing cannot stay open


class _Pending:
    """A connection whose one request has not been fully answered yet."""

    __slots__ = ("buf", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""


def open_idle_connections(port: int, count: int, timeout: float) -> list[socket.socket]:
    """Open ``count`` connections, each after one complete request/response, left idle."""
    sel = selectors.DefaultSelector()
    idle: list[socket.socket] = []
    opened: list[socket.socket] = []
    deadline = time.monotonic() + timeout
    try:
        while len(idle) < count:
            while len(opened) < count and len(sel.get_map()) < _IDLE_BATCH:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                opened.append(sock)
                sock.setblocking(False)
                code = sock.connect_ex((HOST, port))
                if code not in (0, errno.EINPROGRESS):
                    raise BenchError(f"connect to the LB failed: {os.strerror(code)}")
                sel.register(sock, selectors.EVENT_WRITE, _Pending(sock))
            if time.monotonic() > deadline:
                raise BenchError(
                    f"only {len(idle)} of {count} idle connections were up after {timeout:g}s"
                )
            for key, events in sel.select(timeout=0.5):
                pending: _Pending = key.data
                if events & selectors.EVENT_WRITE:
                    code = pending.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if code:
                        raise BenchError(f"connect to the LB failed: {os.strerror(code)}")
                    pending.sock.send(_IDLE_REQUEST)  # 33 bytes always fit an empty buffer
                    sel.modify(pending.sock, selectors.EVENT_READ, pending)
                    continue
                data = pending.sock.recv(65536)
                if not data:
                    raise BenchError(
                        f"a connection was closed before its answer ({len(idle)} were idle)"
                    )
                pending.buf += data
                done = response_complete(pending.buf)
                if done is None:
                    raise BenchError("the LB answered with Connection: close; cannot stay idle")
                if done:
                    sel.unregister(pending.sock)
                    idle.append(pending.sock)
        return idle
    except BaseException as exc:
        for sock in opened:
            sock.close()
        if isinstance(exc, OSError):
            raise BenchError(f"idle connection failed after {len(idle)} were up: {exc}") from exc
        raise
    finally:
        sel.close()


def count_open(conns: Iterable[socket.socket]) -> int:
    """Connections the peer has not closed (an idle open socket is not readable)."""
    sel = selectors.DefaultSelector()
    conns = list(conns)
    for sock in conns:
        sel.register(sock, selectors.EVENT_READ)
    try:
        return len(conns) - len(sel.select(timeout=0))
    finally:
        sel.close()


def raise_nofile(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, max(hard, needed)))
    except (ValueError, OSError):
        raise SetupError(
            f"need {needed} open files but the limit is {soft} (hard {hard}); "
            f"raise it, e.g. `ulimit -n {needed}`"
        ) from None


# --------------------------------------------------------------------------
# Reporting


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def format_run(run: Run, rounds: int, lb_core: int | None, client_core: int | None) -> str:
    head = (
        f"round {run.round}/{rounds} {run.lb:<14} {run.rps:>8.0f} req/s  "
        f"p99 {run.latency_ms['p99']:6.2f} ms | cpu% lb {run.lb_cpu_percent:3.0f}  "
        f"backends {run.backends_cpu_percent:3.0f}  wrk {run.wrk_cpu_percent:3.0f} | "
    )
    if run.scrapes:
        head = head.replace(" | cpu%", f" | {run.scrapes} scrapes {run.scrape_ms_median} ms | cpu%")
    if lb_core is None or client_core is None:
        cores = len(run.core_busy_percent)
        return head + (
            f"machine {run.machine_busy_percent:3.0f}% of {100 * cores} "
            f"(other {run.machine_other_percent:2.0f})"
        )
    busy, other = run.core_busy_percent, run.other_cpu_percent
    return head + (
        f"core{lb_core} {busy[lb_core]:3.0f}% (other {other[lb_core]:2.0f})  "
        f"core{client_core} {busy[client_core]:3.0f}% (other {other[client_core]:2.0f})"
    )


def _ratio_stats(values: Sequence[float]) -> dict[str, Any]:
    return {
        "median": round(_median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "per_round": [round(v, 3) for v in values],
    }


def ratio_key(lbs: Sequence[str]) -> str:
    """The summary key of the pair's ratio: ``ratio_phoenix_over_nginx`` and the like."""
    return "ratio_" + "_over_".join(lb.replace("+", "_") for lb in lbs)


def summarize(
    runs: Sequence[Run], lbs: Sequence[str], lb_core: int | None, client_core: int | None
) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    by_lb = {lb: [r for r in runs if r.lb == lb] for lb in lbs}

    def med(values: Iterable[float], digits: int = 1) -> float:
        return round(_median(list(values)), digits)

    for lb, mine in by_lb.items():
        s: dict[str, Any] = {
            "rps_median": med(r.rps for r in mine),
            "p99_ms_median": med((r.latency_ms["p99"] for r in mine), 3),
            "lb_cpu_percent_median": med(r.lb_cpu_percent for r in mine),
            "backends_cpu_percent_median": med(r.backends_cpu_percent for r in mine),
            "wrk_cpu_percent_median": med(r.wrk_cpu_percent for r in mine),
            "machine_busy_percent_median": med(r.machine_busy_percent for r in mine),
            "machine_other_percent_max": max(r.machine_other_percent for r in mine),
        }
        if lb_core is not None and client_core is not None:
            s.update(
                {
                    "lb_core_busy_percent_median": med(r.core_busy_percent[lb_core] for r in mine),
                    "client_core_busy_percent_median": med(
                        r.core_busy_percent[client_core] for r in mine
                    ),
                    "lb_core_other_percent_max": max(r.other_cpu_percent[lb_core] for r in mine),
                    "client_core_other_percent_max": max(
                        r.other_cpu_percent[client_core] for r in mine
                    ),
                }
            )
        if any(r.scrapes for r in mine):
            s["scrapes_per_run_median"] = med(r.scrapes for r in mine)
            s["scrape_ms_median"] = med((r.scrape_ms_median or 0.0 for r in mine), 2)
            s["scrape_bytes"] = max(r.scrape_bytes for r in mine)
        summary[lb] = s
    if len(lbs) == 2:
        # phoenix over nginx; for --metrics-overhead, scraped over quiet.
        a, b = reversed(lbs) if VARIANTS[lbs[1]][1] else lbs
        pairs = list(zip(by_lb[a], by_lb[b], strict=True))
        ratios = {
            "throughput": _ratio_stats([x.rps / y.rps for x, y in pairs]),
            "p99": _ratio_stats([x.latency_ms["p99"] / y.latency_ms["p99"] for x, y in pairs]),
        }
        summary[ratio_key([a, b])] = ratios
        if VARIANTS[a][1]:
            # The throughput lost to scraping, per round.
            costs = [100.0 * (1.0 - x.rps / y.rps) for x, y in pairs]
            summary["metrics_overhead_percent"] = _ratio_stats(costs)
    return summary


def print_summary(summary: dict[str, Any], lbs: Sequence[str]) -> None:
    pinned = "lb_core_busy_percent_median" in summary[lbs[0]]
    print("\nsummary (medians over rounds; CPU in % of one core)")
    where = (
        f"{'LB core':>7} {'client core':>11} | {'other (max)':>11}"
        if pinned
        else f"{'machine':>7} | {'other (max)':>11}"
    )
    print(f"  {'':14} {'req/s':>8} {'p99 ms':>7} | {'LB':>4} {'backends':>8} {'wrk':>4} | {where}")
    for lb in lbs:
        s = summary[lb]
        if pinned:
            other = f"{s['lb_core_other_percent_max']:.0f}/{s['client_core_other_percent_max']:.0f}"
            cores = (
                f"{s['lb_core_busy_percent_median']:>7.0f} "
                f"{s['client_core_busy_percent_median']:>11.0f} | {other:>11}"
            )
        else:
            cores = (
                f"{s['machine_busy_percent_median']:>7.0f} | "
                f"{s['machine_other_percent_max']:>11.0f}"
            )
        print(
            f"  {lb:14} {s['rps_median']:>8.0f} {s['p99_ms_median']:>7.2f} | "
            f"{s['lb_cpu_percent_median']:>4.0f} {s['backends_cpu_percent_median']:>8.0f} "
            f"{s['wrk_cpu_percent_median']:>4.0f} | {cores}"
        )
    ratios = None
    if len(lbs) == 2:
        ratios = summary.get(ratio_key(lbs)) or summary.get(ratio_key(lbs[::-1]))
    if ratios and "nginx" in lbs:
        t, p = ratios["throughput"], ratios["p99"]
        t_ok = "meets" if t["median"] >= TARGET_RPS_RATIO else "MISSES"
        p_ok = "meets" if p["median"] <= TARGET_P99_RATIO else "MISSES"
        print(
            f"  throughput ratio phoenix/nginx: {t['median']:.3f} "
            f"(min {t['min']:.3f}, max {t['max']:.3f}) - {t_ok} target >= {TARGET_RPS_RATIO}"
        )
        print(
            f"  p99 ratio phoenix/nginx:        {p['median']:.3f} "
            f"(min {p['min']:.3f}, max {p['max']:.3f}) - {p_ok} target <= {TARGET_P99_RATIO}"
        )
    overhead = summary.get("metrics_overhead_percent")
    if overhead and ratios:
        scraped = summary[lbs[1]]
        verdict = "meets" if overhead["median"] < TARGET_METRICS_OVERHEAD_PERCENT else "MISSES"
        print(
            f"  metrics overhead (throughput lost while /metrics is scraped every "
            f"{summary.get('scrape_interval_s', '?')}s): {overhead['median']:.2f}% "
            f"(min {overhead['min']:.2f}, max {overhead['max']:.2f}) - {verdict} target "
            f"< {TARGET_METRICS_OVERHEAD_PERCENT:g}%"
        )
        print(
            f"  p99 ratio scraped/quiet: {ratios['p99']['median']:.3f} "
            f"(min {ratios['p99']['min']:.3f}, max {ratios['p99']['max']:.3f}); "
            f"a scrape took {scraped.get('scrape_ms_median', 0):.1f} ms "
            f"for {scraped.get('scrape_bytes', 0)} bytes"
        )
    cost = summary.get("scrape_cost")
    if cost:
        verdict = (
            "meets"
            if cost["core_percent_at_interval"] < TARGET_METRICS_OVERHEAD_PERCENT
            else "MISSES"
        )
        print(
            f"  scrape cost on an idle balancer: {cost['cpu_ms_per_scrape']:.2f} ms of CPU per "
            f"scrape ({cost['scrapes']} scrapes of {cost['bytes_per_scrape']} bytes), that is "
            f"{cost['core_percent_at_interval']:.2f}% of a core at one scrape every "
            f"{summary.get('scrape_interval_s', '?')}s - {verdict} target "
            f"< {TARGET_METRICS_OVERHEAD_PERCENT:g}%"
        )


def print_idle(lb: str, r: dict[str, Any]) -> None:
    per_conn = r["bytes_per_connection"]
    verdict = "meets" if per_conn <= TARGET_IDLE_BYTES_PER_CONN else "MISSES"
    print(
        f"{lb}: {r['connections']} idle keep-alive connections "
        f"(opened in {r['open_seconds']}s, {r['still_open']} still open)\n"
        f"  RSS {r['rss_before_kb'] / 1024:.1f} MiB before -> {r['rss_after_kb'] / 1024:.1f} MiB "
        f"with them open; peak RSS (VmHWM) {r['peak_rss_kb'] / 1024:.1f} MiB\n"
        f"  {per_conn} bytes ({per_conn / 1024:.1f} KiB) per connection - {verdict} target "
        f"<= {TARGET_IDLE_BYTES_PER_CONN // 1024} KiB"
    )


def _version(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (done.stdout + done.stderr).decode(errors="replace").strip()
    return text.splitlines()[0].split(" Copyright")[0] if text else "unknown"


def environment(tools: Tools) -> dict[str, Any]:
    cpu_model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.partition(":")[2].strip()
            break
    return {
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cpu": cpu_model,
        "cores": os.cpu_count(),
        "nginx": _version([tools.nginx, "-v"]),
        "wrk": _version([tools.wrk, "--version"]) if tools.wrk else None,
        "phoenix_lb": _version([str(tools.phoenix), "--version"]) if tools.phoenix else None,
    }


def save(payload: dict[str, Any], directory: Path, suffix: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}{suffix}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


# --------------------------------------------------------------------------
# Client addresses (--workers > 1)

_SIOCGIFADDR = 0x8915  # linux/sockios.h


def local_ipv4_addresses() -> list[str]:
    """The IPv4 address of each network interface (ioctl SIOCGIFADDR; no iproute2 needed)."""
    found: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            try:
                raw = fcntl.ioctl(
                    sock.fileno(), _SIOCGIFADDR, struct.pack("256s", name[:15].encode())
                )
            except OSError:  # no IPv4 address on this interface
                continue
            address = socket.inet_ntoa(raw[20:24])
            if address not in found:
                found.append(address)
    return found


def connects_from_itself(address: str) -> bool:
    """True when a connection to ``address`` from this machine has it as its source address.

    That is what makes it usable as a client address: wrk cannot bind a
    source address, but the kernel picks the destination's own address as the
    source of a local connection (for 127.0.0.2 it would pick 127.0.0.1)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
            server.bind((address, 0))
            server.listen(1)
            with socket.create_connection(server.getsockname(), timeout=2.0) as client:
                return bool(client.getsockname()[0] == address)
    except OSError:
        return False


def steering_slot(address: str, workers: int) -> int:
    """The worker phoenix-lb steers ``address`` to (server/sockets.py: low 32 bits mod N)."""
    return int(ipaddress.IPv4Address(address)) % workers


def choose_client_hosts(workers: int, spec: str) -> list[str]:
    """Addresses for wrk's threads: ``spec`` (A,B), or 127.0.0.1 plus addresses reaching
    the other workers (``auto``).  Each must connect from itself."""
    if spec != "auto":
        hosts = [h.strip() for h in spec.split(",") if h.strip()]
        for host in hosts:
            if not connects_from_itself(host):
                raise SetupError(
                    f"--client-addresses {host}: not a local address that a connection to it "
                    "comes from (127.0.0.2 and friends come from 127.0.0.1)"
                )
        return hosts or [HOST]
    hosts = [HOST]
    slots = {steering_slot(HOST, workers)}
    for address in local_ipv4_addresses():
        if len(slots) == workers:
            break
        if address in hosts or steering_slot(address, workers) in slots:
            continue
        if connects_from_itself(address):
            hosts.append(address)
            slots.add(steering_slot(address, workers))
    return hosts


# --------------------------------------------------------------------------
# Command line


def _seconds(text: str) -> int:
    """Whole seconds, ``10`` or ``10s`` (wrk takes whole seconds)."""
    try:
        value = int(text.removesuffix("s"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected whole seconds, e.g. 10s") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description=(
            "Peer benchmark: phoenix-lb vs nginx as the load balancer in front of three "
            "nginx backends, A B A B rounds driven by wrk, balancer pinned to one core and "
            "wrk + backends to the other. With --idle: memory per idle keep-alive connection. "
            "With --workers 2: phoenix-lb workers: 2 vs nginx worker_processes 2, unpinned. "
            "With --metrics-overhead: phoenix-lb alone, not scraped vs scraped every second."
        ),
        epilog="Results are printed and written as JSON to bench/results/. See bench/README.md.",
    )
    parser.add_argument("--rounds", type=_positive, default=5, help="A B rounds (default 5)")
    parser.add_argument(
        "--duration",
        type=_seconds,
        default=10,
        metavar="SECONDS",
        help="measured wrk run per balancer per round (default 10s)",
    )
    parser.add_argument(
        "--warmup",
        type=_seconds,
        default=2,
        metavar="SECONDS",
        help="unmeasured wrk run before each measured one (default 2s, 0 = none)",
    )
    parser.add_argument("--connections", type=_positive, default=50, help="wrk -c (default 50)")
    parser.add_argument(
        "--threads",
        type=_positive,
        help="wrk -t (default 1; with --workers > 1, 2 and at least one per client address)",
    )
    parser.add_argument(
        "--workers",
        type=_positive,
        default=1,
        metavar="N",
        help="balancer worker processes: phoenix-lb workers: N, nginx worker_processes N "
        "(default 1; above 1 nothing is pinned)",
    )
    parser.add_argument(
        "--client-addresses",
        default="auto",
        metavar="auto|A,B",
        help="with --workers > 1: local addresses the balancer listens on, one per wrk "
        "thread in turn, so connections come from several client addresses (phoenix-lb "
        "steers each address to one worker); auto: 127.0.0.1 plus local addresses that "
        "reach the other workers (default auto)",
    )
    parser.add_argument(
        "--metrics-overhead",
        action="store_true",
        help="phoenix-lb only: rounds without a scraper vs with /metrics scraped every "
        "--scrape-interval seconds; prints the throughput cost",
    )
    parser.add_argument(
        "--scrape-interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="how often --metrics-overhead scrapes /metrics (default 1)",
    )
    parser.add_argument(
        "--only",
        choices=LB_ORDER,
        help="run one balancer only (e.g. nginx, to test the bench itself)",
    )
    parser.add_argument(
        "--idle",
        action="store_true",
        help="idle-connection memory mode (phoenix-lb only unless --only)",
    )
    parser.add_argument(
        "--idle-conns",
        type=_positive,
        metavar="N",
        help="idle keep-alive connections to open (implies --idle; default 10000)",
    )
    parser.add_argument(
        "--idle-hold",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="how long the idle connections stay open before measuring (default 2)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="time allowed to open the idle connections (default 60)",
    )
    parser.add_argument(
        "--lb-cpu", type=int, default=0, metavar="CORE", help="core for the balancer (default 0)"
    )
    parser.add_argument(
        "--client-cpu",
        type=int,
        default=1,
        metavar="CORE",
        help="core for wrk, the backends and this script (default 1)",
    )
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="how long a started server may take to answer (default 15)",
    )
    parser.add_argument(
        "--phoenix",
        type=Path,
        metavar="PATH",
        help="phoenix-lb executable (default: next to this Python)",
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=RESULTS_DIR,
        metavar="DIR",
        help="where the JSON results go (default bench/results)",
    )
    parser.add_argument("--no-save", action="store_true", help="do not write the JSON results")
    parser.add_argument(
        "--keep-temp",
        action="store_true",
        help="keep the temp dir with configs and logs (path is printed)",
    )
    args = parser.parse_args(argv)
    if args.duration < 1:
        parser.error("--duration must be at least 1s")
    if args.idle and args.idle_conns is None:
        args.idle_conns = 10000
    if args.metrics_overhead and (args.idle or args.idle_conns or args.only):
        parser.error("--metrics-overhead runs phoenix-lb alone; drop --idle and --only")
    if args.scrape_interval <= 0:
        parser.error("--scrape-interval must be positive")
    return args


def find_tools(args: argparse.Namespace, lbs: Sequence[str], idle: bool) -> Tools:
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    wrk = shutil.which("wrk")
    taskset = shutil.which("taskset")
    missing = [
        name
        for name, found, needed in (
            ("nginx", nginx, True),
            ("wrk", wrk, not idle),
            ("taskset", taskset, True),
        )
        if needed and not found
    ]
    if missing:
        packages = " ".join(
            {"nginx": "nginx", "wrk": "wrk", "taskset": "util-linux"}[m] for m in missing
        )
        raise SetupError(
            f"{', '.join(missing)} not found; install with: apt-get install {packages}"
        )
    phoenix: Path | None = None
    if any(VARIANTS[lb][0] == "phoenix" for lb in lbs):
        phoenix = args.phoenix or Path(sys.executable).parent / "phoenix-lb"
        if not (phoenix.is_file() and os.access(phoenix, os.X_OK)):
            raise SetupError(
                f"{phoenix} not found; install the project into this venv "
                "(`.venv/bin/pip install -e .`) or pass --phoenix PATH, or use --only nginx"
            )
    assert nginx is not None and taskset is not None
    return Tools(nginx=nginx, wrk=wrk, taskset=taskset, phoenix=phoenix)


def check_cores(args: argparse.Namespace) -> None:
    usable = os.sched_getaffinity(0)
    if args.workers > 1:
        if args.workers > len(usable):
            print(
                f"note: {args.workers} workers on {len(usable)} usable cores",
                file=sys.stderr,
            )
        return
    for core in (args.lb_cpu, args.client_cpu):
        if core not in usable:
            raise SetupError(f"core {core} is not available (usable: {sorted(usable)})")
    if args.lb_cpu == args.client_cpu:
        raise SetupError("--lb-cpu and --client-cpu must differ")
    if len(usable) > 2:
        print(
            f"note: {len(usable)} cores usable; only {args.lb_cpu} and {args.client_cpu} are used",
            file=sys.stderr,
        )


@contextmanager
def _interrupts_as_keyboard_interrupt() -> Iterator[None]:
    """SIGTERM/SIGHUP unwind like Ctrl-C, so the finally blocks stop every process."""

    def raise_interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, raise_interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    idle = args.idle_conns is not None
    client_hosts = [HOST]
    try:
        check_cores(args)
        lbs: list[str]
        if args.metrics_overhead:
            lbs = ["phoenix", "phoenix+scrape"]
        elif args.only:
            lbs = [args.only]
        else:
            lbs = ["phoenix"] if idle else list(LB_ORDER)
        tools = find_tools(args, lbs, idle)
        if args.workers > 1 and not idle:
            client_hosts = choose_client_hosts(args.workers, args.client_addresses)
    except SetupError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    env = environment(tools)
    if args.workers == 1:
        # This script only polls and samples; keep it off the balancer's core.
        os.sched_setaffinity(0, {args.client_cpu})
        where = f"balancer on core {args.lb_cpu}; wrk and backends on core {args.client_cpu}"
    else:
        where = (
            f"{args.workers} balancer workers, nothing pinned; wrk threads connect to "
            f"{', '.join(client_hosts)}"
        )
    print(f"{where}; {env['nginx']}; {env['wrk']}; phoenix-lb: {env['phoenix_lb'] or 'not used'}")
    kind = "idle" if idle else "metrics-overhead" if args.metrics_overhead else "throughput"
    payload: dict[str, Any] = {
        "kind": kind,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "environment": env,
    }
    code = 0
    procs = ProcessSet(tools.taskset)
    tmp = Path(tempfile.mkdtemp(prefix="phoenix-bench-"))
    bench = Bench(args, tools, procs, tmp, lbs, client_hosts=client_hosts)
    if args.workers > 1 and not idle and "phoenix" in lbs:
        reached = {steering_slot(h, args.workers) for h in client_hosts}
        if len(reached) < args.workers:
            bench.warn(
                f"the client connections come from {len(reached)} address(es) that phoenix-lb "
                f"steers to {len(reached)} of its {args.workers} workers (it steers each client "
                "address to one worker): its number is that of fewer workers; give "
                "--client-addresses with local addresses of other parities"
            )
    payload["client_addresses"] = client_hosts
    try:
        with _interrupts_as_keyboard_interrupt():
            payload.update(bench.idle() if idle else bench.throughput())
    except KeyboardInterrupt:
        print("\ninterrupted; stopping everything", file=sys.stderr)
        code = 130
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        code = 2 if isinstance(exc, SetupError) else 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip cleanup
        procs.stop_all()
        if args.keep_temp:
            print(f"configs and logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if code == 0 and not args.no_save:
        payload["warnings"] = bench.warnings
        suffix = "-idle" if idle else "-metrics" if args.metrics_overhead else ""
        if args.workers > 1:
            suffix += f"-workers{args.workers}"
        path = save(payload, args.results_dir, suffix)
        print(f"results: {path}")
    return code


if __name__ == "__main__":
    sys.exit(main())
