"""What runs when a process of the run ends: ``Fabric`` registers its strategy's ``teardown`` here
when it prepares the process (``Fabric.launch``), so that the process group is destroyed and the
strategy's plugins released however the process was started.

A process that ends normally runs the callbacks from ``atexit``, each in the order ``atexit``
gives it (the last registered first, among the other handlers, such as a launcher's that waits
for the processes it started). A process that a launcher ends with ``os._exit`` (a
multiprocessing child, which skips ``atexit``) must call :func:`run_process_end_callbacks` itself.
Each callback runs once, and only in the process that registered it (not in a forked copy).
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable


class _Callback:
    def __init__(self, function: Callable[[], object]) -> None:
        self.function = function
        self.pid = os.getpid()
        self.done = False

    def __call__(self) -> None:
        if self.done or self.pid != os.getpid():
            return
        self.done = True
        self.function()


_registered: list[_Callback] = []


def at_process_end(function: Callable[[], object]) -> None:
    """Call ``function()`` once when this process ends."""
    callback = _Callback(function)
    _registered.append(callback)
    atexit.register(callback)


def run_process_end_callbacks() -> None:
    """Run, now, the callbacks of this process not run yet, the last registered first (for a
    process that ends with ``os._exit``)."""
    while _registered:
        _registered.pop()()
