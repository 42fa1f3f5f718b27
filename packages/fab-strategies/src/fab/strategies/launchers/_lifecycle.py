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

import torch.distributed as dist

#: ``prctl`` option that sends a signal to this process when its parent dies (Linux).
_PR_SET_PDEATHSIG = 1


_uncaught: list[bool] = []
#: How many of fab's hooks are running: only the outermost reports (see track_uncaught_exceptions).
_hook_depth = [0]
_on_uncaught: list[Callable[[BaseException], None]] = []

#: What gloo (and the socket under it) says when the process at the other end of a connection
#: went away: a rank that died, or one that left its process group after failing.
_LOST_PEER_MARKERS = (
    "closed by peer",
    "reset by peer",
    "broken pipe",
    "connection refused",
    "remote worker",
)


def track_uncaught_exceptions() -> None:
    """Note when the main thread dies of an exception (Ctrl-C included), for
    :func:`exiting_on_error`, and run the :func:`on_uncaught_exception` callbacks then.

    Call it again after something else replaced ``sys.excepthook`` (``init_process_group``
    installs a hook that prints the traceback with a ``[rankN]`` prefix, all at once when it
    returns): fab's hook then wraps that one too, so that the callbacks' reports come after the
    traceback, not inside it or before it. Only the outermost of fab's hooks runs them.
    """
    if getattr(sys.excepthook, "_fab_tracks_uncaught", False):
        return
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        _uncaught.append(True)
        _hook_depth[0] += 1
        try:
            previous(kind, value, tb)
        finally:
            _hook_depth[0] -= 1
        if _hook_depth[0] == 0:
            _run_uncaught_callbacks(value)

    hook._fab_tracks_uncaught = True  # type: ignore[attr-defined]
    sys.excepthook = hook


def on_uncaught_exception(callback: Callable[[BaseException], None]) -> None:
    """Call ``callback(exception)`` once when the main thread dies of an exception: after its
    traceback is printed, before the ``atexit`` handlers run (so the process group still exists,
    and the other processes have not been told anything yet)."""
    track_uncaught_exceptions()
    _on_uncaught.append(callback)


def _run_uncaught_callbacks(error: BaseException) -> None:
    callbacks = list(_on_uncaught)
    _on_uncaught.clear()
    for callback in callbacks:
        try:
            callback(error)
        except Exception as err:  # a report that fails must not hide the original error
            print(f"fab: while reporting the failure: {type(err).__name__}: {err}", file=sys.stderr)


def lost_a_peer(error: BaseException) -> bool:
    """Whether ``error`` is a collective failing because another process of the run went away
    (then that process, not this one, is where the run failed)."""
    if isinstance(error, KeyboardInterrupt) or not isinstance(error, (RuntimeError, OSError)):
        return False
    text = str(error).lower()
    return any(marker in text for marker in _LOST_PEER_MARKERS)


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
