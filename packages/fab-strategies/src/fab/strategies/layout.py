"""The layout of a parallel run: named degrees of parallelism and the device mesh they make.

A layout answers the questions data sharding and collectives ask ("how many different batches are
there, and which one is mine?") from the mesh's named dimensions, never from ``world_size``: under
tensor parallelism the ranks of one tensor-parallel group share a batch. The dimensions are in
row-major order, outermost first, as ``init_device_mesh`` lays ranks out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh

#: The dimension of plain data parallelism (DDP's only one).
DATA_PARALLEL = "data_parallel"
#: Dimensions over which processes see different data.
DATA_DIMENSIONS = (DATA_PARALLEL, "data_parallel_replicate", "data_parallel_shard")


@dataclass(frozen=True)
class Layout:
    """Degrees of parallelism by name, outermost first: ``(("data_parallel", 2),
    ("tensor_parallel", 2))`` puts ranks 0 and 1 in one tensor-parallel group."""

    dimensions: tuple[tuple[str, int], ...]

    def __post_init__(self) -> None:
        if not self.dimensions:
            raise ValueError("a layout needs at least one dimension")
        names = [name for name, _ in self.dimensions]
        if len(set(names)) != len(names):
            raise ValueError(f"dimension names repeat: {names}")
        for name, size in self.dimensions:
            if not isinstance(size, int) or isinstance(size, bool) or size < 1:
                raise ValueError(f"dimension {name!r} has size {size!r}; give a positive int")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.dimensions)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(size for _, size in self.dimensions)

    @property
    def world_size(self) -> int:
        return math.prod(self.shape)

    def size(self, name: str) -> int:
        """The degree of dimension ``name`` (1 when the layout does not have it)."""
        return dict(self.dimensions).get(name, 1)

    @property
    def data_parallel_size(self) -> int:
        """How many different batches one step sees."""
        return math.prod(size for name, size in self.dimensions if name in DATA_DIMENSIONS)

    def coordinates(self, global_rank: int) -> dict[str, int]:
        """Where ``global_rank`` sits on each dimension."""
        if not 0 <= global_rank < self.world_size:
            raise ValueError(f"global rank {global_rank} is outside a layout of {self.world_size}")
        found: dict[str, int] = {}
        rest = global_rank
        for name, size in reversed(self.dimensions):
            found[name] = rest % size
            rest //= size
        return found

    def data_parallel_rank(self, global_rank: int) -> int:
        """Which of the ``data_parallel_size`` batches ``global_rank`` takes."""
        rank = 0
        where = self.coordinates(global_rank)
        for name, size in self.dimensions:
            if name in DATA_DIMENSIONS:
                rank = rank * size + where[name]
        return rank

    def dimensions_of(self, name: str) -> tuple[int, ...]:
        """The indexes of the dimensions a collective over ``name`` spans: the dimension of that
        name; for ``"data_parallel"`` in a layout that splits data parallelism in two (hybrid
        FSDP: ``data_parallel_replicate`` x ``data_parallel_shard``), both of them: the
        processes that take different batches."""
        if name in self.names:
            return (self.names.index(name),)
        if name == DATA_PARALLEL:
            return tuple(i for i, n in enumerate(self.names) if n in DATA_DIMENSIONS)
        accepted = sorted({*self.names, DATA_PARALLEL})
        raise ValueError(
            f"group={name!r} is not a dimension of this run's layout {dict(self.dimensions)}; "
            f"accepted names: {', '.join(repr(n) for n in accepted)}, or a ProcessGroup"
        )

    def check_world_size(self, world_size: int) -> None:
        if self.world_size != world_size:
            raise ValueError(
                f"the layout {dict(self.dimensions)} needs {self.world_size} processes, but the "
                f"run has {world_size}; make the product of the sizes equal the number of "
                "processes (devices x num_nodes)"
            )

    def build_mesh(self, device_type: str) -> DeviceMesh:
        """The ``DeviceMesh`` of this layout over the default process group."""
        from torch.distributed.device_mesh import init_device_mesh

        return init_device_mesh(device_type, self.shape, mesh_dim_names=self.names)
