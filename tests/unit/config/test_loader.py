"""YAML -> PhoenixConfig, and the error messages users see (phoenix_lb.config.loader)."""

from __future__ import annotations

import pickle
import textwrap
from pathlib import Path

import pytest

from phoenix_lb.config.loader import ConfigError, format_key_path, load_config, load_config_text
from phoenix_lb.config.schema import PhoenixConfig, split_host_port

ROOT = Path(__file__).resolve().parents[3]

VALID = """\
workers: 1
listeners:
  - name: public
    bind: ["127.0.0.1:8080", "[::1]:8080"]
    routes:
      - path: /
        upstream: master_orchestrator
upstreams:
  master_orchestrator:
    balance: least_conn
    keepalive: 64
    servers:
      - address: 127.0.0.1:9001
        weight: 1
        max_fails: 3
        fail_timeout: 30s
      - address: 127.0.0.1:9002
timeouts: {connect: 60s, send: 60s, read: 60s, client_header: 60s, client_body: 60s, keepalive: 65s}
limits: {max_header_bytes: 16k, max_headers: 100, max_body: 100m}
access_log: {path: stdout, format: combined}
"""


def errors_of(text: str, filename: str = "phoenix.yaml") -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config_text(textwrap.dedent(text), filename)
    assert str(info.value) == "\n".join(info.value.errors)
    return info.value.errors


def one_error(text: str) -> str:
    errors = errors_of(text)
    assert len(errors) == 1, errors
    return errors[0]


# -- valid files -----------------------------------------------------------


def test_valid_config_loads_with_units_converted() -> None:
    config = load_config_text(VALID, "phoenix.yaml")
    assert isinstance(config, PhoenixConfig)
    assert config.workers == 1
    assert config.listeners[0].bind == ["127.0.0.1:8080", "[::1]:8080"]
    server = config.upstreams["master_orchestrator"].servers[0]
    assert (server.max_fails, server.fail_timeout) == (3, 30.0)
    assert config.timeouts.keepalive == 65.0
    assert config.limits.max_header_bytes == 16 * 1024
    assert config.limits.max_body == 100 * 1024 * 1024


def test_defaults_fill_what_is_not_written() -> None:
    config = load_config_text(
        """\
        listeners: [{name: a, bind: ["127.0.0.1:8080"], routes: [{path: /, upstream: u}]}]
        upstreams: {u: {servers: [{address: "127.0.0.1:9001"}]}}
        """,
        "x.yaml",
    )
    assert config.workers == 1
    assert config.upstreams["u"].balance == "least_conn"
    assert config.timeouts.connect == 60.0
    assert config.access_log.format == "combined"


def test_workers_auto() -> None:
    config = load_config_text(VALID.replace("workers: 1", "workers: auto"), "x.yaml")
    assert config.workers == "auto"


# Balancer configs; examples/gslb.yaml is a `phoenix-lb gslb` file (tests/unit/gslb).
BALANCER_EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.yaml") if p.name != "gslb.yaml")


@pytest.mark.parametrize("example", BALANCER_EXAMPLES, ids=lambda p: p.name)
def test_examples_load(example: Path) -> None:
    assert isinstance(load_config(example), PhoenixConfig)


def test_examples_exist() -> None:
    names = {p.name for p in (ROOT / "examples").glob("*.yaml")}
    assert {"minimal.yaml", "phoenix.yaml"} <= names


