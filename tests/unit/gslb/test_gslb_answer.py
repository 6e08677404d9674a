"""What the GSLB answers (phoenix_lb.gslb.answer): pure, no sockets."""

from __future__ import annotations

import ipaddress
import random
from collections import Counter
from typing import Any

import pytest

from phoenix_lb.gslb.answer import (
    AAAA,
    ANY,
    AXFR,
    NOERROR,
    NS,
    NXDOMAIN,
    REFUSED,
    SERVFAIL,
    SOA,
    A,
    Answer,
    Client,
    Soa,
    Zone,
)
from phoenix_lb.gslb.config import GslbConfig

ZONE = "phoenix-orch.example.com"
MX = 15
ALL = frozenset({"region-1", "region-2", "region-3"})


def make_zone(**overrides: Any) -> Zone:
    regions = overrides.pop(
        "regions",
        {
            "region-1": {
                "vips": ["192.0.2.10", "192.0.2.11", "2001:db8:1::10"],
                "health": "http://127.0.0.1:9101/health",
                "subnets": ["198.51.100.0/24", "2001:db8:aaaa::/48"],
            },
            "region-2": {
                "vips": ["203.0.113.10"],
                "health": "http://127.0.0.1:9102/health",
                "subnets": ["10.0.0.0/8"],
            },
            "region-3": {
                "vips": ["233.252.0.10", "2001:db8:3::10"],
                "health": "http://127.0.0.1:9103/health",
                "subnets": ["10.1.0.0/16"],
            },
        },
    )
    data = {"listen": ["127.0.0.1:0"], "zone": ZONE, "ttl": 30, "regions": regions, **overrides}
    return Zone.from_config(GslbConfig.model_validate(data), serial=1234)


def ask(
    zone: Zone,
    qtype: int = A,
    *,
    name: str = ZONE,
    resolver: str | None = "192.0.2.200",
    ecs: str | None = None,
    healthy: frozenset[str] = ALL,
    rng: random.Random | None = None,
    qclass: int = 1,
) -> Answer:
    client = Client(
        ipaddress.ip_address(resolver) if resolver else None,
        ipaddress.ip_network(ecs) if ecs else None,
    )
    return zone.answer(name, qtype, qclass, client, healthy, rng or random.Random(1))


def addresses(answer: Answer) -> list[str]:
    return [str(record.data) for record in answer.answer]


# -- names and types ---------------------------------------------------------


def test_apex_soa_and_ns() -> None:
    zone = make_zone()
    soa = ask(zone, SOA)
    assert soa.rcode == NOERROR
    (record,) = soa.answer
    assert record.name == ZONE and record.rtype == SOA and record.ttl == 30
    assert isinstance(record.data, Soa)
    assert record.data.mname == f"ns1.{ZONE}" and record.data.rname == f"hostmaster.{ZONE}"
    assert record.data.serial == 1234 and record.data.minimum == 30
    ns = ask(zone, NS)
    assert [(r.rtype, r.data) for r in ns.answer] == [(NS, f"ns1.{ZONE}")]
    assert ns.additional == ()


def test_configured_nameservers_with_glue() -> None:
    zone = make_zone(
        nameservers={f"ns1.{ZONE}": ["192.0.2.53", "2001:db8::53"], "ns.example.net": []}
    )
    ns = ask(zone, NS)
    assert [r.data for r in ns.answer] == [f"ns1.{ZONE}", "ns.example.net"]
    assert [(r.name, r.rtype, r.data) for r in ns.additional] == [
        (f"ns1.{ZONE}", A, "192.0.2.53"),
        (f"ns1.{ZONE}", AAAA, "2001:db8::53"),
    ]
    assert addresses(ask(zone, A, name=f"NS1.{ZONE}.")) == ["192.0.2.53"]
    assert addresses(ask(zone, AAAA, name=f"ns1.{ZONE}")) == ["2001:db8::53"]
    nodata = ask(zone, SOA, name=f"ns1.{ZONE}")
    assert nodata.rcode == NOERROR and nodata.answer == () and nodata.authority[0].rtype == SOA
    assert ask(zone, SOA).answer[0].data.mname == f"ns1.{ZONE}"  # type: ignore[union-attr]


def test_empty_non_terminal_above_a_nameserver_is_nodata() -> None:
    zone = make_zone(nameservers={f"a.dns.{ZONE}": ["192.0.2.53"]})
    answer = ask(zone, A, name=f"dns.{ZONE}")
    assert answer.rcode == NOERROR and answer.answer == ()


def test_other_names_in_zone_are_nxdomain_with_soa() -> None:
    answer = ask(make_zone(), A, name=f"www.{ZONE}")
    assert answer.rcode == NXDOMAIN and answer.answer == ()
    assert [r.rtype for r in answer.authority] == [SOA]


