"""Query bytes -> response bytes (phoenix_lb.gslb.server.QueryHandler): no sockets.

Queries are built and responses read with dnspython, an implementation
independent of the dnslib the server uses.
"""

from __future__ import annotations

import random
import struct

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import pytest

from phoenix_lb.gslb.answer import Zone
from phoenix_lb.gslb.config import GslbConfig
from phoenix_lb.gslb.metrics import GslbStats
from phoenix_lb.gslb.server import CLASSIC_UDP, UDP_PAYLOAD, QueryHandler, ecs_option, parse_ecs

ZONE = "phoenix-orch.example.com"


class Health:
    def __init__(self, *names: str) -> None:
        self.healthy = frozenset(names)


def make_handler(
    vips_1: list[str] | None = None, healthy: tuple[str, ...] = ("region-1", "region-2")
) -> QueryHandler:
    config = GslbConfig.model_validate(
        {
            "listen": ["127.0.0.1:0"],
            "zone": ZONE,
            "ttl": 30,
            "regions": {
                "region-1": {
                    "vips": vips_1 or ["192.0.2.10", "2001:db8::10"],
                    "health": "http://127.0.0.1:9101/health",
                    "subnets": ["198.51.100.0/24", "2001:db8:aaaa::/48"],
                },
                "region-2": {
                    "vips": ["203.0.113.10"],
                    "health": "http://127.0.0.1:9102/health",
                    "subnets": ["127.0.0.0/8"],
                },
            },
        }
    )
    return QueryHandler(
        Zone.from_config(config, serial=7), Health(*healthy), GslbStats(), random.Random(3)
    )


def query(
    name: str = ZONE,
    rdtype: str = "A",
    *,
    ecs: tuple[str, int] | None = None,
    edns: int | None = None,
    payload: int = 1232,
    want_dnssec: bool = False,
) -> dns.message.QueryMessage:
    options: list[dns.edns.Option] = []
    if ecs is not None:
        options.append(dns.edns.ECSOption(ecs[0], ecs[1]))
        edns = 0 if edns is None else edns
    if edns is None and not want_dnssec:
        message = dns.message.make_query(name, rdtype, use_edns=False)
    else:
        message = dns.message.make_query(
            name,
            rdtype,
            use_edns=edns if edns is not None else 0,
            payload=payload,
            options=options,
            want_dnssec=want_dnssec,
        )
    assert isinstance(message, dns.message.QueryMessage)
    return message


def exchange(
    handler: QueryHandler,
    message: dns.message.Message,
    *,
    source: str = "192.0.2.99",
    tcp: bool = False,
) -> dns.message.Message:
    out = handler.handle(message.to_wire(), source, tcp)
    assert out is not None
    response = dns.message.from_wire(out)
    assert response.id == message.id
    assert response.flags & dns.flags.QR
    return response


def a_records(response: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in response.answer for rd in rrset)


def ecs_of(response: dns.message.Message) -> dns.edns.ECSOption:
    (option,) = [o for o in response.options if isinstance(o, dns.edns.ECSOption)]
    return option


# -- answers -------------------------------------------------------------------


def test_a_answer_is_authoritative_and_echoes_the_question() -> None:
    message = query("PHOENIX-orch.Example.com", "A")
    response = exchange(make_handler(), message, source="127.0.0.1")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA and response.flags & dns.flags.RD
    assert not response.flags & dns.flags.RA
    assert response.question[0].name.to_text() == "PHOENIX-orch.Example.com."
    assert a_records(response) == ["203.0.113.10"]  # 127.0.0.0/8 belongs to region-2
    assert response.answer[0].ttl == 30
    assert response.edns == -1  # no OPT asked, none sent


def test_ecs_picks_the_region_and_is_echoed_with_scope() -> None:
    handler = make_handler()
    response = exchange(handler, query(ecs=("198.51.100.77", 24)), source="127.0.0.1")
    assert a_records(response) == ["192.0.2.10"]
    option = ecs_of(response)
    assert (option.address, option.srclen, option.scopelen) == ("198.51.100.0", 24, 24)
    assert response.edns == 0 and response.payload == UDP_PAYLOAD
    assert handler.stats.answers == {("region-1", "NOERROR"): 1}
    assert handler.stats.queries["udp"] == 1


