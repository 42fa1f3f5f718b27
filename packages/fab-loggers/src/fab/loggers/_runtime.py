"""What every fab logger needs at run time: its optional library, a stand-in experiment on the
other ranks, and a last flush when the process ends."""

from __future__ import annotations

import importlib.util
import multiprocessing.util
import weakref
from collections.abc import Callable
from typing import Any

from fab.core.utilities.rank_zero import rank_zero_only


def require(module: str, logger: str, extra: str) -> None:
    """Raise a ``ModuleNotFoundError`` that says what to install when ``module`` is missing."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise ModuleNotFoundError(
            f"{logger} needs the '{module}' package, which is not installed: "
            f"pip install 'fab-loggers[{extra}]'",
            name=module,
        )


def is_global_zero() -> bool:
    return int(rank_zero_only.rank) == 0  # type: ignore[attr-defined]


class NoOpExperiment:
    """What ``logger.experiment`` is on the processes that do not log: accepts every call and
    attribute, does nothing."""

    def __getattr__(self, name: str) -> NoOpExperiment:
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> NoOpExperiment:
        return self

    def __bool__(self) -> bool:
        return False


def close_at_exit(owner: object, close: Callable[[], None]) -> None:
    """Call ``close`` once when ``owner`` is garbage-collected or the process exits normally,
    whichever comes first; a worker process that multiprocessing started (``ddp_spawn``) counts
    too. ``close`` must not refer to ``owner``."""
    finalizer = weakref.finalize(owner, close)  # on collection, and at exit of the main process
    # Workers started by multiprocessing leave with os._exit, after running these finalizers
    # (atexit is skipped there). Calling the weakref finalizer again does nothing.
    multiprocessing.util.Finalize(None, finalizer, exitpriority=10)