@pytest.mark.parametrize("name", ["example.com", "example.org", "xphoenix-orch.example.com", "."])
def test_outside_the_zone_is_refused(name: str) -> None:
    answer = ask(make_zone(), A, name=name)
    assert answer == Answer(REFUSED)


def test_names_are_case_insensitive_and_may_end_with_a_dot() -> None:
    zone = make_zone()
    assert addresses(ask(zone, name="PHOENIX-Orch.Example.COM.")) == addresses(ask(zone))


def test_other_types_at_the_apex_are_nodata() -> None:
    answer = ask(make_zone(), MX)
    assert answer.rcode == NOERROR and answer.answer == ()
    assert [r.rtype for r in answer.authority] == [SOA]


def test_any_answers_the_soa_only() -> None:
    answer = ask(make_zone(), ANY)
    assert [r.rtype for r in answer.answer] == [SOA]


def test_zone_transfer_and_other_classes_are_refused() -> None:
    zone = make_zone()
    assert ask(zone, AXFR).rcode == REFUSED
    assert ask(zone, A, qclass=3).rcode == REFUSED  # CHAOS
    assert ask(zone, A, qclass=255).rcode == REFUSED  # ANY: not all of it is ours


def test_only_ascii_letters_fold() -> None:
    # U+212A KELVIN SIGN lower-cases to "k" in Python, not in DNS (RFC 4343).
    zone = make_zone(zone="k8s.example.com")
    assert ask(zone, A, name="K8S.Example.com").rcode == NOERROR
    assert ask(zone, A, name="\u212a8s.example.com").rcode == REFUSED


def test_a_label_holding_a_dot_is_not_below_the_zone() -> None:
    first, rest = ZONE.split(".", 1)
    assert ask(make_zone(), A, name=f"x\\.{first}.{rest}").rcode == REFUSED


# -- nearest_healthy ---------------------------------------------------------


def test_ecs_picks_the_clients_region() -> None:
    answer = ask(make_zone(), ecs="198.51.100.0/24")
    assert addresses(answer) == ["192.0.2.10", "192.0.2.11"]
    assert answer.regions == ("region-1",)
    assert answer.scope == 24


def test_ecs_is_preferred_over_the_resolver_address() -> None:
    answer = ask(make_zone(), resolver="10.9.9.9", ecs="198.51.100.0/24")
    assert answer.regions == ("region-1",)


def test_resolver_address_used_without_ecs() -> None:
    answer = ask(make_zone(), resolver="10.200.3.4")
    assert answer.regions == ("region-2",)
    assert answer.scope == 0  # no ECS in the query: nothing to scope


def test_ecs_with_source_prefix_zero_falls_back_to_the_resolver() -> None:
    answer = ask(make_zone(), resolver="10.200.3.4", ecs="0.0.0.0/0")
    assert answer.regions == ("region-2",)
    assert answer.scope == 0


def test_longest_prefix_wins() -> None:
    zone = make_zone()
    assert ask(zone, resolver="10.1.2.3").regions == ("region-3",)
    assert ask(zone, resolver="10.2.2.3").regions == ("region-2",)


def test_down_region_falls_to_next_best_match() -> None:
    answer = ask(make_zone(), resolver="10.1.2.3", healthy=frozenset({"region-1", "region-2"}))
    assert answer.regions == ("region-2",)


def test_ecs_shorter_than_the_region_subnet_does_not_match() -> None:
    # A /8 could be anywhere inside 10.0.0.0/8: region-3's /16 is not implied.
    answer = ask(make_zone(), resolver=None, ecs="10.1.0.0/16")
    assert answer.regions == ("region-3",)
    answer = ask(make_zone(), resolver=None, ecs="10.0.0.0/8")
    assert answer.regions == ("region-2",)


def test_unmatched_client_gets_every_healthy_region() -> None:
    answer = ask(make_zone(), resolver="192.0.2.99", ecs="192.0.2.0/24")
    assert answer.regions == ("region-1", "region-2", "region-3")
    assert addresses(answer) == ["192.0.2.10", "192.0.2.11", "203.0.113.10", "233.252.0.10"]
    assert answer.scope == 24  # a client elsewhere could have matched a region


def test_unmatched_client_gets_best_priority_tier() -> None:
    zone = make_zone(
        regions={
            "a": {"vips": ["192.0.2.1"], "health": "http://h/", "priority": 2},
            "b": {"vips": ["192.0.2.2"], "health": "http://h/", "priority": 1},
            "c": {"vips": ["192.0.2.3"], "health": "http://h/", "priority": 1},
            "d": {"vips": ["192.0.2.4"], "health": "http://h/"},
        }
    )
    everyone = frozenset("abcd")
    assert ask(zone, healthy=everyone).regions == ("b", "c")
    assert ask(zone, healthy=frozenset("ad")).regions == ("a",)
    assert ask(zone, healthy=frozenset("d")).regions == ("d",)
    assert ask(zone, healthy=everyone, ecs="192.0.2.0/24").scope == 0  # no subnets anywhere


