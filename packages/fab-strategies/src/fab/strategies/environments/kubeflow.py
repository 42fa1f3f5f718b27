"""KubeflowEnvironment: a PyTorchJob of the Kubeflow training operator, one pod per node."""

from __future__ import annotations

import os
from typing import ClassVar

from fab.core.environments import ClusterEnvironment
from fab.strategies.environments._env import env_int, env_str
from fab.strategies.environments.fab import FAB_LAUNCHED_ENV

_REQUIRED = ("KUBERNETES_PORT", "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK")


class KubeflowEnvironment(ClusterEnvironment):
    """Reads what the Kubeflow training operator sets in each pod of a PyTorchJob.

    The operator sets ``MASTER_ADDR``/``MASTER_PORT`` (the master pod's service), ``WORLD_SIZE``
    (the number of **pods**, master and workers) and ``RANK`` (this pod's index). fab reads a pod
    as a node: ``num_nodes`` must equal ``WORLD_SIZE``, ``node_rank`` is ``RANK``, and fab's
    launcher starts ``devices`` processes in each pod (``creates_processes_externally`` is
    False), telling each its global rank and the world size (pods x devices) through
    ``set_global_rank``/``set_world_size``; until then a pod is one process (rank ``RANK`` of
    ``WORLD_SIZE``). The processes fab's launcher starts carry ``FAB_LAUNCHED=1`` and use
    :class:`FabEnvironment`, since their ``RANK`` and ``WORLD_SIZE`` count processes.

    A PyTorchJob run through torchrun (an ``elasticPolicy``, or ``torchrun`` as the command) is
    detected as torchelastic instead.
    """

    detect_priority: ClassVar[int] = 20

    def __init__(self) -> None:
        self._world_size: int | None = None
        self._global_rank: int | None = None

    @property
    def creates_processes_externally(self) -> bool:
        return False

    @property
    def main_address(self) -> str:
        return env_str("MASTER_ADDR")

    @property
    def main_port(self) -> int:
        return env_int("MASTER_PORT")

    @staticmethod
    def detect() -> bool:
        return os.environ.get(FAB_LAUNCHED_ENV) != "1" and all(
            os.environ.get(name, "").strip() for name in _REQUIRED
        )

    def num_pods(self) -> int:
        """``WORLD_SIZE`` as the operator sets it: the number of pods."""
        return env_int("WORLD_SIZE")

    def world_size(self) -> int:
        return self._world_size if self._world_size is not None else self.num_pods()

    def set_world_size(self, size: int) -> None:
        self._world_size = size

    def global_rank(self) -> int:
        return self._global_rank if self._global_rank is not None else self.node_rank()

    def set_global_rank(self, rank: int) -> None:
        self._global_rank = rank

    def local_rank(self) -> int:
        """0: the pod's first process (the others are started by fab's launcher)."""
        return 0

    def node_rank(self) -> int:
        return env_int("RANK")

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        if num_nodes != self.num_pods():
            raise ValueError(
                f"the PyTorchJob runs WORLD_SIZE={self.num_pods()} pods, but num_nodes="
                f"{num_nodes}. fab runs devices={num_devices} processes in each pod; set "
                f"num_nodes={self.num_pods()} in Fabric"
            )
