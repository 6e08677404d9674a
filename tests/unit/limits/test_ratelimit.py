"""nginx limit_req arithmetic, with a fake clock (plain floats for ``now``)."""

from __future__ import annotations

import pytest

from phoenix_lb.limits import (
    CONN_STATE_BYTES,
    PASS,
    RATE_STATE_BYTES,
    REJECT,
    RateLimit,
    RateLimitZone,
    entries_for_zone_size,
    parse_rate,
)

T0 = 1000.0  # an arbitrary monotonic origin
IP = b"192.0.2.1"


def zone(rate: str = "10r/s", max_entries: int = 1000) -> RateLimitZone:
    return RateLimitZone("z", parse_rate(rate), max_entries)


# -- parsing and sizing ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("10r/s", 10.0), ("1r/s", 1.0), ("30r/m", 0.5), (" 1r/m ", 1 / 60), ("600r/m", 10.0)],
)
def test_parse_rate(text: str, expected: float) -> None:
    assert parse_rate(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["10", "10r/h", "1.5r/s", "-1r/s", "r/s", "10 r/s", "10R/S", ""])
def test_parse_rate_refuses_what_nginx_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"invalid rate .*e\.g\. 10r/s or 30r/m"):
        parse_rate(text)


def test_parse_rate_zero_and_non_string() -> None:
    with pytest.raises(ValueError, match="at least 1 request"):
        parse_rate("0r/s")
    with pytest.raises(ValueError, match="expected a rate"):
        parse_rate(10)


@pytest.mark.parametrize(
    ("rate", "milli"),
    # nginx: rate * 1000 / scale, integer division.
    [("10r/s", 10000), ("30r/m", 500), ("1r/m", 16), ("3r/m", 50), ("7r/m", 116), ("59r/m", 983)],
)
def test_zone_rate_is_nginx_integer_milli_requests(rate: str, milli: int) -> None:
    assert zone(rate).rate == milli


def test_zone_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="at least 1r/m"):
        RateLimitZone("z", 0.0, 10)
    with pytest.raises(ValueError, match="at least 1r/m"):
        RateLimitZone("z", 0.0001, 10)
    with pytest.raises(ValueError, match="at least one entry"):
        RateLimitZone("z", 1.0, 0)


def test_entries_for_zone_size() -> None:
    # nginx: one megabyte keeps about 8 thousand 128-byte states.
    assert entries_for_zone_size(1024 * 1024) == 8192
    assert entries_for_zone_size(10 * 1024 * 1024) == 81920
    assert entries_for_zone_size(10 * 1024 * 1024, CONN_STATE_BYTES) == 163840
    assert RATE_STATE_BYTES == 128 and CONN_STATE_BYTES == 64
    assert entries_for_zone_size(32 * 1024) == 256
    with pytest.raises(ValueError, match="too small: the minimum is 32k"):
        entries_for_zone_size(32 * 1024 - 1)


# -- the cases ----------------------------------------------------------


def test_flood_with_nodelay_passes_burst_plus_one_then_rate() -> None:
    limit = RateLimit(zone("10r/s"), burst=20, nodelay=True)
    results = [limit.check(IP, T0) for _ in range(100)]
    assert results.count(PASS) == 21
    assert results[:21] == [PASS] * 21
    assert results[21:] == [REJECT] * 79
    # One second later the bucket drained 10 requests: exactly 10 more pass.
    later = [limit.check(IP, T0 + 1.0) for _ in range(100)]
    assert later[:10] == [PASS] * 10
    assert later[10:] == [REJECT] * 90


def test_without_nodelay_excess_requests_wait_then_are_rejected() -> None:
    limit = RateLimit(zone("10r/s"), burst=20)
    results = [limit.check(IP, T0) for _ in range(25)]
    # The first is free; each excess request waits 100 ms more, up to burst.
    assert results[0] == PASS
    assert results[1:21] == [pytest.approx(0.1 * i) for i in range(1, 21)]
    assert results[1] == 0.1 and results[20] == 2.0
    assert results[21:] == [REJECT] * 4


def test_zone_check_signature_matches_binding() -> None:
    z = zone("10r/s")
    assert [z.check(IP, T0, 2, nodelay=True) for _ in range(4)] == [PASS, PASS, PASS, REJECT]
    assert [z.check(b"other", T0, 2) for _ in range(4)] == [PASS, 0.1, 0.2, REJECT]


# -- exact arithmetic -----------------------------------------------------------


def test_requests_exactly_at_rate_pass_one_millisecond_early_do_not() -> None:
    limit = RateLimit(zone("10r/s"), burst=0)
    assert limit.check(IP, T0) == PASS
    # 99 ms later: 0 - 10000 * 99 // 1000 + 1000 = 10 > 0.
    assert limit.check(IP, T0 + 0.099) == REJECT
    # The rejection was not accounted: 100 ms after the first request passes.
    assert limit.check(IP, T0 + 0.100) == PASS
    assert limit.check(IP, T0 + 0.200) == PASS


