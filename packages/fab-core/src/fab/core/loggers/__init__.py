"""Logger base class. The loggers themselves live in fab-loggers."""

from fab.core.loggers.logger import Logger, metrics_to_numbers, to_number

__all__ = ["Logger", "metrics_to_numbers", "to_number"]