def test_ecs_ipv6() -> None:
    response = exchange(make_handler(), query(rdtype="AAAA", ecs=("2001:db8:aaaa:1::", 56)))
    assert a_records(response) == ["2001:db8::10"]
    option = ecs_of(response)
    assert (option.address, option.srclen, option.scopelen) == ("2001:db8:aaaa::", 56, 56)


def test_ecs_scope_zero_when_not_tailored() -> None:
    handler = make_handler(healthy=())  # all down: return_all, same for everyone
    response = exchange(handler, query(ecs=("198.51.100.0", 24)))
    assert a_records(response) == ["192.0.2.10", "203.0.113.10"]
    assert ecs_of(response).scopelen == 0


def test_do_bit_is_copied() -> None:
    response = exchange(make_handler(), query(edns=0, want_dnssec=True))
    assert response.ednsflags & dns.flags.DO
    response = exchange(make_handler(), query(edns=0))
    assert not response.ednsflags & dns.flags.DO


def test_nxdomain_refused_soa_ns() -> None:
    handler = make_handler()
    response = exchange(handler, query(f"www.{ZONE}"))
    assert response.rcode() == dns.rcode.NXDOMAIN and response.flags & dns.flags.AA
    assert response.authority[0].rdtype == dns.rdatatype.SOA
    response = exchange(handler, query("example.org"))
    assert response.rcode() == dns.rcode.REFUSED and not response.flags & dns.flags.AA
    assert response.answer == [] and response.authority == []
    soa = exchange(handler, query(rdtype="SOA")).answer[0][0]
    assert soa.mname.to_text() == f"ns1.{ZONE}." and soa.serial == 7 and soa.minimum == 30
    ns = exchange(handler, query(rdtype="NS")).answer[0]
    assert [rd.target.to_text() for rd in ns] == [f"ns1.{ZONE}."]
    stats = handler.stats.answers
    assert stats[("none", "NXDOMAIN")] == 1 and stats[("none", "REFUSED")] == 1


# -- size limits and truncation ---------------------------------------------------


def many_vips(count: int) -> list[str]:
    return [f"192.0.{2 + i // 250}.{1 + i % 250}" for i in range(count)]


def test_large_answer_truncated_over_udp_and_whole_over_tcp() -> None:
    handler = make_handler(vips_1=many_vips(100))
    message = query(ecs=("198.51.100.0", 24))
    udp = exchange(handler, message)
    assert udp.flags & dns.flags.TC
    assert udp.answer == [] and ecs_of(udp).srclen == 24  # the OPT stays
    assert len(udp.to_wire()) <= UDP_PAYLOAD
    tcp = exchange(handler, message, tcp=True)
    assert not tcp.flags & dns.flags.TC
    assert len(a_records(tcp)) == 100
    assert handler.stats.truncated == 1


def test_udp_limit_is_512_without_edns_and_the_clients_size_with_it() -> None:
    handler = make_handler(vips_1=many_vips(40))  # 40 x 16 bytes + overhead: about 700 bytes
    assert exchange(handler, query()).flags & dns.flags.TC
    assert exchange(handler, query(ecs=("198.51.100.0", 24), payload=512)).flags & dns.flags.TC
    response = exchange(handler, query(ecs=("198.51.100.0", 24), payload=4096))
    assert not response.flags & dns.flags.TC and len(a_records(response)) == 40
    # An advertised size below 512 means 512 (RFC 6891 6.2.5).
    response = exchange(make_handler(), query(edns=0, payload=100))
    assert not response.flags & dns.flags.TC and len(response.to_wire()) <= CLASSIC_UDP


# -- malformed and unusual queries ----------------------------------------------------


def header(
    qid: int = 0x1234, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0
) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


def bare_rcode(out: bytes | None) -> int:
    assert out is not None and len(out) == 12
    qid, flags, *counts = struct.unpack("!HHHHHH", out)
    assert qid == 0x1234 and flags & 0x8000 and counts == [0, 0, 0, 0]
    return flags & 0xF


