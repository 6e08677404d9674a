#!/usr/bin/env python3
"""HTTP/2 throughput: phoenix-lb against nginx under h2load, same certificate and backend.

Both balancers terminate TLS with one ECDSA P-256 certificate, offer h2 by
ALPN (phoenix-lb ``http2: true``, nginx ``listen ... ssl http2``), run one
worker with the access log off and proxy every stream over HTTP/1.1
keep-alive to the same tiny nginx backend (``return 200 "hello\\n"``).
phoenix-lb (A) and nginx (B) take turns, A B A B for ``--rounds`` rounds, a
fresh process each time.

Each turn runs ``h2load -c CLIENTS -m STREAMS -D DURATION --warm-up-time 1``:
``--clients`` TLS connections with up to ``--streams`` concurrent streams
each (h2load's own MAX_CONCURRENT_STREAMS respect applies: both advertise
128).  Reported: requests/s, the share that succeeded (2xx) and the
balancer's CPU, with the phoenix/nginx ratio per round.

On 2 cores the balancer is pinned to core 0, h2load and the backend to
core 1 (``--lb-cpu``, ``--client-cpu``), as in ``bench/run.py``; the
balancer's CPU use shows whether it was the saturated side.

Standard library only (the process, certificate and nginx helpers are
``bench/tls_handshakes.py``'s).  Every process started here is stopped by
PID.  Results are printed and written to ``bench/results/<timestamp>-h2.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tls_handshakes import (
    HOST,
    NAME,
    Processes,
    backend_conf,
    cpu_seconds,
    free_ports,
    make_certificate,
    nginx_conf,
    tool,
    wait_tls,
)

LBS = ("phoenix", "nginx")


@dataclass
class Sample:
    lb: str
    round: int
    requests: int
    succeeded: int
    seconds: float
    rate: float
    lb_cpu_percent: float
    #: balancer CPU per request: what a request costs, whoever saturates
    lb_cpu_us: float


def nginx_h2_conf(prefix: Path, port: int, backend: int, cert: Path, key: Path) -> str:
    return nginx_conf(
        prefix,
        f"""\
    upstream app {{ server {HOST}:{backend}; keepalive 64; }}
    ssl_protocols TLSv1.2 TLSv1.3;
    server {{
        listen {HOST}:{port} ssl http2;
        server_name {NAME};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        http2_max_concurrent_streams 128;
        keepalive_requests 1000000;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}""",
    )


def phoenix_h2_conf(port: int, backend: int, cert: Path, key: Path) -> str:
    return f"""\
workers: 1
listeners:
  - name: https
    bind: ["{HOST}:{port}"]
    server_name: {NAME}
    http2: true
    http2_max_concurrent_streams: 128
    routes: [{{path: /, upstream: app}}]
    tls:
      certificates: [{{cert: {cert}, key: {key}}}]
upstreams:
  app:
    keepalive: 64
    servers: [{{address: "{HOST}:{backend}"}}]
access_log: {{format: "off"}}
error_log: {{level: warning}}
admin: null
"""


def h2load(args: argparse.Namespace, port: int) -> tuple[int, int, float]:
    """(requests done, succeeded, seconds) of one h2load run."""
    argv = [
        args.taskset, "-c", str(args.client_cpu),
        args.h2load, "-c", str(args.clients), "-m", str(args.streams),
        "-D", str(args.duration), "--warm-up-time", "1",
        f"https://{HOST}:{port}/",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=args.duration + 60)
    text = done.stdout + done.stderr
    finished = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", text)
    counts = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded", text)
    if done.returncode != 0 or finished is None or counts is None:
        sys.exit(f"h2load failed:\n{text[-2000:]}")
    return int(counts.group(3)), int(counts.group(4)), float(finished.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per h2load run")
    parser.add_argument("--clients", type=int, default=10, help="h2load connections")
    parser.add_argument("--streams", type=int, default=10, help="concurrent streams each")
    parser.add_argument("--lb-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument(
        "--phoenix",
        default=str(Path(sys.executable).with_name("phoenix-lb")),
        help="phoenix-lb command (default: next to this Python)",
    )
    parser.add_argument("--keep-temp", action="store_true")
    args = parser.parse_args()
    nginx = tool("nginx")
    tool("openssl")
    args.h2load = shutil.which("h2load")
    if args.h2load is None:
        sys.exit("h2load is not installed (apt-get install nghttp2-client)")
    args.taskset = tool("taskset")
    if not Path(args.phoenix).exists():
        sys.exit(f"{args.phoenix} not found (--phoenix PATH)")

    temp = Path(tempfile.mkdtemp(prefix="phoenix-h2-bench-"))
    processes = Processes(args.taskset)
    samples: list[Sample] = []
    try:
        cert, key = make_certificate(temp)
        backend_port, lb_port = free_ports(2)
        (temp / "backend").mkdir()
        conf = temp / "backend" / "nginx.conf"
        conf.write_text(
            backend_conf(temp / "backend", backend_port).replace(
                "access_log off;", "access_log off;\n    keepalive_requests 1000000;"
            )
        )
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
                    conf.write_text(nginx_h2_conf(prefix, lb_port, backend_port, cert, key))
                    argv = [nginx, "-p", f"{prefix}/", "-c", str(conf), "-e", "stderr"]
                else:
                    conf = prefix / "phoenix.yaml"
                    conf.write_text(phoenix_h2_conf(lb_port, backend_port, cert, key))
                    argv = [args.phoenix, "run", "-c", str(conf)]
                proc = processes.start(argv, args.lb_cpu, log)
                wait_tls(lb_port, proc, log)
                cpu_before = cpu_seconds(proc.pid)
                started = time.monotonic()
                requests, succeeded, seconds = h2load(args, lb_port)
                # CPU over the whole run, warm-up included (wall clock alike).
                wall = time.monotonic() - started
                used = cpu_seconds(proc.pid) - cpu_before
                sample = Sample(
                    lb, round_no, requests, succeeded, seconds, requests / seconds,
                    100.0 * used / wall, 1e6 * used / max(requests, 1),
                )  # fmt: skip
                samples.append(sample)
                print(
                    f"round {round_no} {lb:8}: {sample.rate:9.0f} req/s "
                    f"({succeeded}/{requests} 2xx)  balancer CPU {sample.lb_cpu_percent:4.0f}% "
                    f"= {sample.lb_cpu_us:.0f} us per request",
                    flush=True,
                )
                processes.stop(proc)
    finally:
        processes.stop_all()
        if args.keep_temp:
            print(f"temp files kept in {temp}")
        else:
            shutil.rmtree(temp, ignore_errors=True)

    def series(lb: str, attr: str = "rate") -> list[float]:
        return [float(getattr(s, attr)) for s in samples if s.lb == lb]

    ratios = [p / n for p, n in zip(series("phoenix"), series("nginx"), strict=True) if n]
    capacity = [
        n / p
        for p, n in zip(series("phoenix", "lb_cpu_us"), series("nginx", "lb_cpu_us"), strict=True)
        if p
    ]
    summary = {
        "phoenix_rate": statistics.median(series("phoenix")),
        "nginx_rate": statistics.median(series("nginx")),
        "ratio": statistics.median(ratios),
        "ratio_range": [min(ratios), max(ratios)],
        "phoenix_cpu_us": statistics.median(series("phoenix", "lb_cpu_us")),
        "nginx_cpu_us": statistics.median(series("nginx", "lb_cpu_us")),
        "capacity_ratio": statistics.median(capacity),
        "capacity_ratio_range": [min(capacity), max(capacity)],
        "failed": sum(s.requests - s.succeeded for s in samples),
    }
    print(
        f"\nmedians: req/s phoenix {summary['phoenix_rate']:.0f}, nginx "
        f"{summary['nginx_rate']:.0f}; ratio phoenix/nginx {summary['ratio']:.2f} "
        f"({summary['ratio_range'][0]:.2f}-{summary['ratio_range'][1]:.2f})\n"
        f"balancer CPU per request: phoenix {summary['phoenix_cpu_us']:.0f} us, nginx "
        f"{summary['nginx_cpu_us']:.0f} us; capacity ratio (nginx cost / phoenix cost) "
        f"{summary['capacity_ratio']:.2f} ({summary['capacity_ratio_range'][0]:.2f}-"
        f"{summary['capacity_ratio_range'][1]:.2f}); non-2xx or failed: {summary['failed']}"
    )
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    out = results / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-h2.json"
    out.write_text(
        json.dumps(
            {
                "args": {k: v for k, v in vars(args).items() if k not in ("taskset",)},
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
