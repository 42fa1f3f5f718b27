"""Launchers of fab-strategies: how the processes of a run are started."""

from fab.core.utilities.network import PortInUseError
from fab.strategies.launchers.multiprocessing import LaunchError, MultiProcessingLauncher
from fab.strategies.launchers.subprocess_script import SubprocessScriptLauncher

__all__ = ["LaunchError", "MultiProcessingLauncher", "PortInUseError", "SubprocessScriptLauncher"]
