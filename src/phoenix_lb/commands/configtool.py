"""``phoenix-lb config backup|restore|diff``: disaster recovery for the configuration.

* ``config backup -c FILE --to DIR [--include-secrets]``: a timestamped
  ``.tar.gz`` of the config and every file it refers to, with a manifest and
  a ``.sha256`` next to it.  Exit 0, or 1 when the config is invalid or a file
  cannot be read.
* ``config restore ARCHIVE --to DIR``: verify, validate, then put in place
  atomically.  Exit 0, or 1 with nothing changed.
* ``config diff A B [--raw]``: A and B are config files or backup archives.
  Exit 0 when they are the same, 1 when they differ, 2 on trouble (like
  diff(1)).

The work is done in :mod:`phoenix_lb.backup`.
"""

from __future__ import annotations

import argparse
import sys


def cmd_backup(args: argparse.Namespace) -> int:
    from phoenix_lb.backup import BackupError, create_backup

    try:
        result = create_backup(args.config, args.to, include_secrets=args.include_secrets)
    except BackupError as exc:
        _errors(exc.errors)
        return 1
    except OSError as exc:
        _errors([f"{args.to}: {exc.strerror or exc}"])
        return 1
    print(f"backup: {result.archive}")
    print(f"sha256: {result.sha256} ({result.checksum_file})")
    for name in result.files:
        print(f"  {name}")
    for reference in result.excluded:
        print(
            f"  left out (secret, use --include-secrets): {reference.path} ({reference.key_path})"
        )
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from phoenix_lb.backup import BackupError, restore_backup

    try:
        result = restore_backup(args.archive, args.to)
    except BackupError as exc:
        _errors(exc.errors)
        return 1
    except OSError as exc:
        _errors([f"restore failed, nothing changed: {exc}"])
        return 1
    count = len(result.files)
    print(f"restored {count} file{'' if count == 1 else 's'}; config: {result.config} (validated)")
    for original, restored in result.external:
        print(f"  {original} was outside the config directory: restored as {restored}; move it")
    print(f"next: phoenix-lb check -c {result.config}, then reload or restart the balancer")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from phoenix_lb.backup import BackupError, load_for_diff, raw_diff, semantic_diff

    try:
        old = load_for_diff(args.a)
        new = load_for_diff(args.b)
    except BackupError as exc:
        _errors(exc.errors)
        return 2
    text_lines = raw_diff(old, new) if args.raw else []
    if old.errors or new.errors:
        _errors(old.errors + new.errors)
        hint = "" if args.raw else "; try --raw"
        _errors([f"cannot compare settings of an invalid config{hint}"])
        sys.stdout.writelines(text_lines)
        return 2
    assert old.config is not None and new.config is not None
    lines = semantic_diff(old.config, new.config)
    for line in lines:
        print(line)
    if not lines:
        print(f"no differences in settings between {old.label} and {new.label}")
    if text_lines:
        print()
        sys.stdout.writelines(text_lines)
    return 1 if lines or text_lines else 0


def _errors(lines: list[str]) -> None:
    for line in lines:
        print(line, file=sys.stderr)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    config = sub.add_parser(
        "config",
        help="back up, restore and compare configurations",
        description="Disaster recovery for the configuration (see docs/runbook.md).",
    )
    actions = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")

    backup = actions.add_parser(
        "backup", help="archive the config and the files it refers to, with checksums"
    )
    backup.add_argument("-c", "--config", required=True, metavar="FILE", help="YAML config")
    backup.add_argument("--to", required=True, metavar="DIR", help="directory for the archive")
    backup.add_argument(
        "--include-secrets",
        action="store_true",
        help="also archive the keepalived/VRRP secret file (left out by default)",
    )
    backup.set_defaults(func=cmd_backup)

    restore = actions.add_parser(
        "restore", help="verify an archive, validate its config, put it in place atomically"
    )
    restore.add_argument("archive", metavar="ARCHIVE", help="a .tar.gz made by config backup")
    restore.add_argument("--to", required=True, metavar="DIR", help="config directory to restore")
    restore.set_defaults(func=cmd_restore)

    diff = actions.add_parser(
        "diff", help="compare two configs (files or backup archives) setting by setting"
    )
    diff.add_argument("a", metavar="A", help="config file or backup archive")
    diff.add_argument("b", metavar="B", help="config file or backup archive")
    diff.add_argument("--raw", action="store_true", help="also show a unified diff of the text")
    diff.set_defaults(func=cmd_diff)
