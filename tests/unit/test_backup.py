"""Config backup, verified restore and diff (phoenix_lb.backup, ``phoenix-lb config``)."""

from __future__ import annotations

import argparse
import datetime
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from phoenix_lb import __version__
from phoenix_lb.backup import (
    BackupError,
    create_backup,
    find_references,
    load_for_diff,
    raw_diff,
    referenced_files,
    restore_backup,
    semantic_diff,
)
from phoenix_lb.commands import configtool

CONFIG = """\
listeners:
  - name: public
    bind: ["127.0.0.1:8080"]
    routes: [{path: /, upstream: mo}]
upstreams:
  mo:
    servers:
      - address: 127.0.0.1:9001
      - address: 127.0.0.1:9002
ha:
  interface: eth0
  virtual_router_id: 51
  vrrp_version: 2
  virtual_ips: [192.168.1.10/24]
  auth: {type: pass, secret_file: keepalived/vrrp.secret}
"""

NOW = datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    """A config directory: phoenix.yaml (0640) and a 0600 VRRP secret it refers to."""
    directory = tmp_path / "etc" / "phoenix-lb"
    (directory / "keepalived").mkdir(parents=True)
    (directory / "phoenix.yaml").write_text(CONFIG)
    os.chmod(directory / "phoenix.yaml", 0o640)
    (directory / "keepalived" / "vrrp.secret").write_text("k3Vq9-Zw\n")
    os.chmod(directory / "keepalived" / "vrrp.secret", 0o600)
    return directory


def tree(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under root: relative path -> (content, mode)."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mode & 0o777)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        out = {}
        for member in tar.getmembers():
            file = tar.extractfile(member)
            assert file is not None
            out[member.name] = file.read()
        return out


def rewrite(archive: Path, changes: dict[str, bytes], *, fix_manifest: bool = True) -> None:
    """Replace members of ``archive``; optionally fix the manifest's sha256/size; redo .sha256.

    This is what an attacker (or a broken copy) with write access could do.
    """
    content = members(archive)
    content.update(changes)
    if fix_manifest:
        manifest = json.loads(content["manifest.json"])
        for entry in manifest["files"]:
            data = content[entry["name"]]
            entry["sha256"] = hashlib.sha256(data).hexdigest()
            entry["size"] = len(data)
        content["manifest.json"] = json.dumps(manifest).encode()
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in content.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(data))
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    archive.with_name(archive.name + ".sha256").write_text(f"{digest}  {archive.name}\n")


# -- references ------------------------------------------------------------


class _Tls(BaseModel):
    cert: str
    key: str
    ca_files: list[str] = Field(default_factory=list)


class _Log(BaseModel):
    path: str


class _Route(BaseModel):
    path: str


class _Fake(BaseModel):
    """Stands in for sections other issues add (TLS, tokens), to test the generic walk."""

    tls: dict[str, _Tls]
    token_file: str | None = None
    vrrp_file: str = Field("", json_schema_extra={"backup": "secret"})
    written_path: str = Field("", json_schema_extra={"backup": "output"})
    log: _Log
    route: _Route
    name: str = ""


def test_references_walk_is_generic(tmp_path: Path) -> None:
    for name in ("site.crt", "site.key", "ca.pem", "token", "vrrp", "out.log", "named"):
        (tmp_path / name).write_text(name)
    fake = _Fake(
        tls={"site": _Tls(cert="site.crt", key=str(tmp_path / "site.key"), ca_files=["ca.pem"])},
        token_file="token",
        vrrp_file="vrrp",
        written_path="out.log",
        log=_Log(path="out.log"),
        route=_Route(path="/"),
        name="named",  # not a path-like field name
    )
    found = find_references(fake, tmp_path)
    assert [(r.key_path, r.path.name, r.kind) for r in found] == [
        ("tls.site.cert", "site.crt", "file"),
        ("tls.site.key", "site.key", "file"),
        ("tls.site.ca_files[0]", "ca.pem", "file"),
        ("token_file", "token", "file"),
        ("vrrp_file", "vrrp", "secret"),
        # "log.path" is a file too: the generic rule takes it (only the real
        # AccessLogConfig/ErrorLogConfig are known to be outputs).
        ("log.path", "out.log", "file"),
    ]
    assert referenced_files(fake, tmp_path) == [r.path for r in found]


