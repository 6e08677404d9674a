from phoenix_lb.health.state import RiseFall


def test_falls_after_fall_failures_and_rises_after_rise_successes() -> None:
    s = RiseFall(rise=2, fall=3)
    assert s.record(False, "timeout", 1.0) is None
    assert s.record(False, "timeout", 2.0) is None
    t = s.record(False, "status 503", 3.0)
    assert t is not None and not t.up and t.reason == "status 503"
    assert (t.old, t.new) == ("up", "down")
    assert not s.up
    assert s.record(True, "status 200", 4.0) is None
    t = s.record(True, "status 200", 5.0)
    assert t is not None and t.up and s.up and s.changed_at == 5.0


def test_flapping_never_changes_state() -> None:
    s = RiseFall(rise=2, fall=2)
    for i in range(20):
        assert s.record(i % 2 == 0, "x", float(i)) is None
    assert s.up


def test_initial_down_needs_rise_successes() -> None:
    s = RiseFall(rise=3, fall=1, initial_up=False)
    assert not s.up
    assert s.record(True, "ok", 1.0) is None
    assert s.record(True, "ok", 2.0) is None
    assert s.record(True, "ok", 3.0) is not None
    assert s.up


def test_transition_reported_once() -> None:
    s = RiseFall(rise=1, fall=1)
    assert s.record(False, "refused", 1.0) is not None
    assert s.record(False, "refused", 2.0) is None
    assert s.last_ok is False and s.last_reason == "refused" and s.last_checked == 2.0
