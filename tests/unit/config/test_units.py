"""nginx-style durations and sizes (phoenix_lb.config.units)."""

from __future__ import annotations

import math

import pytest

from phoenix_lb.config.units import format_duration, format_size, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("3s", 3.0),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("1w", 604800.0),
        ("1m30s", 90.0),
        ("1h 30m", 5400.0),
        ("1s500ms", 1.5),
        ("1.5s", 1.5),
        ("  3s  ", 3.0),
        ("65", 65.0),  # a bare number is seconds, as in nginx
        ("0", 0.0),
        ("0.25", 0.25),
    ],
)
def test_parse_duration_text(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("value", "seconds"), [(65, 65.0), (0, 0.0), (1.5, 1.5)])
def test_parse_duration_numbers_are_seconds(value: float, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "bad", ["", " ", "abc", "5x", "s", "3 s", "10M", "1e3", "-1s", "3s ms", "inf"]
)
def test_parse_duration_rejects_malformed_text(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(bad)


@pytest.mark.parametrize("bad", ["30s1m", "1m1m", "500ms1s"])
def test_parse_duration_wants_units_largest_first_each_once(bad: str) -> None:
    with pytest.raises(ValueError, match="largest to the smallest"):
        parse_duration(bad)


@pytest.mark.parametrize("bad", [True, False, None, [1], {"s": 1}])
def test_parse_duration_rejects_other_types(bad: object) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(bad)


@pytest.mark.parametrize("bad", [-1, -0.5])
def test_parse_duration_rejects_negative(bad: float) -> None:
    with pytest.raises(ValueError, match="negative"):
        parse_duration(bad)


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_parse_duration_rejects_non_finite(bad: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("512", 512),
        ("16k", 16 * 1024),
        ("16K", 16 * 1024),
        ("100m", 100 * 1024 * 1024),
        ("100M", 100 * 1024 * 1024),
        ("1g", 1024**3),
        ("2G", 2 * 1024**3),
        (" 8k ", 8 * 1024),
    ],
)
def test_parse_size_text(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_parse_size_bare_int_is_bytes() -> None:
    assert parse_size(4096) == 4096


@pytest.mark.parametrize("bad", ["", "k", "1.5k", "10kb", "10 k", "-1", "1t", "\uff11k"])
def test_parse_size_rejects_malformed_text(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(bad)


@pytest.mark.parametrize("bad", [True, None, 1.5, [16]])
def test_parse_size_rejects_other_types(bad: object) -> None:
    with pytest.raises(ValueError, match="expected a size"):
        parse_size(bad)


def test_parse_size_rejects_negative() -> None:
    with pytest.raises(ValueError, match="negative"):
        parse_size(-1)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.5, "500ms"), (1.5, "1.5s"), (65, "65s"), (60, "1m"), (3600, "1h")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [0, 0.001, 0.0005, 0.5, 1.5, 59, 60, 90, 3600, 5400, 86400])
def test_format_duration_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0"), (1, "1"), (1536, "1536"), (16384, "16k"), (100 * 1024**2, "100m"), (1024**3, "1g")],
)
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text
    assert parse_size(text) == size