def test_references_skip_missing_files_and_directories(tmp_path: Path) -> None:
    (tmp_path / "dir.crt").mkdir()
    fake = _Fake(
        tls={"a": _Tls(cert="missing.crt", key="dir.crt")},
        log=_Log(path="x"),
        route=_Route(path="/"),
    )
    assert find_references(fake, tmp_path) == []


def test_the_real_config_references_its_vrrp_secret_as_secret(etc: Path) -> None:
    from phoenix_lb.config.loader import load_config

    found = find_references(load_config(etc / "phoenix.yaml"), etc)
    assert [(r.key_path, r.kind) for r in found] == [("ha.auth.secret_file", "secret")]
    assert found[0].path == etc / "keepalived" / "vrrp.secret"


def test_log_files_are_not_backed_up(etc: Path) -> None:
    from phoenix_lb.config.loader import load_config

    (etc / "access.log").write_text("GET /\n")
    (etc / "phoenix.yaml").write_text(CONFIG + "access_log: {path: access.log}\n")
    found = find_references(load_config(etc / "phoenix.yaml"), etc)
    assert [r.key_path for r in found] == ["ha.auth.secret_file"]


# -- backup ----------------------------------------------------------------


def test_backup_leaves_secrets_out_by_default(etc: Path, tmp_path: Path) -> None:
    result = create_backup(etc / "phoenix.yaml", tmp_path / "backups", now=NOW)
    assert result.archive.name == "phoenix-lb-backup-phoenix-20250102T030405Z.tar.gz"
    assert result.archive.stat().st_mode & 0o777 == 0o600  # it may hold private keys
    assert result.files == ["config/phoenix.yaml"]
    assert [r.key_path for r in result.excluded] == ["ha.auth.secret_file"]
    content = members(result.archive)
    assert sorted(content) == ["config/phoenix.yaml", "manifest.json"]
    manifest = json.loads(content["manifest.json"])
    assert manifest["format"] == 1
    assert manifest["phoenix_lb_version"] == __version__
    assert manifest["created"] == "2025-01-02T03:04:05Z"
    assert manifest["excluded"][0]["reason"] == "secret"
    (entry,) = manifest["files"]
    assert entry["sha256"] == hashlib.sha256(CONFIG.encode()).hexdigest()
    assert entry["mode"] == "0640"
    assert entry["restore_as"] == "phoenix.yaml"
    # sha256sum format, so `sha256sum -c` works too.
    digest = hashlib.sha256(result.archive.read_bytes()).hexdigest()
    assert result.checksum_file.read_text() == f"{digest}  {result.archive.name}\n"


def test_backup_with_secrets_and_unique_names(etc: Path, tmp_path: Path) -> None:
    first = create_backup(etc / "phoenix.yaml", tmp_path, include_secrets=True, now=NOW)
    second = create_backup(etc / "phoenix.yaml", tmp_path, include_secrets=True, now=NOW)
    assert second.archive.name == "phoenix-lb-backup-phoenix-20250102T030405Z-1.tar.gz"
    assert first.files == ["config/phoenix.yaml", "files/keepalived/vrrp.secret"]
    manifest = json.loads(members(first.archive)["manifest.json"])
    secret = manifest["files"][1]
    assert (secret["role"], secret["mode"], secret["key_paths"]) == (
        "secret",
        "0600",
        ["ha.auth.secret_file"],
    )


