"""What every launcher needs so that a run never leaves a process behind."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import torch.distributed as dist

#: ``prctl`` option that sends a signal to this process when its parent dies (Linux).
_PR_SET_PDEATHSIG = 1


_uncaught: list[bool] = []
_hook: list[Callable[[type[BaseException], BaseException, TracebackType | None], Any]] = []


def track_uncaught_exceptions() -> None:
    """Note when the main thread dies of an exception (Ctrl-C included), for
    :func:`exiting_on_error`. Installed once per process; hooks installed later (torch.distributed
    installs one) call it in turn."""
    if _hook:
        return
    _hook.append(sys.excepthook)
    sys.excepthook = _note_uncaught


def _note_uncaught(
    kind: type[BaseException], value: BaseException, traceback: TracebackType | None
) -> None:
    _uncaught.append(True)
    _hook[0](kind, value, traceback)


def exiting_on_error() -> bool:
    """True once an exception ended the main thread (seen from ``atexit`` handlers)."""
    return bool(_uncaught)


def die_with_parent(expected_parent: int | None = None) -> None:
    """Make this process end when the process that started it ends, however that ends (SIGKILL
    included), so that a dead launcher leaves no worker behind.

    On Linux the kernel does it (``PR_SET_PDEATHSIG``); elsewhere a daemon thread checks the
    parent once a second. ``expected_parent`` closes the race of a parent that died before this
    call: if it is given and is no longer the parent, this process ends at once.
    """
    parent = os.getppid() if expected_parent is None else expected_parent
    if sys.platform.startswith("linux") and _set_parent_death_signal(signal.SIGKILL):
        if os.getppid() != parent:
            os._exit(1)
        return
    threading.Thread(
        target=_watch_parent, args=(parent,), name="fab-watch-parent", daemon=True
    ).start()


def _set_parent_death_signal(signum: int) -> bool:
    path = ctypes.util.find_library("c")
    if path is None:
        return False
    try:
        libc = ctypes.CDLL(path, use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def destroy_process_group_cleanly() -> None:
    """Destroy the default process group, if there is one. After a clean run, first release what
    still uses it (a DDP reducer) and wait for every rank, since a rank that leaves while a peer
    still talks to it can make gloo abort that peer (SIGABRT at exit). After an uncaught
    exception, no barrier: the peers may be inside another collective, and this one must not meet
    theirs."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if not exiting_on_error():
        gc.collect()
        with contextlib.suppress(Exception):  # a peer that failed is reported by the launcher
            dist.barrier()
    dist.destroy_process_group()


def stop_processes(processes: Sequence[subprocess.Popen[bytes]], grace: float) -> None:
    """SIGTERM every process still running, SIGKILL whatever is left after ``grace`` seconds, and
    reap them all."""
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait()


def describe_exit(returncode: int) -> str:
    """``exited with code 1`` or ``was killed by SIGKILL``."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"
