"""SLURMEnvironment: processes started by ``srun`` inside a Slurm job; automatic requeue."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable
from types import FrameType
from typing import ClassVar

from fab.core.environments import ClusterEnvironment
from fab.strategies.environments._env import env_int, main_port_from
from fab.strategies.environments.hostlist import first_host

#: Job names Slurm gives an interactive allocation (``salloc``, ``srun --pty bash``): the user
#: starts the processes, so the job is not treated as a Slurm-launched run.
INTERACTIVE_JOB_NAMES = ("bash", "interactive")

_Handler = Callable[[int, FrameType | None], object] | int | signal.Handlers | None


def _default_requeue_signal() -> signal.Signals | None:
    return None if sys.platform == "win32" else signal.SIGUSR1


def _leading_int(name: str) -> int | None:
    """``SLURM_NTASKS_PER_NODE`` and friends may read ``4`` or ``4(x2)``: the leading number."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    match = re.match(r"\d+", raw)
    if match is None:
        raise ValueError(f"the environment variable {name}={raw!r} is not an integer")
    return int(match.group())


class SLURMEnvironment(ClusterEnvironment):
    """Reads what ``srun`` sets for each task.

    - ranks: ``SLURM_PROCID`` (global), ``SLURM_LOCALID`` (on the node), ``SLURM_NODEID`` (node);
      world size ``SLURM_NTASKS``;
    - main address: ``MASTER_ADDR`` when set, else the first host of ``SLURM_NODELIST`` (or
      ``SLURM_JOB_NODELIST``), else ``127.0.0.1``;
    - main port: ``MASTER_PORT`` when set, else ``10000 + SLURM_JOB_ID % 10000``, which every task
      of the job derives alike (consecutive jobs sharing a node get different ports).

    Args:
        auto_requeue: whether :meth:`install_requeue_handler` requeues the job when
            ``requeue_signal`` arrives (ask Slurm for it: ``#SBATCH --signal=SIGUSR1@90``).
        requeue_signal: the signal; ``SIGUSR1`` by default (none on Windows).
    """

    #: Below torchelastic (torchrun inside a Slurm job wins), above LSF, Kubeflow, MPI and fab.
    detect_priority: ClassVar[int] = 40

    def __init__(
        self, auto_requeue: bool = True, requeue_signal: signal.Signals | None = None
    ) -> None:
        self.auto_requeue = auto_requeue
        self.requeue_signal = (
            requeue_signal if requeue_signal is not None else _default_requeue_signal()
        )
        self._previous_handler: _Handler = None
        self._installed_signal: signal.Signals | None = None
        #: The outcome of the last requeue attempt (set by the signal handler).
        self.last_requeue: subprocess.CompletedProcess[str] | None = None

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        explicit = os.environ.get("MASTER_ADDR", "").strip()
        if explicit:
            return explicit
        nodelist = (
            os.environ.get("SLURM_NODELIST", "").strip()
            or os.environ.get("SLURM_JOB_NODELIST", "").strip()
        )
        return first_host(nodelist) if nodelist else "127.0.0.1"

    @property
    def main_port(self) -> int:
        return main_port_from(("SLURM_JOB_ID",))

    @staticmethod
    def detect() -> bool:
        return bool(os.environ.get("SLURM_NTASKS", "").strip()) and not _is_interactive()

    @staticmethod
    def job_name() -> str | None:
        return os.environ.get("SLURM_JOB_NAME")

    @staticmethod
    def job_id() -> int | None:
        """``SLURM_JOB_ID``; None outside a job or in an interactive one."""
        raw = os.environ.get("SLURM_JOB_ID", "").strip()
        if not raw or _is_interactive():
            return None
        return int(raw)

    def world_size(self) -> int:
        return env_int("SLURM_NTASKS")

    def set_world_size(self, size: int) -> None:
        """Ignored: the world size is Slurm's (``SLURM_NTASKS``)."""

    def global_rank(self) -> int:
        return env_int("SLURM_PROCID")

    def set_global_rank(self, rank: int) -> None:
        """Ignored: the rank is Slurm's (``SLURM_PROCID``)."""

    def local_rank(self) -> int:
        return env_int("SLURM_LOCALID")

    def node_rank(self) -> int:
        return env_int("SLURM_NODEID")

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        if _is_interactive():
            return
        per_node = _leading_int("SLURM_NTASKS_PER_NODE")
        if per_node is not None and per_node != num_devices:
            raise ValueError(
                f"the Slurm job runs SLURM_NTASKS_PER_NODE={per_node} tasks per node, but "
                f"devices={num_devices}. Set devices={per_node} in Fabric, or "
                f"#SBATCH --ntasks-per-node={num_devices}"
            )
        nodes = _leading_int("SLURM_NNODES") or _leading_int("SLURM_JOB_NUM_NODES")
        if nodes is not None and nodes != num_nodes:
            raise ValueError(
                f"the Slurm job runs on SLURM_NNODES={nodes} nodes, but num_nodes={num_nodes}. "
                f"Set num_nodes={nodes} in Fabric, or #SBATCH --nodes={num_nodes}"
            )

    # -- automatic requeue ----------------------------------------------------------------------

    def requeue_job_id(self) -> str:
        """The id ``scontrol requeue`` takes: ``<array job>_<task>`` in a job array."""
        array_job = os.environ.get("SLURM_ARRAY_JOB_ID", "").strip()
        array_task = os.environ.get("SLURM_ARRAY_TASK_ID", "").strip()
        if array_job and array_task:
            return f"{array_job}_{array_task}"
        job_id = os.environ.get("SLURM_JOB_ID", "").strip()
        if not job_id:
            raise RuntimeError("cannot requeue: the environment variable SLURM_JOB_ID is not set")
        return job_id

    def requeue(self) -> subprocess.CompletedProcess[str]:
        """Run ``scontrol requeue <job>`` (what the handler does on rank 0)."""
        scontrol = shutil.which("scontrol") or "scontrol"
        return subprocess.run(
            [scontrol, "requeue", self.requeue_job_id()],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    def install_requeue_handler(self, before_requeue: Callable[[], object] | None = None) -> bool:
        """Requeue the job when ``requeue_signal`` arrives.

        On every rank the handler first calls ``before_requeue`` (a strategy saves its checkpoint
        there); then rank 0 runs ``scontrol requeue $SLURM_JOB_ID``. Returns whether a handler
        was installed: not when ``auto_requeue`` is off, there is no signal, or this is not the
        main thread (Python's signal handlers can only be set there). :meth:`teardown` puts the
        previous handler back.
        """
        sig = self.requeue_signal
        if not self.auto_requeue or sig is None:
            return False
        if threading.current_thread() is not threading.main_thread():
            warnings.warn(
                "SLURMEnvironment: the requeue handler can only be installed from the main "
                "thread; automatic requeue is off",
                RuntimeWarning,
                stacklevel=2,
            )
            return False

        def handler(signum: int, frame: FrameType | None) -> None:
            if before_requeue is not None:
                before_requeue()
            if self.global_rank() == 0:
                result = self.requeue()
                self.last_requeue = result
                if result.returncode != 0:
                    print(
                        f"fab: scontrol requeue {self.requeue_job_id()} failed "
                        f"({result.returncode}): {result.stderr.strip()}",
                        file=sys.stderr,
                    )

        previous = signal.signal(sig, handler)
        if self._installed_signal is None:
            self._previous_handler = previous
            self._installed_signal = sig
        return True

    def uninstall_requeue_handler(self) -> None:
        """Put back the handler that was there before :meth:`install_requeue_handler`."""
        if self._installed_signal is not None:
            previous = self._previous_handler
            signal.signal(
                self._installed_signal, previous if previous is not None else signal.SIG_DFL
            )
            self._installed_signal = None
            self._previous_handler = None

    def teardown(self) -> None:
        self.uninstall_requeue_handler()


def _is_interactive() -> bool:
    return os.environ.get("SLURM_JOB_NAME") in INTERACTIVE_JOB_NAMES