def test_rejected_requests_cost_nothing() -> None:
    limit = RateLimit(zone("1r/s"), burst=0)
    assert limit.check(IP, T0) == PASS
    for i in range(1, 100):
        assert limit.check(IP, T0 + i * 0.01) == REJECT
    assert limit.check(IP, T0 + 1.0) == PASS


def test_one_per_minute_is_16_milli_requests_per_second_as_in_nginx() -> None:
    # nginx stores 1r/m as 1000 // 60 = 16 milli-r/s: a minute drains 960, not
    # 1000, so a request exactly 60 s later is still 40 over a zero burst.
    limit = RateLimit(zone("1r/m"), burst=0)
    assert limit.check(IP, T0) == PASS
    assert limit.check(IP, T0 + 60.0) == REJECT
    assert limit.check(IP, T0 + 62.499) == REJECT
    assert limit.check(IP, T0 + 62.5) == PASS


def test_slow_rate_does_not_drain_between_millisecond_requests() -> None:
    # 16 * 1 // 1000 == 0: nginx's integer division, kept on purpose.
    limit = RateLimit(zone("1r/m"), burst=3, nodelay=True)
    assert [limit.check(IP, T0 + i * 0.001) for i in range(5)] == [PASS] * 4 + [REJECT]


def test_now_is_rounded_to_the_nearest_millisecond() -> None:
    # 4.35 s is 4349.999... ms as a float: truncating would see 99 ms.
    limit = RateLimit(zone("10r/s"), burst=0)
    assert limit.check(IP, 4.25) == PASS
    assert limit.check(IP, 4.35) == PASS


def test_delay_threshold_two_stage_limiting() -> None:
    # nginx "limit_req zone=ip burst=12 delay=8" at 5r/s.
    limit = RateLimit(zone("5r/s"), burst=12, delay=8)
    results = [limit.check(IP, T0) for _ in range(15)]
    assert results[:9] == [PASS] * 9  # excess 0 .. 8000 <= delay
    assert results[9:13] == [0.2, 0.4, 0.6, 0.8]  # (excess - 8000) * 1000 // 5000 ms
    assert results[13:] == [REJECT, REJECT]


def test_delay_shrinks_as_the_bucket_drains() -> None:
    limit = RateLimit(zone("10r/s"), burst=5)
    assert [limit.check(IP, T0) for _ in range(3)] == [PASS, 0.1, 0.2]
    # 150 ms later excess is 2000 - 1500 + 1000 = 1500: 150 ms.
    assert limit.check(IP, T0 + 0.15) == 0.15


def test_clock_going_back_a_little_counts_as_no_time() -> None:
    limit = RateLimit(zone("10r/s"), burst=5)
    assert limit.check(IP, T0 + 10.0) == PASS
    assert limit.check(IP, T0 + 9.5) == 0.1  # ms -> 0: excess 1000
    # ``last`` did not move back: 100 ms after T0+10 drains one request.
    assert limit.check(IP, T0 + 10.1) == 0.1


def test_clock_going_back_far_counts_as_one_millisecond() -> None:
    limit = RateLimit(zone("10r/s"), burst=5)
    assert limit.check(IP, T0 + 100.0) == PASS
    # ms < -60000 -> 1: excess 0 - 10 + 1000 = 990 -> 99 ms, and last moves.
    assert limit.check(IP, T0 + 10.0) == 0.099
    assert limit.check(IP, T0 + 10.0) == 0.199


def test_keys_are_independent() -> None:
    limit = RateLimit(zone("10r/s"), burst=1, nodelay=True)
    assert [limit.check(b"a", T0) for _ in range(3)] == [PASS, PASS, REJECT]
    assert [limit.check(b"b", T0) for _ in range(3)] == [PASS, PASS, REJECT]
    assert limit.check(b"a", T0) == REJECT


def test_empty_key_is_not_limited() -> None:
    z = zone("1r/m")
    limit = RateLimit(z, burst=0)
    assert all(limit.check(b"", T0) == PASS for _ in range(10))
    assert len(z) == 0


def test_zones_with_the_same_key_are_independent() -> None:
    a = RateLimit(zone("1r/s"), burst=0)
    b = RateLimit(zone("1r/s"), burst=0)
    assert a.check(IP, T0) == PASS
    assert a.check(IP, T0) == REJECT
    assert b.check(IP, T0) == PASS


# -- retry_after ------------------------------------------------------------------