def test_phoenix_example_follows_the_seed_design() -> None:
    config = load_config(ROOT / "examples" / "phoenix.yaml")
    assert config.workers == "auto"
    upstream = config.upstreams["master_orchestrator"]
    assert upstream.balance == "least_conn"
    assert [s.address for s in upstream.servers] == [
        f"master-orchestrator-{n}.master-orchestrator:8080" for n in range(3)
    ]
    assert all((s.max_fails, s.fail_timeout) == (3, 30.0) for s in upstream.servers)
    t = config.timeouts
    assert (t.connect, t.send, t.read, t.keepalive) == (60.0, 60.0, 60.0, 65.0)
    # 3.1: HTTP redirects to HTTPS; TLS 1.2/1.3, the seed's ciphers and cache.
    http, https = config.listeners
    assert http.redirect_https and http.bind == ["0.0.0.0:80", "[::]:80"]
    assert https.http2 and https.tls is not None
    assert https.tls.protocols == ["TLSv1.2", "TLSv1.3"]
    assert https.tls.ciphers == "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"
    assert (https.tls.session_cache, https.tls.session_timeout) == (10 * 1024 * 1024, 600.0)
    headers = https.security_headers
    assert headers is not None and headers.x_xss_protection == "1; mode=block"
    # 4.2 health checks, 4.3 sticky cookie.
    check = upstream.health_check
    assert check is not None
    assert (check.interval, check.timeout, check.rise, check.fall) == (3.0, 1.0, 2, 5)
    assert check.send == "HEAD /health HTTP/1.0\r\n\r\n"
    assert upstream.sticky is not None
    assert (upstream.sticky.cookie, upstream.sticky.expires) == ("SERVERID", 3600.0)
    assert upstream.sticky.domain == ".phoenix-orch"
    # 5.2 limits on /, 127.0.0.1 only on /health (not logged) and /metrics.
    root, health, metrics = https.routes
    assert root.rate_limit is not None and root.conn_limit is not None
    assert (root.rate_limit.burst, root.rate_limit.nodelay) == (20, True)
    assert root.conn_limit.max == 10
    assert config.rate_limits["api_limit"].rate == "10r/s"
    assert health.access == [{"allow": "127.0.0.1"}, {"deny": "all"}]
    assert health.access_log is False
    assert metrics.access == health.access and metrics.upstream == "orchestrator_metrics"
    # 6: one node of the keepalived pair.
    assert config.ha is not None and config.ha.virtual_router_id == 51


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "phoenix.yaml"
    path.write_text(VALID, encoding="utf-8")
    assert load_config(path).listeners[0].name == "public"
    assert load_config(str(path)).listeners[0].name == "public"


def test_utf8_bom_is_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "phoenix.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + VALID.encode())
    assert load_config(path).workers == 1


def test_yaml_1_2_scalars_off_is_text() -> None:
    text = VALID.replace("format: combined", "format: off").replace(
        "    routes:", "    server_name: yes\n    routes:"
    )
    config = load_config_text(text, "x.yaml")
    assert config.access_log.format == "off"
    assert config.listeners[0].server_name == "yes"


def test_leading_zero_is_decimal() -> None:
    config = load_config_text(VALID.replace("keepalive: 64", "keepalive: 010"), "x.yaml")
    assert config.upstreams["master_orchestrator"].keepalive == 10


def test_merge_keys_and_aliases() -> None:
    text = """\
        listeners: [{name: a, bind: ["127.0.0.1:8080"], routes: [{path: /, upstream: u}]}]
        upstreams:
          u:
            servers:
              - &first {address: "127.0.0.1:9001", max_fails: 3, fail_timeout: 30s, weight: 2}
              - {<<: *first, address: "127.0.0.1:9002", weight: 5}
        """
    config = load_config_text(textwrap.dedent(text), "x.yaml")
    second = config.upstreams["u"].servers[1]
    # Merged values fill in; the mapping's own keys win over merged ones.
    assert (second.address, second.weight, second.max_fails, second.fail_timeout) == (
        "127.0.0.1:9002",
        5,
        3,
        30.0,
    )


def test_duplicate_key_next_to_a_merge_is_still_an_error() -> None:
    errors = errors_of(
        """\
        listeners: [{name: a, bind: ["127.0.0.1:8080"], routes: [{path: /, upstream: u}]}]
        upstreams:
          u:
            servers:
              - &first {address: "127.0.0.1:9001"}
              - {<<: *first, address: "127.0.0.1:9002", address: "127.0.0.1:9003"}
        """
    )
    assert errors == ["phoenix.yaml: upstreams.u.servers[1]: duplicate key 'address' (line 6)"]


