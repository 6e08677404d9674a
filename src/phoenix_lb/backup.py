"""Config backup, verified restore and semantic diff (seed design 8: disaster recovery).

A backup is one gzip'd tar holding the config, every file the config refers
to, and ``manifest.json``; next to it, ``ARCHIVE.sha256`` in ``sha256sum``
format (``sha256sum -c`` checks it too)::

    manifest.json                 format, phoenix-lb version, time, host, and per
                                  file: archive name, original path, where it is
                                  restored, sha256, size, mode, owner
    config/phoenix.yaml           the config file
    files/tls/site.key            referenced files under the config's directory,
                                  by their path relative to it
    external/etc/ssl/ca.pem       referenced files elsewhere, by absolute path

**What counts as a referenced file.**  :func:`find_references` walks the
validated config model and takes every string in a field named ``cert``,
``key``, ``path`` or ``*_file``/``*_path`` (lists of them too) that names an
existing regular file; a relative path is taken relative to the config's
directory.  Fields can say otherwise with ``json_schema_extra={"backup": ...}``:
``"secret"`` (VRRP secrets: only with ``include_secrets``), ``"output"`` (files
the balancer writes, such as logs and state) or ``"skip"``.  Fields declared
before the marker existed are listed in :data:`_FIELD_KINDS`.

**Restore** verifies the archive's checksum, the manifest, and each file's
sha256 and size; writes everything into a staging directory; validates the
staged config with the real loader (:func:`~phoenix_lb.config.loader.load_config`);
and only then puts it in place: a new target directory is the staging
directory renamed, an existing one gets each file by ``os.replace`` from a
staging directory inside it (same file system), with the previous versions
put back if any replace fails.  Modes are restored exactly (keys stay 0600)
and, when running as root, owners too.  Files with absolute paths outside the
config's directory are restored under ``TARGET/external/...``; the operator
moves them (the report says so).
"""

from __future__ import annotations

import contextlib
import datetime
import difflib
import grp
import hashlib
import io
import json
import math
import os
import pwd
import shutil
import socket
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel

from phoenix_lb import __version__
from phoenix_lb.config.loader import ConfigError, format_key_path, load_config, load_config_text
from phoenix_lb.config.schema import PhoenixConfig, unit_of
from phoenix_lb.config.units import format_duration, format_size

__all__ = [
    "ARCHIVE_SUFFIX",
    "MANIFEST_NAME",
    "BackupError",
    "BackupResult",
    "Reference",
    "RestoreResult",
    "create_backup",
    "find_references",
    "load_for_diff",
    "raw_diff",
    "referenced_files",
    "restore_backup",
    "semantic_diff",
]

FORMAT = 1
MANIFEST_NAME = "manifest.json"
ARCHIVE_SUFFIX = ".tar.gz"
CHECKSUM_SUFFIX = ".sha256"

# Field names that hold file paths.
_PATH_NAMES = frozenset({"cert", "key", "path", "certificate"})
_PATH_SUFFIXES = ("_file", "_files", "_path", "_paths")

# Fields declared before the json_schema_extra marker, by model class name.
_FIELD_KINDS: dict[tuple[str, str], str] = {
    ("AccessLogConfig", "path"): "output",
    ("ErrorLogConfig", "path"): "output",
    ("RouteConfig", "path"): "skip",  # a URL path, not a file
}

# A config and its certificates are small; refuse to read a member larger
# than this from an archive (a decompression bomb would otherwise fill memory).
_MAX_MEMBER = 64 * 1024 * 1024

Kind = Literal["file", "secret"]


class BackupError(Exception):
    """Backup, restore or diff refused; :attr:`errors` holds one line per problem."""

    def __init__(self, errors: list[str] | str) -> None:
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        super().__init__("\n".join(self.errors))


# -- what a config refers to -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Reference:
    """A file the config names: where (key path), which file, and whether it is a secret."""

    key_path: str
    path: Path
    kind: Kind