def test_retry_after_rounds_up_to_whole_seconds() -> None:
    limit = RateLimit(zone("10r/s"), burst=20, nodelay=True)
    for _ in range(22):
        limit.check(IP, T0)
    assert limit.check(IP, T0) == REJECT
    # excess 20000: one more fits after 100 ms -> "1".
    assert limit.retry_after(IP, T0) == 1
    assert limit.retry_after(IP, T0 + 0.1) == 0
    assert limit.check(IP, T0 + 0.1) == PASS


def test_retry_after_slow_rate_and_unknown_key() -> None:
    limit = RateLimit(zone("1r/m"), burst=0)
    assert limit.retry_after(IP, T0) == 0
    limit.check(IP, T0)
    # ceil(1000 * 1000 / 16) = 62500 ms -> 63 s.
    assert limit.retry_after(IP, T0) == 63
    assert limit.retry_after(IP, T0 + 62.0) == 1
    assert limit.retry_after(IP, T0 + 62.5) == 0
    assert limit.check(IP, T0 + 62.5) == PASS


def test_retry_after_does_not_touch_state() -> None:
    z = zone("10r/s", max_entries=2)
    limit = RateLimit(z, burst=0)
    limit.check(b"a", T0)
    limit.check(b"b", T0)
    limit.retry_after(b"a", T0)  # must not make "a" recently used
    limit.check(b"c", T0)
    assert b"a" not in z and b"b" in z and b"c" in z


# -- memory bound -------------------------------------------------------------------


def test_full_zone_evicts_least_recently_used() -> None:
    z = zone("10r/s", max_entries=3)
    limit = RateLimit(z, burst=5)
    for key in (b"a", b"b", b"c"):
        limit.check(key, T0)
    limit.check(b"a", T0 + 0.01)  # a is now the most recent
    limit.check(b"d", T0 + 0.02)
    assert len(z) == 3
    assert b"b" not in z
    assert all(k in z for k in (b"a", b"c", b"d"))


def test_rejected_requests_also_refresh_recency() -> None:
    z = zone("1r/s", max_entries=2)
    limit = RateLimit(z, burst=0)
    limit.check(b"a", T0)
    limit.check(b"b", T0)
    assert limit.check(b"a", T0) == REJECT
    limit.check(b"c", T0)
    assert b"a" in z and b"b" not in z


def test_evicted_key_starts_afresh() -> None:
    z = zone("1r/s", max_entries=1)
    limit = RateLimit(z, burst=0)
    assert limit.check(b"a", T0) == PASS
    assert limit.check(b"a", T0) == REJECT
    assert limit.check(b"b", T0) == PASS  # evicts a
    assert limit.check(b"a", T0) == PASS


def test_idle_drained_entries_expire_two_at_a_time() -> None:
    z = zone("10r/s", max_entries=100)
    limit = RateLimit(z, burst=5)
    for key in (b"a", b"b", b"c"):
        limit.check(key, T0)
    # 60 s idle and drained: inserting a new key drops up to two of them.
    limit.check(b"d", T0 + 60.0)
    assert len(z) == 2 and b"c" in z and b"d" in z
    limit.check(b"e", T0 + 60.0)
    assert len(z) == 2 and b"d" in z and b"e" in z


def test_entries_not_yet_idle_or_drained_are_kept() -> None:
    z = zone("1r/m", max_entries=100)
    limit = RateLimit(z, burst=100, nodelay=True)
    for _ in range(50):
        limit.check(b"busy", T0)
    limit.check(b"fresh", T0 + 59.0)
    # busy: excess 49000 minus 16 * 61000 // 1000 = 976 is still owed.
    limit.check(b"new", T0 + 61.0)
    assert b"busy" in z and b"fresh" in z and len(z) == 3


def test_flood_of_distinct_keys_stays_bounded() -> None:
    z = zone("10r/s", max_entries=50)
    limit = RateLimit(z, burst=0)
    for i in range(10_000):
        assert limit.check(b"10.0.%d.%d" % (i // 256, i % 256), T0 + i * 0.0001) == PASS
    assert len(z) == 50


def test_clear() -> None:
    z = zone()
    RateLimit(z).check(IP, T0)
    z.clear()
    assert len(z) == 0 and IP not in z


# -- RateLimit validation ---------------------------------------------------------------


def test_rate_limit_arguments_are_checked() -> None:
    z = zone()
    with pytest.raises(ValueError, match="burst must not be negative"):
        RateLimit(z, burst=-1)
    with pytest.raises(ValueError, match="delay must not be negative"):
        RateLimit(z, burst=1, delay=-1)
    with pytest.raises(ValueError, match="exclude each other"):
        RateLimit(z, burst=5, nodelay=True, delay=2)
    limit = RateLimit(z, burst=3, nodelay=True)
    assert (limit.zone, limit.burst, limit.nodelay, limit.delay) == (z, 3, True, 0)
