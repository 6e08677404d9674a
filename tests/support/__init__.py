"""Test support: an independent HTTP/1.1 backend and raw-socket client helpers.

``backend.Backend`` is a real origin server for integration tests (its own
thread and event loop, hand-written parser); ``rawhttp`` sends arbitrary
bytes and parses responses strictly.  Neither uses httptools or phoenix_lb.
"""

from .backend import (
    Backend,
    BlackholePort,
    FailMode,
    RecordedRequest,
    RefusingPort,
    SilentPort,
    pattern_body,
    pattern_sha256,
)
from .rawhttp import (
    IncompleteMessage,
    ProtocolError,
    RawClient,
    Response,
    parse_responses,
    send_raw,
)

__all__ = [
    "Backend",
    "BlackholePort",
    "FailMode",
    "IncompleteMessage",
    "ProtocolError",
    "RawClient",
    "RecordedRequest",
    "RefusingPort",
    "Response",
    "SilentPort",
    "parse_responses",
    "pattern_body",
    "pattern_sha256",
    "send_raw",
]
