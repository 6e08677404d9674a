"""admin/origin.py: which Host and Origin the admin listener answers, without sockets.

Each case is one request's facts (method, headers, the address the
connection arrived on) and the decision: served (None), or the status and
reason of the refusal.  The same rules against a real listener are
tests/integration/test_admin_security.py.
"""

from __future__ import annotations

import pytest

from phoenix_lb.admin.origin import (
    AdminHosts,
    Refusal,
    canonical_host,
    check_request,
    parse_allowed_host,
    parse_authority,
    same_origin,
)

LOCAL = ("127.0.0.1", 9000)
HOSTS = AdminHosts("127.0.0.1")
SAME = {"host": "127.0.0.1:9000", "origin": "http://127.0.0.1:9000"}


def decide(
    method: str,
    headers: dict[str, str],
    *,
    hosts: AdminHosts = HOSTS,
    local: tuple[str, int] = LOCAL,
    http_version: str = "1.1",
    authority: str | None = None,
) -> Refusal | None:
    return check_request(
        hosts, local, method, headers, http_version=http_version, authority=authority
    )


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("127.0.0.1:9000", ("127.0.0.1", 9000)),
        ("LocalHost:9000", ("localhost", 9000)),
        ("localhost", ("localhost", None)),
        ("[::1]:9000", ("::1", 9000)),
        ("[::1]", ("::1", None)),
        ("[0:0:0:0:0:0:0:1]:9000", ("::1", 9000)),
        ("[::ffff:10.0.0.5]:9000", ("10.0.0.5", 9000)),
        (" lb1.example.net:80 ", ("lb1.example.net", 80)),
    ],
)
def test_parse_authority(text: str, parsed: tuple[str, int | None]) -> None:
    assert parse_authority(text) == parsed


@pytest.mark.parametrize(
    "text",
    [
        "",
        ":9000",
        "::1",
        "[::1",
        "[evil]:9000",
        "host:",
        "host:x",
        "host:65536",
        "host:1:2",
        "h:\uff19",  # a fullwidth 9: isdigit() says yes
    ],
)
def test_parse_authority_refuses_malformed_values(text: str) -> None:
    assert parse_authority(text) is None


def test_canonical_host_spells_addresses_one_way() -> None:
    assert canonical_host("::FFFF:127.0.0.1") == "127.0.0.1"
    assert canonical_host("fe80::1%eth0") == "fe80::1"
    # A zone is only an IPv6 thing: on anything else "%" keeps the name a name.
    assert canonical_host("127.0.0.1%x") == "127.0.0.1%x"
    assert canonical_host("LB1.Example.NET") == "lb1.example.net"


@pytest.mark.parametrize(
    ("entry", "parsed"),
    [
        ("lb1.example.net:9000", ("lb1.example.net", 9000)),
        ("Admin.Example.NET", ("admin.example.net", None)),
        ("10.0.0.5", ("10.0.0.5", None)),
        ("[2001:db8::5]:9000", ("2001:db8::5", 9000)),
        ("xn--bcher-kva.example", ("xn--bcher-kva.example", None)),
    ],
)
def test_allowed_host_entries(entry: str, parsed: tuple[str, int | None]) -> None:
    assert parse_allowed_host(entry) == parsed


@pytest.mark.parametrize(
    "entry",
    ["http://lb1:9000", "lb1/admin", "lb1:0", "", "bücher.example", "2001:db8::5", "*"],
)
def test_allowed_host_entries_that_are_not_hosts_are_errors(entry: str) -> None:
    with pytest.raises(ValueError, match="host"):
        parse_allowed_host(entry)


# ---------------------------------------------------------------- Host


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1:9000", "localhost:9000", "LOCALHOST:9000", "[::1]:9000", "[0::1]:9000"],
)
def test_loopback_names_on_the_listener_port_are_served(host: str) -> None:
    assert decide("GET", {"host": host}) is None


