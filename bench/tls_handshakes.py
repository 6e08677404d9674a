#!/usr/bin/env python3
"""TLS handshakes per second: phoenix-lb against nginx, same certificate and ciphers.

One ECDSA P-256 certificate (made with ``openssl req``), the seed's TLS
settings on both sides (TLSv1.2 and TLSv1.3, ``ECDHE-ECDSA-AES128-GCM-SHA256:
ECDHE-RSA-AES128-GCM-SHA256`` with server preference, a 10m session cache and
timeout, session tickets on), one worker each, access log off, both proxying
to the same tiny nginx backend.  phoenix-lb (A) and nginx (B) take turns,
A B A B for ``--rounds`` rounds, a fresh process each time.

Each turn runs ``openssl s_time`` in four modes: TLS 1.3 and TLS 1.2, each
with new sessions (``-new``: a full handshake per connection) and resumed
ones (``-reuse``).  ``--clients`` s_time processes run side by side for
``--duration`` seconds; the rate is their connections over wall-clock time.
Every connection fetches ``/`` (``-www /``, HTTP/1.0, so one small proxied
request and a close): without reading, an s_time client never receives a
TLS 1.3 ticket and could not resume at all.  s_time marks each resumed
connection with ``r``; the share of those is reported, so a resumption mode
that silently did full handshakes shows.  ``--handshake-only`` drops the
request (the handshake alone; TLS 1.3 resumption cannot be measured then).

On 2 cores the balancer is pinned to core 0 and the clients plus the backend
to core 1 (``--lb-cpu``, ``--client-cpu``).  A full handshake costs the
client about as much as the server (an ECDHE key share each, an ECDSA
signature to make or to verify), so the client core may saturate first: the
balancer's CPU use is printed next to each rate, and a ratio only compares
the balancers while their core is the busy one.

Standard library only.  Every process started here is stopped by PID.
Results are printed and written to ``bench/results/<timestamp>-tls.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path

HOST = "127.0.0.1"
CIPHERS = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"
NAME = "bench.example"
MODES = (("tls1_3", "new"), ("tls1_3", "reuse"), ("tls1_2", "new"), ("tls1_2", "reuse"))
# Without a request an s_time client never reads a TLS 1.3 ticket: no TLS 1.3 reuse.
HANDSHAKE_ONLY_MODES = (("tls1_3", "new"), ("tls1_2", "new"), ("tls1_2", "reuse"))
LBS = ("phoenix", "nginx")
STOP_TIMEOUT = 10.0


@dataclass
class Sample:
    lb: str
    round: int
    protocol: str
    mode: str
    connections: int
    seconds: float
    rate: float
    resumed_share: float
    lb_cpu_percent: float
    #: balancer CPU per connection: what a handshake costs, whoever saturates
    lb_cpu_ms: float


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        sys.exit(f"{name} is not installed (apt-get install nginx openssl util-linux)")
    return path


def free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((HOST, 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its children still alive (workers)."""
    total = 0.0
    pids = [pid]
    with suppress(OSError):
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for one in pids:
        with suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def make_certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "bench.crt", directory / "bench.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "30",
            "-subj", f"/CN={NAME}", "-addext", f"subjectAltName=DNS:{NAME}",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def nginx_conf(prefix: Path, body: str) -> str:
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""\
daemon off;
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    server_tokens off;
{temp}
{body}
}}
"""


def backend_conf(prefix: Path, port: int) -> str:
    return nginx_conf(
        prefix,
        f'    server {{ listen {HOST}:{port}; location / {{ return 200 "hello\\n"; }} }}',
    ).replace("daemon off;", "daemon off;\nmaster_process off;")


def nginx_lb_conf(prefix: Path, port: int, backend: int, cert: Path, key: Path) -> str:
    return nginx_conf(
        prefix,
        f"""\
    upstream app {{ server {HOST}:{backend}; keepalive 64; }}
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_prefer_server_ciphers on;
    ssl_ciphers {CIPHERS};
    ssl_session_cache shared:SSL:10m;
    ssl_session_timeout 10m;
    server {{
        listen {HOST}:{port} ssl;
        server_name {NAME};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}""",
    )


def phoenix_conf(port: int, backend: int, cert: Path, key: Path) -> str:
    return f"""\
workers: 1
listeners:
  - name: https
    bind: ["{HOST}:{port}"]
    server_name: {NAME}
    routes: [{{path: /, upstream: app}}]
    tls:
      certificates: [{{cert: {cert}, key: {key}}}]
      protocols: [TLSv1.2, TLSv1.3]
      ciphers: {CIPHERS}
      prefer_server_ciphers: true
      session_cache: 10m
      session_timeout: 10m
upstreams:
  app:
    keepalive: 64
    servers: [{{address: "{HOST}:{backend}"}}]
access_log: {{format: "off"}}
error_log: {{level: warning}}
admin: null
"""


class Processes:
    """Processes started here, each stopped by PID (its workers too)."""

    def __init__(self, taskset: str) -> None:
        self.taskset = taskset
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], cpu: int, log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [self.taskset, "-c", str(cpu), *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            with suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(STOP_TIMEOUT)
        if proc in self.running:
            self.running.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.running)):
            self.stop(proc)


def wait_tls(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 20.0) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"exited with {proc.returncode}:\n{log.read_text(errors='replace')[-2000:]}")
        try:
            with (
                socket.create_connection((HOST, port), timeout=1) as raw,
                ctx.wrap_socket(raw, server_hostname=NAME),
            ):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"no TLS on port {port} after {timeout}s:\n{log.read_text(errors='replace')[-2000:]}")


def s_time(
    args: argparse.Namespace, port: int, protocol: str, mode: str
) -> tuple[int, float, float]:
    """(connections, seconds, resumed share) of ``--clients`` parallel s_time runs."""
    argv = [
        args.taskset, "-c", str(args.client_cpu),
        "openssl", "s_time", "-connect", f"{HOST}:{port}", f"-{mode}", f"-{protocol}",
        *([] if args.handshake_only else ["-www", "/"]), "-time", str(args.duration),
    ]  # fmt: skip
    started = time.monotonic()
    procs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(args.clients)
    ]
    outputs = [
        proc.communicate(timeout=args.duration + 30)[0].decode(errors="replace") for proc in procs
    ]
    seconds = time.monotonic() - started
    connections = resumed = marks = 0
    for text in outputs:
        found = [line for line in text.splitlines() if "connections in" in line and "real" in line]
        if not found:
            sys.exit(f"s_time failed:\n{text[-2000:]}")
        connections += int(found[-1].split()[0])
        # One mark per connection: "r" resumed, "*" a full handshake.
        for line in re.findall(r"^[*r]+$", text, re.MULTILINE):
            resumed += line.count("r")
            marks += len(line)
    return connections, seconds, (resumed / marks if marks else 0.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per s_time run")
    parser.add_argument("--clients", type=int, default=2, help="parallel s_time processes")
    parser.add_argument("--lb-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument(
        "--phoenix",
        default=str(Path(sys.executable).with_name("phoenix-lb")),
        help="phoenix-lb command (default: next to this Python)",
    )
    parser.add_argument(
        "--handshake-only",
        action="store_true",
        help="no request per connection: the handshake alone (TLS 1.3 reuse is left out)",
    )
    parser.add_argument("--keep-temp", action="store_true")
    args = parser.parse_args()
    nginx, _ = tool("nginx"), tool("openssl")
    args.taskset = tool("taskset")
    args.modes = HANDSHAKE_ONLY_MODES if args.handshake_only else MODES
    if not Path(args.phoenix).exists():
        sys.exit(f"{args.phoenix} not found (--phoenix PATH)")

    temp = Path(tempfile.mkdtemp(prefix="phoenix-tls-bench-"))
    processes = Processes(args.taskset)
    samples: list[Sample] = []
    try:
        cert, key = make_certificate(temp)
        backend_port, lb_port = free_ports(2)
        (temp / "backend").mkdir()
        conf = temp / "backend" / "nginx.conf"
        conf.write_text(backend_conf(temp / "backend", backend_port))
        processes.start(
            [nginx, "-p", f"{temp / 'backend'}/", "-c", str(conf), "-e", "stderr"],
            args.client_cpu,
            temp / "backend.log",
        )
        for round_no in range(1, args.rounds + 1):
            for lb in LBS:
                prefix = temp / f"{lb}-{round_no}"
                prefix.mkdir()
                log = prefix / "out.log"
                if lb == "nginx":
                    conf = prefix / "nginx.conf"
                    conf.write_text(nginx_lb_conf(prefix, lb_port, backend_port, cert, key))
                    argv = [nginx, "-p", f"{prefix}/", "-c", str(conf), "-e", "stderr"]
                else:
                    conf = prefix / "phoenix.yaml"
                    conf.write_text(phoenix_conf(lb_port, backend_port, cert, key))
                    argv = [args.phoenix, "run", "-c", str(conf)]
                proc = processes.start(argv, args.lb_cpu, log)
                wait_tls(lb_port, proc, log)
                for protocol, mode in args.modes:
                    cpu_before = cpu_seconds(proc.pid)
                    connections, seconds, share = s_time(args, lb_port, protocol, mode)
                    used = cpu_seconds(proc.pid) - cpu_before
                    sample = Sample(
                        lb, round_no, protocol, mode, connections, seconds,
                        connections / seconds, share, 100.0 * used / seconds,
                        1000.0 * used / max(connections, 1),
                    )  # fmt: skip
                    samples.append(sample)
                    print(
                        f"round {round_no} {lb:8} {protocol} {mode:5}: {sample.rate:8.0f}/s "
                        f"resumed {share:4.0%}  balancer CPU {sample.lb_cpu_percent:4.0f}% "
                        f"= {sample.lb_cpu_ms:.2f} ms per connection",
                        flush=True,
                    )
                processes.stop(proc)
    finally:
        processes.stop_all()
        if args.keep_temp:
            print(f"temp files kept in {temp}")
        else:
            shutil.rmtree(temp, ignore_errors=True)

    print(
        "\nmedians over the rounds; ratios phoenix/nginx per round, median (min-max)\n"
        "  rate: handshakes/s as driven (client-bound when the balancer CPU is well below 100%)\n"
        "  cost: balancer CPU ms per connection; capacity ratio = nginx cost / phoenix cost"
    )
    summary = {}
    for protocol, mode in args.modes:

        def series(attr: str, lb: str, protocol: str = protocol, mode: str = mode) -> list[float]:
            return [
                float(getattr(s, attr))
                for s in samples
                if (s.lb, s.protocol, s.mode) == (lb, protocol, mode)
            ]

        rate_ratios = [
            p / n
            for p, n in zip(series("rate", "phoenix"), series("rate", "nginx"), strict=True)
            if n
        ]
        capacity_ratios = [
            n / p
            for p, n in zip(
                series("lb_cpu_ms", "phoenix"), series("lb_cpu_ms", "nginx"), strict=True
            )
            if p
        ]
        item = {
            "phoenix_rate": statistics.median(series("rate", "phoenix")),
            "nginx_rate": statistics.median(series("rate", "nginx")),
            "rate_ratio": statistics.median(rate_ratios),
            "rate_ratio_range": [min(rate_ratios), max(rate_ratios)],
            "phoenix_cpu_ms": statistics.median(series("lb_cpu_ms", "phoenix")),
            "nginx_cpu_ms": statistics.median(series("lb_cpu_ms", "nginx")),
            "capacity_ratio": statistics.median(capacity_ratios),
            "capacity_ratio_range": [min(capacity_ratios), max(capacity_ratios)],
            "phoenix_resumed": statistics.median(series("resumed_share", "phoenix")),
            "nginx_resumed": statistics.median(series("resumed_share", "nginx")),
        }
        summary[f"{protocol}-{mode}"] = item
        print(
            f"  {protocol} {mode:5}  rate phoenix {item['phoenix_rate']:6.0f} nginx "
            f"{item['nginx_rate']:6.0f} ratio {item['rate_ratio']:.2f} "
            f"({item['rate_ratio_range'][0]:.2f}-{item['rate_ratio_range'][1]:.2f})  "
            f"cost phoenix {item['phoenix_cpu_ms']:.2f} ms nginx {item['nginx_cpu_ms']:.2f} ms "
            f"capacity ratio {item['capacity_ratio']:.2f} "
            f"({item['capacity_ratio_range'][0]:.2f}-{item['capacity_ratio_range'][1]:.2f})"
        )
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    tag = "-tls-handshake-only" if args.handshake_only else "-tls"
    out = results / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}{tag}.json"
    out.write_text(
        json.dumps(
            {
                "openssl": ssl.OPENSSL_VERSION,
                "args": {k: v for k, v in vars(args).items() if k not in ("taskset", "modes")},
                "summary": summary,
                "samples": [asdict(s) for s in samples],
            },
            indent=2,
        )
    )
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
