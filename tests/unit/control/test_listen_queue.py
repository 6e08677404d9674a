"""Accept-queue lengths: the /proc parser, and a real kernel queue."""

from __future__ import annotations

import socket
import sys
import time

import pytest

from phoenix_lb.control.listen_queue import (
    listener_queues,
    parse_listen_queues,
    read_listen_queues,
)

SAMPLE = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:AB75 00000000:0000 0A 00000000:00000003 00:00000000 00000000     0        0 1861315
   1: 0100007F:AB75 0100007F:C350 01 00000000:00000010 00:00000000 00000000     0        0 1861399
   2: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1603
"""


def test_parse_keeps_listen_rows_only() -> None:
    # The established row (st 01) has data queued, not connections: ignored.
    assert parse_listen_queues(SAMPLE) == {1861315: 3, 1603: 0}


def test_parse_skips_garbage() -> None:
    assert parse_listen_queues("header\n   0: short\n   1: a b 0A x:zz y z u t i\n") == {}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/net/tcp (Linux)")
def test_real_queue_counts_unaccepted_connections() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    idle = socket.socket()
    idle.bind(("127.0.0.1", 0))
    idle.listen(16)
    clients = [socket.create_connection(listener.getsockname()) for _ in range(3)]
    try:
        deadline = time.monotonic() + 5.0
        while True:
            got = listener_queues({"web": [listener], "quiet": [idle]}, read_listen_queues())
            if got["web"] == 3 or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert got == {"web": 3, "quiet": 0}
        conn, _ = listener.accept()
        conn.close()
        got = listener_queues({"web": [listener]}, read_listen_queues())
        assert got == {"web": 2}
    finally:
        for sock in (*clients, listener, idle):
            sock.close()


def test_closed_socket_counts_zero() -> None:
    sock = socket.socket()
    sock.close()
    assert listener_queues({"gone": [sock]}, {}) == {"gone": 0}
