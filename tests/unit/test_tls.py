"""TLS settings, contexts, SNI and certificate checks (phoenix_lb.tls, no sockets).

Handshakes run through memory BIOs, certificates are made by trustme.
"""

from __future__ import annotations

import datetime
import os
import ssl
import textwrap
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from phoenix_lb.config.loader import ConfigError, load_config, load_config_text
from phoenix_lb.config.schema import DEFAULT_TLS12_CIPHERS, PhoenixConfig
from phoenix_lb.tls import (
    HANDSHAKE_ERROR_REASONS,
    TlsContexts,
    TlsError,
    alpn_protocols,
    build_server_context,
    certificate_expiry,
    check_certificates,
    handshake_error_reason,
)
from phoenix_lb.tlsnative import native_unavailable_reason, session_cache_settings
from tests.support.certs import CertFiles, TestCA, memory_handshake

DAY = 86400.0


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path)


def config(*certs: CertFiles, **tls: Any) -> PhoenixConfig:
    """A config with one TLS listener (``listener`` keys may come in ``tls["listener"]``)."""
    listener = tls.pop("listener", {})
    return PhoenixConfig.model_validate(
        {
            "listeners": [
                {
                    "name": "https",
                    "bind": ["127.0.0.1:0"],
                    "routes": [{"path": "/", "upstream": "app"}],
                    "tls": {"certificates": [c.entry() for c in certs], **tls},
                    **listener,
                }
            ],
            "upstreams": {"app": {"servers": [{"address": "127.0.0.1:9"}]}},
        }
    )


def context(*certs: CertFiles, **tls: Any) -> ssl.SSLContext:
    cfg = config(*certs, **tls)
    return build_server_context(cfg.listeners[0])


# -- config --------------------------------------------------------------------

