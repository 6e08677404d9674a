"""The VRRP secret: from a 0600 file or the environment, exactly 8 characters, not the seed's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from phoenix_lb.config.schema import HaAuthConfig
from phoenix_lb.ha.secret import SecretError, check_secret, load_secret

GOOD = "k3Vq9-Zw"


def secret_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "vrrp.secret"
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_type_none_has_no_secret() -> None:
    assert load_secret(HaAuthConfig()) is None


def test_from_file_ignores_the_final_newline(tmp_path: Path) -> None:
    path = secret_file(tmp_path, GOOD + "\n")
    assert load_secret(HaAuthConfig(type="pass", secret_file=str(path))) == GOOD


def test_relative_file_is_relative_to_the_config_directory(tmp_path: Path) -> None:
    secret_file(tmp_path, GOOD)
    auth = HaAuthConfig(type="ah", secret_file="vrrp.secret")
    assert load_secret(auth, base=str(tmp_path)) == GOOD


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o644])
def test_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = secret_file(tmp_path, GOOD, mode)
    with pytest.raises(SecretError, match=rf"group or others \(mode {mode:04o}\); run: chmod 600"):
        load_secret(HaAuthConfig(type="pass", secret_file=str(path)))


def test_missing_file(tmp_path: Path) -> None:
    auth = HaAuthConfig(type="pass", secret_file=str(tmp_path / "nope"))
    with pytest.raises(SecretError, match="cannot read: No such file"):
        load_secret(auth)


def test_two_lines_refused(tmp_path: Path) -> None:
    path = secret_file(tmp_path, f"{GOOD}\nsecond\n")
    with pytest.raises(SecretError, match="one line"):
        load_secret(HaAuthConfig(type="pass", secret_file=str(path)))


def test_from_environment() -> None:
    auth = HaAuthConfig(type="pass", secret_env="VRRP_SECRET")
    assert load_secret(auth, environ={"VRRP_SECRET": GOOD}) == GOOD
    with pytest.raises(SecretError, match=r"\$VRRP_SECRET: environment variable not set"):
        load_secret(auth, environ={})


@pytest.mark.parametrize("placeholder", ["phoenix123", "phoenix1", "PHOENIX123"])
def test_seed_placeholder_is_refused(placeholder: str) -> None:
    with pytest.raises(SecretError, match="seed design's published example password"):
        check_secret(placeholder, "pass", "$S")


@pytest.mark.parametrize(
    ("secret", "words"),
    [
        ("short", "has 5 characters; use exactly 8: keepalived uses only the first 8 (it is weak)"),
        (
            "muchtoolongsecret",
            "has 17 characters; use exactly 8: keepalived uses only the first 8 (longer ones "
            "are cut silently)",
        ),
    ],
)
def test_length_must_be_exactly_eight(secret: str, words: str) -> None:
    with pytest.raises(SecretError) as info:
        check_secret(secret, "pass", "$S")
    assert words in str(info.value)
    assert "PASS secret" in str(info.value)


@pytest.mark.parametrize(
    "secret", ['ab"cdefg', "ab#cdefg", "ab cdefg", "ab!cdefg", "abcdéfgh", "Abc}1234", "Ab{c}123"]
)
def test_characters_that_would_break_keepalived_conf(secret: str) -> None:
    with pytest.raises(SecretError, match="printable ASCII"):
        check_secret(secret, "ah", "$S")


def test_empty() -> None:
    with pytest.raises(SecretError, match="empty"):
        check_secret("", "pass", "$S")
