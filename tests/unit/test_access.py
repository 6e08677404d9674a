"""allow/deny rules: first match wins, strict default, IPv4-mapped addresses."""

from __future__ import annotations

import pytest

from phoenix_lb.access import AccessRules, parse_ip, parse_network

LOCAL_ONLY = [("allow", "127.0.0.1"), ("deny", "all")]


def test_seed_health_location_is_local_only() -> None:
    rules = AccessRules(LOCAL_ONLY)
    assert rules.allowed(b"127.0.0.1")
    assert rules.allowed("127.0.0.1")
    assert not rules.allowed(b"127.0.0.2")
    assert not rules.allowed(b"10.0.0.1")
    assert not rules.allowed(b"::1")


def test_ipv4_mapped_client_is_matched_by_ipv4_rules() -> None:
    rules = AccessRules(LOCAL_ONLY)
    assert rules.allowed(b"::ffff:127.0.0.1")
    assert not rules.allowed(b"::ffff:10.0.0.1")


def test_first_matching_rule_wins() -> None:
    rules = AccessRules([("deny", "10.0.0.5"), ("allow", "10.0.0.0/8"), ("deny", "all")])
    assert not rules.allowed(b"10.0.0.5")
    assert rules.allowed(b"10.0.0.6")
    assert rules.allowed(b"10.255.255.255")
    assert not rules.allowed(b"11.0.0.0")
    # Order matters: the same rules the other way round let 10.0.0.5 in.
    assert AccessRules([("allow", "10.0.0.0/8"), ("deny", "10.0.0.5")]).allowed(b"10.0.0.5")


def test_nothing_matches_means_deny_unlike_nginx() -> None:
    # A forgotten "deny all" must not open an admin location.
    rules = AccessRules([("allow", "10.0.0.0/8")])
    assert rules.allowed(b"10.1.2.3")
    assert not rules.allowed(b"192.0.2.1")
    assert not AccessRules([("deny", "192.0.2.1")]).allowed(b"192.0.2.2")


def test_empty_list_allows_everyone() -> None:
    rules = AccessRules([])
    assert not rules
    assert rules.allowed(b"192.0.2.1")
    assert rules.allowed(b"unix")
    assert AccessRules().allowed("2001:db8::1")


def test_allow_all_and_deny_all() -> None:
    assert AccessRules([("allow", "all")]).allowed(b"2001:db8::1")
    assert AccessRules([("allow", "all")]).allowed(b"unix")
    assert not AccessRules([("deny", "ALL")]).allowed(b"127.0.0.1")


def test_ipv6_rules() -> None:
    rules = AccessRules([("allow", "2001:db8::/32"), ("allow", "::1"), ("deny", "all")])
    assert rules.allowed(b"2001:db8::1")
    assert rules.allowed(b"2001:DB8:ffff::1")
    assert rules.allowed(b"::1")
    assert not rules.allowed(b"2001:db9::1")
    assert not rules.allowed(b"127.0.0.1")


def test_ipv6_rules_do_not_cover_ipv4_clients() -> None:
    rules = AccessRules([("allow", "::/0")])
    assert rules.allowed(b"2001:db8::1")
    assert not rules.allowed(b"192.0.2.1")
    assert not rules.allowed(b"::ffff:192.0.2.1")


def test_mapped_network_rule_is_an_ipv4_rule() -> None:
    rules = AccessRules([("allow", "::ffff:10.0.0.0/104")])
    assert rules.allowed(b"10.1.2.3")
    assert rules.allowed(b"::ffff:10.1.2.3")
    assert not rules.allowed(b"11.0.0.1")


def test_unix_socket_peers() -> None:
    rules = AccessRules([("allow", "unix:"), ("deny", "all")])
    assert rules.allowed(b"unix")
    assert not rules.allowed(b"127.0.0.1")
    assert not AccessRules(LOCAL_ONLY).allowed(b"unix")
    assert not AccessRules([("allow", "0.0.0.0/0")]).allowed(b"unix")


def test_bytes_are_text_never_a_packed_address() -> None:
    rules = AccessRules(LOCAL_ONLY)
    assert not rules.allowed(b"\x7f\x00\x00\x01")
    assert not rules.allowed(b"\xff\xfe")
    assert not rules.allowed(b"")


def test_decisions_are_cached_in_a_bounded_dict() -> None:
    rules = AccessRules([("allow", "10.0.0.0/8"), ("deny", "all")], cache_size=4)
    for _ in range(3):
        for i in range(20):
            assert rules.allowed(b"10.0.0.%d" % i)
            assert not rules.allowed(b"11.0.0.%d" % i)
            assert len(rules._cache) <= 4


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (("permit", "all"), "action must be 'allow' or 'deny'"),
        (("allow", "localhost"), "invalid address 'localhost'"),
        (("allow", "10.0.0.1/8"), r"did you mean 10\.0\.0\.0/8\?"),
        (("deny", "2001:db8::1/32"), r"did you mean 2001:db8::/32\?"),
        (("allow", "10.0.0.0/33"), "invalid address"),
        (("allow", "fe80::1%eth0"), "invalid address"),
        (("allow", ""), "invalid address"),
    ],
)
def test_parse_errors_name_the_rule(rule: tuple[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        AccessRules([("allow", "127.0.0.1"), rule])
    assert "access rule 2" in str(info.value)


def test_rule_must_be_a_pair() -> None:
    with pytest.raises(ValueError, match=r"access rule 1: expected \(action, address\)"):
        AccessRules([("allow",)])  # type: ignore[list-item]


def test_rules_are_kept_for_display() -> None:
    rules = AccessRules([(" Allow ", " 127.0.0.1 "), ("deny", "all")])
    assert rules.rules == (("allow", "127.0.0.1"), ("deny", "all"))
    assert "127.0.0.1" in repr(rules)


def test_parse_ip() -> None:
    assert parse_ip(b"192.0.2.1") == (4, 0xC0000201)
    assert parse_ip("::ffff:192.0.2.1") == (4, 0xC0000201)
    assert parse_ip(b"::1") == (6, 1)
    assert parse_ip(b"192.0.2.01") is None  # leading zero: ambiguous (octal?)
    assert parse_ip(b"192.0.2.1:80") is None
    assert parse_ip(b"unix") is None
    assert parse_ip(b"fe80::1%eth0") is None


def test_parse_network() -> None:
    assert parse_network("10.0.0.0/8") == (4, 0x0A000000, 8)
    assert parse_network("192.0.2.1") == (4, 0xC0000201, 32)
    assert parse_network("2001:db8::/32") == (6, 0x20010DB8 << 96, 32)
    assert parse_network("::ffff:0:0/96") == (4, 0, 0)
    assert parse_network("unix:") == (0, 0, 0)