def test_bind_ipv6_and_bare_port() -> None:
    text = VALID.replace('["127.0.0.1:8080", "[::1]:8080"]', '["[::]:8080", "[fe80::1]:81", 82]')
    config = load_config_text(text, "x.yaml")
    assert config.listeners[0].bind == ["[::]:8080", "[fe80::1]:81", "82"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("[::1]:8080", ("::1", 8080)),
        ("[::]:80", ("::", 80)),
        ("[2001:db8::1]:443", ("2001:db8::1", 443)),
        (
            "master-orchestrator-0.master-orchestrator:8080",
            (
                "master-orchestrator-0.master-orchestrator",
                8080,
            ),
        ),
        ("localhost:1", ("localhost", 1)),
        (" 10.0.0.1:65535 ", ("10.0.0.1", 65535)),
    ],
)
def test_split_host_port(text: str, expected: tuple[str, int]) -> None:
    assert split_host_port(text) == expected


def test_split_host_port_bare_port_uses_default_host() -> None:
    assert split_host_port("8080", default_host="0.0.0.0") == ("0.0.0.0", 8080)
    with pytest.raises(ValueError, match="expected host:port"):
        split_host_port("8080")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("::1:8080", "write IPv6 addresses in brackets"),
        ("[::1]", r"expected \[address\]:port"),
        ("[::1:8080", "missing ']'"),
        ("[1.2.3.4]:80", "is not an IPv6 address"),
        ("127.0.0.1", "expected host:port"),
        ("127.0.0.1:", "is not a number"),
        ("127.0.0.1:http", "is not a number"),
        ("127.0.0.1:\uff18\uff10", "is not a number"),
        ("127.0.0.1:0", "port 0 out of range"),
        ("127.0.0.1:65536", "port 65536 out of range"),
        ("999.0.0.1:80", "is not an IPv4 address"),
        ("bad host:80", "is not a valid host name"),
        ("-leading.example:80", "is not a valid host name"),
        ("", "expected host:port"),
    ],
)
def test_split_host_port_rejects(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        split_host_port(text)


# -- the messages users see ------------------------------------------------


def test_port_out_of_range_exact_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The message from the issue, with the file named as the user gave it.
    (tmp_path / "phoenix.yaml").write_text(
        VALID.replace("127.0.0.1:9002", "127.0.0.1:99999"), encoding="utf-8"
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config("phoenix.yaml")
    assert info.value.errors == [
        "phoenix.yaml: upstreams.master_orchestrator.servers[1].address: "
        "port 99999 out of range (line 17)"
    ]


def test_file_is_named_as_given(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "lb.yaml"
    path.parent.mkdir()
    path.write_text(VALID.replace("workers: 1", "workers: 0"), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.errors == [f"{path}: workers: workers must be at least 1 (or auto) (line 1)"]


def test_unknown_key_suggests_the_closest() -> None:
    error = one_error(VALID.replace("keepalive: 64", "keepalve: 64"))
    assert error == (
        "phoenix.yaml: upstreams.master_orchestrator.keepalve: "
        "unknown key (did you mean 'keepalive'?) (line 11)"
    )


def test_unknown_key_without_a_close_match_lists_the_keys() -> None:
    error = one_error(VALID + "frobnicate: 1\n")
    known = ", ".join(PhoenixConfig.model_fields)
    assert known.startswith("workers, listeners, upstreams, timeouts")
    assert error == (f"phoenix.yaml: frobnicate: unknown key (expected one of: {known}) (line 21)")


def test_missing_key() -> None:
    error = one_error(
        VALID.replace(
            "      - path: /\n        upstream: master_orchestrator\n", "      - path: /\n"
        )
    )
    assert error == "phoenix.yaml: listeners[0].routes[0].upstream: required key missing (line 6)"


def test_missing_top_level_key_has_no_line() -> None:
    errors = errors_of("workers: 1\n")
    assert errors == [
        "phoenix.yaml: listeners: required key missing",
        "phoenix.yaml: upstreams: required key missing",
    ]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "weight: 1",
            "weight: true",
            "upstreams.master_orchestrator.servers[0].weight: expected a whole number, got true",
        ),
        (
            "weight: 1",
            'weight: "2"',
            "upstreams.master_orchestrator.servers[0].weight: expected a whole number, got '2'",
        ),
        (
            "weight: 1",
            "weight: 0",
            "upstreams.master_orchestrator.servers[0].weight: must be at least 1, got 0",
        ),
        (
            "max_headers: 100",
            "max_headers: 1.5",
            "limits.max_headers: expected a whole number, got the number 1.5",
        ),
        (
            "max_header_bytes: 16k",
            "max_header_bytes: 512",
            "limits.max_header_bytes: must be at least 1k, got 512",
        ),
        (
            "access_log: {path: stdout, format: combined}",
            "access_log: [stdout]",
            "access_log: expected a mapping of settings, got a list",
        ),
        (
            "format: combined",
            "format: jsn",
            "access_log.format: expected combined or json or off, got 'jsn' (did you mean 'json'?)",
        ),
        (
            "balance: least_conn",
            "balance: random",
            "upstreams.master_orchestrator.balance: expected least_conn or round_robin or "
            "random_two or ewma or hash, got 'random' (did you mean 'random_two'?)",
        ),
        (
            "fail_timeout: 30s",
            "fail_timeout: 30q",
            "upstreams.master_orchestrator.servers[0].fail_timeout: invalid duration '30q': "
            "use units ms, s, m, h, d (e.g. 500ms, 3s)",
        ),
        (
            "path: /",
            "path: api",
            "listeners[0].routes[0].path: route path 'api' must start with '/'",
        ),
        ("name: public", "name: [a]", "listeners[0].name: expected text, got a list"),
        (
            '"[::1]:8080"',
            '"::1:8080"',
            "listeners[0].bind[1]: '::1:8080': write IPv6 addresses in brackets, e.g. [::1]:8080",
        ),
        (
            "workers: 1",
            "workers: many",
            "workers: expected a whole number of worker processes, or auto",
        ),
        (
            'bind: ["127.0.0.1:8080", "[::1]:8080"]',
            "bind: []",
            "listeners[0].bind: must not be empty",
        ),
    ],
)
def test_reasons_are_human(old: str, new: str, expected: str) -> None:
    assert old in VALID
    error = one_error(VALID.replace(old, new))
    assert error.startswith(f"phoenix.yaml: {expected} (line ")
    assert "Value error" not in error
    assert "Input should" not in error


def test_empty_section_value() -> None:
    error = one_error(
        VALID.replace(
            "timeouts: {connect: 60s, send: 60s, read: 60s, "
            "client_header: 60s, client_body: 60s, keepalive: 65s}",
            "timeouts:",
        )
    )
    assert error == (
        "phoenix.yaml: timeouts: expected a mapping of settings, got nothing (an empty value) "
        "(line 18)"
    )


def test_duplicate_yaml_key_is_an_error() -> None:
    error = one_error(VALID.replace("keepalive: 64", "keepalive: 64\n    keepalive: 32"))
    assert (
        error == "phoenix.yaml: upstreams.master_orchestrator: duplicate key 'keepalive' (line 12)"
    )


def test_duplicate_key_in_flow_mapping_and_top_level() -> None:
    errors = errors_of(
        VALID.replace("{connect: 60s,", "{connect: 60s, connect: 5s,") + "workers: 2\n"
    )
    assert errors == [
        "phoenix.yaml: timeouts: duplicate key 'connect' (line 18)",
        "phoenix.yaml: duplicate key 'workers' (line 21)",
    ]


def test_yaml_syntax_error_has_line_and_column() -> None:
    error = one_error("listeners:\n  - name: a\n    bind: x: y\n")
    assert error == "phoenix.yaml: line 3 column 12: mapping values are not allowed here"


def test_yaml_unclosed_flow_sequence() -> None:
    error = one_error("listeners: [a, b\nupstreams: {}\n")
    assert error.startswith("phoenix.yaml: line ")
    assert "while parsing a flow sequence" in error


def test_tab_indentation_is_a_syntax_error() -> None:
    error = one_error("workers: 1\n\tlisteners: []\n")
    assert error.startswith("phoenix.yaml: line 2 column 1: found character '\\t'")


def test_more_than_one_document_is_an_error() -> None:
    error = one_error(VALID + "---\nworkers: 2\n")
    assert error == (
        "phoenix.yaml: line 21 column 1: expected a single document in the stream, "
        "but found another document"
    )


def test_control_character_is_an_error() -> None:
    assert one_error("workers: 1\nx: \x00\n") == (
        "phoenix.yaml: line 2 column 4: character #x0000 is not allowed"
    )


def test_unknown_tag_is_an_error() -> None:
    errors = errors_of(VALID.replace("workers: 1", "workers: !!python/object:os.system 1"))
    assert any(
        e.startswith("phoenix.yaml: workers: could not determine a constructor") for e in errors
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "phoenix.yaml: the file is empty; expected a mapping of settings"),
        ("# only a comment\n", "phoenix.yaml: the file is empty; expected a mapping of settings"),
        (
            "- a\n- b\n",
            "phoenix.yaml: expected a mapping of settings at the top level, got a list (line 1)",
        ),
        (
            "just text\n",
            "phoenix.yaml: expected a mapping of settings at the top level, got a single value "
            "(line 1)",
        ),
    ],
)
def test_top_level_must_be_a_mapping(text: str, expected: str) -> None:
    assert one_error(text) == expected