def test_ipv6_client_subnet() -> None:
    answer = ask(make_zone(), AAAA, resolver="2001:db8:ffff::1", ecs="2001:db8:aaaa::/56")
    assert addresses(answer) == ["2001:db8:1::10"]
    assert answer.scope == 56


def test_family_follows_the_question_and_nodata_when_region_has_none() -> None:
    zone = make_zone()
    # region-2 has no IPv6 VIP: its clients get no AAAA rather than region-1's.
    answer = ask(zone, AAAA, resolver="10.200.0.1")
    assert answer.rcode == NOERROR and answer.answer == () and answer.regions == ()
    assert [r.rtype for r in answer.authority] == [SOA]
    assert addresses(ask(zone, AAAA, ecs="198.51.100.0/24")) == ["2001:db8:1::10"]


def test_no_client_information_at_all() -> None:
    answer = ask(make_zone(), resolver=None)
    assert answer.regions == ("region-1", "region-2", "region-3")
    assert answer.scope == 0


# -- failover and weighted -----------------------------------------------------


def test_failover_takes_first_healthy_in_file_order() -> None:
    zone = make_zone(policy="failover")
    assert ask(zone, ecs="10.1.0.0/16").regions == ("region-1",)
    assert ask(zone, ecs="10.1.0.0/16").scope == 0
    assert ask(zone, healthy=frozenset({"region-2", "region-3"})).regions == ("region-2",)
    assert ask(zone, healthy=frozenset({"region-3"})).regions == ("region-3",)


def test_failover_follows_priority() -> None:
    zone = make_zone(
        policy="failover",
        regions={
            "first-in-file": {"vips": ["192.0.2.1"], "health": "http://h/"},
            "primary": {"vips": ["192.0.2.2"], "health": "http://h/", "priority": 0},
            "secondary": {"vips": ["192.0.2.3"], "health": "http://h/", "priority": 5},
        },
    )
    every = frozenset({"first-in-file", "primary", "secondary"})
    assert ask(zone, healthy=every).regions == ("primary",)
    assert ask(zone, healthy=every - {"primary"}).regions == ("secondary",)
    assert ask(zone, healthy=frozenset({"first-in-file"})).regions == ("first-in-file",)


def test_weighted_follows_weights_with_injected_random() -> None:
    zone = make_zone(
        policy="weighted",
        regions={
            "big": {"vips": ["192.0.2.1"], "health": "http://h/", "weight": 3},
            "small": {"vips": ["192.0.2.2"], "health": "http://h/", "weight": 1},
        },
    )
    rng = random.Random(42)
    healthy = frozenset({"big", "small"})
    counts = Counter(ask(zone, healthy=healthy, rng=rng).regions[0] for _ in range(4000))
    assert 2800 < counts["big"] < 3200, counts
    only = frozenset({"small"})
    assert {ask(zone, healthy=only, rng=rng).regions for _ in range(50)} == {("small",)}


class _FixedRandom(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def test_weighted_boundaries() -> None:
    zone = make_zone(
        policy="weighted",
        regions={
            "a": {"vips": ["192.0.2.1"], "health": "http://h/", "weight": 1},
            "b": {"vips": ["192.0.2.2"], "health": "http://h/", "weight": 1},
        },
    )
    healthy = frozenset("ab")
    assert ask(zone, healthy=healthy, rng=_FixedRandom(0.0)).regions == ("a",)
    assert ask(zone, healthy=healthy, rng=_FixedRandom(0.49)).regions == ("a",)
    assert ask(zone, healthy=healthy, rng=_FixedRandom(0.5)).regions == ("b",)
    assert ask(zone, healthy=healthy, rng=_FixedRandom(0.999999)).regions == ("b",)


# -- all down ------------------------------------------------------------------


def test_all_down_return_all() -> None:
    answer = ask(make_zone(), ecs="198.51.100.0/24", healthy=frozenset())
    assert answer.rcode == NOERROR
    assert answer.regions == ("region-1", "region-2", "region-3")
    assert answer.scope == 0


def test_all_down_servfail() -> None:
    zone = make_zone(all_down="servfail")
    assert ask(zone, healthy=frozenset()) == Answer(SERVFAIL)
    # Names other than the apex's addresses are unaffected.
    assert ask(zone, SOA, healthy=frozenset()).rcode == NOERROR
    assert ask(zone, A, name=f"x.{ZONE}", healthy=frozenset()).rcode == NXDOMAIN


def test_unknown_region_names_in_health_are_ignored() -> None:
    answer = ask(make_zone(policy="failover"), healthy=frozenset({"nope", "region-3"}))
    assert answer.regions == ("region-3",)
