"""The pure parts of active health checks: send, expect, status lines, jitter, bookkeeping.

No sockets and no sleeps: probes are fed to ``HealthChecker.record`` directly.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterator

import pytest

from phoenix_lb.config.schema import HealthCheckConfig
from phoenix_lb.health.checker import (
    JITTER,
    CheckSettings,
    CheckTarget,
    HealthChecker,
    first_delay,
    next_delay,
)
from phoenix_lb.health.probe import (
    check_send,
    classify_status,
    expect_codes,
    parse_expect_item,
    parse_status_line,
    unescape_send,
)
from phoenix_lb.health.state import Transition

# -- send ---------------------------------------------------------------------


def test_unescape_accepts_escaped_and_real_crlf_alike() -> None:
    want = b"HEAD /health HTTP/1.0\r\n\r\n"
    assert unescape_send("HEAD /health HTTP/1.0\\r\\n\\r\\n") == want  # plain YAML scalar
    assert unescape_send("HEAD /health HTTP/1.0\r\n\r\n") == want  # double-quoted YAML
    assert unescape_send("a\\tb\\\\c") == b"a\tb\\c"


@pytest.mark.parametrize("text", ["GET /\\x41 HTTP/1.0\\r\\n\\r\\n", "GET / HTTP/1.0\\", "GET /é"])
def test_unescape_rejects_unknown_escapes_and_non_ascii(text: str) -> None:
    with pytest.raises(ValueError):
        unescape_send(text)


@pytest.mark.parametrize(
    "text",
    [
        "HEAD /health HTTP/1.0\\r\\n\\r\\n",
        "GET /health HTTP/1.1\\r\\nHost: app\\r\\n\\r\\n",
        "GET /health HTTP/1.0\r\nUser-Agent: phoenix-lb\r\nConnection: close\r\n\r\n",
        "OPTIONS * HTTP/1.0\r\n\r\n",
    ],
)
def test_valid_send(text: str) -> None:
    assert check_send(text) == unescape_send(text)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("HEAD /health HTTP/1.0", "blank line"),
        ("HEAD /health HTTP/1.0\r\n", "blank line"),
        ("POST / HTTP/1.0\r\n\r\nbody\r\n\r\n", "nothing may follow"),
        ("HEAD /health HTTP/1.0\nX: y\r\n\r\n", "bare CR or LF"),
        ("/health\r\n\r\n", "request line"),
        ("HE(AD /health HTTP/1.0\r\n\r\n", "not an HTTP method"),
        ("HEAD /health HTTP/2.0\r\n\r\n", "HTTP/1.0 or HTTP/1.1"),
        ("GET /health HTTP/1.1\r\n\r\n", "Host"),
        ("GET / HTTP/1.0\r\nno colon\r\n\r\n", "header field"),
    ],
)
def test_invalid_send_says_why(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        check_send(text)


# -- expect and status lines --------------------------------------------------------


def test_expect_items_normalised() -> None:
    assert parse_expect_item("2xx") == "2xx"
    assert parse_expect_item("3XX") == "3xx"
    assert parse_expect_item(200) == "200"
    assert parse_expect_item("204") == "204"


@pytest.mark.parametrize(
    "value", ["6xx", "0xx", 99, 600, "20x", "", True, 2.0, "\uff12\uff10\uff10"]
)
def test_expect_rejects_other_values(value: object) -> None:
    with pytest.raises(ValueError):
        parse_expect_item(value)


def test_expect_codes_expand_classes() -> None:
    codes = expect_codes(["2xx", 301])
    assert 200 in codes and 299 in codes and 301 in codes
    assert 300 not in codes and 302 not in codes and 503 not in codes
    assert len(codes) == 101


@pytest.mark.parametrize(
    ("line", "status"),
    [
        (b"HTTP/1.1 200 OK\r\n", 200),
        (b"HTTP/1.0 503 Service Unavailable\r\n", 503),
        (b"HTTP/1.1 204\r\n", 204),  # no reason phrase, no SP
        (b"HTTP/1.1 204 \r\n", 204),
        (b"HTTP/1.1 301 Moved\n", 301),  # bare LF
        (b"HTTP/1.1 200 OK", 200),
        (b"HTTP/2 200\r\n", None),
        (b"HTTP/1.1 20 OK\r\n", None),
        (b"HTTP/1.1 2000 OK\r\n", None),
        (b"HTTP/1.1 600 Nope\r\n", None),
        (b"SSH-2.0-OpenSSH_9.6\r\n", None),
        (b"", None),
        (b"http/1.1 200 OK\r\n", None),
    ],
)
def test_parse_status_line(line: bytes, status: int | None) -> None:
    assert parse_status_line(line) == status


def test_classify_status() -> None:
    expect = expect_codes(["2xx", "3xx"])
    assert classify_status(b"HTTP/1.1 200 OK\r\n", expect) == (True, "status 200")
    assert classify_status(b"HTTP/1.1 302 Found\r\n", expect) == (True, "status 302")
    assert classify_status(b"HTTP/1.1 503 Busy\r\n", expect) == (False, "status 503")
    assert classify_status(b"HTTP/1.1 404 Not Found\r\n", expect) == (False, "status 404")
    assert classify_status(b"garbage\r\n", expect) == (False, "invalid response")
    assert classify_status(b"HTTP/1.1 404 x\r\n", expect_codes([404])) == (True, "status 404")


# -- settings ------------------------------------------------------------------------


def test_settings_from_config() -> None:
    config = HealthCheckConfig.model_validate(
        {
            "interval": "500ms",
            "timeout": "200ms",
            "rise": 3,
            "fall": 1,
            "send": "GET /ready HTTP/1.1\\r\\nHost: app\\r\\n\\r\\n",
            "expect": ["2xx", 404],
            "initial_state": "down",
            "port": 9100,
        }
    )
    settings = CheckSettings.from_config(config)
    assert settings.send == b"GET /ready HTTP/1.1\r\nHost: app\r\n\r\n"
    assert settings.expect == expect_codes(["2xx", 404])
    assert (settings.interval, settings.timeout, settings.rise, settings.fall) == (0.5, 0.2, 3, 1)
    assert settings.initial_up is False and settings.port == 9100


def test_default_settings_match_the_default_config() -> None:
    assert CheckSettings.from_config(HealthCheckConfig()) == CheckSettings()


# -- jitter ------------------------------------------------------------------------------


def test_first_delay_spreads_over_the_interval() -> None:
    rng = random.Random(7)
    delays = [first_delay(2.0, rng.random()) for _ in range(1000)]
    assert all(0.0 <= d < 2.0 for d in delays)
    # Every quarter of the interval gets some first probes.
    assert {int(d // 0.5) for d in delays} == {0, 1, 2, 3}


def test_next_delay_is_interval_plus_or_minus_ten_percent() -> None:
    assert next_delay(3.0, 0.0) == pytest.approx(3.0 * (1 - JITTER))
    assert next_delay(3.0, 0.5) == pytest.approx(3.0)
    rng = random.Random(1)
    delays = [next_delay(1.0, rng.random()) for _ in range(1000)]
    assert min(delays) >= 0.9 and max(delays) < 1.1
    assert min(delays) < 0.92 and max(delays) > 1.08


# -- the checker's bookkeeping (no probes run) -------------------------------------


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _target(
    address: str = "10.0.0.1:80", host: str | None = "10.0.0.1", **settings: object
) -> CheckTarget:
    return CheckTarget("app", address, host, 80, CheckSettings(**settings))  # type: ignore[arg-type]


class _Recorder:
    def __init__(self) -> None:
        self.transitions: list[tuple[str, bool, str]] = []
        self.results: list[tuple[str, bool, str]] = []

    def on_transition(self, target: CheckTarget, transition: Transition) -> None:
        self.transitions.append((target.address, transition.up, transition.reason))

    def on_result(self, target: CheckTarget, ok: bool, reason: str, seconds: float) -> None:
        self.results.append((target.address, ok, reason))


def test_transitions_reported_and_logged_once(
    loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    rec = _Recorder()
    target = _target(rise=2, fall=3)
    checker = HealthChecker(loop, [target], rec.on_transition, rec.on_result)
    caplog.set_level(logging.INFO, logger="phoenix_lb")
    for i in range(5):
        checker.record(target, False, "status 503", float(i))
    for i in range(3):
        checker.record(target, True, "status 200", 10.0 + i)
    assert rec.transitions == [
        ("10.0.0.1:80", False, "status 503"),
        ("10.0.0.1:80", True, "status 200"),
    ]
    assert len(rec.results) == 8
    messages = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "phoenix_lb"]
    assert messages == [
        (logging.WARNING, "upstream app: server 10.0.0.1:80 is down (was up): status 503"),
        (logging.INFO, "upstream app: server 10.0.0.1:80 is up (was down): status 200"),
    ]


def test_initial_state_and_unresolved_targets_start_down(loop: asyncio.AbstractEventLoop) -> None:
    targets = [
        _target("10.0.0.1:80"),
        _target("10.0.0.2:80", "10.0.0.2", initial_up=False),
        _target("pod-0.svc:80", None),
    ]
    checker = HealthChecker(loop, targets, lambda t, tr: None)
    states = checker.states()
    assert states[("app", "10.0.0.1:80")].up
    assert not states[("app", "10.0.0.2:80")].up
    assert not states[("app", "pod-0.svc:80")].up


def test_update_targets_keeps_state_of_unchanged_keys(loop: asyncio.AbstractEventLoop) -> None:
    rec = _Recorder()
    a, b = _target("10.0.0.1:80", fall=1), _target("10.0.0.2:80", fall=1)
    checker = HealthChecker(loop, [a, b], rec.on_transition)
    checker.record(a, False, "timeout", 1.0)
    assert not checker.states()[a.key].up
    c = _target("10.0.0.3:80")
    # a's settings change (rise 1): its down state survives; b goes away; c is new.
    checker.update_targets([_target("10.0.0.1:80", fall=1, rise=1), c])
    states = checker.states()
    assert set(states) == {a.key, c.key}
    assert not states[a.key].up and states[a.key].rise == 1
    assert states[c.key].up
    # A late result for the removed target is ignored.
    assert checker.record(b, False, "timeout", 2.0) is None


def test_set_connect_host(loop: asyncio.AbstractEventLoop) -> None:
    target = _target("pod-0.svc:80", None)
    checker = HealthChecker(loop, [target], lambda t, tr: None)
    checker.set_connect_host("app", "pod-0.svc:80", "10.1.2.3")
    assert checker.targets()[0].connect_host == "10.1.2.3"
    checker.set_connect_host("app", "unknown:80", "10.1.2.4")  # ignored
    assert [t.connect_host for t in checker.targets()] == ["10.1.2.3"]


def test_a_failing_callback_does_not_break_the_checker(
    loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(target: CheckTarget, transition: Transition) -> None:
        raise RuntimeError("boom")

    target = _target(fall=1)
    checker = HealthChecker(loop, [target], boom)
    with caplog.at_level(logging.ERROR, logger="phoenix_lb"):
        transition = checker.record(target, False, "timeout", 1.0)
    assert transition is not None and not transition.up
    assert any("callback failed" in r.getMessage() for r in caplog.records)
