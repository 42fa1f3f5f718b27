"""The ClusterEnvironment base class: where a process learns its rank and its peers."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar


class ClusterEnvironment(ABC):
    """What a scheduler or launcher (torchrun, SLURM, LSF, MPI, Kubeflow, fab's own) tells a
    process.

    Registered in the ``fab.environments`` entry-point group. Detection asks each registered
    environment ``detect()``, highest ``detect_priority`` first; the first that answers True is
    used.
    """

    #: Higher is asked first. A specific scheduler (SLURM) should rank above a generic one.
    detect_priority: ClassVar[int] = 0

    @property
    @abstractmethod
    def creates_processes_externally(self) -> bool:
        """True when something outside fab (torchrun, srun, mpirun) starts every process."""

    @property
    @abstractmethod
    def main_address(self) -> str:
        """Address of the rank-0 process, for the rendezvous."""

    @property
    @abstractmethod
    def main_port(self) -> int:
        """Port of the rank-0 process, for the rendezvous."""

    @staticmethod
    @abstractmethod
    def detect() -> bool:
        """Whether this process runs under this environment (read-only: no side effects)."""

    @abstractmethod
    def world_size(self) -> int: ...

    @abstractmethod
    def set_world_size(self, size: int) -> None: ...

    @abstractmethod
    def global_rank(self) -> int: ...

    @abstractmethod
    def set_global_rank(self, rank: int) -> None: ...

    @abstractmethod
    def local_rank(self) -> int: ...

    @abstractmethod
    def node_rank(self) -> int: ...

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        """Raise a clear error when ``devices``/``num_nodes`` contradict what the cluster says."""

    def teardown(self) -> None:
        """Undo changes to the process environment."""
