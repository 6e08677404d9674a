"""nginx realip with real_ip_recursive on: trusted and untrusted peers, spoofing, IPv6."""

from __future__ import annotations

import pytest

from phoenix_lb.realip import PROXY_PROTOCOL, RealIp, normalize_ip

LB = b"10.0.0.1"
CLIENT = b"198.51.100.7"


def xff(trusted: list[str] | None = None, **kwargs: bool) -> RealIp:
    return RealIp(["10.0.0.0/8"] if trusted is None else trusted, "X-Forwarded-For", **kwargs)


def test_untrusted_peer_is_the_client_whatever_it_claims() -> None:
    r = xff()
    assert r.client_ip(CLIENT, b"1.2.3.4") == CLIENT
    assert r.client_ip(b"11.0.0.1", b"10.0.0.2") == b"11.0.0.1"


def test_trusted_peer_without_header_is_the_client() -> None:
    assert xff().client_ip(LB, None) == LB
    assert xff().client_ip(LB, b"") == LB
    assert xff().client_ip(LB, b" , ") == LB


def test_trusted_peer_gives_the_forwarded_address() -> None:
    assert xff().client_ip(LB, CLIENT) == CLIENT


def test_spoofed_leftmost_values_are_not_reached() -> None:
    # The client sent "X-Forwarded-For: 6.6.6.6, 10.9.9.9"; the trusted balancer appended
    # the address it saw.
    assert xff().client_ip(LB, b"6.6.6.6, 10.9.9.9, " + CLIENT) == CLIENT


def test_walk_skips_trusted_proxies_from_the_right() -> None:
    assert xff().client_ip(LB, CLIENT + b", 10.0.0.2, 10.0.0.3") == CLIENT
    assert xff().client_ip(LB, b"6.6.6.6, " + CLIENT + b", 10.0.0.2") == CLIENT


def test_all_trusted_gives_the_leftmost() -> None:
    assert xff().client_ip(LB, b"10.0.0.9, 10.0.0.2") == b"10.0.0.9"


def test_invalid_entry_stops_the_walk_at_the_last_valid_candidate() -> None:
    assert xff().client_ip(LB, CLIENT + b", unknown, 10.0.0.2") == b"10.0.0.2"
    # The rightmost entry invalid: nginx keeps the connection address.
    assert xff().client_ip(LB, CLIENT + b", unknown") == LB
    assert xff().client_ip(LB, CLIENT + b", 10.0.0.256") == LB
    assert xff().client_ip(LB, b"\xff\xfe") == LB


def test_separators_are_commas_and_spaces() -> None:
    r = xff()
    assert r.client_ip(LB, CLIENT + b" 10.0.0.2") == CLIENT
    assert r.client_ip(LB, b",, " + CLIENT + b" ,,10.0.0.2 , ") == CLIENT
    # A tab is not a separator in nginx: the entry is invalid.
    assert r.client_ip(LB, CLIENT + b"\t10.0.0.2") == LB


def test_ports_are_accepted_and_dropped() -> None:
    r = xff()
    assert r.client_ip(LB, b"198.51.100.7:5555") == CLIENT
    assert r.client_ip(LB, b"[2001:db8::7]:443") == b"2001:db8::7"
    assert r.client_ip(LB, b"[2001:db8::7]") == LB  # brackets without a port: refused
    assert r.client_ip(LB, b"198.51.100.7:0") == LB
    assert r.client_ip(LB, b"198.51.100.7:65536") == LB


def test_ipv6_proxies_and_clients() -> None:
    r = RealIp(["2001:db8::/32", "10.0.0.0/8"])
    assert r.client_ip(b"2001:db8::1", b"2a00:1450::1") == b"2a00:1450::1"
    assert r.client_ip(b"2001:db8::1", b"2A00:1450:0:0:0:0:0:1, 2001:db8::2") == b"2a00:1450::1"
    assert r.client_ip(b"2001:db9::1", b"2a00:1450::1") == b"2001:db9::1"
    assert r.client_ip(LB, b"2a00:1450::1, 2001:db8::5") == b"2a00:1450::1"


