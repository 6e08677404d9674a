"""Certificates made in the test (trustme): a CA and leaf certificates written as PEM files."""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

__all__ = ["CertFiles", "TestCA", "memory_handshake"]


@dataclass(frozen=True)
class CertFiles:
    """A leaf certificate (chain) file and its key file."""

    cert: Path
    key: Path

    def entry(self) -> dict[str, str]:
        """As a ``tls.certificates`` item."""
        return {"cert": str(self.cert), "key": str(self.key)}

    def der(self) -> bytes:
        """The leaf certificate, DER (what ``getpeercert(binary_form=True)`` returns)."""
        return ssl.PEM_cert_to_DER_cert(self.cert.read_text())


class TestCA:
    """A throwaway CA writing leaf certificates into ``directory``."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path, *, key_type: trustme.KeyType = trustme.KeyType.ECDSA):
        self.directory = directory
        self.ca = trustme.CA(key_type=key_type)
        self._count = 0

    def issue(
        self,
        *names: str,
        stem: str | None = None,
        key_type: trustme.KeyType = trustme.KeyType.ECDSA,
        days: float | None = None,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> CertFiles:
        """A certificate for ``names`` (SANs), valid ``days`` from now when given."""
        self._count += 1
        stem = stem or f"cert{self._count}"
        now = datetime.datetime.now(datetime.UTC)
        if days is not None:
            not_before = not_before or now - datetime.timedelta(days=1)
            not_after = now + datetime.timedelta(days=days)
        leaf = self.ca.issue_cert(
            *names, key_type=key_type, not_before=not_before, not_after=not_after
        )
        cert = self.directory / f"{stem}.crt"
        key = self.directory / f"{stem}.key"
        cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        key.write_bytes(leaf.private_key_pem.bytes())
        key.chmod(0o600)
        return CertFiles(cert, key)

    def client_context(self, **versions: ssl.TLSVersion) -> ssl.SSLContext:
        """A client context trusting this CA (hostname checks on)."""
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        for name, value in versions.items():
            setattr(ctx, name, value)
        return ctx


def memory_handshake(
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    server_hostname: str | None = None,
    *,
    session: ssl.SSLSession | None = None,
) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """A TLS handshake through memory BIOs (no sockets); (client, server) objects.

    Raises the client's or the server's :class:`ssl.SSLError` when it fails.
    """
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_hostname, session=session)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, obj in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            s_in.write(c_out.read())
            c_in.write(s_out.read())
        if all(done.values()):
            return client, server
    raise AssertionError("handshake did not complete")