@pytest.mark.parametrize("data", [b"", b"\x12", b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00"])
def test_no_header_is_dropped(data: bytes) -> None:
    handler = make_handler()
    assert handler.handle(data, "192.0.2.1", False) is None
    assert handler.stats.dropped == {"no header": 1}


def test_responses_are_never_answered() -> None:
    handler = make_handler()
    assert (
        handler.handle(header(flags=0x8000) + b"\x00\x00\x01\x00\x01", "192.0.2.1", False) is None
    )
    assert handler.stats.dropped == {"not a query": 1}


def test_oversized_query_dropped() -> None:
    handler = make_handler()
    assert handler.handle(header() + bytes(5000), "192.0.2.1", False) is None


def test_question_cut_short_is_formerr() -> None:
    wire = query().to_wire()
    for cut in range(13, len(wire) - 1):
        out = make_handler().handle(wire[:cut], "192.0.2.1", False)
        assert out is not None
        assert struct.unpack_from("!H", out, 2)[0] & 0x8000
        assert (struct.unpack_from("!H", out, 2)[0] & 0xF) in (1,), cut


@pytest.mark.parametrize("qd", [0, 2])
def test_question_count_other_than_one_is_formerr(qd: int) -> None:
    assert bare_rcode(make_handler().handle(header(qd=qd), "192.0.2.1", False)) == 1


def test_too_many_records_is_formerr() -> None:
    assert bare_rcode(make_handler().handle(header(ar=200), "192.0.2.1", False)) == 1


@pytest.mark.parametrize("opcode", [dns.opcode.NOTIFY, dns.opcode.UPDATE, dns.opcode.IQUERY])
def test_other_opcodes_are_notimp(opcode: int) -> None:
    out = make_handler().handle(header(flags=opcode << 11), "192.0.2.1", False)
    assert bare_rcode(out) == 4
    assert out is not None and (struct.unpack_from("!H", out, 2)[0] >> 11) & 0xF == opcode


def raw_query_with_opt(
    options: bytes, ttl: int = 0, owner: bytes = b"\x00", opts: int = 1
) -> bytes:
    question = query().question[0]
    name = question.name.to_wire()
    assert name is not None
    body = name + struct.pack("!HH", 1, 1)
    opt = owner + struct.pack("!HHIH", 41, 1232, ttl, len(options)) + options
    return header(ar=opts) + body + opt * opts


def ecs_bytes(family: int, source: int, scope: int, address: bytes) -> bytes:
    data = struct.pack("!HBB", family, source, scope) + address
    return struct.pack("!HH", 8, len(data)) + data


@pytest.mark.parametrize(
    "option",
    [
        ecs_bytes(3, 24, 0, b"\xc6\x33\x64"),  # unknown family
        ecs_bytes(1, 33, 0, b"\xc6\x33\x64\x00\x00"),  # prefix longer than IPv4
        ecs_bytes(1, 24, 0, b"\xc6\x33\x64\x00"),  # more address bytes than the prefix needs
        ecs_bytes(1, 24, 0, b"\xc6\x33"),  # fewer
        ecs_bytes(1, 23, 0, b"\xc6\x33\x65"),  # a bit set beyond the prefix
        struct.pack("!HH", 8, 2) + b"\x00\x01",  # too short to hold family and prefixes
        ecs_bytes(1, 24, 0, b"\xc6\x33\x64") * 2,  # two ECS options
    ],
)
def test_malformed_ecs_is_formerr(option: bytes) -> None:
    assert bare_rcode(make_handler().handle(raw_query_with_opt(option), "192.0.2.1", False)) == 1


def test_well_formed_raw_ecs_accepted() -> None:
    out = make_handler().handle(
        raw_query_with_opt(ecs_bytes(1, 24, 0, b"\xc6\x33\x64")), "192.0.2.1", False
    )
    assert out is not None
    response = dns.message.from_wire(out)
    assert a_records(response) == ["192.0.2.10"]


def test_two_opt_records_or_opt_not_at_root_is_formerr() -> None:
    handler = make_handler()
    assert bare_rcode(handler.handle(raw_query_with_opt(b"", opts=2), "192.0.2.1", False)) == 1
    bad_owner = raw_query_with_opt(b"", owner=b"\x01a\x00")
    assert bare_rcode(handler.handle(bad_owner, "192.0.2.1", False)) == 1


def test_edns_version_above_zero_is_badvers() -> None:
    out = make_handler().handle(raw_query_with_opt(b"", ttl=1 << 16), "192.0.2.1", False)
    assert out is not None
    response = dns.message.from_wire(out)
    assert response.rcode() == dns.rcode.BADVERS
    assert response.edns == 0 and response.answer == []


def test_random_garbage_never_raises_and_gets_formerr_or_nothing() -> None:
    handler = make_handler()
    rng = random.Random(2024)
    valid = query(ecs=("198.51.100.0", 24)).to_wire()
    answered = 0
    for i in range(3000):
        if i % 2:
            data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 120)))
        else:  # a valid query with a few bytes flipped: gets deeper into the parser
            buf = bytearray(valid)
            for _ in range(rng.randrange(1, 4)):
                buf[rng.randrange(2, len(buf))] = rng.getrandbits(8)
            data = bytes(buf)
        out = handler.handle(data, "192.0.2.1", False)
        if out is None:
            continue
        answered += 1
        assert len(out) >= 12 and out[:2] == data[:2]
        assert out[2] & 0x80  # QR
        assert len(out) <= UDP_PAYLOAD
    assert answered > 100
    # And it still answers properly afterwards.
    assert a_records(exchange(handler, query(ecs=("198.51.100.0", 24)))) == ["192.0.2.10"]


