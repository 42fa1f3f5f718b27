"""Refusing, when ``Fabric`` is created, a launcher that cannot work in an interactive session."""

from __future__ import annotations

import sys

from fab.core.launchers.launcher import Launcher


def is_interactive() -> bool:
    """Whether this process is an interactive session: a REPL, ``python -i`` or a notebook."""
    return hasattr(sys, "ps1") or bool(sys.flags.interactive)


def check_interactive_compatible(launcher: Launcher | None, strategy: object) -> None:
    """Raise ``RuntimeError`` (Lightning Fabric's error) in an interactive session when
    ``launcher`` cannot start processes from it (re-running a script, spawning)."""
    if launcher is None or launcher.is_interactive_compatible or not is_interactive():
        return
    raise RuntimeError(
        f"`Fabric(strategy={strategy!r})` is not compatible with an interactive environment. "
        "Run your code as a script, or choose one of the compatible strategies: "
        "`Fabric(strategy='ddp_notebook')` (or 'ddp_fork'). In case you are spawning processes "
        "yourself, make sure to include the Fabric creation inside the worker function."
    )
