"""Launcher base class, and what fab's launchers share with Fabric. The launchers themselves
live in fab-strategies."""

from fab.core.launchers.interactive import check_interactive_compatible, is_interactive
from fab.core.launchers.launcher import LAUNCHER_PID_ENV, Launcher
from fab.core.launchers.process_end import at_process_end, run_process_end_callbacks

__all__ = [
    "LAUNCHER_PID_ENV",
    "Launcher",
    "at_process_end",
    "check_interactive_compatible",
    "is_interactive",
    "run_process_end_callbacks",
]
