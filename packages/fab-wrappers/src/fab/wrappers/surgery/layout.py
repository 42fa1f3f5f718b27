"""How an activation is split over processes, and how to make it whole: the one protocol through
which surgery reaches a strategy.

A strategy (or the user) answers with a :class:`SurgeryLayout`. fab-wrappers ships the two that
torch alone can answer: :class:`LocalLayout` (one process: nothing is split) and
:class:`DataParallelLayout` (every process holds its own slice of the batch, as under DDP).
Sharded strategies (FSDP, tensor parallel) provide theirs from a ``surgery_layout(module)`` method;
see :func:`resolve_layout`.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch
from torch import Tensor
from torch.nn import Module

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup


class LayoutError(RuntimeError):
    """The split of an activation or parameter cannot be known, so it cannot be made whole."""


@runtime_checkable
class SurgeryLayout(Protocol):
    """What surgery asks the layout. Every method is called on every process, in the same order
    (they may be collectives)."""

    @property
    def is_main(self) -> bool:
        """Whether this process receives the whole captures (rank 0 of the layout)."""
        ...

    def local_view(self, module_name: str, tensor: Tensor) -> Tensor:
        """The tensor an edit function sees: whole along every model-parallel split, this
        process's slice of the batch."""
        ...

    def from_local_view(self, module_name: str, edited: Tensor, original: Tensor) -> Tensor:
        """The inverse of :meth:`local_view`: put an edited tensor back the way ``original`` was
        split."""
        ...

    def gather(self, module_name: str, tensor: Tensor, batch_dim: int) -> Tensor | None:
        """The whole activation (concatenated along ``batch_dim`` over the data-parallel
        processes, uneven slices included), as an owned copy on CPU on the main process;
        ``None`` on the others."""
        ...

    def reduce_gradient(self, parameter_name: str, grad: Tensor) -> Tensor:
        """The gradient of a parameter as one process would see it (averaged over the
        data-parallel processes as DDP does), whole; called in a backward hook."""
        ...

    def full_parameter(self, parameter_name: str, parameter: Tensor) -> Tensor:
        """The whole parameter, whatever the sharding."""
        ...


def _owned_cpu(tensor: Tensor) -> Tensor:
    """A detached copy on CPU that shares no memory with ``tensor``. (On the CPU, ``clone`` is
    the same copy as ``.to("cpu", copy=True)`` at a third less per-call cost.)"""
    detached = tensor.detach()
    return detached.clone() if detached.is_cpu else detached.to("cpu")


def _dtensor_type() -> type | None:
    """DTensor's class if torch.distributed.tensor is loaded (no DTensor exists otherwise):
    importing it costs seconds (sympy), so surgery never does."""
    module = sys.modules.get("torch.distributed.tensor")
    found = getattr(module, "DTensor", None)
    return found if isinstance(found, type) else None


def is_dtensor(tensor: Tensor) -> bool:
    dtensor = _dtensor_type()
    return dtensor is not None and isinstance(tensor, dtensor)


def _refuse_dtensor(module_name: str, tensor: Tensor, layout: str) -> None:
    dtensor = _dtensor_type()
    if dtensor is not None and isinstance(tensor, dtensor):
        placements = getattr(tensor, "placements", None)
        raise LayoutError(
            f"{module_name!r}: its tensor is a DTensor placed {placements!r} (tensor "
            f"parallel or FSDP), but the layout is {layout}, which cannot reassemble it. Set the "
            "model up with a strategy that provides a surgery layout (its surgery_layout method), "
            "or pass layout= to Surgery"
        )


