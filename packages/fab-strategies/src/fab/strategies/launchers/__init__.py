"""Launchers of fab-strategies: how the processes of a run are started."""

from fab.strategies.launchers.multiprocessing import LaunchError, MultiProcessingLauncher

__all__ = ["LaunchError", "MultiProcessingLauncher"]
