"""Launcher base class. The launchers themselves live in fab-strategies."""

from fab.core.launchers.launcher import LAUNCHER_PID_ENV, Launcher

__all__ = ["LAUNCHER_PID_ENV", "Launcher"]
