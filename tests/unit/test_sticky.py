"""Sticky cookie: opaque stable ids, finding and stripping our cookie, Set-Cookie."""

from __future__ import annotations

import base64

import pytest

from phoenix_lb.sticky import CACHE_CONTROL_LINE, StickyCookie, StickyTable

SECRET = b"0123456789abcdef0123456789abcdef"
ADDRESSES = ["10.0.0.1:8080", "10.0.0.2:8080", "master-orchestrator-0.master-orchestrator:8080"]


def _cookie(**kwargs: object) -> StickyCookie:
    return StickyCookie(secret=SECRET, **kwargs)  # type: ignore[arg-type]


# -- ids ------------------------------------------------------------------------


def test_ids_are_stable_across_instances_and_reorders() -> None:
    a = StickyTable(_cookie(), ADDRESSES)
    b = StickyTable(StickyCookie(secret=SECRET), list(reversed(ADDRESSES)))
    for i, address in enumerate(ADDRESSES):
        sid = a.server_id(i)
        assert sid == _cookie().server_id(address)
        assert b.lookup(sid) == len(ADDRESSES) - 1 - i  # same id, new position


def test_ids_differ_per_server_and_per_secret() -> None:
    cookie = _cookie()
    ids = {cookie.server_id(a) for a in ADDRESSES}
    assert len(ids) == len(ADDRESSES)
    other = StickyCookie(secret=b"another secret, 32 bytes long...")
    assert not ids & {other.server_id(a) for a in ADDRESSES}


def test_ids_reveal_no_address() -> None:
    cookie = _cookie()
    for address in ADDRESSES:
        sid = cookie.server_id(address)
        assert len(sid) == 16 and sid.isascii()
        decoded = base64.urlsafe_b64decode(sid)
        for text in (sid, decoded):
            for part in [address, *address.replace(":", ".").split(".")]:
                if len(part) > 2:
                    assert part.encode() not in text


def test_tampered_or_unknown_ids_map_to_no_server() -> None:
    table = StickyTable(_cookie(), ADDRESSES)
    good = table.server_id(0)
    tampered = good[:-1] + (b"A" if good[-1:] != b"A" else b"B")
    for sid in (tampered, b"10.0.0.1:8080", b"", None, good + b"x", good.lower()):
        assert table.lookup(sid) == -1
    assert table.lookup(good) == 0


def test_same_identity_twice_maps_to_the_first() -> None:
    table = StickyTable(_cookie(), ["a:1", "b:1", "a:1"])
    assert table.lookup(table.server_id(2)) == 0


def test_short_secret_refused() -> None:
    with pytest.raises(ValueError, match="secret"):
        StickyCookie(secret=b"short")


# -- finding and stripping --------------------------------------------------------


def test_no_cookie_of_ours_changes_nothing() -> None:
    cookie = _cookie()
    assert cookie.find([]) == (None, None)
    assert cookie.find([b"session=abc; theme=dark"]) == (None, None)
    assert cookie.find([b"SERVERID2=x; XSERVERID=y"]) == (None, None)


@pytest.mark.parametrize(
    ("values", "found", "rest"),
    [
        ([b"SERVERID=abc"], b"abc", []),
        ([b"a=1; SERVERID=abc; b=2"], b"abc", [b"a=1; b=2"]),
        ([b"a=1;SERVERID=abc;b=2"], b"abc", [b"a=1; b=2"]),
        ([b"  SERVERID = abc ;  a=1  "], b"abc", [b"a=1"]),
        ([b'SERVERID="abc"; a=1'], b"abc", [b"a=1"]),
        # Similar names are other cookies.
        ([b"SERVERID2=zz; XSERVERID=yy; SERVERID=abc"], b"abc", [b"SERVERID2=zz; XSERVERID=yy"]),
        # Several Cookie fields: ours in the second one only.
        ([b"a=1", b"SERVERID=abc; b=2", b"c=3"], b"abc", [b"a=1", b"b=2", b"c=3"]),
        # A field holding only our cookie disappears.
        ([b"a=1", b"SERVERID=abc"], b"abc", [b"a=1"]),
        # Several copies: the first wins, all go.
        ([b"SERVERID=one; a=1", b"SERVERID=two"], b"one", [b"a=1"]),
        # Empty value: present, but maps to no server.
        ([b"SERVERID=; a=1"], b"", [b"a=1"]),
    ],
)
def test_find_and_strip(values: list[bytes], found: bytes, rest: list[bytes]) -> None:
    assert _cookie().find(values) == (found, rest)


def test_substring_without_our_cookie_is_unchanged() -> None:
    # "XSERVERID=" contains "SERVERID=": parsed, nothing removed, None returned.
    assert _cookie().find([b"XSERVERID=1; a=2"]) == (None, None)


def test_find_with_a_custom_name() -> None:
    cookie = _cookie(name="lb")
    assert cookie.find([b"lb=x; lbx=y; xlb=z"]) == (b"x", [b"lbx=y; xlb=z"])


def test_found_id_round_trips_through_the_table() -> None:
    cookie = _cookie()
    table = StickyTable(cookie, ADDRESSES)
    line = table.set_cookie_line(1)
    value = line.split(b"=", 1)[1].split(b";", 1)[0]
    found, rest = cookie.find([b"a=1; SERVERID=" + value])
    assert table.lookup(found) == 1 and rest == [b"a=1"]


# -- Set-Cookie ---------------------------------------------------------------------


def test_set_cookie_defaults() -> None:
    cookie = _cookie()
    line = cookie.set_cookie_header(b"ID")
    assert line == b"Set-Cookie: SERVERID=ID; Max-Age=3600; Path=/; HttpOnly; SameSite=Lax\r\n"


def test_set_cookie_all_attributes() -> None:
    cookie = _cookie(
        name="PHX",
        expires=7200.0,
        domain=".phoenix-orch",
        path="/app",
        secure=True,
        samesite="strict",
    )
    line = cookie.set_cookie_header(b"ID", now=0.0)
    assert line == (
        b"Set-Cookie: PHX=ID; Max-Age=7200; Expires=Thu, 01 Jan 1970 02:00:00 GMT; "
        b"Domain=.phoenix-orch; Path=/app; HttpOnly; Secure; SameSite=Strict\r\n"
    )


def test_session_cookie_without_optional_attributes() -> None:
    cookie = _cookie(expires=None, path=None, httponly=False, samesite=None)
    assert cookie.set_cookie_header(b"ID", now=5.0) == b"Set-Cookie: SERVERID=ID\r\n"


def test_secure_auto_per_listener() -> None:
    cookie = _cookie()
    table = StickyTable(cookie, ADDRESSES)
    assert b"; Secure" not in table.set_cookie_line(0)
    assert b"; Secure" in table.set_cookie_line(0, secure=True)
    assert b"; Secure" in cookie.set_cookie_header(b"ID", secure=True)
    assert table.set_cookie_line(0, secure=True) == cookie.set_cookie_header(
        table.server_id(0), secure=True
    )


def test_cache_control_line() -> None:
    assert CACHE_CONTROL_LINE == b'Cache-Control: no-cache="Set-Cookie"\r\n'


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "bad name"},
        {"name": "a;b"},
        {"name": ""},
        {"domain": "evil.com; Secure"},
        {"domain": "a\r\nX: y"},
        {"path": "no-slash"},
        {"path": "/a;b"},
        {"samesite": "sometimes"},
        {"expires": 0.0},
    ],
)
def test_attributes_that_would_break_the_header_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        _cookie(**kwargs)