def test_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config("nope.yaml")
    assert info.value.errors == ["nope.yaml: cannot read: No such file or directory"]


def test_directory_is_not_readable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert info.value.errors == [f"{tmp_path}: cannot read: Is a directory"]


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"workers: 1\nx: \xe9\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.errors == [f"{path}: cannot read: not UTF-8 text (byte 14)"]


def test_alias_bomb_is_refused_quickly() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for depth in range(1, 9):
        prev, cur = chr(ord("a") + depth - 1), chr(ord("a") + depth)
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 10) + "]")
    lines.append("listeners: *i")
    errors = errors_of("\n".join(lines) + "\n")
    assert len(errors) == 1
    assert "document too large" in errors[0]


def test_recursive_alias_is_an_error() -> None:
    errors = errors_of(VALID + "x: &x [*x]\n")
    assert "phoenix.yaml: x[0]: alias refers to itself (line 21)" in errors


# -- cross-references -----------------------------------------------------


def test_unknown_upstream() -> None:
    text = VALID.replace(
        "upstreams:\n",
        "upstreams:\n  other:\n    servers: [{address: '10.0.0.1:80'}]\n",
    ).replace("upstream: master_orchestrator", "upstream: foo")
    assert one_error(text) == (
        "phoenix.yaml: listeners[0].routes[0].upstream: unknown upstream 'foo' "
        "(known: master_orchestrator, other) (line 7)"
    )


