"""Launcher base class. The launchers themselves live in fab-strategies."""

from fab.core.launchers.launcher import Launcher

__all__ = ["Launcher"]
