"""The static-table HPACK encoder: what it writes, decoded by the hpack library."""

from __future__ import annotations

import pytest
from hpack import Decoder, NeverIndexedHeaderTuple

from phoenix_lb.http.hpack_static import StaticTableEncoder, encode_integer

HEAD = [
    (b":status", b"200"),  # fully in the static table
    (b":status", b"418"),  # name only
    (b"server", b"phoenix-lb"),
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"x-request-id", b"3f9c1a2b7d40-1a"),  # a new name
    (b"x-long", b"v" * 300),  # a length over the 7-bit prefix
    (b"www-authenticate", b"Basic"),  # name index 61: over the 4-bit prefix
]


def test_decodes_to_the_same_fields() -> None:
    encoder, decoder = StaticTableEncoder(), Decoder()
    for _ in range(3):
        assert decoder.decode(encoder.encode(HEAD), raw=True) == HEAD
    # Nothing went into the decoder's dynamic table.
    assert len(decoder.header_table.dynamic_entries) == 0


def test_first_block_and_a_new_peer_limit_announce_an_empty_table() -> None:
    encoder = StaticTableEncoder()
    assert encoder.encode([(b":status", b"200")]) == b"\x20\x88"
    assert encoder.encode([(b":status", b"200")]) == b"\x88"
    encoder.header_table_size = 0  # what h2 does on SETTINGS_HEADER_TABLE_SIZE
    assert encoder.encode([(b":status", b"200")]) == b"\x20\x88"


def test_never_indexed_fields_stay_so() -> None:
    encoder, decoder = StaticTableEncoder(), Decoder()
    block = encoder.encode([NeverIndexedHeaderTuple(b"set-cookie", b"SERVERID=a")])
    assert block[1] & 0xF0 == 0x10  # literal never indexed (RFC 7541 6.2.3)
    (field,) = decoder.decode(block, raw=True)
    assert isinstance(field, NeverIndexedHeaderTuple)


@pytest.mark.parametrize(
    ("value", "bits", "expected"),
    [(10, 5, b"\x0a"), (1337, 5, b"\x1f\x9a\x0a"), (42, 8, b"\x2a"), (31, 5, b"\x1f\x00")],
)
def test_integers_as_in_rfc_7541_appendix_c1(value: int, bits: int, expected: bytes) -> None:
    assert encode_integer(value, bits, 0) == expected
