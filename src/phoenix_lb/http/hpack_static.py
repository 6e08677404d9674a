"""HPACK (RFC 7541) encoding of response header blocks with the static table only.

The ``hpack`` library's encoder keeps a dynamic table and Huffman-codes every
string, in pure Python: about 80 µs per response head on our machines, most
of an HTTP/2 request's cost.  This encoder refers to the static table where
it can and writes everything else as literals "without indexing", plain
(not Huffman-coded): a few microseconds, for some tens of bytes more per
response.  nginx does the same for its response heads (static table
references and literals, no dynamic table).

Stateless towards the peer: the first block, and the first after the peer
changed SETTINGS_HEADER_TABLE_SIZE, begins with a dynamic table size update
to 0 (RFC 7541 4.2 and 6.3), so the decoder's table stays empty.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

from hpack import NeverIndexedHeaderTuple
from hpack.table import HeaderTable

# RFC 7541 Appendix A, 1-based.
_STATIC: Final[tuple[tuple[bytes, bytes], ...]] = tuple(HeaderTable.STATIC_TABLE)
_FULL: Final[dict[tuple[bytes, bytes], int]] = {}
_NAME: Final[dict[bytes, int]] = {}
for _index, (_name, _value) in enumerate(_STATIC, start=1):
    _FULL.setdefault((_name, _value), _index)
    _NAME.setdefault(_name, _index)

_SIZE_UPDATE_ZERO: Final = 0x20
_INDEXED: Final = 0x80
_WITHOUT_INDEXING: Final = 0x00
_NEVER_INDEXED: Final = 0x10


def encode_integer(value: int, prefix_bits: int, first: int) -> bytes:
    """RFC 7541 5.1: ``value`` in an N-bit prefix, ``first`` holding the byte's other bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(out: bytearray, data: bytes) -> None:
    # H bit 0: the octets as they are.
    length = len(data)
    if length < 127:
        out.append(length)
    else:
        out += encode_integer(length, 7, 0)
    out += data


class StaticTableEncoder:
    """Stands in for ``hpack.Encoder`` in an ``h2`` connection (server side).

    Takes ``(name, value)`` pairs of bytes with lowercase names, as h2 passes
    them when outbound normalization is off; ``NeverIndexedHeaderTuple``
    pairs are written as never-indexed literals (RFC 7541 6.2.3), so that
    intermediaries do not index them either.
    """

    __slots__ = ("_announce",)

    def __init__(self) -> None:
        self._announce = True

    @property
    def header_table_size(self) -> int:
        """The dynamic table we use: none."""
        return 0

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        # The peer's limit changed: the next block says "size 0" again.
        self._announce = True

    def encode(self, headers: Iterable[Sequence[bytes]], huffman: bool = True) -> bytes:
        """One header block (``huffman`` is accepted and ignored: never used)."""
        # Sequence, not tuple[bytes, bytes]: compiled, a fixed tuple type would
        # be unboxed and lose its NeverIndexedHeaderTuple class.
        out = bytearray()
        if self._announce:
            self._announce = False
            out.append(_SIZE_UPDATE_ZERO)
        for header in headers:
            name = header[0]
            value = header[1]
            index = _FULL.get((name, value), 0)
            if index:
                if index < 127:
                    out.append(_INDEXED | index)
                else:
                    out += encode_integer(index, 7, _INDEXED)
                continue
            flag = _NEVER_INDEXED if isinstance(header, NeverIndexedHeaderTuple) else 0
            index = _NAME.get(name, 0)
            if index:
                if index < 15:
                    out.append(flag | index)
                else:
                    out += encode_integer(index, 4, flag)
            else:
                out.append(flag)
                _string(out, name)
            _string(out, value)
        return bytes(out)
