"""Materialize a model that was sharded on the meta device, each rank allocating only its shards,
with the values an eager construction on one device would have given.

``init_module(empty_init=True)`` creates the parameters on the meta device and records the random
number generator's state at that moment. After sharding, every parameter still on the meta device
gets memory for its local shard. Then, one module at a time in the order construction initializes
them (children before parents), the module's ``reset_parameters`` runs on whole-size temporary
tensors with the random stream replayed from the recorded state, and each rank keeps its part:
every rank computes the same whole tensor, so the initial values agree across ranks and are
bit-identical to ``Model()`` built eagerly after the same seed, whatever the layout. The
temporaries of one module at a time are the only whole tensors ever allocated.

A module whose meta parameters nothing initializes (no ``reset_parameters``) is an error naming
it; so is initialization that used random numbers outside ``reset_parameters`` (for example
``nn.Parameter(torch.randn(...))`` in ``__init__``), which cannot be replayed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.nn import Module, Parameter

from fab.lazy import MaterializeError, reset_method


def materialize_sharded(module: Module, device: torch.device, rng_state: Tensor | None) -> None:
    """Give every tensor of ``module`` on the meta device memory on ``device`` (a sharded
    parameter: its local shard) and initialize it as an eager construction would have, replaying
    the random stream from ``rng_state`` (the state when the model was created). Other tensors
    are left as they are."""
    slots = [
        (sub, attr)
        for sub in module.modules()
        for attr, t in (*sub._parameters.items(), *sub._buffers.items())
        if t is not None and t.is_meta
    ]
    if not slots:
        return

    def allocate(tensor: Tensor) -> Tensor:
        return torch.empty_like(tensor, device=device) if tensor.is_meta else tensor

    module._apply(allocate)  # type: ignore[no-untyped-call]  # FSDP2 re-registers its sharded parameters in this step
    targets = set()
    for sub, attr in slots:
        tensor = sub._parameters.get(attr) if attr in sub._parameters else sub._buffers.get(attr)
        if tensor is not None:
            targets.add(id(tensor))
    initialize_like_eager(module, rng_state, targets)


def initialize_like_eager(module: Module, rng_state: Tensor | None, targets: set[int]) -> None:
    """Initialize the tensors of ``module`` whose ids are in ``targets`` (just allocated) with
    their modules' ``reset_parameters``, on whole-size temporaries, each rank keeping its part."""
    if not targets:
        return
    done: set[int] = set()
    missing: list[str] = []
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        if rng_state is not None:
            torch.random.set_rng_state(rng_state)
        for name, sub in _post_order(module):
            own = [
                (attr, t)
                for attr, t in (*sub._parameters.items(), *sub._buffers.items())
                if t is not None and id(t) in targets and id(t) not in done
            ]
            if not own:
                continue
            reset = reset_method(sub)
            if reset is None:
                missing.append(f"{name or '<root>'} ({type(sub).__name__})")
                continue
            _reset_whole(sub, reset, own)
            done.update(id(t) for _, t in own)
    if missing:
        raise MaterializeError(
            "these modules have parameters on the meta device that nothing initializes after "
            f"sharding: {', '.join(missing)}. They have no reset_parameters(); give them one, "
            "or load a checkpoint into the model before setup, or create the model without "
            "init_module(empty_init=True)"
        )


def _reset_whole(sub: Module, reset: Callable[[], object], own: list[tuple[str, Tensor]]) -> None:
    """Run ``reset`` on a shallow copy of ``sub`` holding whole-size temporaries, then copy each
    rank's part into the real (sharded) tensors."""
    shadow = object.__new__(type(sub))  # no __init__ (FSDP's classes run it in __new__)
    shadow.__dict__.update(sub.__dict__)
    shadow._parameters = dict(sub._parameters)
    shadow._buffers = dict(sub._buffers)
    whole: dict[str, Tensor] = {}
    for attr, tensor in own:
        full = torch.empty(tensor.shape, dtype=tensor.dtype, device=_local(tensor).device)
        whole[attr] = full
        if attr in shadow._parameters:
            shadow._parameters[attr] = Parameter(full, requires_grad=tensor.requires_grad)
        else:
            shadow._buffers[attr] = full
    bound = getattr(type(sub), getattr(reset, "__name__", "reset_parameters"))
    bound(shadow)
    for attr, tensor in own:
        value: Tensor | None = shadow._parameters.get(attr)
        if value is None:
            value = shadow._buffers.get(attr)
        _local(tensor).copy_(_my_part((whole[attr] if value is None else value).detach(), tensor))


def _my_part(full: Tensor, target: Tensor) -> Tensor:
    """The part of ``full`` that this rank holds of ``target`` (all of it unless a DTensor)."""
    from torch.distributed.tensor import DTensor, Replicate

    if not isinstance(target, DTensor):
        return full
    mesh = target.device_mesh
    replicated = DTensor.from_local(
        full,
        mesh,
        [Replicate()] * mesh.ndim,
        run_check=False,
        shape=full.shape,
        stride=full.stride(),
    )
    return replicated.redistribute(mesh, target.placements).to_local()


def _local(tensor: Tensor) -> Tensor:
    from torch.distributed.tensor import DTensor

    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def _post_order(module: Module) -> list[tuple[str, Module]]:
    """Every submodule once, children before parents, siblings in order (construction order)."""
    order: list[tuple[str, Module]] = []
    seen: set[int] = set()

    def visit(name: str, sub: Module) -> None:
        if id(sub) in seen:
            return
        seen.add(id(sub))
        for child_name, child in sub.named_children():
            visit(f"{name}.{child_name}" if name else child_name, child)
        order.append((name, sub))

    visit("", module)
    return order


def broadcast_from_rank_zero(module: Module, group: Any | None = None) -> None:
    """Make every rank's parameters and buffers equal to global rank 0's (an eagerly built model
    whose ranks were seeded differently), before sharding."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    with torch.no_grad():
        for tensor in (*module.parameters(), *module.buffers()):
            dist.broadcast(tensor.data, src=0, group=group)
