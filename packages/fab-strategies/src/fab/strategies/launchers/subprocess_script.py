"""SubprocessScriptLauncher: re-run the user's command once for every other process of the node.

This is ``strategy="ddp"``: the process the user started becomes local rank 0 and starts the
others by running the same command line again (``python train.py --lr 3e-4``, ``python -m
pkg.train``, ``python -c CODE``) with fab's variables set. No pickling, so anything works as the
function given to ``launch``; the price is that the script runs from the top in every process.

A run never outlives its failure:

- a worker that exits non-zero or is killed makes the launching process say so, stop the other
  workers and exit non-zero within seconds;
- the launching process failing (an exception, Ctrl-C) stops every worker before it exits;
- the launching process dying outright (SIGKILL) takes the workers with it: each worker asks the
  kernel to kill it when its parent dies (:func:`die_with_parent`).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import __main__
from fab.core.environments import ClusterEnvironment
from fab.core.launchers import LAUNCHER_PID_ENV, Launcher
from fab.strategies.launchers._launch_plan import LaunchPlan
from fab.strategies.launchers._lifecycle import (
    describe_exit,
    die_with_parent,
    exiting_on_error,
    lost_a_peer,
    on_uncaught_exception,
    stop_processes,
)

#: Seconds workers get to end after SIGTERM before SIGKILL.
STOP_GRACE_SECONDS = 5.0
#: Seconds the launching process gets, after a worker failed, to end by itself (a collective that
#: lost its peer raises) before it is ended.
FAILURE_EXIT_SECONDS = 3.0
#: How often the workers are checked.
POLL_SECONDS = 0.1
#: Seconds the launching process, when a collective failed because another rank went away,
#: waits for that rank's exit to name it.
LOST_PEER_WAIT_SECONDS = 10.0


class SubprocessScriptLauncher(Launcher):
    """Start local ranks ``1 .. num_processes - 1`` by re-running this process's command line.

    Args:
        cluster_environment: where the rendezvous address, port and node rank come from.
        num_processes: processes on this node (one per device).
        num_nodes: nodes of the run. With more than one, every node must be told the rendezvous
            (``MASTER_ADDR``, ``MASTER_PORT``) and its ``NODE_RANK``.
    """

    def __init__(
        self, cluster_environment: ClusterEnvironment, num_processes: int, num_nodes: int = 1
    ) -> None:
        if num_processes < 1:
            raise ValueError(f"num_processes={num_processes}; expected at least 1")
        self.cluster_environment = cluster_environment
        self.num_processes = num_processes
        self.num_nodes = num_nodes
        self._workers: _Workers | None = None

    @property
    def is_interactive_compatible(self) -> bool:
        """False: an interactive session has no script to run again (see :func:`rerun_command`)."""
        return False

    def launch(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self.cluster_environment.creates_processes_externally and self._workers is None:
            self._workers = self._start_workers()
        return function(*args, **kwargs)

    def _start_workers(self) -> _Workers:
        command = rerun_command()
        if self.num_nodes > 1:
            missing = [v for v in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK") if not os.getenv(v)]
            if missing:
                raise RuntimeError(
                    f"strategy 'ddp' on {self.num_nodes} nodes needs {', '.join(missing)} set on "
                    "every node (the address and port of node 0, and this node's index), or start "
                    "the run with `fab run --num-nodes ... --node-rank ... --main-address ...`, "
                    "torchrun or your scheduler"
                )
        plan = LaunchPlan.for_node(self.cluster_environment, self.num_processes, self.num_nodes)
        plan.check_port_free()
        # This process is local rank 0: its rendezvous is the one handed to the workers.
        os.environ["MASTER_ADDR"] = plan.main_address
        os.environ["MASTER_PORT"] = str(plan.main_port)
        workers = _Workers(own_rank=plan.global_rank(0))
        for local_rank in range(1, self.num_processes):
            variables = plan.variables(local_rank)
            variables[LAUNCHER_PID_ENV] = str(os.getpid())
            try:
                process = subprocess.Popen(command, env={**os.environ, **variables})
            except BaseException:
                workers.stop()
                raise
            workers.add(int(variables["RANK"]), process)
        workers.watch()
        return workers


def rerun_command() -> list[str]:
    """The command line that started this process, to start it again: the interpreter, its
    options and the script, module or ``-c`` code with their arguments."""
    original = list(getattr(sys, "orig_argv", []))
    interactive = hasattr(sys, "ps1") or bool(sys.flags.interactive)
    has_code = "-c" in original[1:]
    has_file = bool(getattr(__main__, "__file__", None))
    if interactive or not original or not (has_code or has_file) or sys.argv[0] in ("", "-"):
        raise RuntimeError(
            "strategy 'ddp' starts the other processes by running your script again, but this "
            "process was not started from a script (an interactive session, a notebook or code "
            "read from stdin). Use strategy='ddp_notebook' (or 'ddp_fork') here, or run a script "
            "with `fab run` or torchrun"
        )
    return [sys.executable, *original[1:]]


def adopt_launcher_lifetime() -> None:
    """In a worker started by a fab launcher (strategy ``ddp``, ``fab run``): end when the
    launching process ends. The variable is consumed, so processes this worker starts in turn do
    not inherit it."""
    launcher_pid = os.environ.pop(LAUNCHER_PID_ENV, "")
    if not launcher_pid.isdigit():
        return
    pid = int(launcher_pid)
    if os.getppid() == pid:
        die_with_parent(pid)
    elif not _alive(pid):
        os._exit(1)  # the launcher died before this worker got here


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Workers:
    """The workers this process started, watched from a thread, stopped with this process.

    Whichever way the run fails, the rank that failed is named once, on stderr, as the last word
    of the launching process (``fab: the run failed: rank 1 (pid 123) was killed by SIGKILL;
    stopping the other ranks``), and the launching process exits with code 1:

    - a worker fails while this process computes: the watching thread sees it, names it, stops the
      others and ends this process;
    - a worker fails while this process waits for it in a collective: the collective raises here
      ("Connection reset by peer"); before the traceback ends this process, the failed worker's
      exit is awaited (up to ``LOST_PEER_WAIT_SECONDS``) and named, not this process;
    - this process fails by itself: it names itself and the atexit handler stops the workers.
    """

    def __init__(self, own_rank: int) -> None:
        #: The global rank of this process, the launching one.
        self._own_rank = own_rank
        self._processes: dict[int, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        self._report_lock = threading.Lock()
        self._stopping = False
        self._reported = False

    def add(self, global_rank: int, process: subprocess.Popen[bytes]) -> None:
        self._processes[global_rank] = process

    def watch(self) -> None:
        on_uncaught_exception(self._launching_process_failed)
        atexit.register(self._at_exit)
        threading.Thread(target=self._watch, name="fab-watch-workers", daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            stop_processes(list(self._processes.values()), STOP_GRACE_SECONDS)

    def _watch(self) -> None:
        while True:
            failed = self._failed_worker()
            if failed is not None:
                self._worker_failed(*failed)
                return
            if all(p.poll() is not None for p in self._processes.values()):
                return
            time.sleep(POLL_SECONDS)

    def _failed_worker(self) -> tuple[int, subprocess.Popen[bytes], int] | None:
        """The worker that ended with a non-zero exit (the first by rank), if any."""
        for rank, process in self._processes.items():
            code = process.poll()
            if code is not None and code != 0:
                return rank, process, code
        return None

    def _report(self, message: str) -> bool:
        """Say ``message`` unless a failure was reported already; whether it was said."""
        with self._report_lock:
            if self._reported:
                return False
            self._reported = True
        _say(message)
        return True

    def _worker_failed(self, rank: int, process: subprocess.Popen[bytes], code: int) -> None:
        if self._stopping:
            return
        if not self._report(_worker_failure(rank, process, code)):
            return  # this process is failing already and said why
        self.stop()
        # A collective that lost its peer raises soon and the process ends by itself; a process
        # busy elsewhere (or waiting for a peer that never came) is ended.
        time.sleep(FAILURE_EXIT_SECONDS)
        _flush()
        os._exit(1)

    def _launching_process_failed(self, error: BaseException) -> None:
        """This process (local rank 0) dies of ``error``: name the rank the run failed on.
        Runs before the atexit handlers, while the workers are still untouched."""
        if isinstance(error, KeyboardInterrupt):
            self._report("fab: interrupted; stopping the other ranks")
            return
        failed = self._failed_worker()
        if failed is None and lost_a_peer(error):
            # A worker failed and left its process group, which broke this process's collective;
            # its exit follows within moments.
            deadline = time.monotonic() + LOST_PEER_WAIT_SECONDS
            while failed is None and time.monotonic() < deadline:
                time.sleep(POLL_SECONDS / 2)
                failed = self._failed_worker()
        if failed is not None:
            rank, process, code = failed
            self._report(
                f"{_worker_failure(rank, process, code)} (rank {self._own_rank}'s "
                f"{type(error).__name__} above is a consequence)"
            )
        elif lost_a_peer(error):
            self._report(
                f"fab: the run failed: rank {self._own_rank} (pid {os.getpid()}) lost its "
                f"connection to another rank ({type(error).__name__} above), and no rank of this "
                "node failed: look at the other nodes' output; stopping the other ranks"
            )
        else:
            self._report(
                f"fab: the run failed: rank {self._own_rank} (pid {os.getpid()}) raised "
                f"{type(error).__name__} (traceback above); stopping the other ranks"
            )

    def _at_exit(self) -> None:
        if exiting_on_error():
            self.stop()
            _flush()
            return
        # This process finished its work: wait for the workers to finish theirs.
        for process in self._processes.values():
            while process.poll() is None:
                time.sleep(POLL_SECONDS)
        failed = self._failed_worker()
        if failed is not None:
            self._report(_worker_failure(*failed))
            _flush()
            os._exit(1)


def _worker_failure(rank: int, process: subprocess.Popen[bytes], code: int) -> str:
    return (
        f"fab: the run failed: rank {rank} (pid {process.pid}) {describe_exit(code)}; stopping "
        "the other ranks"
    )


def _say(message: str) -> None:
    # From the watching thread, the process's own stderr: the main thread may be printing a
    # traceback through torch.distributed's hook, which holds sys.stderr in a buffer meanwhile.
    main = threading.current_thread() is threading.main_thread()
    stream = sys.stderr if main or sys.__stderr__ is None else sys.__stderr__
    print(message, file=stream, flush=True)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