@pytest.mark.parametrize(
    "host",
    [
        "evil.example:9000",  # DNS rebinding: the attacker's name, our address
        "evil.example",
        "localhost.evil.example:9000",
        "127.0.0.1.nip.io:9000",
        "localhost:9001",  # another port is another origin
        "localhost",  # port 80
        "",
        "127.0.0.1:9000, evil.example:9000",  # two Host fields, joined
    ],
)
def test_other_hosts_get_421(host: str) -> None:
    refusal = decide("GET", {"host": host})
    assert refusal is not None and refusal.status == 421
    assert "admin.allowed_hosts" in refusal.reason
    assert repr(host) in refusal.reason


def test_the_refusal_shows_at_most_100_characters_of_the_host() -> None:
    refusal = decide("GET", {"host": "a" * 5000 + ":9000"})
    assert refusal is not None and refusal.status == 421
    assert len(refusal.reason) < 250


def test_the_bind_address_and_the_arrival_address_are_names() -> None:
    # A specific bind: its address is a name.
    assert (
        decide(
            "GET", {"host": "10.0.0.5:9000"}, hosts=AdminHosts("10.0.0.5"), local=("10.0.0.5", 9000)
        )
        is None
    )
    # A wildcard bind answers to the address the client connected to
    # (Prometheus scraping 10.0.0.5:9000, keepalived asking 127.0.0.1:9000)...
    wildcard = AdminHosts("0.0.0.0")
    assert (
        decide("GET", {"host": "10.0.0.5:9000"}, hosts=wildcard, local=("10.0.0.5", 9000)) is None
    )
    # ... also through a dual-stack socket, where it reads ::ffff:10.0.0.5 ...
    dual = AdminHosts("::")
    assert (
        decide("GET", {"host": "10.0.0.5:9000"}, hosts=dual, local=("::ffff:10.0.0.5", 9000))
        is None
    )
    # Any IP literal passes, whatever the port: rebinding needs a name, and
    # NAT or a tunnel change the address and port a client sees.
    for host in ("10.0.0.6:9000", "127.0.0.2:9000", "127.0.0.1", "[::1]:8443"):
        assert decide("GET", {"host": host}, hosts=wildcard, local=("10.0.0.5", 9000)) is None
    # A bind by name makes that name one.
    named = AdminHosts("admin.internal")
    assert decide("GET", {"host": "admin.internal:9000"}, hosts=named) is None


def test_the_port_is_the_one_the_connection_arrived_on() -> None:
    # bind port 0 (tests): the kernel's choice is what counts.
    assert decide("GET", {"host": "127.0.0.1:41234"}, local=("127.0.0.1", 41234)) is None
    # A listener on port 80 is also reached with the port left out.
    assert decide("GET", {"host": "localhost"}, local=("127.0.0.1", 80)) is None


def test_allowed_hosts_add_names_with_or_without_a_port() -> None:
    hosts = AdminHosts("127.0.0.1", ["lb1.example.net:9000", "admin.example.net"])
    assert decide("GET", {"host": "lb1.example.net:9000"}, hosts=hosts) is None
    assert decide("GET", {"host": "LB1.example.net:9000"}, hosts=hosts) is None
    # Through a port forward the port differs from the listener's; it must be listed.
    refusal = decide("GET", {"host": "lb1.example.net:19000"}, hosts=hosts)
    assert refusal is not None and refusal.status == 421
    # Without a port: any port, or none (behind an HTTPS reverse proxy).
    for host in ("admin.example.net", "admin.example.net:443", "admin.example.net:19000"):
        assert decide("GET", {"host": host}, hosts=hosts) is None, host
    refusal = decide("GET", {"host": "other.example.net:9000"}, hosts=hosts)
    assert refusal is not None and refusal.status == 421


def test_no_host_is_fine_in_http_1_0_and_an_error_in_http_1_1() -> None:
    assert decide("GET", {}, http_version="1.0") is None
    assert decide("POST", {}, http_version="1.0") is None
    refusal = decide("GET", {}, http_version="1.1")
    assert refusal == Refusal(400, "HTTP/1.1 requests need a Host header")


def test_an_absolute_form_target_stands_for_host() -> None:
    # RFC 9112 section 3.2.2: the target's authority wins over Host.
    assert decide("GET", {"host": "evil.example"}, authority="127.0.0.1:9000") is None
    refusal = decide("GET", {"host": "127.0.0.1:9000"}, authority="evil.example:9000")
    assert refusal is not None and refusal.status == 421