def test_duplicate_bind_across_listeners() -> None:
    text = VALID.replace(
        "upstreams:\n",
        "  - name: admin\n"
        '    bind: ["127.0.0.1:9000", "[0:0::1]:8080"]\n'
        "    routes: [{path: /, upstream: master_orchestrator}]\n"
        "upstreams:\n",
    )
    assert one_error(text) == (
        "phoenix.yaml: listeners[1].bind[1]: bind address [::1]:8080 already used by "
        "listeners[0].bind[1] (line 9)"
    )


def test_duplicate_bind_within_a_listener_and_bare_port() -> None:
    text = VALID.replace('["127.0.0.1:8080", "[::1]:8080"]', '[8080, "0.0.0.0:8080"]')
    assert one_error(text) == (
        "phoenix.yaml: listeners[0].bind[1]: bind address 0.0.0.0:8080 already used by "
        "listeners[0].bind[0] (line 4)"
    )


def test_duplicate_listener_name() -> None:
    text = VALID.replace(
        "upstreams:\n",
        "  - name: public\n"
        '    bind: ["127.0.0.1:9000"]\n'
        "    routes: [{path: /, upstream: master_orchestrator}]\n"
        "upstreams:\n",
    )
    assert one_error(text) == (
        "phoenix.yaml: listeners[1].name: duplicate listener name 'public' "
        "(first at listeners[0].name) (line 8)"
    )


