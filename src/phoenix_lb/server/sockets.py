"""Listening sockets, and steering each client address to one worker.

With several workers, the master opens one SO_REUSEPORT socket per worker
for every bind address and keeps them open for its whole life: a worker that
dies or is replaced leaves its socket (and the connections queued on it) in
place, so nothing is ever refused during restarts or reloads.

The kernel would spread connections over a reuseport group by a hash of the
4-tuple, so one client's connections would land on different workers.  A
classic BPF program (SO_ATTACH_REUSEPORT_CBPF) picks the socket from the
client's address instead: every connection from one address reaches the same
worker, so per-address rate and connection limits hold exactly without
sharing memory between processes (nginx needs a shared zone for that).
"""

from __future__ import annotations

import ctypes
import logging
import socket
import struct

log = logging.getLogger("phoenix_lb")

SO_ATTACH_REUSEPORT_CBPF = 51
# Classic BPF opcodes (linux/filter.h).
_BPF_LD_W_ABS = 0x20
_BPF_ALU_MOD_K = 0x94
_BPF_RET_A = 0x16
# Negative offsets address the network header (SKF_NET_OFF), whatever the
# program's own data pointer is.
_SKF_NET_OFF = -0x100000
# The low 32 bits of the source address: IPv4 src at 12, IPv6 src at 8..24.
_SRC_LOW32: dict[int, int] = {int(socket.AF_INET): 12, int(socket.AF_INET6): 20}


def listen_socket(host: str, port: int, backlog: int, *, reuse_port: bool = False) -> socket.socket:
    """A non-blocking listening TCP socket (IPv6 sockets are IPv6-only, like nginx)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def steering_program(family: int, groups: int) -> bytes:
    """The cBPF program: socket index = low 32 bits of the source address % groups."""
    offset = _SRC_LOW32[int(family)]
    code = [
        (_BPF_LD_W_ABS, 0, 0, (_SKF_NET_OFF + offset) & 0xFFFFFFFF),
        (_BPF_ALU_MOD_K, 0, 0, groups),
        (_BPF_RET_A, 0, 0, 0),
    ]
    return b"".join(struct.pack("HBBI", *insn) for insn in code)


def attach_client_steering(sock: socket.socket, groups: int) -> bool:
    """Steer the reuseport group of ``sock`` by client address; False if unsupported."""
    program = steering_program(sock.family, groups)
    buffer = ctypes.create_string_buffer(program)
    fprog = struct.pack("HxxxxxxQ", len(program) // 8, ctypes.addressof(buffer))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
    except OSError as exc:
        log.warning(
            "cannot steer clients to workers by address (%s): per-address limits then "
            "hold per worker",
            exc,
        )
        return False
    return True


def worker_socket_groups(
    binds: list[tuple[str, int]], workers: int, backlog: int
) -> list[list[socket.socket]]:
    """For each bind address, ``workers`` reuseport sockets steered by client address."""
    groups: list[list[socket.socket]] = []
    try:
        for host, port in binds:
            first = listen_socket(host, port, backlog, reuse_port=True)
            group = [first]
            groups.append(group)
            # Port 0: the kernel chose a port; its siblings must share it.
            port = first.getsockname()[1]
            for _ in range(workers - 1):
                group.append(listen_socket(host, port, backlog, reuse_port=True))
            attach_client_steering(first, workers)
    except BaseException:
        for group in groups:
            for sock in group:
                sock.close()
        raise
    return groups
