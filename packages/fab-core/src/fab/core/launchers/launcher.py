"""The Launcher base class: how the processes of a run are started."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

#: Set by fab's launchers (``fab run``, strategy ``ddp``) in every process they start: the pid of
#: the process it must not outlive.
LAUNCHER_PID_ENV = "FAB_LAUNCHER_PID"


class Launcher(ABC):
    """Starts the processes of a run and calls ``function`` in each.

    Multi-process strategies (in fab-strategies) pick a launcher: re-running the script, spawning,
    forking. A single process needs none.
    """

    @property
    @abstractmethod
    def is_interactive_compatible(self) -> bool:
        """Whether it works in a notebook or a REPL (forking does; re-running a script or
        spawning does not). In an interactive session, ``Fabric(...)`` refuses a launcher that
        does not, with Lightning Fabric's error (:func:`check_interactive_compatible`)."""

    @property
    def requires_function(self) -> bool:
        """Whether the processes it starts run only the function given to ``Fabric.launch``
        (spawn, fork), so that ``launch()`` without one is an error; False where every process
        runs the whole script (re-running it, ``fab run``)."""
        return False

    @abstractmethod
    def launch(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``function(*args, **kwargs)`` in every process; return rank 0's result."""
