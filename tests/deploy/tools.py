"""Finding the external tools the deploy tests drive (promtool, systemd-analyze, ...).

A missing tool skips its test with the Debian package that provides it;
under CI (``CI=true``) it fails instead, since ``scripts/setup test``
installs them there and a silent skip would hide a broken setup.
"""

from __future__ import annotations

import os
import shutil

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require(tool: str, package: str) -> str:
    """The path of ``tool``, or skip (fail under CI) naming ``package``."""
    path = shutil.which(tool)
    if path is None:
        reason = f"{tool} not found (Debian package {package}; scripts/setup test installs it)"
        if in_ci():
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    return path
