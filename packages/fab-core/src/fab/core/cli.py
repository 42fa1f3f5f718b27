"""The ``fab`` command line.

``fab plugins`` lists every plugin the registry knows, ``fab run`` starts a script on several
devices or nodes (its choices come from the registry too), ``fab --version`` lists the installed
fab packages.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from importlib import metadata

from fab.core import consolidate_command, registry, run_command


def installed_versions() -> dict[str, str | None]:
    """Every first-party fab package and its installed version (None: not installed)."""
    versions: dict[str, str | None] = {}
    for name in registry.FAB_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _version_text() -> str:
    lines = [
        f"{name} {version if version is not None else '(not installed)'}"
        for name, version in installed_versions().items()
    ]
    return "\n".join(lines)


def _plugins(args: argparse.Namespace) -> int:
    groups = (
        [registry.get_registry(g) for g in args.group]
        if args.group
        else [registry.get_registry(g) for g in registry.GROUPS]
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = [row for group in groups for row in group.records(load=not args.no_load)]
        conflicts = [str(c) for group in groups for c in group.conflicts()]
    notes = [
        str(w.message) for w in caught if not issubclass(w.category, registry.PluginConflictWarning)
    ]
    if args.json:
        payload = {
            "plugins": [asdict(row) for row in rows],
            "conflicts": conflicts,
            "warnings": notes,
        }
        print(json.dumps(payload, indent=2))
        return 0
    headers = ("group", "name", "distribution", "target", "status")
    table = [
        (
            row.group.removeprefix("fab."),
            row.name,
            f"{row.distribution or '(run time)'} {row.version or ''}".strip(),
            row.target,
            f"needs {', '.join(row.missing)}" if row.status == "needs" else row.status,
        )
        for row in rows
    ]
    widths = [max([len(h)] + [len(r[i]) for r in table]) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    details = [row for row in rows if row.detail and row.status in ("error", "disabled", "needs")]
    if details:
        print("\nproblems:")
        for row in details:
            print(f"  {row.group.removeprefix('fab.')}:{row.name}: {row.detail}")
    if conflicts:
        print("\nname conflicts:")
        for text in conflicts:
            print(f"  {text}")
    for note in notes:
        print(f"\nwarning: {note}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fab", description="fab: a lightweight PyTorch training accelerator."
    )
    parser.add_argument(
        "--version", action="store_true", help="show every installed fab package and its version"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    plugins = commands.add_parser(
        "plugins", help="list every plugin: group, name, distribution, target, status or error"
    )
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    plugins.add_argument(
        "--group",
        action="append",
        choices=sorted({g.removeprefix("fab.") for g in registry.GROUPS}),
        help="only this group (repeatable)",
    )
    plugins.add_argument(
        "--no-load", action="store_true", help="do not import plugins (status 'not loaded')"
    )
    plugins.set_defaults(handler=_plugins)
    run_command.add_parser(commands)
    consolidate_command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        print(_version_text())
        return 0
    if args.command is None:
        parser.print_help()
        return 0
    try:
        result: int = args.handler(args)
    except BrokenPipeError:
        # The reader went away (`fab plugins --json | head -1`): what it wanted was printed.
        _silence_stdout()
        return 0
    return result


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush into the closed pipe
    raises nothing either."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a file descriptor (captured, closed)
        pass


if __name__ == "__main__":
    sys.exit(main())
