"""Logger base class. The loggers themselves live in fab-loggers."""

from fab.core.loggers.logger import Logger

__all__ = ["Logger"]