def test_host_is_checked_on_every_method() -> None:
    for method in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"):
        refusal = decide(method, {"host": "evil.example:9000"})
        assert refusal is not None and refusal.status == 421, method


# ---------------------------------------------------------------- cross-site requests


def test_curl_and_ctl_post_without_origin_or_fetch_metadata() -> None:
    assert decide("POST", {"host": "127.0.0.1:9000"}) is None
    assert decide("POST", {"host": "127.0.0.1:9000", "authorization": "Bearer x"}) is None


def test_the_status_page_posts_from_its_own_origin() -> None:
    # What Chromium sends for the page's fetch('/api/...', {method: 'POST'}).
    headers = {**SAME, "sec-fetch-site": "same-origin", "sec-fetch-mode": "cors"}
    assert decide("POST", headers) is None
    # Reached as localhost, or through a listed name: the origin follows Host.
    local = {"host": "localhost:9000", "origin": "http://localhost:9000"}
    assert decide("POST", {**local, "sec-fetch-site": "same-origin"}) is None
    hosts = AdminHosts("127.0.0.1", ["admin.example.net"])
    proxied = {"host": "admin.example.net", "origin": "https://admin.example.net"}
    assert decide("POST", proxied, hosts=hosts) is None


def test_a_typed_url_counts_as_the_users_own() -> None:
    assert decide("POST", {"host": "127.0.0.1:9000", "sec-fetch-site": "none"}) is None


@pytest.mark.parametrize("site", ["cross-site", "same-site", "Cross-Site", "bogus", ""])
def test_other_sec_fetch_site_values_are_refused(site: str) -> None:
    refusal = decide("POST", {**SAME, "sec-fetch-site": site})
    assert refusal is not None and refusal.status == 403
    assert "Sec-Fetch-Site" in refusal.reason


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example",
        "http://localhost:3000",  # same site, other port: another local web app
        "http://127.0.0.1:9001",
        "null",  # sandboxed frame, file:, some redirects
        "http://127.0.0.1:9000.evil.example",
        "ftp://127.0.0.1:9000",
        "http://127.0.0.1:9000, http://evil.example",  # two Origin fields, joined
        "127.0.0.1:9000",
    ],
)
def test_other_origins_are_refused(origin: str) -> None:
    refusal = decide("POST", {"host": "127.0.0.1:9000", "origin": origin})
    assert refusal is not None and refusal.status == 403
    assert "Origin" in refusal.reason


def test_the_origin_check_runs_even_when_sec_fetch_site_agrees() -> None:
    # Go's CrossOriginProtection stops at Sec-Fetch-Site: same-origin; a
    # browser never sends a disagreeing pair, so refusing it costs nothing.
    headers = {"host": "127.0.0.1:9000", "origin": "http://evil.example"}
    refusal = decide("POST", {**headers, "sec-fetch-site": "same-origin"})
    assert refusal is not None and refusal.status == 403


def test_an_origin_without_a_host_is_refused() -> None:
    # HTTP/1.0 and no Host: not a browser, but then an Origin means nothing good.
    refusal = decide("POST", {"origin": "http://127.0.0.1:9000"}, http_version="1.0")
    assert refusal is not None and refusal.status == 403


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_every_method_but_get_and_head_is_checked(method: str) -> None:
    refusal = decide(method, {"host": "127.0.0.1:9000", "sec-fetch-site": "cross-site"})
    assert refusal is not None and refusal.status == 403


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_reads_from_other_sites_pass_on_to_the_same_origin_policy(method: str) -> None:
    # The browser will not hand the answer to the other site (no CORS
    # headers); an <img src> of /metrics changes nothing.
    headers = {
        "host": "127.0.0.1:9000",
        "origin": "http://evil.example",
        "sec-fetch-site": "cross-site",
    }
    assert decide(method, headers) is None


def test_same_origin_ignores_case_and_scheme_but_not_the_port() -> None:
    assert same_origin("HTTP://LocalHost:9000", "localhost:9000")
    assert same_origin("https://admin.example.net", "admin.example.net")
    assert not same_origin("http://localhost", "localhost:9000")
    assert not same_origin("http://localhost:9000", None)
    assert not same_origin("null", "localhost:9000")