def find_references(config: BaseModel, base: Path | None = None) -> list[Reference]:
    """Every existing regular file the config refers to, in config order, each once.

    ``config`` is a :class:`PhoenixConfig` (any model works: the walk is generic).

    ``base`` is the directory relative paths are resolved against (the
    config's directory; the current directory when None).
    """
    base = base if base is not None else Path.cwd()
    seen: dict[Path, int] = {}
    found: list[Reference] = []
    for key_path, value, kind in _walk(config, ()):
        candidate = Path(value)
        if not candidate.is_absolute():
            candidate = base / candidate
        try:
            if not candidate.is_file():
                continue
        except OSError:
            continue
        resolved = Path(os.path.abspath(candidate))
        if resolved in seen:
            # One file named twice: a secret wins, so it stays out of backups.
            index = seen[resolved]
            if kind == "secret" and found[index].kind != "secret":
                found[index] = Reference(found[index].key_path, resolved, "secret")
            continue
        seen[resolved] = len(found)
        found.append(Reference(format_key_path(key_path), resolved, kind))
    return found


def referenced_files(config: BaseModel, base: Path | None = None) -> list[Path]:
    """The files :func:`find_references` finds (secrets included), as paths."""
    return [reference.path for reference in find_references(config, base)]


def _walk(
    value: object, path: tuple[str | int, ...], name: str = "", kind: str = ""
) -> Iterator[tuple[tuple[str | int, ...], str, Kind]]:
    if isinstance(value, BaseModel):
        model = type(value)
        for field_name, info in model.model_fields.items():
            extra = info.json_schema_extra
            marker = extra.get("backup") if isinstance(extra, dict) else None
            field_kind = str(marker) if marker else _FIELD_KINDS.get((model.__name__, field_name))
            if field_kind in ("output", "skip"):
                continue
            yield from _walk(
                getattr(value, field_name), (*path, field_name), field_name, field_kind or ""
            )
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _walk(item, (*path, index), name, kind)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, (*path, str(key)), name, kind)
    elif isinstance(value, str) and value and _is_path_name(name):
        yield path, value, "secret" if kind == "secret" else "file"


def _is_path_name(name: str) -> bool:
    return name in _PATH_NAMES or name.endswith(_PATH_SUFFIXES)


# -- backup ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackupResult:
    """What :func:`create_backup` wrote and what it left out."""

    archive: Path
    checksum_file: Path
    sha256: str
    files: list[str]
    excluded: list[Reference]


