"""Deferred allocation, first half: create a model whose parameters are on the meta device (shapes
and dtypes, no memory, no initialization), while its buffers stay real.

Inside ``meta_init()`` the model's ``__init__`` runs normally, on the default device, and every
parameter is moved to the meta device the moment it is registered (its memory was requested but
never touched, so it is never resident; the initialization ``__init__`` runs afterwards is on the
meta device and costs nothing). Buffers are kept as ``__init__`` computed them, because a
computed buffer (RoPE frequencies, a causal mask) cannot be recovered from a meta tensor.

A parameter on the meta device cannot receive values by copying (``load_state_dict`` only warns
that it is "a no-op"). Modules created inside ``meta_init()`` therefore load a state dict into
their meta tensors by assignment, converted to the dtype the model was created with, so
``model.load_state_dict(torch.load(path))`` works as it did before and ties survive.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import torch
from torch import Tensor
from torch.nn import Module, Parameter
from torch.nn.modules.module import register_module_parameter_registration_hook
from torch.nn.parameter import is_lazy

from fab.lazy._tensors import uninitialized_like

_ASSIGN = "assign_to_params_buffers"
#: Modules that already carry the load hooks.
_hooked: weakref.WeakSet[Module] = weakref.WeakSet()
#: Set on a meta Parameter replaced by assignment: its replacement, which its ties then share.
_REPLACED_BY = "_fab_replaced_by"


@contextmanager
def meta_init() -> Iterator[None]:
    """Inside the block, every parameter a module registers goes to the meta device (keeping its
    shape, dtype and ``requires_grad``); buffers stay as computed. Materialize the model with
    :func:`fab.lazy.materialize`, or load a checkpoint into it.

    The hook is global while the block is active (every thread's modules are affected)."""
    handle = register_module_parameter_registration_hook(_to_meta)  # type: ignore[arg-type]
    try:
        yield
    finally:
        handle.remove()


def _to_meta(module: Module, name: str, param: Parameter | None) -> Parameter | None:
    if param is None or param.is_meta:
        _add_load_hooks(module)
        return None
    if is_lazy(param):
        _add_load_hooks(module)
        # an UninitializedParameter, which is a Parameter
        return cast(Parameter, uninitialized_like(param, "meta", param.dtype))
    if type(param) is not Parameter:
        return None  # subclasses (quantized weights, DTensor) know their own construction
    _add_load_hooks(module)
    return Parameter(torch.empty_like(param, device="meta"), requires_grad=param.requires_grad)


def _add_load_hooks(module: Module) -> None:
    if module in _hooked:
        return
    _hooked.add(module)
    hooks = MetaAssignHooks()
    module.register_load_state_dict_pre_hook(hooks.pre)  # type: ignore[no-untyped-call]
    module.register_load_state_dict_post_hook(hooks.post)  # type: ignore[no-untyped-call]


def is_meta_assign_hook(hook: object) -> bool:
    """Whether ``hook`` (a value of a module's load-state-dict hook dicts, or its ``.hook``) is
    one that ``meta_init`` added; loaders that assign into meta tensors themselves may skip it."""
    target = getattr(hook, "hook", hook)
    return isinstance(getattr(target, "__self__", None), MetaAssignHooks)


class MetaAssignHooks:
    """The load-state-dict hooks of a module created in ``meta_init()``: before torch loads its
    own tensors, ask for assignment when some are on the meta device (converting the values to
    their dtypes, and reusing the Parameter a tied one was replaced by); afterwards, undo the
    request (torch keeps it in the state dict's metadata) and remember the replacements."""

    def __init__(self) -> None:
        self._requested: list[dict[str, Any]] = []
        self._metas: dict[str, Tensor] = {}

    def pre(
        self,
        module: Module,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        *args: Any,
    ) -> None:
        if local_metadata.get(_ASSIGN):
            return  # the caller chose assignment (and its dtype policy) already
        self._metas.clear()
        for name, tensor in (
            *module.named_parameters(recurse=False),
            *module.named_buffers(recurse=False),
        ):
            value = state_dict.get(prefix + name)
            if not tensor.is_meta or not isinstance(value, Tensor) or value.is_meta:
                continue
            self._metas[name] = tensor
            tied = getattr(tensor, _REPLACED_BY, None)
            if tied is not None:
                state_dict[prefix + name] = tied  # the same object: the tie is kept
            elif not is_lazy(tensor):
                state_dict[prefix + name] = value.to(tensor.dtype)  # keep the model's dtype
        if self._metas:
            local_metadata[_ASSIGN] = True
            self._requested.append(local_metadata)

    def post(self, module: Module, incompatible_keys: Any) -> None:
        while self._requested:
            self._requested.pop().pop(_ASSIGN, None)
        for name, old in self._metas.items():
            new = getattr(module, name, None)
            if isinstance(new, Parameter) and new is not old:
                setattr(old, _REPLACED_BY, new)
        self._metas.clear()