LISTENER = """\
listeners:
  - name: https
    bind: ["127.0.0.1:8443"]
    routes: [{path: /, upstream: app}]
    tls:
      certificates: [{cert: site.crt, key: site.key}]
"""
UPSTREAMS = """\
upstreams:
  app:
    servers: [{address: "127.0.0.1:9001"}]
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config_text(textwrap.dedent(text), "phoenix.yaml")
    return info.value.errors


def test_defaults_follow_the_seed() -> None:
    cfg = load_config_text(LISTENER + UPSTREAMS, "phoenix.yaml")
    tls = cfg.listeners[0].tls
    assert tls is not None
    assert tls.protocols == ["TLSv1.2", "TLSv1.3"]
    assert tls.ciphers == DEFAULT_TLS12_CIPHERS
    assert tls.prefer_server_ciphers is True
    assert tls.session_cache == 10 * 1024 * 1024
    assert tls.handshake_timeout == 10.0
    assert cfg.listeners[0].http2 is False
    assert cfg.listeners[0].redirect_https is False


@pytest.mark.parametrize("old", ["TLSv1", "TLSv1.1", "SSLv3"])
def test_old_protocols_are_refused_with_a_reason(old: str) -> None:
    text = LISTENER + f"      protocols: [{old}, TLSv1.2]\n" + UPSTREAMS
    (error,) = errors_of(text)
    assert error.startswith("phoenix.yaml: listeners[0].tls.protocols[0]: ")
    assert f"{old} is refused" in error
    assert "use TLSv1.2 and TLSv1.3" in error


def test_unknown_protocol_and_duplicates() -> None:
    (error,) = errors_of(LISTENER + "      protocols: [TLSv2]\n" + UPSTREAMS)
    assert "expected TLSv1.2 or TLSv1.3, got 'TLSv2'" in error
    (error,) = errors_of(LISTENER + "      protocols: [TLSv1.3, TLSv1.3]\n" + UPSTREAMS)
    assert "listed twice" in error


def test_cipher_list_must_name_a_cipher() -> None:
    (error,) = errors_of(LISTENER + "      ciphers: NOT-A-CIPHER\n" + UPSTREAMS)
    assert "listeners[0].tls.ciphers" in error
    assert "no cipher known to OpenSSL matches 'NOT-A-CIPHER'" in error


def test_session_cache_takes_a_size_or_off() -> None:
    cfg = load_config_text(
        LISTENER + "      session_cache: off\n      session_timeout: 10m\n" + UPSTREAMS, "p.yaml"
    )
    tls = cfg.listeners[0].tls
    assert tls is not None and tls.session_cache == 0 and tls.session_timeout == 600.0
    (error,) = errors_of(LISTENER + "      session_cache: lots\n" + UPSTREAMS)
    assert "invalid size 'lots'" in error


def test_redirect_listener_needs_server_name_and_no_routes() -> None:
    base = 'listeners:\n  - name: http\n    bind: ["127.0.0.1:8080"]\n    redirect_https: true\n'
    (error,) = errors_of(base + UPSTREAMS)
    assert "listeners[0].redirect_https: needs server_name" in error and "open redirect" in error
    cfg = load_config_text(base + "    server_name: example.com\n" + UPSTREAMS, "p.yaml")
    assert cfg.listeners[0].routes == []
    (error,) = errors_of(
        base + "    server_name: example.com\n    routes: [{path: /, upstream: app}]\n" + UPSTREAMS
    )
    assert "takes no routes" in error


def test_tls_listener_cannot_redirect() -> None:
    text = LISTENER + "    redirect_https: true\n    server_name: example.com\n" + UPSTREAMS
    (error,) = errors_of(text.replace("    routes: [{path: /, upstream: app}]\n", ""))
    assert "listeners[0].redirect_https: for plain HTTP listeners, not with tls" in error


def test_routes_still_required_without_redirect() -> None:
    text = LISTENER.replace("    routes: [{path: /, upstream: app}]\n", "")
    (error,) = errors_of(text + UPSTREAMS)
    assert "at least one route is needed (or redirect_https: true)" in error


def test_http2_needs_tls() -> None:
    text = (
        "listeners:\n  - {name: a, bind: [80], http2: true, routes: [{path: /, upstream: app}]}\n"
    )
    (error,) = errors_of(text + UPSTREAMS)
    assert "listeners[0].http2: needs tls" in error


def test_relative_certificate_paths_resolve_against_the_config_directory(
    tmp_path: Path, ca: TestCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf" / "tls").mkdir(parents=True)
    path = tmp_path / "conf" / "phoenix.yaml"
    path.write_text(
        LISTENER.replace("cert: site.crt, key: site.key", "cert: tls/a.crt, key: /abs/a.key")
        + UPSTREAMS
    )
    monkeypatch.chdir(tmp_path)  # elsewhere than the config
    tls = load_config(os.path.relpath(path)).listeners[0].tls
    assert tls is not None
    assert tls.certificates[0].cert == str(tmp_path / "conf" / "tls" / "a.crt")
    assert tls.certificates[0].key == "/abs/a.key"
    # load_config_text leaves them as written (diffs against backups stay quiet).
    tls = load_config_text(path.read_text(), "x.yaml").listeners[0].tls
    assert tls is not None and tls.certificates[0].cert == "tls/a.crt"


# -- contexts ------------------------------------------------------------------


def test_context_options_and_protocol_bounds(ca: TestCA) -> None:
    site = ca.issue("example.com")
    ctx = context(site)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.maximum_version == ssl.TLSVersion.TLSv1_3
    for option in (ssl.OP_NO_COMPRESSION, ssl.OP_NO_RENEGOTIATION, ssl.OP_CIPHER_SERVER_PREFERENCE):
        assert ctx.options & option
    assert not ctx.options & ssl.OP_NO_TICKET
    only13 = context(site, protocols=["TLSv1.3"], prefer_server_ciphers=False)
    assert only13.minimum_version == only13.maximum_version == ssl.TLSVersion.TLSv1_3
    assert not only13.options & ssl.OP_CIPHER_SERVER_PREFERENCE


def test_cipher_list_is_applied(ca: TestCA) -> None:
    ciphers = "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256"
    ctx = context(ca.issue("example.com"), ciphers=ciphers)
    tls12 = [c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12 == ciphers.split(":")


def test_server_preference_decides_the_tls12_cipher(ca: TestCA) -> None:
    site = ca.issue("example.com")
    ciphers = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384"
    client = ca.client_context(maximum_version=ssl.TLSVersion.TLSv1_2)
    client.set_ciphers("ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256")
    obj, _ = memory_handshake(context(site, ciphers=ciphers), client, "example.com")
    assert obj.cipher()[0] == "ECDHE-ECDSA-AES128-GCM-SHA256"
    ctx = context(site, ciphers=ciphers, prefer_server_ciphers=False)
    obj, _ = memory_handshake(ctx, client, "example.com")
    assert obj.cipher()[0] == "ECDHE-ECDSA-AES256-GCM-SHA384"


def test_old_protocol_client_is_refused(ca: TestCA) -> None:
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    client.set_ciphers("DEFAULT:@SECLEVEL=0")  # or the client itself would not offer TLS 1.1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # that is the point
        client.minimum_version = ssl.TLSVersion.TLSv1
        client.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError) as info:
        memory_handshake(context(ca.issue("example.com")), client, "example.com")
    assert handshake_error_reason(info.value) == "protocol_version"


def test_sni_picks_the_certificate_and_the_first_is_the_default(ca: TestCA) -> None:
    default = ca.issue("example.com", "www.example.com")
    api = ca.issue("api.example.com")
    wildcard = ca.issue("*.apps.example.com")
    ctx = context(default, api, wildcard)
    client = ca.client_context()
    client.check_hostname = False

    def served(name: str | None) -> bytes:
        obj, _ = memory_handshake(ctx, client, name)
        der = obj.getpeercert(binary_form=True)
        assert der is not None
        return der

    assert served("api.example.com") == api.der()
    assert served("API.Example.COM.") == api.der()
    assert served("www.example.com") == default.der()
    assert served("x.apps.example.com") == wildcard.der()
    assert served("a.b.apps.example.com") == default.der()  # one label deep only
    assert served("unknown.test") == default.der()
    assert served(None) == default.der()


def test_rsa_and_ecdsa_certificates_for_the_same_names_are_both_served(ca: TestCA) -> None:
    rsa = ca.issue("example.com", key_type=trustme.KeyType.RSA)
    ecdsa = ca.issue("example.com", key_type=trustme.KeyType.ECDSA)
    ctx = context(ecdsa, rsa)
    for cipher, expected in (
        ("ECDHE-RSA-AES128-GCM-SHA256", rsa),
        ("ECDHE-ECDSA-AES128-GCM-SHA256", ecdsa),
    ):
        client = ca.client_context(maximum_version=ssl.TLSVersion.TLSv1_2)
        client.set_ciphers(cipher)
        obj, _ = memory_handshake(ctx, client, "example.com")
        assert obj.getpeercert(binary_form=True) == expected.der()


def test_alpn_offers_h2_on_http2_listeners_only(ca: TestCA) -> None:
    cfg = config(ca.issue("example.com"), listener={"http2": True})
    listener = cfg.listeners[0]
    assert alpn_protocols(listener) == ["h2", "http/1.1"]
    assert alpn_protocols(listener, h2_served=False) == ["http/1.1"]
    client = ca.client_context()
    client.set_alpn_protocols(["h2", "http/1.1"])
    obj, _ = memory_handshake(build_server_context(listener), client, "example.com")
    assert obj.selected_alpn_protocol() == "h2"
    plain = config(ca.issue("example.com")).listeners[0]
    assert alpn_protocols(plain) == ["http/1.1"]
    obj, _ = memory_handshake(build_server_context(plain), client, "example.com")
    assert obj.selected_alpn_protocol() == "http/1.1"


@pytest.mark.skipif(native_unavailable_reason() is not None, reason="no session cache access")
def test_session_cache_size_and_timeout_reach_openssl(ca: TestCA) -> None:
    site = ca.issue("example.com")
    ctx = context(site, session_cache="1m", session_timeout="10m")
    assert session_cache_settings(ctx) == (2, 4096, 600)  # SSL_SESS_CACHE_SERVER
    client = ca.client_context()
    _, server = memory_handshake(ctx, client, "example.com")
    assert server.session is not None and server.session.timeout == 600


def test_session_cache_off_disables_resumption(ca: TestCA) -> None:
    ctx = context(ca.issue("example.com"), session_cache="off")
    assert ctx.options & ssl.OP_NO_TICKET
    assert ctx.num_tickets == 0
    if native_unavailable_reason() is None:
        assert session_cache_settings(ctx) == (0, 1, 300)  # SSL_SESS_CACHE_OFF


def test_tls12_session_is_resumed(ca: TestCA) -> None:
    ctx = context(ca.issue("example.com"))
    client = ca.client_context(maximum_version=ssl.TLSVersion.TLSv1_2)
    first, _ = memory_handshake(ctx, client, "example.com")
    assert not first.session_reused
    again, server = memory_handshake(ctx, client, "example.com", session=first.session)
    assert again.session_reused and server.session_reused


def test_build_reports_every_unusable_certificate(ca: TestCA, tmp_path: Path) -> None:
    good = ca.issue("example.com")
    other = ca.issue("other.example.com")
    cfg = config(
        CertFiles(tmp_path / "missing.crt", good.key),
        CertFiles(good.cert, other.key),
        good,
    )
    with pytest.raises(TlsError) as info:
        build_server_context(cfg.listeners[0], 3)
    assert info.value.errors == [
        f"listeners[3].tls.certificates[0].cert: {tmp_path / 'missing.crt'}: no such file",
        f"listeners[3].tls.certificates[1].key: {other.key}: this private key does not belong "
        f"to the certificate {good.cert} (the first certificate in the file must be the "
        "server's own)",
    ]


# -- reloads -------------------------------------------------------------------


def test_contexts_are_kept_until_a_file_or_setting_changes(ca: TestCA) -> None:
    site = ca.issue("example.com", stem="site")
    contexts = TlsContexts()
    first = contexts.prepare(config(site))["https"]
    assert contexts.prepare(config(site))["https"] is first
    changed = contexts.prepare(config(site, session_timeout="1m"))["https"]
    assert changed is not first
    ca.issue("example.com", stem="site")  # new certificate, same file names
    renewed = contexts.prepare(config(site, session_timeout="1m"))["https"]
    assert renewed is not changed
    client = ca.client_context()
    obj, _ = memory_handshake(renewed, client, "example.com")
    assert obj.getpeercert(binary_form=True) == site.der()


def test_a_broken_certificate_keeps_the_old_contexts(ca: TestCA) -> None:
    site = ca.issue("example.com", stem="site")
    contexts = TlsContexts()
    first = contexts.prepare(config(site))["https"]
    site.key.write_bytes(b"not a key")
    with pytest.raises(TlsError, match="no PEM private key"):
        contexts.prepare(config(site))
    ca.issue("example.com", stem="site")
    assert contexts.prepare(config(site))["https"] is not first


# -- checks ------------------------------------------------------------------------


def test_missing_and_mismatched_files_are_errors(ca: TestCA, tmp_path: Path) -> None:
    good = ca.issue("example.com")
    other = ca.issue("example.com")
    cfg = config(
        CertFiles(good.cert, tmp_path / "nope.key"),
        CertFiles(good.cert, other.key),
        CertFiles(tmp_path, good.key),
    )
    issues = check_certificates(cfg)
    assert [(i.severity, i.key_path) for i in issues] == [
        ("error", "listeners[0].tls.certificates[0].key"),
        ("error", "listeners[0].tls.certificates[1].key"),
        ("error", "listeners[0].tls.certificates[2].cert"),
    ]
    assert issues[0].render("phoenix.yaml") == (
        f"phoenix.yaml: listeners[0].tls.certificates[0].key: {tmp_path / 'nope.key'}: no such file"
    )
    assert "does not belong to the certificate" in issues[1].message
    assert "is a directory" in issues[2].message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_key_is_an_error(ca: TestCA) -> None:
    site = ca.issue("example.com")
    site.key.chmod(0)
    (issue,) = check_certificates(config(site))
    assert issue.severity == "error" and "cannot read: Permission denied" in issue.message


def test_encrypted_key_is_an_error(ca: TestCA, tmp_path: Path) -> None:
    site = ca.issue("example.com")
    key = serialization.load_pem_private_key(site.key.read_bytes(), None)
    encrypted = tmp_path / "enc.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    (issue,) = check_certificates(config(CertFiles(site.cert, encrypted)))
    assert issue.severity == "error" and "the private key is encrypted" in issue.message


def test_expired_and_expiring_certificates_are_warnings(ca: TestCA) -> None:
    now = time.time()
    expired = ca.issue(
        "old.example.com",
        not_before=datetime.datetime.fromtimestamp(now - 30 * DAY, datetime.UTC),
        not_after=datetime.datetime.fromtimestamp(now - 3.5 * DAY, datetime.UTC),
    )
    soon = ca.issue("soon.example.com", days=9.5)
    fine = ca.issue("example.com", days=90)
    future = ca.issue(
        "new.example.com",
        not_before=datetime.datetime.fromtimestamp(now + 2 * DAY, datetime.UTC),
        not_after=datetime.datetime.fromtimestamp(now + 90 * DAY, datetime.UTC),
    )
    issues = check_certificates(config(fine, expired, soon, future), now=now)
    day = datetime.datetime.fromtimestamp
    assert [(i.severity, i.key_path, i.message) for i in issues] == [
        (
            "warning",
            "listeners[0].tls.certificates[1].cert",
            f"{expired.cert} expired 3 days ago "
            f"({day(now - 3.5 * DAY, datetime.UTC):%Y-%m-%d}): clients refuse it",
        ),
        (
            "warning",
            "listeners[0].tls.certificates[2].cert",
            f"{soon.cert} expires in 9 days ({day(now + 9.5 * DAY, datetime.UTC):%Y-%m-%d})",
        ),
        (
            "warning",
            "listeners[0].tls.certificates[3].cert",
            f"{future.cert} is not valid before {day(now + 2 * DAY, datetime.UTC):%Y-%m-%d}: "
            "clients refuse it until then",
        ),
    ]
    assert (
        issues[1]
        .render("phoenix.yaml")
        .startswith("WARNING phoenix.yaml: listeners[0].tls.certificates[2].cert: ")
    )
    # Still usable: start-up goes on with expired certificates.
    assert build_server_context(config(expired).listeners[0]) is not None


def test_other_warnings(ca: TestCA) -> None:
    rsa = ca.issue("example.com", key_type=trustme.KeyType.RSA)
    twin = ca.issue("example.com", key_type=trustme.KeyType.RSA)
    cfg = config(
        rsa,
        twin,
        ciphers="ECDHE-ECDSA-AES128-GCM-SHA256",
        listener={"server_name": "www.example.org", "http2": True},
    )
    messages = [(i.key_path, i.message) for i in check_certificates(cfg) if i.severity == "warning"]
    assert messages == [
        (
            "listeners[0].tls.certificates[0].cert",
            f"{rsa.cert} has an RSA key but no TLS 1.2 cipher in ciphers uses RSA: TLS 1.2 "
            "clients cannot connect with it",
        ),
        (
            "listeners[0].tls.certificates[1].cert",
            f"{twin.cert} has an RSA key but no TLS 1.2 cipher in ciphers uses RSA: TLS 1.2 "
            "clients cannot connect with it",
        ),
        (
            "listeners[0].tls.certificates[1].cert",
            f"{twin.cert} is never used: certificates[0] has the same names and key type (RSA)",
        ),
        (
            "listeners[0].tls.certificates",
            "no certificate names server_name www.example.org: clients will refuse the connection",
        ),
    ]


def test_openssl_refusals_are_errors(tmp_path: Path) -> None:
    # A 1024-bit RSA key is below OpenSSL's security level 2 (112 bits).
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "weak.example.com")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=90))
        .sign(key, hashes.SHA256())
    )
    files = CertFiles(tmp_path / "weak.crt", tmp_path / "weak.key")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (issue,) = check_certificates(config(files))
    assert issue.severity == "error"
    assert issue.message.startswith(f"{files.cert}: OpenSSL refuses it: ")
    with pytest.raises(TlsError, match="OpenSSL refuses it"):
        build_server_context(config(files).listeners[0])


def test_certificate_expiry_for_metrics(ca: TestCA, tmp_path: Path) -> None:
    site = ca.issue("example.com", days=30)
    cfg = config(site, CertFiles(tmp_path / "gone.crt", site.key))
    expiry = certificate_expiry(cfg)
    assert list(expiry) == [("https", str(site.cert))]
    assert abs(expiry[("https", str(site.cert))] - (time.time() + 30 * DAY)) < 120


def test_handshake_error_reasons_are_a_small_fixed_set() -> None:
    def ssl_error(reason: str) -> ssl.SSLError:
        error = ssl.SSLError(1, reason)
        error.reason = reason  # type: ignore[misc]
        return error

    cases = {
        "UNSUPPORTED_PROTOCOL": "protocol_version",
        "NO_SHARED_CIPHER": "no_shared_cipher",
        "HTTP_REQUEST": "not_tls",
        "WRONG_VERSION_NUMBER": "not_tls",
        "TLSV1_ALERT_UNKNOWN_CA": "certificate_rejected",
        "SSLV3_ALERT_BAD_CERTIFICATE": "certificate_rejected",
        "TLSV1_ALERT_DECODE_ERROR": "client_alert",
        "SOMETHING_NEW": "tls_error",
    }
    for reason, label in cases.items():
        assert handshake_error_reason(ssl_error(reason)) == label
    assert handshake_error_reason(ssl.SSLEOFError(8, "EOF")) == "client_closed"
    assert handshake_error_reason(ConnectionResetError()) == "client_closed"
    assert handshake_error_reason(TimeoutError()) == "timeout"
    aborted = ConnectionAbortedError("SSL handshake is taking longer than 10.0 seconds: aborting")
    assert handshake_error_reason(aborted) == "timeout"
    assert handshake_error_reason(ValueError()) == "other"
    labels = {handshake_error_reason(ssl_error(r)) for r in cases}
    assert labels <= set(HANDSHAKE_ERROR_REASONS)
