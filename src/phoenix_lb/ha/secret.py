"""The VRRP secret: read from a file or the environment, never from the YAML, and vetted.

keepalived puts ``auth_pass`` into an 8-byte field of the VRRPv2 packet (PASS)
or uses those 8 bytes as the AH key, and silently drops every character after
the eighth.  A longer secret therefore gives a false sense of strength (and two
nodes whose secrets differ only after character 8 agree), while a shorter one
is weak.  We accept exactly 8.

The seed design's ``auth_pass phoenix123`` is published, so it protects
nothing; it (and ``phoenix1``, what keepalived would make of it) is refused.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping

from phoenix_lb.config.schema import PLACEHOLDER_VRRP_SECRETS, HaAuthConfig

__all__ = ["SECRET_LENGTH", "SecretError", "check_secret", "load_secret"]

# keepalived: "Only the first eight (8) characters are used" (keepalived.conf(5)).
SECRET_LENGTH = 8

# The secret is written inside double quotes in keepalived.conf; these would
# end the string or start a comment there.
# keepalived reads quotes, comments (# !), escapes and braces (block
# delimiters, even inside a word) specially: none may appear in a secret.
_FORBIDDEN = set("\"'#!\\{}")


class SecretError(ValueError):
    """The VRRP secret is missing, exposed or unusable; the message says how to fix it."""


def check_secret(secret: str, auth_type: str, source: str) -> str:
    """Return ``secret`` if keepalived can use it safely, else raise :class:`SecretError`.

    ``source`` names where it came from (``file /etc/...`` or ``$VRRP_SECRET``)
    for the messages.
    """
    if secret in PLACEHOLDER_VRRP_SECRETS or secret.lower() in PLACEHOLDER_VRRP_SECRETS:
        raise SecretError(
            f"{source}: {secret!r} is the seed design's published example password; "
            f"choose your own {SECRET_LENGTH}-character secret"
        )
    if not secret:
        raise SecretError(f"{source}: the secret is empty")
    bad = sorted({c for c in secret if c in _FORBIDDEN or not (c.isascii() and c.isprintable())})
    if bad or any(c.isspace() for c in secret):
        raise SecretError(
            f"{source}: the secret may only contain printable ASCII without spaces, quotes, "
            "'#', '!', '\\' or braces (they would break keepalived.conf)"
        )
    if len(secret) != SECRET_LENGTH:
        what = "longer ones are cut silently" if len(secret) > SECRET_LENGTH else "it is weak"
        raise SecretError(
            f"{source}: the {auth_type.upper()} secret has {len(secret)} characters; use "
            f"exactly {SECRET_LENGTH}: keepalived uses only the first {SECRET_LENGTH} "
            f"({what})"
        )
    return secret


def load_secret(
    auth: HaAuthConfig, environ: Mapping[str, str] | None = None, base: str | None = None
) -> str | None:
    """The vetted secret for ``auth`` (None for type none).

    A ``secret_file`` must not be readable or writable by group or others
    (``chmod 600``); its content is one line (a final newline is ignored).  A
    relative ``secret_file`` is taken relative to ``base`` (the config file's
    directory), as config backups do.  ``environ`` defaults to :data:`os.environ`.
    """
    if auth.type == "none":
        return None
    if auth.secret_env is not None:
        env = os.environ if environ is None else environ
        source = f"${auth.secret_env}"
        if auth.secret_env not in env:
            raise SecretError(f"{source}: environment variable not set (ha.auth.secret_env)")
        return check_secret(env[auth.secret_env], auth.type, source)
    assert auth.secret_file is not None  # the schema requires one of the two
    path = auth.secret_file
    source = f"secret file {path}"
    if base is not None:
        path = os.path.join(base, path)
    try:
        # O_NOFOLLOW-free on purpose: a symlink to a 0600 file is fine; we check
        # the file actually opened.
        with open(path, encoding="utf-8") as file:
            mode = os.fstat(file.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise SecretError(f"{source}: not a regular file")
            if mode & 0o077:
                raise SecretError(
                    f"{source}: readable or writable by group or others (mode "
                    f"{stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
                )
            text = file.read(4096)
    except UnicodeDecodeError:
        raise SecretError(f"{source}: not UTF-8 text") from None
    except OSError as exc:
        raise SecretError(f"{source}: cannot read: {exc.strerror or exc}") from None
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if "\n" in text:
        raise SecretError(f"{source}: expected the secret on one line")
    return check_secret(text, auth.type, source)