def test_backup_refuses_an_invalid_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("listeners: []\n")
    with pytest.raises(BackupError) as info:
        create_backup(bad, tmp_path / "out")
    assert any("listeners" in line for line in info.value.errors)
    assert not (tmp_path / "out").exists()  # refused before creating anything


# -- restore ---------------------------------------------------------------


def test_round_trip_into_a_new_directory(etc: Path, tmp_path: Path) -> None:
    result = create_backup(etc / "phoenix.yaml", tmp_path / "b", include_secrets=True, now=NOW)
    target = tmp_path / "restored"
    restored = restore_backup(result.archive, target)
    assert restored.config == target / "phoenix.yaml"
    assert tree(target) == tree(etc)  # same content, same modes (the key stays 0600)
    assert tree(target)["keepalived/vrrp.secret"][1] == 0o600
    assert target.stat().st_mode & 0o777 == 0o777 & ~_umask()
    assert restored.external == []
    # No staging directory left behind.
    assert sorted(p.name for p in (tmp_path).iterdir()) == ["b", "etc", "restored"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_round_trip_over_an_existing_directory(etc: Path, tmp_path: Path) -> None:
    result = create_backup(etc / "phoenix.yaml", tmp_path / "b", include_secrets=True, now=NOW)
    target = tmp_path / "live"
    (target / "keepalived").mkdir(parents=True)
    (target / "phoenix.yaml").write_text("old config\n")
    (target / "keepalived" / "vrrp.secret").write_text("oldsecret")
    (target / "unrelated.txt").write_text("stays\n")
    restore_backup(result.archive, target)
    after = tree(target)
    assert after.pop("unrelated.txt") == (b"stays\n", 0o644)
    assert after == tree(etc)
    assert sorted(p.name for p in target.iterdir()) == [
        "keepalived",
        "phoenix.yaml",
        "unrelated.txt",
    ]


def test_file_outside_the_config_directory_goes_under_external(tmp_path: Path) -> None:
    config_dir = tmp_path / "conf"
    config_dir.mkdir()
    secret = tmp_path / "secrets" / "vrrp"
    secret.parent.mkdir()
    secret.write_text("k3Vq9-Zw")
    os.chmod(secret, 0o600)
    (config_dir / "phoenix.yaml").write_text(CONFIG.replace("keepalived/vrrp.secret", str(secret)))
    result = create_backup(config_dir / "phoenix.yaml", tmp_path / "b", include_secrets=True)
    restored = restore_backup(result.archive, tmp_path / "r")
    where = tmp_path / "r" / "external" / str(secret).lstrip("/")
    assert restored.external == [(str(secret), where)]
    assert where.read_text() == "k3Vq9-Zw"
    assert where.stat().st_mode & 0o777 == 0o600


def test_tampered_archive_is_refused(etc: Path, tmp_path: Path) -> None:
    result = create_backup(etc / "phoenix.yaml", tmp_path / "b", now=NOW)
    data = bytearray(result.archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    result.archive.write_bytes(bytes(data))
    with pytest.raises(BackupError, match="checksum mismatch"):
        restore_backup(result.archive, tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_tampered_member_with_a_recomputed_archive_checksum_is_refused(
    etc: Path, tmp_path: Path
) -> None:
    result = create_backup(etc / "phoenix.yaml", tmp_path / "b", now=NOW)
    evil = CONFIG.replace("127.0.0.1:9002", "203.0.113.66:80").encode()
    rewrite(result.archive, {"config/phoenix.yaml": evil}, fix_manifest=False)
    with pytest.raises(BackupError, match="does not match its sha256 in the manifest"):
        restore_backup(result.archive, tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_missing_checksum_file_is_refused(etc: Path, tmp_path: Path) -> None:
    result = create_backup(etc / "phoenix.yaml", tmp_path / "b")
    result.checksum_file.unlink()
    with pytest.raises(BackupError, match="refusing an unverified archive"):
        restore_backup(result.archive, tmp_path / "r")


@pytest.mark.parametrize("existing", [False, True])
def test_invalid_config_is_refused_and_target_untouched(
    etc: Path, tmp_path: Path, existing: bool
) -> None:
    result = create_backup(etc / "phoenix.yaml", tmp_path / "b", include_secrets=True)
    broken = CONFIG.replace("address: 127.0.0.1:9002", "address: 127.0.0.1:99999").encode()
    rewrite(result.archive, {"config/phoenix.yaml": broken})
    target = tmp_path / "live"
    if existing:
        target.mkdir()
        (target / "phoenix.yaml").write_text("current\n")
    before = tree(target) if existing else None
    with pytest.raises(BackupError) as info:
        restore_backup(result.archive, target)
    errors = info.value.errors
    assert errors[0] == (
        f"{result.archive.name}:config/phoenix.yaml: upstreams.mo.servers[1].address: "
        "port 99999 out of range (line 9)"
    )
    assert errors[-1].endswith("the archived config is invalid; nothing was restored")
    if existing:
        assert tree(target) == before
        assert sorted(p.name for p in target.iterdir()) == ["phoenix.yaml"]  # no staging left
    else:
        assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["b", "etc", *(["live"] if existing else [])]
    )


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda m: m["files"][0].update(restore_as="../escape.yaml"), "unsafe restore path"),
        (lambda m: m["files"][0].update(restore_as="/etc/passwd"), "unsafe restore path"),
        (lambda m: m["files"][0].update(mode="4755"), "mode 4755 not allowed"),
        (lambda m: m.update(format=99), "unknown format"),
        (lambda m: m.update(config="config/other.yaml"), "the config file is not listed"),
    ],
)
def test_malicious_manifest_is_refused(etc: Path, tmp_path: Path, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    result = create_backup(etc / "phoenix.yaml", tmp_path / "b")
    manifest = json.loads(members(result.archive)["manifest.json"])
    mutate(manifest)
    rewrite(result.archive, {"manifest.json": json.dumps(manifest).encode()}, fix_manifest=False)
    with pytest.raises(BackupError, match=message):
        restore_backup(result.archive, tmp_path / "r")
    assert not (tmp_path / "r").exists()
    assert not (tmp_path / "escape.yaml").exists()


def test_unlisted_member_is_refused(etc: Path, tmp_path: Path) -> None:
    result = create_backup(etc / "phoenix.yaml", tmp_path / "b")
    rewrite(result.archive, {"extra/cron.sh": b"#!/bin/sh\n"}, fix_manifest=False)
    with pytest.raises(BackupError, match=r"not listed: extra/cron\.sh"):
        restore_backup(result.archive, tmp_path / "r")


def test_failure_midway_puts_the_previous_files_back(
    etc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = create_backup(etc / "phoenix.yaml", tmp_path / "b", include_secrets=True)
    target = tmp_path / "live"
    (target / "keepalived").mkdir(parents=True)
    (target / "phoenix.yaml").write_text("old config\n")
    (target / "keepalived" / "vrrp.secret").write_text("oldsecret")
    before = tree(target)
    real_replace = os.replace
    calls: list[str] = []

    def failing_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        calls.append(str(dst))
        if str(dst).endswith("vrrp.secret") and len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        restore_backup(result.archive, target)
    monkeypatch.setattr(os, "replace", real_replace)
    assert tree(target) == before
    assert sorted(p.name for p in target.iterdir()) == ["keepalived", "phoenix.yaml"]


# -- diff ------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_semantic_diff_names_each_setting(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yaml", CONFIG)
    b = write(
        tmp_path / "b.yaml",
        CONFIG.replace("address: 127.0.0.1:9002", "address: 127.0.0.1:9002\n        weight: 3")
        + "shutdown_timeout: 10s\nlimits: {max_header_bytes: 32k}\n",
    )
    old, new = load_for_diff(a), load_for_diff(b)
    assert old.config is not None and new.config is not None
    assert semantic_diff(old.config, new.config) == [
        "upstreams.mo.servers[1].weight: 1 -> 3",
        "limits.max_header_bytes: 16k -> 32k",
        "shutdown_timeout: 30s -> 10s",
    ]


def test_semantic_diff_added_and_removed(tmp_path: Path) -> None:
    a = load_for_diff(write(tmp_path / "a.yaml", CONFIG.split("ha:")[0]))
    b = load_for_diff(
        write(tmp_path / "b.yaml", CONFIG.replace("      - address: 127.0.0.1:9002\n", ""))
    )
    assert a.config is not None and b.config is not None
    lines = semantic_diff(a.config, b.config)
    assert "upstreams.mo.servers[1].address: 127.0.0.1:9002 -> (absent)" in lines
    assert "ha.interface: (absent) -> eth0" in lines
    assert "ha.auth.secret_file: (absent) -> keepalived/vrrp.secret" in lines
    assert not any(line.startswith("ha: ") for line in lines)


def test_equivalent_spellings_are_no_difference(tmp_path: Path) -> None:
    a = load_for_diff(write(tmp_path / "a.yaml", CONFIG + "shutdown_timeout: 30s\n"))
    b = load_for_diff(write(tmp_path / "b.yaml", "# comment\n" + CONFIG + "shutdown_timeout: 30\n"))
    assert a.config is not None and b.config is not None
    assert semantic_diff(a.config, b.config) == []
    assert raw_diff(a, b) != []


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    configtool.register(parser.add_subparsers())
    args = parser.parse_args(["config", *argv])
    result: int = args.func(args)
    return result


def test_cli_diff_of_archive_and_file(
    etc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = create_backup(etc / "phoenix.yaml", tmp_path / "b")
    changed = write(
        tmp_path / "new.yaml", CONFIG.replace("virtual_router_id: 51", "virtual_router_id: 52")
    )
    assert run("diff", str(result.archive), str(etc / "phoenix.yaml")) == 0
    assert "no differences in settings" in capsys.readouterr().out
    assert run("diff", str(result.archive), str(changed)) == 1
    assert capsys.readouterr().out == "ha.virtual_router_id: 51 -> 52\n"
    assert run("diff", "--raw", str(result.archive), str(changed)) == 1
    out = capsys.readouterr().out
    assert "ha.virtual_router_id: 51 -> 52\n\n--- " in out
    assert f"--- {result.archive}:config/phoenix.yaml\n+++ {changed}\n" in out
    assert "-  virtual_router_id: 51\n+  virtual_router_id: 52\n" in out


def test_cli_diff_invalid_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write(tmp_path / "a.yaml", CONFIG)
    b = write(tmp_path / "b.yaml", CONFIG.replace("vrrp_version: 2", "vrrp_version: 5"))
    assert run("diff", str(a), str(b)) == 2
    err = capsys.readouterr().err
    assert f"{b}: ha.vrrp_version: expected 2 or 3, got the number 5 (line 13)" in err
    assert "try --raw" in err
    assert run("diff", str(a), str(tmp_path / "missing.yaml")) == 2


def test_cli_backup_and_restore(
    etc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("backup", "-c", str(etc / "phoenix.yaml"), "--to", str(tmp_path / "b")) == 0
    out = capsys.readouterr().out
    assert "left out (secret, use --include-secrets)" in out
    (archive,) = (tmp_path / "b").glob("*.tar.gz")
    assert run("restore", str(archive), "--to", str(tmp_path / "r")) == 0
    assert "restored 1 file; config:" in capsys.readouterr().out
    archive.with_name(archive.name + ".sha256").write_text("0" * 64 + "  x\n")
    assert run("restore", str(archive), "--to", str(tmp_path / "r2")) == 1
    assert "checksum mismatch" in capsys.readouterr().err
    assert run("backup", "-c", str(tmp_path / "nope.yaml"), "--to", str(tmp_path / "b")) == 1
