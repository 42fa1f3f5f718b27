"""Loggers for fab: the base class (from fab-core) under the name users know. Loggers are
registered here through the ``fab.loggers`` entry points."""

from fab.core.loggers import Logger

__all__ = ["Logger"]
