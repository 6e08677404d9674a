"""Accept-queue length of listening sockets, read from /proc/net/tcp{,6}.

For a socket in LISTEN state the kernel reports, in the ``rx_queue`` column,
how many established connections wait to be accepted (``ss -ltn`` Recv-Q).
A queue that stays above zero means the workers do not accept fast enough:
the connections are fine, their first byte is just late (nginx Plus has no
equivalent; HAProxy shows it only by running ``ss``).  Sockets are matched by
inode, so reuseport groups and ``port: 0`` test listeners are counted right.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping

_LISTEN = "0A"
_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")


def parse_listen_queues(text: str) -> dict[int, int]:
    """inode -> accept-queue length for every LISTEN row of one /proc/net/tcp table."""
    out: dict[int, int] = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        # sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
        if len(fields) < 10 or fields[3] != _LISTEN:
            continue
        try:
            rx = int(fields[4].partition(":")[2], 16)
            out[int(fields[9])] = rx
        except ValueError:
            continue
    return out


def read_listen_queues(tables: Iterable[str] = _TABLES) -> dict[int, int]:
    """inode -> accept-queue length of every listening TCP socket in this namespace."""
    out: dict[int, int] = {}
    for path in tables:
        try:
            with open(path, encoding="ascii") as table:
                out.update(parse_listen_queues(table.read()))
        except OSError:
            continue  # no IPv6, or not Linux: the metric just stays empty
    return out


def listener_queues(
    sockets: Mapping[str, Iterable[socket.socket]], queues: Mapping[int, int]
) -> dict[str, int]:
    """Queue length per listener: the sum over its sockets (a reuseport group)."""
    out: dict[str, int] = {}
    for name, group in sockets.items():
        total = 0
        for sock in group:
            try:
                inode = os.fstat(sock.fileno()).st_ino
            except (OSError, ValueError):
                continue  # closed by a reload meanwhile
            total += queues.get(inode, 0)
        out[name] = total
    return out
