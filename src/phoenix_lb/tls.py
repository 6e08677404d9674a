"""TLS termination: SSL contexts from a listener's config, SNI, ALPN and certificate checks.

One listener with ``tls`` gets one :class:`ssl.SSLContext` per group of
certificates serving the same names (an RSA and an ECDSA certificate for the
same names share one context, as nginx serves both).  The first certificate's
context is the listener's: it answers clients that send no SNI or a name no
certificate has, and its ``sni_callback`` moves every other handshake to the
context whose certificate names the requested host (exact name first, then a
``*.`` wildcard one label deep).

Every context is configured identically (after SNI, OpenSSL keeps the first
context's protocol bounds, ciphers and session cache, and takes the chosen
one's certificate and ALPN):

* protocols: TLS 1.2 and/or 1.3 (``minimum_version``/``maximum_version``);
  TLSv1 and TLSv1.1 are refused when the config is read (RFC 8996);
* TLS 1.2 ciphers (``set_ciphers``) with the server's preference
  (``OP_CIPHER_SERVER_PREFERENCE``); TLS 1.3 suites are OpenSSL's defaults
  (AES-256-GCM, ChaCha20-Poly1305, AES-128-GCM: Python cannot change them,
  and all three are strong);
* key exchange groups: OpenSSL's defaults (X25519, P-256, X448, P-521, P-384).
  ``set_ecdh_curve`` would narrow them to a single curve, so it is not called;
* ``OP_NO_COMPRESSION`` (CRIME), ``OP_NO_RENEGOTIATION`` (client-initiated
  renegotiation costs the server a full handshake for free);
* ALPN: ``h2`` then ``http/1.1`` on ``http2: true`` listeners (server/h2.py
  serves h2), ``http/1.1`` on the others;
* session resumption: see ``tlsnative.py`` and docs/tls.md.

:class:`TlsContexts` keeps each listener's contexts across reloads while the
settings and the bytes of every certificate and key file are unchanged, so a
reload keeps the session cache and ticket keys (clients keep resuming); a
changed file gives new contexts for new connections, while open connections
finish on the old ones.

:func:`check_certificates` is what ``phoenix-lb check`` and the start-up run:
missing or unreadable files and keys that do not match their certificate are
errors; expired, not yet valid or soon expiring certificates are warnings.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import math
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from phoenix_lb.config.schema import ListenerConfig, PhoenixConfig, TlsConfig
from phoenix_lb.tlsnative import apply_session_cache

__all__ = [
    "EXPIRY_WARNING_DAYS",
    "H2_SERVED",
    "HANDSHAKE_ERROR_REASONS",
    "CertificateIssue",
    "LoadedCertificate",
    "TlsContexts",
    "TlsError",
    "alpn_protocols",
    "build_server_context",
    "certificate_expiry",
    "check_certificates",
    "handshake_error_reason",
    "read_certificate",
]

log = logging.getLogger("phoenix_lb")

#: An HTTP/2 protocol serves ALPN "h2" (server/h2.py), so http2 listeners
#: offer it (offering h2 and then speaking HTTP/1.1 would break every
#: HTTP/2 client).
H2_SERVED: Final = True

#: Certificates expiring within this many days are warned about (Let's Encrypt
#: renews 30 days ahead, so a certificate this close means renewal failed).
EXPIRY_WARNING_DAYS: Final = 14

_VERSIONS: Final = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}

# nginx: "one megabyte of the cache contains about 4000 sessions".
_SESSION_BYTES: Final = 256

# Key types as OpenSSL's cipher list names their authentication.
_CIPHER_AUTH: Final = {"RSA": "auth-rsa", "ECDSA": "auth-ecdsa"}

_DAY: Final = 86400.0


class TlsError(ValueError):
    """A listener's TLS cannot be set up; :attr:`errors` holds one line per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class CertificateIssue:
    """One finding of :func:`check_certificates`."""

    severity: Literal["error", "warning"]
    #: ``listeners[0].tls.certificates[1].cert``
    key_path: str
    message: str

    def render(self, filename: str) -> str:
        """``FILE: key.path: message``, warnings prefixed ``WARNING `` (as ``check`` prints)."""
        prefix = "WARNING " if self.severity == "warning" else ""
        return f"{prefix}{filename}: {self.key_path}: {self.message}"


