"""What fab's two launchers work out before they start the processes of a node: the rendezvous,
the world's size, each process's global rank and the variables it is started with.

``MultiProcessingLauncher`` (spawn, fork) and ``SubprocessScriptLauncher`` (the script re-run)
differ in how they start a process, never in where it goes: both take this plan, and
``DDPStrategy`` ranks a process with the same formula.
"""

from __future__ import annotations

from dataclasses import dataclass

from fab.core.environments import ClusterEnvironment
from fab.core.utilities.network import ensure_port_free
from fab.strategies.environments.fab import FabEnvironment

#: What to do when the rendezvous port is taken.
BUSY_PORT_HINT = "Set MASTER_PORT to a free port, or unset it and fab picks a free one."


def global_rank_of(node_rank: int, processes_per_node: int, local_rank: int) -> int:
    """The global rank of local rank ``local_rank`` on node ``node_rank`` (nodes in order, each
    with ``processes_per_node`` processes)."""
    return node_rank * processes_per_node + local_rank


def world_size_of(processes_per_node: int, num_nodes: int) -> int:
    """How many processes the run has."""
    return processes_per_node * num_nodes


@dataclass(frozen=True)
class LaunchPlan:
    """Where the processes of this node go. Picklable: a spawned process gets it whole."""

    main_address: str
    main_port: int
    num_processes: int
    num_nodes: int
    node_rank: int

    @classmethod
    def for_node(
        cls, environment: ClusterEnvironment, num_processes: int, num_nodes: int
    ) -> LaunchPlan:
        """The plan of the node ``environment`` describes (its rendezvous and node rank)."""
        return cls(
            main_address=environment.main_address,
            main_port=environment.main_port,
            num_processes=num_processes,
            num_nodes=num_nodes,
            node_rank=environment.node_rank(),
        )

    @property
    def world_size(self) -> int:
        return world_size_of(self.num_processes, self.num_nodes)

    def global_rank(self, local_rank: int) -> int:
        return global_rank_of(self.node_rank, self.num_processes, local_rank)

    def check_port_free(self) -> None:
        """On node 0, whose rank 0 listens at the rendezvous: raise ``PortInUseError`` (with
        what to do) when the port is taken, before any process is started."""
        if self.node_rank == 0:
            ensure_port_free(self.main_address, self.main_port, hint=BUSY_PORT_HINT)

    def variables(self, local_rank: int) -> dict[str, str]:
        """The variables the process of ``local_rank`` is started with (see
        :class:`~fab.strategies.environments.fab.FabEnvironment`)."""
        return FabEnvironment.launch_variables(
            main_address=self.main_address,
            main_port=self.main_port,
            world_size=self.world_size,
            global_rank=self.global_rank(local_rank),
            local_rank=local_rank,
            node_rank=self.node_rank,
        )
