"""How model surgery (:mod:`fab.wrappers.surgery`) makes activations whole on a 2-D
``("data_parallel", "tensor_parallel")`` mesh: ``ModelParallelStrategy.surgery_layout``'s answer.

A tensor-parallel activation is a ``DTensor`` (what a surgery hook sees: output hooks run before the
parallel style's conversion to a local tensor), so its placements say how it is split; it is
reassembled with ``full_tensor()`` over its mesh. The processes of one tensor-parallel group share a
batch; the data-parallel groups hold different slices of it, which are concatenated along the batch
(uneven slices included) on global rank 0.

A plain tensor inside a tensor-parallel group carries no placement. It is taken as replicated only
after checking that every process of the group holds the same values (the model's input, the output
of a ``RowwiseParallel`` layer); otherwise its split cannot be known and the layout raises, naming
the module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import Tensor

from fab.strategies.layout import DATA_DIMENSIONS, Layout
from fab.wrappers.surgery import DataParallelLayout, LayoutError

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh

DATA = "data_parallel"
TENSOR = "tensor_parallel"


class MeshSurgeryLayout:
    """Surgery's layout on a ``("data_parallel", "tensor_parallel")`` device mesh."""

    def __init__(self, mesh: DeviceMesh, layout: Layout) -> None:
        names = tuple(mesh.mesh_dim_names or ())
        if names != (DATA, TENSOR):
            raise LayoutError(
                f"a surgery layout needs a mesh with the dimensions {(DATA, TENSOR)}, got {names}"
            )
        self.mesh = mesh
        self.layout = layout
        self.data_size = layout.size(DATA)
        self.tensor_size = layout.size(TENSOR)
        self._tensor_group = mesh.get_group(TENSOR) if self.tensor_size > 1 else None
        self._tensor_rank = mesh.get_local_rank(TENSOR)
        # The first process of each tensor-parallel group gathers its data-parallel group's slices.
        self._data = (
            DataParallelLayout(mesh.get_group(DATA))
            if self.data_size > 1 and self._tensor_rank == 0
            else None
        )

    @property
    def is_main(self) -> bool:
        return dist.get_rank() == 0

    # -- the protocol -------------------------------------------------------------------------

    def local_view(self, module_name: str, tensor: Tensor) -> Tensor:
        if _is_dtensor(tensor):
            _refuse_batch_split(module_name, tensor)
            whole: Tensor = tensor.full_tensor()  # type: ignore[attr-defined]
            return whole
        self._check_replicated(module_name, tensor)
        return tensor

    def from_local_view(self, module_name: str, edited: Tensor, original: Tensor) -> Tensor:
        if not _is_dtensor(original):
            return edited
        from torch.distributed.tensor import DTensor, Replicate

        placed: Any = original
        mesh = placed.device_mesh
        replicated = DTensor.from_local(edited, mesh, [Replicate()] * mesh.ndim, run_check=False)
        result: Tensor = replicated.redistribute(mesh, placed.placements)
        return result

    def gather(self, module_name: str, tensor: Tensor, batch_dim: int) -> Tensor | None:
        with torch.no_grad():
            whole = self.local_view(module_name, tensor.detach())
        if self._tensor_rank != 0:
            return None
        if self._data is None:
            return whole.detach().to("cpu", copy=True)
        return self._data.gather(module_name, whole, batch_dim)

    def reduce_gradient(self, parameter_name: str, grad: Tensor) -> Tensor:
        """Averaged over the data-parallel groups, as DDP would (the strategy syncs nothing by
        itself unless ``fully_shard`` was applied, whose sharded parameters run no tensor hook)."""
        if self.data_size == 1:
            return grad
        group = self.mesh.get_group(DATA)
        if _is_dtensor(grad):
            from torch.distributed.tensor import DTensor

            placed: Any = grad
            local = placed.to_local().detach().clone()
            dist.all_reduce(local, group=group)
            return DTensor.from_local(
                local / self.data_size, placed.device_mesh, placed.placements, run_check=False
            )
        reduced = grad.detach().clone()
        dist.all_reduce(reduced, group=group)
        return reduced / self.data_size

    def full_parameter(self, parameter_name: str, parameter: Tensor) -> Tensor:
        if _is_dtensor(parameter):
            whole: Tensor = parameter.full_tensor()  # type: ignore[attr-defined]
            return whole
        return parameter

    # -- checks ---------------------------------------------------------------------------------

    def _check_replicated(self, module_name: str, tensor: Tensor) -> None:
        """Raise unless every process of this tensor-parallel group holds the same ``tensor``."""
        group = self._tensor_group
        if group is None:
            return
        local = tensor.detach().contiguous()
        shapes: list[object] = [None] * self.tensor_size
        dist.all_gather_object(shapes, (tuple(local.shape), str(local.dtype)), group=group)
        same = all(s == shapes[0] for s in shapes)
        if same:
            values = [torch.empty_like(local) for _ in range(self.tensor_size)]
            dist.all_gather(values, local, group=group)
            same = all(torch.equal(v, values[0]) for v in values)
        if not same:
            raise LayoutError(
                f"{module_name!r}: this activation is a plain tensor (not a DTensor) that differs "
                f"between the {self.tensor_size} processes of a tensor-parallel group, so how it "
                "is split cannot be known. Capture or edit it where it is a DTensor: at the "
                "output of the parallelized module itself, or give its ParallelStyle "
                "use_local_output=False so that the next module receives a DTensor"
            )

    def __repr__(self) -> str:
        return (
            f"MeshSurgeryLayout(data_parallel={self.data_size}, tensor_parallel={self.tensor_size})"
        )


def _is_dtensor(tensor: Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def _refuse_batch_split(module_name: str, tensor: Tensor) -> None:
    """A DTensor sharded over a data-parallel dimension is the whole batch already; surgery's
    gathers expect each data-parallel group's own slice."""
    placed: Any = tensor
    from torch.distributed.tensor import Shard

    names = placed.device_mesh.mesh_dim_names or ()
    for name, placement in zip(names, placed.placements, strict=False):
        if name in DATA_DIMENSIONS and isinstance(placement, Shard):
            raise LayoutError(
                f"{module_name!r}: the DTensor is sharded over the data-parallel mesh dimension "
                f"{name!r} (placements {placed.placements}); surgery gathers each data-parallel "
                "group's own batch slice, so give it a tensor-parallel-only placement"
            )


__all__ = ["MeshSurgeryLayout"]