def test_mapped_addresses_are_ipv4_on_both_sides() -> None:
    r = xff()
    # A dual-stack socket reports the balancer as ::ffff:10.0.0.1: still trusted.
    assert r.client_ip(b"::ffff:10.0.0.1", CLIENT) == CLIENT
    # And a mapped client address becomes its IPv4 text (one rate-limit key).
    assert r.client_ip(LB, b"::ffff:198.51.100.7") == CLIENT
    assert r.client_ip(LB, b"::ffff:10.0.0.5, ::ffff:10.0.0.2") == b"10.0.0.5"


def test_non_recursive_takes_only_the_rightmost() -> None:
    r = xff(recursive=False)
    assert r.client_ip(LB, CLIENT + b", 10.0.0.2") == b"10.0.0.2"
    assert r.client_ip(LB, b"10.0.0.2, " + CLIENT) == CLIENT


def test_single_address_and_unix_trust() -> None:
    r = RealIp(["unix:", "192.0.2.10"])
    assert r.client_ip(b"unix", CLIENT) == CLIENT
    assert r.client_ip(b"192.0.2.10", CLIENT) == CLIENT
    assert r.client_ip(b"192.0.2.11", CLIENT) == b"192.0.2.11"
    assert r.trusted(b"192.0.2.10") and not r.trusted(b"192.0.2.11")


def test_empty_trust_list_trusts_nobody() -> None:
    r = RealIp([])
    assert r.client_ip(b"127.0.0.1", CLIENT) == b"127.0.0.1"
    assert r.client_ip(b"unix", CLIENT) == b"unix"


def test_header_names() -> None:
    assert xff().header_name == b"x-forwarded-for"
    real = RealIp(["10.0.0.0/8"], "X-Real-IP")
    assert real.header_name == b"x-real-ip" and not real.uses_proxy_protocol
    assert real.client_ip(LB, CLIENT) == CLIENT
    assert RealIp(["10.0.0.0/8"], "CF-Connecting-IP").header_name == b"cf-connecting-ip"


def test_proxy_protocol_source_is_used_only_from_a_trusted_peer() -> None:
    r = RealIp(["10.0.0.0/8"], PROXY_PROTOCOL)
    assert r.uses_proxy_protocol and r.header_name is None
    assert r.client_ip(LB, CLIENT) == CLIENT
    assert r.client_ip(b"203.0.113.1", CLIENT) == b"203.0.113.1"


@pytest.mark.parametrize(
    ("trusted", "header", "message"),
    [
        (["all"], "X-Forwarded-For", "every client choose its address"),
        (["10.0.0.1/8"], "X-Forwarded-For", r"trusted proxy '10\.0\.0\.1/8'.*did you mean"),
        (["proxy.example"], "X-Forwarded-For", "trusted proxy 'proxy.example'"),
        (["10.0.0.0/8"], "X Forwarded For", "invalid real_ip_header"),
        (["10.0.0.0/8"], "", "invalid real_ip_header"),
        ("10.0.0.0/8", "X-Forwarded-For", "must be a list"),
    ],
)
def test_configuration_errors(trusted: list[str], header: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RealIp(trusted, header)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"192.0.2.1", b"192.0.2.1"),
        (b"192.0.2.1:8080", b"192.0.2.1"),
        (b"2001:0db8:0000::0001", b"2001:db8::1"),
        (b"[2001:db8::1]:8080", b"2001:db8::1"),
        (b"::ffff:192.0.2.1", b"192.0.2.1"),
        (b"[::ffff:192.0.2.1]:1", b"192.0.2.1"),
        (b"[2001:db8::1]", None),
        (b"[2001:db8::1]:", None),
        (b"[192.0.2.1]:80", b"192.0.2.1"),  # nginx accepts it too
        (b"192.0.2.1:", None),
        (b"192.0.2.1:-1", None),
        (b"192.0.2.01", None),
        (b"fe80::1%eth0", None),
        (b"unknown", None),
        (b"", None),
    ],
)
def test_normalize_ip(text: bytes, expected: bytes | None) -> None:
    assert normalize_ip(text) == expected
