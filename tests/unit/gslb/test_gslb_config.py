"""The gslb: config file and its error messages (phoenix_lb.gslb.config)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from phoenix_lb.config.loader import ConfigError
from phoenix_lb.gslb.config import (
    GslbFile,
    load_gslb_config,
    load_gslb_config_text,
    normalize_dns_name,
)

ROOT = Path(__file__).resolve().parents[3]

ISSUE_EXAMPLE = """\
gslb:
  listen: ["127.0.0.1:5353"]          # UDP and TCP
  zone: phoenix-orch.example.com
  ttl: 30s
  regions:
    region-1: {vips: [192.0.2.10], health: "http://127.0.0.1:9101/health", subnets: [198.51.100.0/24]}
    region-2: {vips: [203.0.113.10], health: "http://127.0.0.1:9102/health", subnets: []}
  policy: nearest_healthy             # nearest_healthy | failover (ordered) | weighted
  all_down: return_all                # return_all | servfail
  health_check: {interval: 3s, timeout: 1s, rise: 2, fall: 3}
"""  # noqa: E501 - the issue's text, verbatim


def errors_of(text: str, filename: str = "gslb.yaml") -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_gslb_config_text(textwrap.dedent(text), filename)
    return info.value.errors


def one_error(text: str) -> str:
    errors = errors_of(text)
    assert len(errors) == 1, errors
    return errors[0]


def with_gslb(body: str) -> str:
    """A valid file with ``body`` (YAML lines under gslb:) added or replacing keys."""
    base = {
        "listen": '["127.0.0.1:5353"]',
        "zone": "phoenix-orch.example.com",
        "regions": '{r1: {vips: [192.0.2.10], health: "http://127.0.0.1:9101/health"}}',
    }
    lines = ["gslb:"]
    given = {line.split(":", 1)[0].strip() for line in body.splitlines() if line.strip()}
    lines += [f"  {key}: {value}" for key, value in base.items() if key not in given]
    lines += ["  " + line for line in textwrap.dedent(body).splitlines() if line.strip()]
    return "\n".join(lines) + "\n"


def test_issue_example_loads() -> None:
    config = load_gslb_config_text(ISSUE_EXAMPLE, "gslb.yaml")
    assert isinstance(config, GslbFile)
    gslb = config.gslb
    assert gslb.listen == ["127.0.0.1:5353"]
    assert gslb.zone == "phoenix-orch.example.com"
    assert gslb.ttl == 30.0 and gslb.ttl_seconds == 30
    assert list(gslb.regions) == ["region-1", "region-2"]
    assert gslb.regions["region-1"].subnets == ["198.51.100.0/24"]
    assert gslb.regions["region-2"].subnets == []
    assert gslb.regions["region-1"].weight == 1 and gslb.regions["region-1"].priority is None
    assert (gslb.policy, gslb.all_down) == ("nearest_healthy", "return_all")
    hc = gslb.health_check
    assert (hc.interval, hc.timeout, hc.rise, hc.fall) == (3.0, 1.0, 2, 3)
    assert gslb.admin.bind == "127.0.0.1:9153"


def test_shipped_example_is_valid() -> None:
    config = load_gslb_config(ROOT / "examples" / "gslb.yaml")
    assert config.gslb.zone == "phoenix-orch.example.com"


def test_defaults_and_normalization() -> None:
    config = load_gslb_config_text(
        with_gslb(
            """\
            zone: Phoenix-Orch.Example.COM.
            regions: {r1: {vips: ["2001:DB8:0::1", 192.0.2.1], health: "https://lb1/health"}}
            """
        ),
        "g.yaml",
    ).gslb
    assert config.zone == "phoenix-orch.example.com"
    assert config.regions["r1"].vips == ["2001:db8::1", "192.0.2.1"]
    assert config.ttl_seconds == 30 and config.policy == "nearest_healthy"


def test_missing_file_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_gslb_config(tmp_path / "nope.yaml")
    assert info.value.errors[0].startswith(f"{tmp_path / 'nope.yaml'}: cannot read:")
    assert one_error("") == "gslb.yaml: the file is empty; expected a mapping with gslb:"


def test_yaml_syntax_error_has_line_and_column() -> None:
    error = one_error("gslb:\n  zone: [a\n")
    assert error.startswith("gslb.yaml: line 3 column 1:"), error


def test_gslb_section_required() -> None:
    assert one_error("error_log: {level: info}\n") == "gslb.yaml: gslb: required key missing"


def test_unknown_keys_suggest_the_right_one() -> None:
    assert one_error(with_gslb("polcy: failover")) == (
        "gslb.yaml: gslb.polcy: unknown key (did you mean 'policy'?) (line 5)"
    )
    error = one_error(with_gslb("health_check: {intervall: 3s}"))
    assert error == (
        "gslb.yaml: gslb.health_check.intervall: unknown key (did you mean 'interval'?) (line 5)"
    )
    errors = errors_of("gslb: {}\nlisteners: []\n")
    assert errors == [
        "gslb.yaml: gslb.listen: required key missing (line 1)",
        "gslb.yaml: gslb.zone: required key missing (line 1)",
        "gslb.yaml: gslb.regions: required key missing (line 1)",
        "gslb.yaml: listeners: unknown key (expected one of: gslb, error_log) (line 2)",
    ]


def test_choices_are_named() -> None:
    error = one_error(with_gslb("policy: nearest"))
    assert error == (
        "gslb.yaml: gslb.policy: expected nearest_healthy or failover or weighted, "
        "got 'nearest' (did you mean 'nearest_healthy'?) (line 5)"
    )
    error = one_error(with_gslb("all_down: fail"))
    assert "gslb.all_down: expected return_all or servfail, got 'fail'" in error


def test_duration_bounds_speak_units() -> None:
    error = one_error(with_gslb("health_check: {interval: 0s}"))
    assert error == "gslb.yaml: gslb.health_check.interval: must be more than 0s, got 0s (line 5)"
    error = one_error(with_gslb("ttl: 2d"))
    assert error == "gslb.yaml: gslb.ttl: must be at most 24h, got 48h (line 5)"


def test_ttl_whole_seconds() -> None:
    assert "gslb.ttl: ttl must be whole seconds" in one_error(with_gslb("ttl: 1500ms"))


def test_timeout_longer_than_interval() -> None:
    error = one_error(with_gslb("health_check: {interval: 1s, timeout: 2s}"))
    assert error == (
        "gslb.yaml: gslb.health_check: timeout (2s) must not be longer than interval (1s) (line 5)"
    )


def test_rise_fall_whole_numbers() -> None:
    error = one_error(with_gslb("health_check: {rise: 0}"))
    assert error == "gslb.yaml: gslb.health_check.rise: must be at least 1, got 0 (line 5)"
    error = one_error(with_gslb("health_check: {fall: 1.5}"))
    assert "gslb.health_check.fall: expected a whole number, got the number 1.5" in error


def test_region_errors_carry_key_paths() -> None:
    errors = errors_of(
        with_gslb(
            """\
            regions:
              r1:
                vips: [192.0.2.10, 192.0.2.300]
                health: "ftp://x/health"
                subnets: [198.51.100.1/24, bogus]
                weight: 0
              r2: {vips: [], health: "http://127.0.0.1:9/"}
              "bad name": {vips: [192.0.2.1], health: "http://127.0.0.1:9/"}
            """
        )
    )
    assert errors == [
        "gslb.yaml: gslb.regions.r1.vips[1]: '192.0.2.300' is not an IPv4 or IPv6 address (line 6)",
        "gslb.yaml: gslb.regions.r1.health: 'ftp://x/health': expected an http:// or https:// "
        "URL (line 7)",
        "gslb.yaml: gslb.regions.r1.subnets[0]: '198.51.100.1/24' has host bits set "
        "(did you mean 198.51.100.0/24?) (line 8)",
        "gslb.yaml: gslb.regions.r1.subnets[1]: 'bogus' is not a network (expected e.g. "
        "198.51.100.0/24 or 2001:db8::/32) (line 8)",
        "gslb.yaml: gslb.regions.r1.weight: must be at least 1, got 0 (line 9)",
        "gslb.yaml: gslb.regions.r2.vips: must not be empty (line 10)",
        "gslb.yaml: gslb.regions['bad name']: region names are letters, digits, '.', '-' and "
        "'_' (they become metric labels) (line 11)",
    ]


def test_duplicates() -> None:
    error = one_error(
        with_gslb('regions: {r1: {vips: [192.0.2.1, 192.0.2.1], health: "http://h/"}}')
    )
    assert "gslb.regions.r1.vips: duplicate address 192.0.2.1" in error
    error = one_error(
        with_gslb(
            """\
            regions:
              r1: {vips: [192.0.2.1], health: "http://h/", subnets: [10.0.0.0/8]}
              r2: {vips: [192.0.2.2], health: "http://h/", subnets: [10.0.0.0/8]}
            """
        )
    )
    assert error == (
        "gslb.yaml: gslb.regions.r2.subnets[0]: subnet 10.0.0.0/8 also belongs to region 'r1' "
        "(at gslb.regions.r1.subnets[0]); a client network picks one region (line 6)"
    )
    error = one_error(with_gslb('listen: ["127.0.0.1:53", "127.0.0.1:53"]'))
    assert "gslb.listen[1]: listen address already given at gslb.listen[0]" in error
    error = one_error(with_gslb('listen: ["127.0.0.1:53"]\nadmin: {bind: "127.0.0.1:53"}'))
    assert "gslb.admin.bind: admin bind is also a DNS listen address" in error
    errors = errors_of(with_gslb("zone: a.example\nzone: b.example"))
    assert errors == ["gslb.yaml: gslb: duplicate key 'zone' (line 5)"]


def test_zone_must_be_a_domain_name() -> None:
    error = one_error(with_gslb('zone: "bad..name"'))
    assert "gslb.zone: 'bad..name' is not a valid domain name" in error
    assert "gslb.zone: '.' is not a domain name" in one_error(with_gslb('zone: "."'))


def test_nameserver_glue_rules() -> None:
    error = one_error(with_gslb("nameservers: {ns1.phoenix-orch.example.com: []}"))
    assert error == (
        "gslb.yaml: gslb.nameservers['ns1.phoenix-orch.example.com']: "
        "ns1.phoenix-orch.example.com is inside the zone phoenix-orch.example.com, so its "
        "addresses are needed (glue), e.g. [192.0.2.53] (line 5)"
    )
    error = one_error(with_gslb("nameservers: {ns.example.net: [192.0.2.53]}"))
    assert "is outside the zone phoenix-orch.example.com" in error
    error = one_error(with_gslb("nameservers: {phoenix-orch.example.com: [192.0.2.53]}"))
    assert "the zone apex cannot be its own nameserver" in error
    config = load_gslb_config_text(
        with_gslb("nameservers: {NS1.phoenix-orch.example.com.: [192.0.2.53], ns.example.net: []}"),
        "g.yaml",
    )
    assert config.gslb.nameservers == {
        "ns1.phoenix-orch.example.com": ["192.0.2.53"],
        "ns.example.net": [],
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [("Example.COM.", "example.com"), ("_dns.a-b.example", "_dns.a-b.example")],
)
def test_normalize_dns_name(value: str, expected: str) -> None:
    assert normalize_dns_name(value) == expected


@pytest.mark.parametrize("value", ["", ".", "a..b", "-a.example", "a" * 64 + ".example", "a b"])
def test_normalize_dns_name_rejects(value: str) -> None:
    with pytest.raises(ValueError):
        normalize_dns_name(value)