def test_duplicate_route_path() -> None:
    text = VALID.replace(
        "        upstream: master_orchestrator\n",
        "        upstream: master_orchestrator\n"
        "      - path: /\n"
        "        upstream: master_orchestrator\n",
    )
    assert one_error(text) == (
        "phoenix.yaml: listeners[0].routes[1].path: duplicate route path '/' "
        "(first at listeners[0].routes[0]) (line 8)"
    )


def test_duplicate_server_address() -> None:
    text = VALID.replace("127.0.0.1:9002", "127.0.0.1:9001")
    assert one_error(text) == (
        "phoenix.yaml: upstreams.master_orchestrator.servers[1].address: duplicate server "
        "127.0.0.1:9001 (first at upstreams.master_orchestrator.servers[0]) (line 17)"
    )


def test_all_errors_are_reported_in_file_order() -> None:
    text = (
        VALID.replace("workers: 1", "workers: 0")
        .replace("upstream: master_orchestrator", "upstream: nowhere")
        .replace("127.0.0.1:9002", "127.0.0.1:99999")
        .replace("keepalive: 65s", "keepalive: soon")
    )
    errors = errors_of(text)
    assert [e.split(": ")[1] for e in errors] == [
        "workers",
        "listeners[0].routes[0].upstream",
        "upstreams.master_orchestrator.servers[1].address",
        "timeouts.keepalive",
    ]


def test_cross_references_still_checked_when_other_parts_are_invalid() -> None:
    text = VALID.replace("upstream: master_orchestrator", "upstream: nowhere").replace(
        "max_fails: 3", "max_fails: -1"
    )
    errors = errors_of(text)
    assert len(errors) == 2
    assert "unknown upstream 'nowhere'" in errors[0]
    assert "max_fails: must be at least 0, got -1" in errors[1]


def test_format_key_path() -> None:
    assert format_key_path(()) == ""
    assert format_key_path(("upstreams", "mo", "servers", 1, "address")) == (
        "upstreams.mo.servers[1].address"
    )
    assert format_key_path(("listeners", 0)) == "listeners[0]"
    assert format_key_path(("upstreams", "a.b")) == "upstreams['a.b']"


def test_config_error_pickles() -> None:
    error = ConfigError(["a.yaml: workers: bad (line 1)", "a.yaml: x: unknown key (line 2)"])
    copy = pickle.loads(pickle.dumps(error))
    assert copy.errors == error.errors
    assert str(copy) == str(error)


def test_check_over_several_fields_points_at_the_field_it_names() -> None:
    text = VALID.replace("    bind: [", "    http2: true\n    bind: [", 1)
    # The message names http2: the path and line are http2's, not the listener's.
    assert one_error(text).startswith(
        "phoenix.yaml: listeners[0].http2: needs tls: HTTP/2 is offered by ALPN"
    )
    assert one_error(text).endswith("(line 4)")


def test_limit_settings_run_would_refuse_are_config_errors() -> None:
    text = VALID.replace(
        "        upstream: master_orchestrator\n",
        "        upstream: master_orchestrator\n"
        "        rate_limit: {zone: api, burst: 5, nodelay: true, delay: 2}\n",
        1,
    )
    text += "rate_limits:\n  api: {rate: 10r/s, zone_size: 16k}\n"
    text += "conn_limits:\n  c: {zone_size: 1k}\n"
    errors = errors_of(text)
    assert any("routes[0].rate_limit.delay: excludes nodelay" in e for e in errors), errors
    assert any("rate_limits.api.zone_size: must be at least 32k" in e for e in errors), errors
    assert any("conn_limits.c.zone_size: must be at least 32k" in e for e in errors), errors
