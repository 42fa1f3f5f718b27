"""MultiProcessingLauncher: start the processes of one node with ``spawn`` or ``fork``."""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import pickle
import signal
import time
import traceback
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.multiprocessing as mp
from torch.multiprocessing.spawn import (
    ProcessExitedException,
    ProcessRaisedException,
    start_processes,
)

from fab.core.environments import ClusterEnvironment
from fab.core.launchers import Launcher, run_process_end_callbacks
from fab.strategies.launchers._launch_plan import LaunchPlan
from fab.strategies.launchers._lifecycle import die_with_parent

StartMethod = Literal["spawn", "fork", "forkserver"]
#: What each process runs: ``(function, args, kwargs)``, pickled unless the processes are forked.
_Work = bytes | tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]
#: How long the others get to stop once one process failed, before they are killed.
FAILURE_GRACE_SECONDS = 2.0


class LaunchError(RuntimeError):
    """A process of the run failed; the message holds its rank and traceback."""


class MultiProcessingLauncher(Launcher):
    """Start ``num_processes`` processes on this node with ``torch.multiprocessing``.

    Each process gets fab's variables (``FAB_LAUNCHED``, ``MASTER_ADDR``, ``MASTER_PORT``,
    ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``NODE_RANK``) from the node's
    :class:`~fab.strategies.launchers._launch_plan.LaunchPlan` before the function runs; when it
    returns, what was registered with :func:`fab.core.launchers.at_process_end` in that process
    runs (``Fabric`` registers the strategy's ``teardown``, which destroys the process group).
    Rank 0's return value comes back to the caller. When a process fails, the others are
    stopped within ``FAILURE_GRACE_SECONDS`` (SIGTERM, then SIGKILL) and :class:`LaunchError` is
    raised with the failing rank's traceback. On a timeout or a KeyboardInterrupt every process
    is killed.

    Every process gets its own copy of the function and its arguments (a model given to
    ``launch`` included), never memory shared with the others. With ``spawn`` they are pickled:
    they must be defined at module level. ``fork`` copies them with the process (and works in
    notebooks) but must not follow CUDA initialization.
    """

    def __init__(
        self,
        cluster_environment: ClusterEnvironment,
        num_processes: int,
        num_nodes: int = 1,
        start_method: StartMethod = "spawn",
        timeout: float | None = None,
    ) -> None:
        if start_method not in multiprocessing.get_all_start_methods():
            raise ValueError(
                f"start_method={start_method!r} is not available on this platform; available: "
                f"{', '.join(multiprocessing.get_all_start_methods())}"
            )
        if num_processes < 1:
            raise ValueError(f"num_processes={num_processes}; expected at least 1")
        self.cluster_environment = cluster_environment
        self.num_processes = num_processes
        self.num_nodes = num_nodes
        self.start_method: StartMethod = start_method
        #: Seconds the whole run may take before every process is killed; None waits forever.
        self.timeout = timeout

    @property
    def is_interactive_compatible(self) -> bool:
        """Only ``fork``: ``spawn`` pickles the function by its module's name, which a notebook's
        ``__main__`` cannot give to a new interpreter."""
        return self.start_method == "fork"

    @property
    def requires_function(self) -> bool:
        return True  # the started processes run the function given to launch() and nothing else

    def launch(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        work: _Work
        if self.start_method == "fork":
            work = (function, args, kwargs)  # each fork has its own copy of memory already
        else:
            # Pickled once here and unpickled in each process, so that each gets its own copy
            # of every tensor, as a fork would. Handed to torch.multiprocessing as they are,
            # tensors move into memory shared by every process: each rank's optimizer step would
            # then be applied to one model, once per rank.
            work = _pickle_work(function, args, kwargs)
        plan = LaunchPlan.for_node(self.cluster_environment, self.num_processes, self.num_nodes)
        plan.check_port_free()
        context = mp.get_context(self.start_method)
        return_queue = context.SimpleQueue()
        error_queue = context.SimpleQueue()
        processes = start_processes(  # type: ignore[no-untyped-call]
            _run_rank,
            args=(work, plan, return_queue, error_queue),
            nprocs=self.num_processes,
            join=False,
            start_method=self.start_method,
        )
        assert processes is not None
        results: list[Any] = []
        errors: list[tuple[float, int, str]] = []
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        try:
            while True:
                _drain(return_queue, results)
                _drain(error_queue, errors)
                try:
                    finished = processes.join(timeout=0.1, grace_period=FAILURE_GRACE_SECONDS)
                except (ProcessRaisedException, ProcessExitedException) as err:
                    _drain(error_queue, errors)
                    raise LaunchError(_failure_message(err, errors)) from None
                if finished:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(
                        f"the {self.num_processes} processes did not finish within "
                        f"{self.timeout} s; they were killed"
                    )
        except BaseException:
            _kill(processes.processes)
            raise
        finally:
            _drain(return_queue, results)
            return_queue.close()
            error_queue.close()
        return pickle.loads(results[0]) if results else None


def _drain(queue: Any, into: list[Any]) -> None:
    while not queue.empty():
        into.append(queue.get())


def _failure_message(err: Exception, errors: list[tuple[float, int, str]]) -> str:
    """The traceback of the rank that failed first: the others often fail only because it left
    (a collective that lost its peer)."""
    if not errors:
        return str(err).strip()
    _, rank, trace = min(errors)
    message = f"Process {rank} (global rank {rank}) failed first:\n{trace}"
    later = sorted({r for _, r, _ in errors} - {rank})
    if later:
        message += f"\n(then rank(s) {later} failed too, most likely because it stopped)"
    return message


def _run_rank(
    local_rank: int,
    work: _Work,
    plan: LaunchPlan,
    return_queue: Any,
    error_queue: Any,
) -> None:
    """The body of each started process: set its variables, run, send rank 0's result back."""
    die_with_parent()  # a launcher killed outright leaves no worker behind
    global_rank = plan.global_rank(local_rank)
    os.environ.update(plan.variables(local_rank))
    try:
        # Unpickled after the variables are set: unpickling may initialize a device.
        function, args, kwargs = _unpickle_work(work)
        result = function(*args, **kwargs)
        if global_rank == 0:
            # Plain pickle, not torch's sharing reductions: a tensor shared through a file
            # descriptor would be gone once this process exits, before the launcher reads it.
            try:
                payload = pickle.dumps(result)
            except Exception as err:
                raise TypeError(
                    f"rank 0 returned {type(result).__name__}, which cannot be pickled to be sent "
                    f"back to the launching process ({type(err).__name__}: {err})"
                ) from err
            return_queue.put(payload)
    except BaseException:
        error_queue.put((time.time(), global_rank, traceback.format_exc()))
        raise
    # A multiprocessing child leaves through os._exit, which skips atexit handlers: end the
    # process here (the strategy's teardown destroys the process group), or gloo aborts some
    # processes at exit (SIGABRT) after the work is done.
    run_process_end_callbacks()


def _pickle_work(function: Callable[..., Any], args: Any, kwargs: Any) -> bytes:
    """``(function, args, kwargs)`` pickled by ``torch.save``, which keeps tensors that share
    memory (views, tied weights) sharing it in each copy, as a fork does."""
    buffer = io.BytesIO()
    try:
        torch.save((function, args, kwargs), buffer, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as err:
        raise TypeError(
            "strategy 'ddp_spawn' starts new Python processes and pickles the function given to "
            f"launch and its arguments, but they cannot be pickled ({type(err).__name__}: {err}). "
            "Define the function at module level (not a lambda or a nested function) and pass "
            "picklable arguments; or use strategy='ddp_fork' (Linux/macOS, no pickling) or run "
            "the script with torchrun / fab run"
        ) from err
    return buffer.getvalue()


def _unpickle_work(work: _Work) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
    if not isinstance(work, bytes):
        return work
    # fab's own bytes, made by _pickle_work in the launching process: safe to unpickle in full
    loaded: tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]] = torch.load(
        io.BytesIO(work), weights_only=False
    )
    return loaded


def _kill(processes: list[Any]) -> None:
    """SIGKILL every process still alive and reap it: nothing is left behind."""
    for process in processes:
        if process.is_alive():
            with contextlib.suppress(ProcessLookupError, OSError):
                os.kill(process.pid, signal.SIGKILL)
    for process in processes:
        process.join(timeout=5)
