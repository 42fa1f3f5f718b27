"""TorchElasticEnvironment: processes started by ``torchrun`` (torch.distributed.elastic)."""

from __future__ import annotations

import os
import warnings
from typing import ClassVar

from fab.core.environments import ClusterEnvironment
from fab.strategies.environments._env import check_world_size, env_int, env_str

_REQUIRED = ("TORCHELASTIC_RUN_ID", "RANK", "WORLD_SIZE", "LOCAL_RANK")


class TorchElasticEnvironment(ClusterEnvironment):
    """Reads what torchrun sets: ``TORCHELASTIC_RUN_ID``, ``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``GROUP_RANK`` (the node's rank), ``MASTER_ADDR`` and
    ``MASTER_PORT``. torchrun starts every process, and the world size is torchrun's to set."""

    #: Highest of fab's environments: torchrun is often run inside a SLURM or LSF job, and then
    #: it, not the scheduler, started this process.
    detect_priority: ClassVar[int] = 50

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        return env_str("MASTER_ADDR")

    @property
    def main_port(self) -> int:
        return env_int("MASTER_PORT")

    @staticmethod
    def detect() -> bool:
        return all(os.environ.get(name, "").strip() for name in _REQUIRED)

    def world_size(self) -> int:
        return env_int("WORLD_SIZE")

    def set_world_size(self, size: int) -> None:
        if size != self.world_size():
            warnings.warn(
                f"TorchElasticEnvironment: the world size is torchrun's (WORLD_SIZE="
                f"{self.world_size()}); ignored set_world_size({size})",
                RuntimeWarning,
                stacklevel=2,
            )

    def global_rank(self) -> int:
        return env_int("RANK")

    def set_global_rank(self, rank: int) -> None:
        if rank != self.global_rank():
            warnings.warn(
                f"TorchElasticEnvironment: the rank is torchrun's (RANK={self.global_rank()}); "
                f"ignored set_global_rank({rank})",
                RuntimeWarning,
                stacklevel=2,
            )

    def local_rank(self) -> int:
        return env_int("LOCAL_RANK")

    def node_rank(self) -> int:
        return env_int("GROUP_RANK", env_int("NODE_RANK", 0))

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        local_world = os.environ.get("LOCAL_WORLD_SIZE", "").strip()
        if local_world and env_int("LOCAL_WORLD_SIZE") != num_devices:
            raise ValueError(
                f"torchrun started LOCAL_WORLD_SIZE={local_world} processes per node "
                f"(--nproc-per-node), but devices={num_devices}. Set devices to match"
            )
        check_world_size("WORLD_SIZE", self.world_size(), num_devices, num_nodes)
