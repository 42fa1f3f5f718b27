"""MPIEnvironment: processes started by ``mpirun``/``mpiexec`` (Open MPI, MPICH, Intel MPI),
read from the launcher's variables; mpi4py is not needed."""

from __future__ import annotations

import os
from typing import ClassVar

from fab.core.environments import ClusterEnvironment
from fab.strategies.environments._env import check_world_size, env_int, main_port_from

#: (rank, size) variables of each MPI launcher, most specific first.
_WORLD = (("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"), ("PMI_RANK", "PMI_SIZE"))
_LOCAL_RANK = ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "PMI_LOCAL_RANK")
_LOCAL_SIZE = ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "PMI_LOCAL_SIZE")
#: Variables that identify the job, for a port every rank derives alike.
_JOB_ID = ("PMIX_NAMESPACE", "OMPI_MCA_ess_base_jobid", "PMI_JOBID")


def _first_set(names: tuple[str, ...]) -> str | None:
    for name in names:
        if os.environ.get(name, "").strip():
            return name
    return None


def _world_vars() -> tuple[str, str] | None:
    for rank, size in _WORLD:
        if os.environ.get(rank, "").strip() and os.environ.get(size, "").strip():
            return rank, size
    return None


class MPIEnvironment(ClusterEnvironment):
    """Reads the variables MPI launchers set for each process.

    - global rank and world size: ``OMPI_COMM_WORLD_RANK``/``OMPI_COMM_WORLD_SIZE`` (Open MPI),
      else ``PMI_RANK``/``PMI_SIZE`` (MPICH, Intel MPI);
    - local rank: ``OMPI_COMM_WORLD_LOCAL_RANK``, ``MPI_LOCALRANKID`` or ``PMI_LOCAL_RANK``; where
      none is set the job is taken to run on one node (local rank = global rank);
    - node rank: ``global rank // local size`` when a local size is known (ranks filled node by
      node, mpirun's default mapping; ``--map-by node`` breaks it), else 0. Open MPI's
      ``OMPI_COMM_WORLD_NODE_RANK`` is not the node's index (it is the process's rank on its node
      across all jobs), so it is not used;
    - main address: ``MASTER_ADDR``; without it ``127.0.0.1``, which is right only on one node, so
      a job on several nodes without ``MASTER_ADDR`` is refused (MPI's variables do not say which
      host runs rank 0; ``mpirun -x MASTER_ADDR=<first host>`` passes it);
    - main port: ``MASTER_PORT``, else one derived from the job id (``PMIX_NAMESPACE``,
      ``OMPI_MCA_ess_base_jobid``), else 12910.
    """

    detect_priority: ClassVar[int] = 10

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        explicit = os.environ.get("MASTER_ADDR", "").strip()
        if explicit:
            return explicit
        if self._num_nodes() > 1:
            raise RuntimeError(
                f"the MPI job runs {self.world_size()} processes on {self._num_nodes()} nodes; "
                "set MASTER_ADDR to the host of rank 0 (mpirun -x MASTER_ADDR=<host>), since "
                "MPI's variables do not say which host that is"
            )
        return "127.0.0.1"

    @property
    def main_port(self) -> int:
        return main_port_from(_JOB_ID)

    @staticmethod
    def detect() -> bool:
        return _world_vars() is not None

    def _vars(self) -> tuple[str, str]:
        found = _world_vars()
        if found is None:
            raise RuntimeError(
                "not an MPI process: neither OMPI_COMM_WORLD_RANK/OMPI_COMM_WORLD_SIZE nor "
                "PMI_RANK/PMI_SIZE is set"
            )
        return found

    def _local_size(self) -> int | None:
        name = _first_set(_LOCAL_SIZE)
        return env_int(name) if name is not None else None

    def _num_nodes(self) -> int:
        local_size = self._local_size()
        if local_size is None or local_size <= 0:
            return 1
        return -(-self.world_size() // local_size)

    def world_size(self) -> int:
        return env_int(self._vars()[1])

    def set_world_size(self, size: int) -> None:
        """Ignored: the world size is the MPI launcher's."""

    def global_rank(self) -> int:
        return env_int(self._vars()[0])

    def set_global_rank(self, rank: int) -> None:
        """Ignored: the rank is the MPI launcher's."""

    def local_rank(self) -> int:
        name = _first_set(_LOCAL_RANK)
        return env_int(name) if name is not None else self.global_rank()

    def node_rank(self) -> int:
        local_size = self._local_size()
        if local_size:
            return self.global_rank() // local_size
        return 0

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        name = _first_set(_LOCAL_SIZE)
        if name is not None and env_int(name) != num_devices:
            raise ValueError(
                f"the MPI launcher started {name}={env_int(name)} processes on this node, but "
                f"devices={num_devices}. Set devices to match (or mpirun's processes per node)"
            )
        check_world_size(self._vars()[1], self.world_size(), num_devices, num_nodes)