def create_backup(
    config_path: str | os.PathLike[str],
    to_dir: str | os.PathLike[str],
    *,
    include_secrets: bool = False,
    now: datetime.datetime | None = None,
) -> BackupResult:
    """Write ``TO_DIR/phoenix-lb-backup-NAME-YYYYmmddTHHMMSSZ.tar.gz`` and its ``.sha256``.

    The config must be valid (its references come from the validated model).
    The archive is created with mode 0600: it holds private keys.
    """
    source = Path(config_path)
    try:
        config = load_config(source)
    except ConfigError as exc:
        raise BackupError(exc.errors) from None
    base = Path(os.path.abspath(source)).parent
    references = find_references(config, base)
    included = [r for r in references if include_secrets or r.kind != "secret"]
    excluded = [r for r in references if r not in included]

    when = (now or datetime.datetime.now(datetime.UTC)).astimezone(datetime.UTC)
    stamp = when.strftime("%Y%m%dT%H%M%SZ")
    target_dir = Path(to_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    archive = _unique(target_dir, f"phoenix-lb-backup-{source.stem}-{stamp}")

    entries: list[tuple[dict[str, Any], bytes]] = []
    config_data = _read_regular(source)
    config_meta = _entry(f"config/{source.name}", source, source.name, "config", [], config_data)
    entries.append((config_meta, config_data))
    used: set[str] = {f"config/{source.name}"}
    for reference in included:
        data = _read_regular(reference.path)
        try:
            relative = reference.path.relative_to(base)
            name, restore_as = f"files/{relative.as_posix()}", relative.as_posix()
        except ValueError:
            absolute = reference.path.as_posix().lstrip("/")
            name, restore_as = f"external/{absolute}", f"external/{absolute}"
        if name in used or restore_as == source.name:
            continue
        used.add(name)
        role = "secret" if reference.kind == "secret" else "referenced"
        entries.append(
            (_entry(name, reference.path, restore_as, role, [reference.key_path], data), data)
        )
    manifest = {
        "format": FORMAT,
        "phoenix_lb_version": __version__,
        "created": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host": socket.gethostname(),
        "config": f"config/{source.name}",
        "files": [meta for meta, _ in entries],
        "excluded": [
            {"original": str(r.path), "key_path": r.key_path, "reason": "secret"} for r in excluded
        ],
    }
    manifest_data = (json.dumps(manifest, indent=2) + "\n").encode()
    mtime = int(when.timestamp())

    temp = target_dir / f".{archive.name}.{os.getpid()}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
                _add(tar, MANIFEST_NAME, manifest_data, 0o644, mtime)
                for meta, data in entries:
                    _add(tar, meta["name"], data, int(meta["mode"], 8), mtime)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(temp, archive)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    digest = _sha256_file(archive)
    checksum_file = archive.with_name(archive.name + CHECKSUM_SUFFIX)
    from phoenix_lb.atomicfile import write_atomic

    write_atomic(checksum_file, f"{digest}  {archive.name}\n".encode(), 0o644)
    return BackupResult(
        archive, checksum_file, digest, [meta["name"] for meta, _ in entries], excluded
    )


def _unique(directory: Path, stem: str) -> Path:
    candidate = directory / f"{stem}{ARCHIVE_SUFFIX}"
    counter = 1
    while candidate.exists():
        candidate = directory / f"{stem}-{counter}{ARCHIVE_SUFFIX}"
        counter += 1
    return candidate


def _read_regular(path: Path) -> bytes:
    try:
        with open(path, "rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                raise BackupError(f"{path}: not a regular file")
            return file.read()
    except OSError as exc:
        raise BackupError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _entry(
    name: str, path: Path, restore_as: str, role: str, key_paths: list[str], data: bytes
) -> dict[str, Any]:
    info = os.stat(path)
    return {
        "name": name,
        "role": role,
        "original": str(Path(os.path.abspath(path))),
        "restore_as": restore_as,
        "key_paths": key_paths,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "mode": f"{stat.S_IMODE(info.st_mode) & 0o777:04o}",
        "owner": _user_name(info.st_uid),
        "group": _group_name(info.st_gid),
    }


def _user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _group_name(gid: int) -> str | None:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return None


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int, mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = mtime
    info.uname = info.gname = "root"
    tar.addfile(info, io.BytesIO(data))


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- reading an archive ----------------------------------------------------


@dataclass(slots=True)
class _Archive:
    manifest: dict[str, Any]
    files: list[dict[str, Any]]
    contents: dict[str, bytes] = field(default_factory=dict)

    @property
    def config_entry(self) -> dict[str, Any]:
        for entry in self.files:
            if entry["name"] == self.manifest["config"]:
                return entry
        raise BackupError("manifest: the config file is not listed")  # pragma: no cover


def verify_checksum(archive: Path) -> str:
    """Check ``ARCHIVE.sha256`` against the archive; return the digest."""
    checksum_file = archive.with_name(archive.name + CHECKSUM_SUFFIX)
    try:
        words = checksum_file.read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError) as exc:
        raise BackupError(
            f"{checksum_file}: cannot read the archive's checksum ({exc}); refusing an "
            "unverified archive"
        ) from None
    if not words or len(words[0]) != 64:
        raise BackupError(f"{checksum_file}: expected 'SHA256  NAME' (sha256sum format)")
    digest = _sha256_file(archive)
    if digest != words[0].lower():
        raise BackupError(
            f"{archive}: checksum mismatch (expected {words[0]}, got {digest}): the archive "
            "is damaged or was modified; refusing to restore it"
        )
    return digest


def _read_archive(archive: Path) -> _Archive:
    """Open, check the manifest against the members, and verify every file's sha256."""
    try:
        tar = tarfile.open(archive, mode="r:gz")  # noqa: SIM115 - closed by the with below
    except (OSError, tarfile.TarError) as exc:
        raise BackupError(f"{archive}: not a readable backup archive ({exc})") from None
    with tar:
        try:
            members = tar.getmembers()
        except (OSError, tarfile.TarError, EOFError) as exc:
            raise BackupError(f"{archive}: damaged archive ({exc})") from None
        by_name: dict[str, tarfile.TarInfo] = {}
        for member in members:
            if not member.isfile():
                raise BackupError(f"{archive}: unexpected non-file member {member.name!r}")
            if member.name in by_name:
                raise BackupError(f"{archive}: member {member.name!r} appears twice")
            by_name[member.name] = member
        manifest_info = by_name.pop(MANIFEST_NAME, None)
        if manifest_info is None:
            raise BackupError(f"{archive}: no {MANIFEST_NAME}: not a phoenix-lb backup")
        try:
            manifest = json.loads(_extract(tar, manifest_info, archive))
        except ValueError as exc:
            raise BackupError(f"{archive}: {MANIFEST_NAME} is not valid JSON ({exc})") from None
        files = _check_manifest(manifest, archive)
        listed = {entry["name"] for entry in files}
        extra = sorted(set(by_name) - listed)
        missing = sorted(listed - set(by_name))
        if extra or missing:
            raise BackupError(
                f"{archive}: members do not match the manifest"
                + (f"; not listed: {', '.join(extra)}" if extra else "")
                + (f"; missing: {', '.join(missing)}" if missing else "")
            )
        result = _Archive(manifest, files)
        for entry in files:
            data = _extract(tar, by_name[entry["name"]], archive)
            if len(data) != entry["size"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
                raise BackupError(
                    f"{archive}: {entry['name']}: content does not match its sha256 in the "
                    "manifest; refusing to restore"
                )
            result.contents[entry["name"]] = data
        return result


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, archive: Path) -> bytes:
    if member.size > _MAX_MEMBER:
        raise BackupError(f"{archive}: {member.name}: {member.size} bytes is too large")
    try:
        file = tar.extractfile(member)
        assert file is not None  # regular files only, checked above
        return file.read(_MAX_MEMBER + 1)
    except (OSError, tarfile.TarError, EOFError, ValueError) as exc:
        raise BackupError(f"{archive}: {member.name}: damaged ({exc})") from None


def _check_manifest(manifest: object, archive: Path) -> list[dict[str, Any]]:
    where = f"{archive}: {MANIFEST_NAME}"
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{where}: unknown format (expected format {FORMAT})")
    files = manifest.get("files")
    if not isinstance(files, list) or not files:
        raise BackupError(f"{where}: no files listed")
    targets: set[str] = set()
    for entry in files:
        if not isinstance(entry, dict):
            raise BackupError(f"{where}: malformed file entry")
        for key, kind in (("name", str), ("restore_as", str), ("sha256", str), ("mode", str)):
            if not isinstance(entry.get(key), kind):
                raise BackupError(f"{where}: file entry without {key}")
        if not isinstance(entry.get("size"), int):
            raise BackupError(f"{where}: file entry without size")
        restore_as = entry["restore_as"]
        pure = PurePosixPath(restore_as)
        unsafe = pure.is_absolute() or ".." in pure.parts or "\\" in restore_as
        if unsafe or restore_as in ("", "."):
            raise BackupError(f"{where}: unsafe restore path {restore_as!r}")
        if restore_as in targets:
            raise BackupError(f"{where}: two files restore to {restore_as!r}")
        targets.add(restore_as)
        try:
            mode = int(entry["mode"], 8)
        except ValueError:
            raise BackupError(f"{where}: bad mode {entry['mode']!r}") from None
        if mode & ~0o777:
            raise BackupError(f"{where}: {entry['name']}: mode {entry['mode']} not allowed")
    if manifest.get("config") not in {entry["name"] for entry in files}:
        raise BackupError(f"{where}: the config file is not listed")
    return files


# -- restore ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RestoreResult:
    """Where the files went."""

    config: Path
    files: list[Path]
    external: list[tuple[str, Path]]  # (original path, where it was restored)


def restore_backup(
    archive_path: str | os.PathLike[str], to_dir: str | os.PathLike[str]
) -> RestoreResult:
    """Verify, validate and atomically put a backup in place under ``to_dir``.

    Raises :class:`BackupError` (with the loader's messages when the config
    is invalid) and leaves ``to_dir`` untouched on any problem.
    """
    archive = Path(archive_path)
    verify_checksum(archive)
    content = _read_archive(archive)
    target = Path(os.path.abspath(to_dir))
    parent = target.parent
    if not parent.is_dir():
        raise BackupError(f"{parent}: no such directory")
    if target.exists() and not target.is_dir():
        raise BackupError(f"{target}: exists and is not a directory")

    # Stage inside the target when it exists (same file system for the
    # per-file renames), else next to it (renamed as a whole).
    exists = target.is_dir()
    staging = Path(
        tempfile.mkdtemp(prefix=f".{target.name}.restore-", dir=target if exists else parent)
    )
    try:
        for entry in content.files:
            _write_staged(staging / entry["restore_as"], content.contents[entry["name"]], entry)
        config_entry = content.config_entry
        staged_config = staging / config_entry["restore_as"]
        shown = f"{archive.name}:{config_entry['name']}"
        try:
            load_config(staged_config)
        except ConfigError as exc:
            prefix = f"{staged_config}:"
            raise BackupError(
                [
                    f"{shown}:{line[len(prefix) :]}" if line.startswith(prefix) else line
                    for line in exc.errors
                ]
                + [f"{shown}: the archived config is invalid; nothing was restored"]
            ) from None
        names = [entry["restore_as"] for entry in content.files]
        if exists:
            _replace_files(staging, target, names)
        else:
            # mkdtemp made it 0700; a config directory is normally 0755 (umask).
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(staging, 0o777 & ~umask)
            os.rename(staging, target)
            staging = Path()
    finally:
        if staging != Path():
            shutil.rmtree(staging, ignore_errors=True)
    external = [
        (entry["original"], target / entry["restore_as"])
        for entry in content.files
        if entry["restore_as"].startswith("external/")
    ]
    return RestoreResult(
        target / content.config_entry["restore_as"], [target / n for n in names], external
    )


def _write_staged(path: Path, data: bytes, entry: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = int(entry["mode"], 8)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
        if os.geteuid() == 0:
            _chown(file.fileno(), entry.get("owner"), entry.get("group"))
        os.fchmod(file.fileno(), mode)


def _chown(fd: int, owner: object, group: object) -> None:
    uid = gid = -1
    with contextlib.suppress(KeyError, TypeError):
        uid = pwd.getpwnam(str(owner)).pw_uid if owner else -1
    with contextlib.suppress(KeyError, TypeError):
        gid = grp.getgrnam(str(group)).gr_gid if group else -1
    if uid != -1 or gid != -1:
        os.fchown(fd, uid, gid)


def _replace_files(staging: Path, target: Path, names: list[str]) -> None:
    """Move staged files over the target's, all or none."""
    keep = staging / ".previous"
    created_dirs: list[Path] = []
    for name in names:
        # Directories first, so a failure here happens before any file moved.
        for parent in reversed(Path(name).parents[:-1]):
            directory = target / parent
            if not directory.exists():
                directory.mkdir()
                created_dirs.append(directory)
            elif not directory.is_dir():
                _remove_dirs(created_dirs)
                raise BackupError(f"{directory}: exists and is not a directory")
    done: list[tuple[str, bool]] = []
    try:
        for name in names:
            destination = target / name
            had_previous = destination.exists()
            if had_previous:
                if destination.is_dir():
                    raise BackupError(f"{destination}: is a directory")
                saved = keep / name
                saved.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(destination, saved)
                except OSError:  # a file system without hard links
                    shutil.copy2(destination, saved)
            os.replace(staging / name, destination)
            done.append((name, had_previous))
    except BaseException:
        for name, had_previous in reversed(done):
            with contextlib.suppress(OSError):
                if had_previous:
                    os.replace(keep / name, target / name)
                else:
                    os.unlink(target / name)
        _remove_dirs(created_dirs)
        raise


def _remove_dirs(directories: list[Path]) -> None:
    for directory in reversed(directories):
        with contextlib.suppress(OSError):
            directory.rmdir()


# -- diff ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A config read for diffing: its label, raw text and validated model."""

    label: str
    text: str
    config: PhoenixConfig | None
    errors: list[str]


def load_for_diff(path: str | os.PathLike[str]) -> LoadedConfig:
    """Read a config file, or the config inside a backup archive, and validate it."""
    source = Path(path)
    label = str(source)
    if source.is_file() and tarfile.is_tarfile(source):
        content = _read_archive(source)
        entry = content.config_entry
        label = f"{source}:{entry['name']}"
        data = content.contents[entry["name"]]
    else:
        try:
            data = source.read_bytes()
        except OSError as exc:
            raise BackupError(f"{source}: cannot read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BackupError(f"{label}: not UTF-8 text") from None
    try:
        return LoadedConfig(label, text, load_config_text(text, label), [])
    except ConfigError as exc:
        return LoadedConfig(label, text, None, exc.errors)


_ABSENT = object()


def semantic_diff(old: PhoenixConfig, new: PhoenixConfig) -> list[str]:
    """One line per setting that differs: ``upstreams.x.servers[1].weight: 1 -> 3``.

    Every effective value is compared, defaults included, so writing a
    default out explicitly is no difference.  A setting only one side has
    shows ``(absent)`` on the other.
    """
    before = _flatten(old)
    after = _flatten(new)
    _drop_null_parents(before, after)
    _drop_null_parents(after, before)
    keys = list(before) + [key for key in after if key not in before]
    lines = []
    for key in keys:
        a = before.get(key, _ABSENT)
        b = after.get(key, _ABSENT)
        if a == b and type(a) is type(b):
            continue
        lines.append(f"{format_key_path(key) or '(top level)'}: {_show(a)} -> {_show(b)}")
    return lines


def raw_diff(old: LoadedConfig, new: LoadedConfig) -> list[str]:
    """A unified diff of the two texts."""
    return list(
        difflib.unified_diff(
            old.text.splitlines(keepends=True),
            new.text.splitlines(keepends=True),
            fromfile=old.label,
            tofile=new.label,
        )
    )


Key = tuple[str | int, ...]


def _flatten(value: object, path: Key = (), unit: str | None = None) -> dict[Key, object]:
    """Leaf values by key path; durations and sizes as written in YAML (``30s``, ``16k``)."""
    out: dict[Key, object] = {}
    if isinstance(value, BaseModel):
        for name, info in type(value).model_fields.items():
            out.update(_flatten(getattr(value, name), (*path, name), unit_of(info)))
    elif isinstance(value, dict) and value:
        for key, item in value.items():
            out.update(_flatten(item, (*path, str(key)), unit))
    elif isinstance(value, list | tuple) and value:
        for index, item in enumerate(value):
            out.update(_flatten(item, (*path, index), unit))
    elif unit == "duration" and isinstance(value, int | float) and not isinstance(value, bool):
        out[path] = _Literal(format_duration(float(value)))
    elif unit == "size" and isinstance(value, int) and not isinstance(value, bool):
        out[path] = _Literal(format_size(value))
    else:
        out[path] = value
    return out


class _Literal(str):
    """A value already rendered for display (a duration or size with its unit)."""

    __slots__ = ()


def _drop_null_parents(side: dict[Key, object], other: dict[Key, object]) -> None:
    """``ha: null`` against a whole ``ha`` section: show the section's keys only."""
    for key in [k for k, v in side.items() if v is None or v == [] or v == {}]:
        if any(len(o) > len(key) and o[: len(key)] == key for o in other):
            del side[key]


def _show(value: object) -> str:
    if value is _ABSENT:
        return "(absent)"
    if value is None:
        return "null"
    if isinstance(value, _Literal):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}" if math.isfinite(value) else str(value)
    if isinstance(value, str):
        plain = value and value.strip() == value and value not in ("null", "true", "false")
        return value if plain and "->" not in value else json.dumps(value)
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)
