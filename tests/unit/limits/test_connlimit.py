"""nginx limit_conn: in-flight counts per key, bounded zone, active keys never evicted."""

from __future__ import annotations

import pytest

from phoenix_lb.limits import ConnLimit, ConnLimitZone


def test_admits_up_to_max_then_refuses_until_a_release() -> None:
    limit = ConnLimit(ConnLimitZone("addr", 100), 10)
    assert all(limit.acquire(b"a") for _ in range(10))
    assert not limit.acquire(b"a")
    assert limit.zone.count(b"a") == 10
    limit.release(b"a")
    assert limit.acquire(b"a")
    assert not limit.acquire(b"a")


def test_keys_are_independent() -> None:
    limit = ConnLimit(ConnLimitZone("addr", 100), 1)
    assert limit.acquire(b"a")
    assert not limit.acquire(b"a")
    assert limit.acquire(b"b")


def test_entries_at_zero_are_dropped() -> None:
    zone = ConnLimitZone("addr", 100)
    limit = ConnLimit(zone, 3)
    limit.acquire(b"a")
    limit.acquire(b"a")
    assert len(zone) == 1
    limit.release(b"a")
    assert len(zone) == 1 and zone.count(b"a") == 1
    limit.release(b"a")
    assert len(zone) == 0 and zone.count(b"a") == 0


def test_full_zone_refuses_new_keys_and_never_evicts_active_ones() -> None:
    zone = ConnLimitZone("addr", 3)
    limit = ConnLimit(zone, 5)
    for key in (b"a", b"b", b"c"):
        assert limit.acquire(key)
    # No room: the newcomer is refused, nobody in flight loses its count.
    assert not limit.acquire(b"d")
    assert [zone.count(k) for k in (b"a", b"b", b"c", b"d")] == [1, 1, 1, 0]
    # Existing keys still count up to their max.
    assert limit.acquire(b"a")
    # A key that ends its last request frees its slot.
    limit.release(b"b")
    assert limit.acquire(b"d")
    assert not limit.acquire(b"e")


def test_release_of_unknown_key_is_ignored() -> None:
    zone = ConnLimitZone("addr", 3)
    zone.release(b"never")
    assert len(zone) == 0
    assert zone.acquire(b"a", 1)
    zone.release(b"a")
    zone.release(b"a")  # one release too many: no negative count
    assert zone.count(b"a") == 0
    assert zone.acquire(b"a", 1)


def test_empty_key_is_not_limited() -> None:
    zone = ConnLimitZone("addr", 1)
    assert all(zone.acquire(b"", 1) for _ in range(5))
    assert len(zone) == 0
    zone.release(b"")
    assert zone.acquire(b"a", 1)


def test_zones_are_independent() -> None:
    one = ConnLimit(ConnLimitZone("one", 10), 1)
    two = ConnLimit(ConnLimitZone("two", 10), 1)
    assert one.acquire(b"a")
    assert two.acquire(b"a")


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="at least one entry"):
        ConnLimitZone("addr", 0)
    with pytest.raises(ValueError, match="max must be at least 1"):
        ConnLimit(ConnLimitZone("addr", 1), 0)