# -- ECS helpers ------------------------------------------------------------------


def test_parse_and_echo_ecs_roundtrip() -> None:
    data = struct.pack("!HBB", 1, 22, 0) + bytes([198, 51, 100])
    network = parse_ecs(data)
    assert str(network) == "198.51.100.0/22"
    assert ecs_option(network, 22) == struct.pack("!HBB", 1, 22, 22) + bytes([198, 51, 100])
    zero = parse_ecs(struct.pack("!HBB", 2, 0, 0))
    assert str(zero) == "::/0" and ecs_option(zero, 0) == struct.pack("!HBB", 2, 0, 0)


# -- packet cache ------------------------------------------------------------------


def test_packet_cache_answers_again_with_the_new_id_and_counts() -> None:
    handler = make_handler()
    first = query(ecs=("198.51.100.0", 24))
    second = query(ecs=("198.51.100.0", 24))
    second.id = (first.id + 1) % 65536
    a = handler.handle(first.to_wire(), "192.0.2.1", False)
    b = handler.handle(second.to_wire(), "192.0.2.1", False)
    assert a is not None and b is not None
    assert a[2:] == b[2:] and b[:2] == second.to_wire()[:2]
    assert handler.stats.answers == {("region-1", "NOERROR"): 2}


def test_packet_cache_forgets_on_health_change() -> None:
    handler = make_handler()
    message = query(ecs=("198.51.100.0", 24))
    assert a_records(exchange(handler, message)) == ["192.0.2.10"]
    handler._health = Health("region-2")  # what a transition does: a new set
    assert a_records(exchange(handler, message)) == ["203.0.113.10"]


def test_packet_cache_keys_on_the_resolver_for_nearest_healthy() -> None:
    handler = make_handler()
    message = query()
    assert a_records(exchange(handler, message, source="127.0.0.1")) == ["203.0.113.10"]
    assert a_records(exchange(handler, message, source="198.51.100.9")) == ["192.0.2.10"]


def test_packet_cache_keys_on_transport() -> None:
    handler = make_handler(vips_1=many_vips(100))
    message = query(ecs=("198.51.100.0", 24))
    assert exchange(handler, message).flags & dns.flags.TC
    assert not exchange(handler, message, tcp=True).flags & dns.flags.TC
    assert exchange(handler, message).flags & dns.flags.TC
    assert handler.stats.truncated == 2


def test_weighted_is_never_cached() -> None:
    config = GslbConfig.model_validate(
        {
            "listen": ["127.0.0.1:0"],
            "zone": ZONE,
            "policy": "weighted",
            "regions": {
                "a": {"vips": ["192.0.2.1"], "health": "http://h/"},
                "b": {"vips": ["192.0.2.2"], "health": "http://h/"},
            },
        }
    )
    handler = QueryHandler(
        Zone.from_config(config, serial=1), Health("a", "b"), GslbStats(), random.Random(9)
    )
    message = query()
    seen = {tuple(a_records(exchange(handler, message))) for _ in range(40)}
    assert seen == {("192.0.2.1",), ("192.0.2.2",)}