class LocalLayout:
    """One process: nothing is split, the captures stay in this process."""

    @property
    def is_main(self) -> bool:
        return True

    def local_view(self, module_name: str, tensor: Tensor) -> Tensor:
        _refuse_dtensor(module_name, tensor, "LocalLayout")
        return tensor

    def from_local_view(self, module_name: str, edited: Tensor, original: Tensor) -> Tensor:
        return edited

    def gather(self, module_name: str, tensor: Tensor, batch_dim: int) -> Tensor | None:
        if type(tensor) is not Tensor:  # a plain tensor (the common case) is no DTensor
            _refuse_dtensor(module_name, tensor, "LocalLayout")
        detached = tensor.detach()  # _owned_cpu, inlined: this runs for every capture
        return detached.clone() if detached.is_cpu else detached.to("cpu")

    def reduce_gradient(self, parameter_name: str, grad: Tensor) -> Tensor:
        _refuse_dtensor(parameter_name, grad, "LocalLayout")
        return grad

    def full_parameter(self, parameter_name: str, parameter: Tensor) -> Tensor:
        _refuse_dtensor(parameter_name, parameter, "LocalLayout")
        return parameter

    def __repr__(self) -> str:
        return "LocalLayout()"


class DataParallelLayout:
    """Every process of ``group`` runs the whole model on its own slice of the batch (DDP).

    Captures are concatenated along the batch dimension in rank order on the group's first rank;
    slices may differ in size (an uneven last batch). Parameter gradients are averaged over the
    group, as DDP averages them.
    """

    def __init__(self, group: ProcessGroup | None = None) -> None:
        import torch.distributed as dist

        if not dist.is_available() or not dist.is_initialized():
            raise LayoutError(
                "DataParallelLayout needs an initialized torch.distributed process group; on one "
                "process use LocalLayout (the default when no process group exists)"
            )
        self._dist = dist
        self.group: ProcessGroup | None = group if group is not None else dist.group.WORLD
        self.size = dist.get_world_size(self.group)
        self.rank = dist.get_rank(self.group)
        self._main = (
            dist.get_global_rank(self.group, 0)
            if self.size > 1 and self.group is not None
            else dist.get_rank()
        )
        backend = str(dist.get_backend(self.group))
        self._on_cpu = backend == "gloo"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def local_view(self, module_name: str, tensor: Tensor) -> Tensor:
        _refuse_dtensor(module_name, tensor, "DataParallelLayout")
        return tensor

    def from_local_view(self, module_name: str, edited: Tensor, original: Tensor) -> Tensor:
        return edited

    def gather(self, module_name: str, tensor: Tensor, batch_dim: int) -> Tensor | None:
        _refuse_dtensor(module_name, tensor, "DataParallelLayout")
        if self.size == 1:
            return _owned_cpu(tensor)
        dist = self._dist
        if tensor.dim() == 0:
            raise LayoutError(
                f"{module_name!r}: the captured tensor is 0-dimensional and has no batch "
                "dimension to concatenate over the data-parallel processes; capture a part that "
                "has one, or pass batch_dim= naming it"
            )
        dim = batch_dim % tensor.dim()
        local = tensor.detach()
        if self._on_cpu:
            local = local.cpu()
        local = local.contiguous()
        # Every process says its shape, so the slices can differ along the batch (and only there).
        shape = torch.tensor(local.shape, dtype=torch.int64, device=local.device)
        shapes = [torch.empty_like(shape) for _ in range(self.size)]
        dist.all_gather(shapes, shape, group=self.group)
        sizes = [tuple(int(v) for v in s.tolist()) for s in shapes]
        others = {s[:dim] + s[dim + 1 :] for s in sizes}
        if len(others) != 1 or any(len(s) != local.dim() for s in sizes):
            raise LayoutError(
                f"{module_name!r}: the processes hold tensors of shapes {sizes}, which differ "
                f"outside the batch dimension {dim}; only the batch may differ under data "
                "parallel (pass batch_dim= if the batch is another dimension)"
            )
        longest = max(s[dim] for s in sizes)
        padded = local
        if local.shape[dim] < longest:
            pad_shape = list(local.shape)
            pad_shape[dim] = longest - local.shape[dim]
            padded = torch.cat([local, local.new_zeros(pad_shape)], dim=dim)
        if self.is_main:
            slices = [torch.empty_like(padded) for _ in range(self.size)]
            dist.gather(padded, slices, dst=self._main, group=self.group)
            parts = [s.narrow(dim, 0, n[dim]) for s, n in zip(slices, sizes, strict=True)]
            return torch.cat(parts, dim=dim).cpu()
        dist.gather(padded, None, dst=self._main, group=self.group)
        return None

    def reduce_gradient(self, parameter_name: str, grad: Tensor) -> Tensor:
        _refuse_dtensor(parameter_name, grad, "DataParallelLayout")
        if self.size == 1:
            return grad
        reduced = grad.detach().clone()
        self._dist.all_reduce(reduced, group=self.group)
        return reduced / self.size

    def full_parameter(self, parameter_name: str, parameter: Tensor) -> Tensor:
        if is_dtensor(parameter):
            # sharded over the data-parallel processes (FSDP): every process takes part
            whole: Tensor = parameter.full_tensor()  # type: ignore[attr-defined]
            return whole
        return parameter  # replicated (DDP): every process holds all of it

    def __repr__(self) -> str:
        return f"DataParallelLayout(size={self.size})"


