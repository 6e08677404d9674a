"""Master <-> worker control channel: length-prefixed JSON over a Unix socket pair.

Messages are small dictionaries with an ``op`` key (see control/master.py
and control/worker.py for the vocabulary).  A 4-byte big-endian length
precedes each JSON document; a message over ``MAX_MESSAGE`` means the peer
is broken and the channel closes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from collections.abc import Callable
from typing import Any, cast

log = logging.getLogger("phoenix_lb")

MAX_MESSAGE = 64 * 1024 * 1024
_HEADER = struct.Struct(">I")

Message = dict[str, Any]


def encode(message: Message) -> bytes:
    """One framed message."""
    body = json.dumps(message, separators=(",", ":")).encode()
    return _HEADER.pack(len(body)) + body


class MessageDecoder:
    """Sans-IO framing: feed bytes, get whole messages."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        self._buffer += data
        out: list[Message] = []
        while len(self._buffer) >= 4:
            (length,) = _HEADER.unpack_from(self._buffer)
            if length > MAX_MESSAGE:
                raise ValueError(f"control message of {length} bytes")
            if len(self._buffer) < 4 + length:
                break
            body = bytes(self._buffer[4 : 4 + length])
            del self._buffer[: 4 + length]
            message = json.loads(body)
            if not isinstance(message, dict):
                raise ValueError("control message is not an object")
            out.append(message)
        return out


class ChannelProtocol(asyncio.Protocol):
    """An asyncio endpoint of the channel."""

    def __init__(
        self,
        on_message: Callable[[Message], None],
        on_close: Callable[[], None],
    ) -> None:
        self.on_message = on_message
        self.on_close = on_close
        self.transport: asyncio.Transport | None = None
        self.decoder = MessageDecoder()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.decoder.feed(data)
        except ValueError as exc:
            log.error("control channel: %s; closing it", exc)
            if self.transport is not None:
                self.transport.close()
            return
        for message in messages:
            self.on_message(message)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.on_close()

    def send(self, message: Message) -> bool:
        """Queue a message; False when the channel is closed."""
        if self.transport is None or self.transport.is_closing():
            return False
        self.transport.write(encode(message))
        return True

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
