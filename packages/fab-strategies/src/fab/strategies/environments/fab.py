"""FabEnvironment: fab's own environment, used when no scheduler or launcher is detected.

fab's launcher starts the processes of a node itself and tells each one its place through torch's
standard variables (the ones ``init_process_group(init_method="env://")`` reads) plus a marker:

- ``FAB_LAUNCHED=1``: set by fab's launcher in every process it starts;
- ``MASTER_ADDR``, ``MASTER_PORT``: the rendezvous of rank 0;
- ``WORLD_SIZE``, ``RANK``: the number of processes and this process's global rank;
- ``LOCAL_RANK``, ``NODE_RANK``: this process's rank on its node, and its node's index.
"""

from __future__ import annotations

import os
from typing import ClassVar

from fab.core.environments import ClusterEnvironment
from fab.strategies.environments._env import check_world_size, env_int, find_free_port

#: The marker fab's launcher sets in every process it starts.
FAB_LAUNCHED_ENV = "FAB_LAUNCHED"
DEFAULT_MAIN_ADDRESS = "127.0.0.1"
_LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class FabEnvironment(ClusterEnvironment):
    """fab's own environment (Lightning's ``LightningEnvironment``).

    In the process the user starts, nothing is set: it is rank 0 of a world of 1 until the launcher
    calls :meth:`set_world_size` and :meth:`set_global_rank`; the rendezvous is ``127.0.0.1`` on a
    free port (chosen once per instance). In a process started by fab's launcher
    (``FAB_LAUNCHED=1``) everything is read from the variables above.
    """

    #: Lowest of fab's environments: fab's launcher starts processes only when no scheduler or
    #: launcher was detected, so any other environment that answers is the one in charge.
    detect_priority: ClassVar[int] = 0

    def __init__(self) -> None:
        self._main_port: int | None = None
        self._world_size: int | None = None
        self._global_rank: int | None = None

    @property
    def creates_processes_externally(self) -> bool:
        """True in a process that fab's launcher started (its siblings exist already)."""
        return self.detect()

    @property
    def main_address(self) -> str:
        return os.environ.get("MASTER_ADDR", "").strip() or DEFAULT_MAIN_ADDRESS

    @property
    def main_port(self) -> int:
        """``MASTER_PORT``, else a free port chosen once (meaningful on rank 0, whose launcher
        passes it on to the other processes as ``MASTER_PORT``)."""
        if os.environ.get("MASTER_PORT", "").strip():
            return env_int("MASTER_PORT")
        if self._main_port is None:
            self._main_port = find_free_port()
        return self._main_port

    @staticmethod
    def detect() -> bool:
        """True only in a process started by fab's launcher."""
        return os.environ.get(FAB_LAUNCHED_ENV) == "1" and all(
            os.environ.get(name, "").strip() for name in _LAUNCH_VARIABLES
        )

    def world_size(self) -> int:
        if self._world_size is not None:
            return self._world_size
        return env_int("WORLD_SIZE", 1)

    def set_world_size(self, size: int) -> None:
        self._world_size = size

    def global_rank(self) -> int:
        if self._global_rank is not None:
            return self._global_rank
        return env_int("RANK", 0)

    def set_global_rank(self, rank: int) -> None:
        self._global_rank = rank

    def local_rank(self) -> int:
        return env_int("LOCAL_RANK", 0)

    def node_rank(self) -> int:
        return env_int("NODE_RANK", env_int("GROUP_RANK", 0))

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        if self.detect():
            check_world_size("WORLD_SIZE", env_int("WORLD_SIZE"), num_devices, num_nodes)

    @staticmethod
    def launch_variables(
        *,
        main_address: str,
        main_port: int,
        world_size: int,
        global_rank: int,
        local_rank: int,
        node_rank: int,
    ) -> dict[str, str]:
        """The variables fab's launcher sets in a process it starts (for the launcher)."""
        return {
            FAB_LAUNCHED_ENV: "1",
            "MASTER_ADDR": main_address,
            "MASTER_PORT": str(main_port),
            "WORLD_SIZE": str(world_size),
            "RANK": str(global_rank),
            "LOCAL_RANK": str(local_rank),
            "NODE_RANK": str(node_rank),
        }