def resolve_layout(model: Module, original: Module) -> SurgeryLayout:
    """The layout for ``model`` (what the user holds) whose user module is ``original``.

    In order: the strategy's answer (a ``surgery_layout(original)`` method on the strategy of a
    ``FabricModule``); a ``DistributedDataParallel`` wrapper's process group; data parallel over
    every process when the strategy's ``layout.data_parallel_size`` is the world size (FSDP); one
    process when no process group is running (or it has one process). Anything else cannot be
    known: it raises and says so.
    """
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from fab.wrappers.compiled import unwrap_compiled
    from fab.wrappers.module import FabricModule

    outer, _ = unwrap_compiled(model)
    if isinstance(outer, FabricModule):
        strategy = outer._strategy
        answer = getattr(strategy, "surgery_layout", None)
        if callable(answer):
            layout = answer(original)
            if not isinstance(layout, SurgeryLayout):
                raise TypeError(
                    f"{type(strategy).__name__}.surgery_layout returned {layout!r}, which is not "
                    "a SurgeryLayout"
                )
            return layout
        forward_module = unwrap_compiled(outer.forward_module)[0]
        if isinstance(forward_module, DistributedDataParallel):
            return DataParallelLayout(forward_module.process_group)
        if _every_process_has_its_own_batch(strategy):
            # FSDP: the model is sharded in place, activations are per-process batch slices
            return DataParallelLayout()
        if forward_module is not original and _running_many():
            raise LayoutError(
                f"the strategy {type(strategy).__name__} wraps the model in "
                f"{type(forward_module).__name__} and does not say how activations are split "
                "over its processes (it has no surgery_layout method); pass layout= to Surgery"
            )
    elif isinstance(outer, DistributedDataParallel):
        return DataParallelLayout(outer.process_group)
    if not _running_many():
        return LocalLayout()
    raise LayoutError(
        f"{dist.get_world_size()} processes are running, and surgery was given a plain "
        f"{type(original).__name__}, so how its activations are split over them cannot be known. "
        "Call surgery.bind(model) with the model fabric.setup returned, or pass "
        "layout=DataParallelLayout() (each process holds a slice of the batch) or "
        "layout=LocalLayout() (each process works alone)"
    )


def _every_process_has_its_own_batch(strategy: object) -> bool:
    """Whether the strategy's layout (``strategy.layout.data_parallel_size``) says that every
    process of the run sees a different batch (no model-parallel dimension)."""
    import torch.distributed as dist

    size = getattr(getattr(strategy, "layout", None), "data_parallel_size", None)
    return _running_many() and isinstance(size, int) and size == dist.get_world_size()


def _running_many() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
