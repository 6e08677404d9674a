"""systemd readiness notification (sd_notify), without libsystemd.

``Type=notify`` units wait for ``READY=1`` on ``$NOTIFY_SOCKET`` (an AF_UNIX
datagram socket; a leading ``@`` means the abstract namespace).  Outside
systemd the variable is unset and this does nothing.
"""

from __future__ import annotations

import os
import socket


def sd_notify(state: str) -> bool:
    """Send ``state`` (e.g. "READY=1") to systemd; False when not under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError:
        return False
    return True