@dataclass(frozen=True, slots=True)
class LoadedCertificate:
    """A certificate file and its key, read and checked to match."""

    cert_path: str
    key_path: str
    #: DNS names it serves (subjectAltName, else the common name), lowercase
    names: tuple[str, ...]
    #: RSA, ECDSA, Ed25519...
    key_type: str
    not_before: float
    not_after: float


class _Problem(Exception):
    """A certificate entry is unusable: which file (cert or key) and why."""

    def __init__(self, field: Literal["cert", "key"], message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


# -- reading certificates ----------------------------------------------------


def _read(path: str, field: Literal["cert", "key"]) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise _Problem(field, f"{path}: no such file") from None
    except IsADirectoryError:
        raise _Problem(field, f"{path}: is a directory, expected a PEM file") from None
    except OSError as exc:
        raise _Problem(field, f"{path}: cannot read: {exc.strerror or exc}") from None


def _key_type(key: object) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "ECDSA"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448"
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA"
    return type(key).__name__


def _dns_names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        names = [
            str(attr.value)
            for attr in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        ]
    else:
        names = san.value.get_values_for_type(x509.DNSName)
    return tuple(dict.fromkeys(name.lower().rstrip(".") for name in names if name))


def read_certificate(cert_path: str, key_path: str) -> LoadedCertificate:
    """Read a PEM certificate chain (leaf first) and its private key; check they match.

    Raises :class:`_Problem` naming the file at fault.
    """
    cert_data = _read(cert_path, "cert")
    try:
        chain = x509.load_pem_x509_certificates(cert_data)
    except ValueError:
        raise _Problem("cert", f"{cert_path}: no PEM certificate in it") from None
    leaf = chain[0]
    key_data = cert_data if key_path == cert_path else _read(key_path, "key")
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except TypeError:
        raise _Problem(
            "key",
            f"{key_path}: the private key is encrypted; phoenix-lb cannot ask for a "
            "passphrase (decrypt it: openssl pkey -in KEY -out KEY.plain, mode 0600)",
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise _Problem("key", f"{key_path}: no PEM private key in it") from None
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
        raise _Problem(
            "key",
            f"{key_path}: this private key does not belong to the certificate {cert_path} "
            "(the first certificate in the file must be the server's own)",
        )
    return LoadedCertificate(
        cert_path,
        key_path,
        _dns_names(leaf),
        _key_type(leaf.public_key()),
        leaf.not_valid_before_utc.timestamp(),
        leaf.not_valid_after_utc.timestamp(),
    )


def _day(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%d")


def _validity_warning(cert: LoadedCertificate, now: float) -> str | None:
    path = cert.cert_path
    if cert.not_after <= now:
        days = math.floor((now - cert.not_after) / _DAY)
        ago = "today" if days == 0 else f"{days} day{'s' if days != 1 else ''} ago"
        return f"{path} expired {ago} ({_day(cert.not_after)}): clients refuse it"
    if cert.not_before > now:
        return f"{path} is not valid before {_day(cert.not_before)}: clients refuse it until then"
    left = (cert.not_after - now) / _DAY
    if left < EXPIRY_WARNING_DAYS:
        days = math.floor(left)
        when = "today" if days == 0 else f"in {days} day{'s' if days != 1 else ''}"
        return f"{path} expires {when} ({_day(cert.not_after)})"
    return None


# -- contexts ------------------------------------------------------------------


def alpn_protocols(listener: ListenerConfig, *, h2_served: bool = H2_SERVED) -> list[str]:
    """What ALPN offers on ``listener``, most preferred first."""
    if listener.http2 and h2_served:
        return ["h2", "http/1.1"]
    return ["http/1.1"]


def _base_context(tls: TlsConfig, alpn: list[str]) -> ssl.SSLContext:
    """A server context with every setting but the certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    versions = sorted(_VERSIONS[name] for name in tls.protocols)
    ctx.minimum_version = versions[0]
    ctx.maximum_version = versions[-1]
    ctx.set_ciphers(tls.ciphers)
    options = ctx.options | ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    if tls.prefer_server_ciphers:
        options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    if tls.session_cache == 0:
        # nginx "ssl_session_cache off; ssl_session_tickets off": no resumption.
        options |= ssl.OP_NO_TICKET
        ctx.num_tickets = 0
    ctx.options = options
    ctx.set_alpn_protocols(alpn)
    return ctx


_native_warned = False


def _session_cache(ctx: ssl.SSLContext, tls: TlsConfig, listener: str) -> None:
    global _native_warned
    reason = apply_session_cache(
        ctx,
        sessions=max(1, tls.session_cache // _SESSION_BYTES),
        timeout=max(1, round(tls.session_timeout)),
        enabled=tls.session_cache > 0,
    )
    if reason is not None and not _native_warned:
        _native_warned = True
        log.warning(
            "listener %s: session_cache and session_timeout cannot be applied (%s); "
            "OpenSSL's defaults stay: 20480 sessions per process, 2h",
            listener,
            reason,
        )


def _problem_line(index: int, cert_index: int, problem: _Problem) -> str:
    return f"listeners[{index}].tls.certificates[{cert_index}].{problem.field}: {problem.message}"


def build_server_context(
    listener: ListenerConfig, index: int = 0, *, h2_served: bool = H2_SERVED
) -> ssl.SSLContext:
    """The listener's SSL context (the default certificate's, with SNI to the others).

    ``index`` is the listener's position (for error messages).  Raises
    :class:`TlsError` when a certificate or key cannot be used.
    """
    tls = listener.tls
    if tls is None:
        raise ValueError(f"listener {listener.name} has no tls settings")
    alpn = alpn_protocols(listener, h2_served=h2_served)
    errors: list[str] = []
    # Groups of certificates serving the same names, each with one context.
    groups: list[tuple[frozenset[str], set[str], ssl.SSLContext]] = []
    for cert_index, entry in enumerate(tls.certificates):
        try:
            cert = read_certificate(entry.cert, entry.key)
        except _Problem as problem:
            errors.append(_problem_line(index, cert_index, problem))
            continue
        names = frozenset(cert.names)
        group = next((g for g in groups if g[0] == names and cert.key_type not in g[1]), None)
        if group is None:
            ctx = _base_context(tls, alpn)
            _session_cache(ctx, tls, listener.name)
            group = (names, set(), ctx)
            groups.append(group)
        try:
            group[2].load_cert_chain(entry.cert, entry.key)
        except OSError as exc:
            why = exc.reason if isinstance(exc, ssl.SSLError) else exc.strerror
            errors.append(
                f"listeners[{index}].tls.certificates[{cert_index}].cert: {entry.cert}: "
                f"OpenSSL refuses it: {why or exc}"
            )
            continue
        group[1].add(cert.key_type)
    if errors:
        raise TlsError(errors)
    default = groups[0][2]
    exact: dict[str, ssl.SSLContext] = {}
    wildcard: dict[str, ssl.SSLContext] = {}
    for names, _, ctx in groups:
        for name in names:
            table, key = (wildcard, name[2:]) if name.startswith("*.") else (exact, name)
            table.setdefault(key, ctx)  # the first certificate naming a host wins
    if len(groups) > 1:
        default.sni_callback = _sni_chooser(default, exact, wildcard)
    return default


def _sni_chooser(
    default: ssl.SSLContext,
    exact: dict[str, ssl.SSLContext],
    wildcard: dict[str, ssl.SSLContext],
) -> Callable[[ssl.SSLObject, str | None, ssl.SSLContext], None]:
    def choose(ssl_object: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        # Runs inside the handshake: no exception may escape (OpenSSL would
        # answer with an internal_error alert).
        if not server_name:
            return
        name = server_name.lower().rstrip(".")
        ctx = exact.get(name)
        if ctx is None:
            dot = name.find(".")
            if dot > 0:
                ctx = wildcard.get(name[dot + 1 :])
        if ctx is not None and ctx is not default:
            ssl_object.context = ctx

    return choose


# -- reloads -------------------------------------------------------------------


def _fingerprint(listener: ListenerConfig, h2_served: bool) -> bytes | None:
    """Settings and file contents of a TLS listener; None when a file cannot be read."""
    assert listener.tls is not None
    digest = hashlib.sha256()
    digest.update(listener.tls.model_dump_json().encode())
    digest.update(repr(alpn_protocols(listener, h2_served=h2_served)).encode())
    for entry in listener.tls.certificates:
        for path in (entry.cert, entry.key):
            try:
                with open(path, "rb") as handle:
                    digest.update(hashlib.sha256(handle.read()).digest())
            except OSError:
                return None
    return digest.digest()


class TlsContexts:
    """The SSL contexts of one process's TLS listeners, rebuilt only when their inputs change."""

    def __init__(self, *, h2_served: bool = H2_SERVED, now: Callable[[], float] = time.time):
        self._h2_served = h2_served
        self._now = now
        self._built: dict[str, tuple[bytes, ssl.SSLContext]] = {}

    def prepare(self, config: PhoenixConfig) -> dict[str, ssl.SSLContext]:
        """Contexts for every TLS listener of ``config``: reused, or built anew.

        Raises :class:`TlsError` listing every problem; nothing is replaced then.
        """
        built: dict[str, tuple[bytes, ssl.SSLContext]] = {}
        errors: list[str] = []
        for index, listener in enumerate(config.listeners):
            if listener.tls is None:
                continue
            fingerprint = _fingerprint(listener, self._h2_served)
            old = self._built.get(listener.name)
            if fingerprint is not None and old is not None and old[0] == fingerprint:
                built[listener.name] = old
                continue
            try:
                ctx = build_server_context(listener, index, h2_served=self._h2_served)
            except TlsError as exc:
                errors.extend(exc.errors)
                continue
            built[listener.name] = (fingerprint or b"", ctx)
            self._log_loaded(listener, reloaded=old is not None)
        if errors:
            raise TlsError(errors)
        self._built = built
        return {name: ctx for name, (_, ctx) in built.items()}

    def _log_loaded(self, listener: ListenerConfig, *, reloaded: bool) -> None:
        assert listener.tls is not None
        now = self._now()
        for entry in listener.tls.certificates:
            try:
                cert = read_certificate(entry.cert, entry.key)
            except _Problem:
                continue
            log.info(
                "listener %s: %s certificate %s (%s %s, valid until %s)",
                listener.name,
                "reloaded" if reloaded else "loaded",
                cert.cert_path,
                cert.key_type,
                ", ".join(cert.names) or "no DNS names",
                _day(cert.not_after),
            )
            warning = _validity_warning(cert, now)
            if warning is not None:
                log.warning("listener %s: %s", listener.name, warning)


# -- checks --------------------------------------------------------------------


def check_certificates(
    config: PhoenixConfig, *, now: float | None = None
) -> list[CertificateIssue]:
    """Every problem with the certificates of ``config``'s TLS listeners, in config order."""
    now = time.time() if now is None else now
    issues: list[CertificateIssue] = []
    for index, listener in enumerate(config.listeners):
        tls = listener.tls
        if tls is None:
            continue
        base = f"listeners[{index}].tls"
        loaded: list[tuple[int, LoadedCertificate]] = []
        for cert_index, entry in enumerate(tls.certificates):
            here = f"{base}.certificates[{cert_index}]"
            try:
                cert = read_certificate(entry.cert, entry.key)
            except _Problem as problem:
                issues.append(CertificateIssue("error", f"{here}.{problem.field}", problem.message))
                continue
            try:
                _base_context(tls, ["http/1.1"]).load_cert_chain(entry.cert, entry.key)
            except ssl.SSLError as exc:
                issues.append(
                    CertificateIssue(
                        "error", f"{here}.cert", f"{entry.cert}: OpenSSL refuses it: {exc.reason}"
                    )
                )
                continue
            warning = _validity_warning(cert, now)
            if warning is not None:
                issues.append(CertificateIssue("warning", f"{here}.cert", warning))
            issues.extend(_cipher_fit(tls, cert, f"{here}.cert"))
            loaded.append((cert_index, cert))
        issues.extend(_shadowed(loaded, base))
        if listener.server_name and loaded:
            name = listener.server_name.lower().rstrip(".")
            if not any(_covers(cert.names, name) for _, cert in loaded):
                issues.append(
                    CertificateIssue(
                        "warning",
                        f"{base}.certificates",
                        f"no certificate names server_name {listener.server_name}: "
                        "clients will refuse the connection",
                    )
                )
    return issues


def _covers(names: tuple[str, ...], host: str) -> bool:
    if host in names:
        return True
    dot = host.find(".")
    return dot > 0 and f"*.{host[dot + 1 :]}" in names


def _cipher_fit(tls: TlsConfig, cert: LoadedCertificate, key_path: str) -> list[CertificateIssue]:
    """A TLS 1.2 cipher list with no suite for the certificate's key type fails those clients."""
    auth = _CIPHER_AUTH.get(cert.key_type)
    if auth is None or "TLSv1.2" not in tls.protocols:
        return []
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.set_ciphers(tls.ciphers)
    suites = [c for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"]
    if any(c.get("auth") in (auth, "auth-any") for c in suites):
        return []
    return [
        CertificateIssue(
            "warning",
            key_path,
            f"{cert.cert_path} has an {cert.key_type} key but no TLS 1.2 cipher in ciphers "
            f"uses {cert.key_type}: TLS 1.2 clients cannot connect with it",
        )
    ]


def _shadowed(loaded: list[tuple[int, LoadedCertificate]], base: str) -> list[CertificateIssue]:
    """Certificates SNI never chooses: same names and key type as an earlier one."""
    issues = []
    seen: dict[tuple[frozenset[str], str], int] = {}
    for cert_index, cert in loaded:
        key = (frozenset(cert.names), cert.key_type)
        first = seen.setdefault(key, cert_index)
        if first != cert_index:
            issues.append(
                CertificateIssue(
                    "warning",
                    f"{base}.certificates[{cert_index}].cert",
                    f"{cert.cert_path} is never used: certificates[{first}] has the same "
                    f"names and key type ({cert.key_type})",
                )
            )
        elif not cert.names and cert_index != loaded[0][0]:
            issues.append(
                CertificateIssue(
                    "warning",
                    f"{base}.certificates[{cert_index}].cert",
                    f"{cert.cert_path} names no host: only the first certificate serves "
                    "clients without a matching name",
                )
            )
    return issues


def certificate_expiry(config: PhoenixConfig) -> dict[tuple[str, str], float]:
    """``{(listener, cert path): not-after as Unix time}`` for every readable certificate.

    For ``phoenix_tls_certificate_expiry_timestamp_seconds``.  Reads the files
    each call (a few kilobytes each); unreadable ones are left out.
    """
    out: dict[tuple[str, str], float] = {}
    for listener in config.listeners:
        if listener.tls is None:
            continue
        for entry in listener.tls.certificates:
            try:
                with open(entry.cert, "rb") as handle:
                    leaf = x509.load_pem_x509_certificates(handle.read())[0]
            except (OSError, ValueError):
                continue
            out[(listener.name, entry.cert)] = leaf.not_valid_after_utc.timestamp()
    return out


# -- handshake outcomes --------------------------------------------------------

_REASONS: Final = {
    "UNSUPPORTED_PROTOCOL": "protocol_version",
    "VERSION_TOO_LOW": "protocol_version",
    "TLSV1_ALERT_PROTOCOL_VERSION": "protocol_version",
    "NO_SHARED_CIPHER": "no_shared_cipher",
    "NO_SHARED_GROUPS": "no_shared_cipher",
    "NO_SUITABLE_SIGNATURE_ALGORITHM": "no_shared_cipher",
    "HTTP_REQUEST": "not_tls",
    "HTTPS_PROXY_REQUEST": "not_tls",
    "WRONG_VERSION_NUMBER": "not_tls",
    "UNKNOWN_PROTOCOL": "not_tls",
    "RECORD_LENGTH_MISMATCH": "not_tls",
    "PACKET_LENGTH_TOO_LONG": "not_tls",
}

#: Every label :func:`handshake_error_reason` returns (a bounded metric label set).
HANDSHAKE_ERROR_REASONS: Final = (
    "timeout",
    "protocol_version",
    "no_shared_cipher",
    "not_tls",
    "certificate_rejected",
    "client_alert",
    "client_closed",
    "tls_error",
    "other",
)


def handshake_error_reason(exc: BaseException) -> str:
    """A short label for why a handshake failed (one of :data:`HANDSHAKE_ERROR_REASONS`)."""
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return "client_closed"
    if isinstance(exc, ssl.SSLError):
        reason = str(exc.reason or "")
        label = _REASONS.get(reason)
        if label is not None:
            return label
        if "ALERT" in reason:
            if "CERTIFICATE" in reason or "UNKNOWN_CA" in reason:
                return "certificate_rejected"
            return "client_alert"
        return "tls_error"
    if isinstance(exc, TimeoutError) or (
        isinstance(exc, ConnectionAbortedError) and "taking longer" in str(exc)
    ):
        return "timeout"
    if isinstance(exc, ConnectionError | EOFError):
        return "client_closed"
    return "other"
