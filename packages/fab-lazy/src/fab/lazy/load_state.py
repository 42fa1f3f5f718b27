"""Deferred loading, the placing half: put a state dict into a model without a second copy.

``load_into(module, state_dict)`` is ``module.load_state_dict(state_dict)`` that never holds the
model twice in memory:

- a parameter or buffer that has no memory yet (on the meta device, or a lazy module's
  uninitialized one) is *assigned* the checkpoint's tensor: with a memory-mapped checkpoint
  (``lazy_load``) it becomes a view of the file, read when used, with no copy at all;
- one that has memory is *copied into* in place, one tensor at a time, and the checkpoint's pages
  are given back after each copy.

Either way the Parameter objects stay the same Python objects (``torch.utils.swap_tensors``), so an
optimizer built before keeps training them and tied weights stay tied.

The dtype policy is explicit. By default (``dtype="model"``) every tensor ends in the dtype the
model's tensor has, as ``load_state_dict`` does when it copies; torch's ``assign=True`` instead
adopts the checkpoint's dtype silently. ``dtype="checkpoint"`` adopts the checkpoint's dtypes, and
``dtype=torch.bfloat16`` (any dtype) converts every floating-point tensor to it; both replace the
data of parameters whose dtype changes (keeping the objects), so an optimizer's existing state
for them may no longer match.

Modules that load themselves (those that override ``_load_from_state_dict`` or have
load-state-dict hooks, like BatchNorm) and entries that are not parameters or buffers (extra state,
unknown keys) go through torch's ``load_state_dict``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor
from torch.nn import Module, Parameter
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import is_lazy

from fab.lazy._pages import FileBackedPages

#: "model": keep the model's dtypes; "checkpoint": adopt the checkpoint's; a dtype: convert every
#: floating-point tensor to it.
DtypePolicy = Literal["model", "checkpoint"] | torch.dtype
DeviceLike = torch.device | str | int | None


class LoadResult(NamedTuple):
    """The keys ``load_into`` did not match (as ``load_state_dict`` returns them)."""

    missing_keys: list[str]
    unexpected_keys: list[str]


@dataclass(frozen=True)
class _Target:
    module: Module
    name: str
    tensor: Tensor


def load_into(
    module: Module,
    state_dict: Mapping[str, Any],
    *,
    strict: bool = True,
    dtype: DtypePolicy = "model",
    device: DeviceLike = None,
) -> LoadResult:
    """Load ``state_dict`` into ``module`` in place, assigning where the module has no memory yet
    and copying otherwise (see the module's docstring).

    ``device`` is where tensors assigned to meta (or lazy) parameters go; by default, where the
    checkpoint's tensor is (the CPU for ``lazy_load``, memory-mapped). ``strict`` raises, as
    ``load_state_dict`` does, when keys are missing or unexpected; sizes that do not match always
    raise. Returns the missing and unexpected keys.
    """
    if not isinstance(dtype, torch.dtype) and dtype not in ("model", "checkpoint"):
        raise ValueError(f"dtype={dtype!r}: pass 'model', 'checkpoint' or a torch.dtype")
    own, delegated = _collect(module)
    pages: FileBackedPages | None = None
    handled: set[str] = set()
    loaded: set[int] = set()  # ids of tensors already loaded (tied weights have several names)
    errors: list[str] = []
    with torch.no_grad():
        for key, target in own.items():
            if key not in state_dict:
                continue
            if id(target.tensor) in loaded:
                handled.add(key)
                continue
            value = state_dict[key]
            error = _check(key, target.tensor, value)
            if error is not None:
                errors.append(error)
                continue
            current = target.tensor
            wanted = _wanted_dtype(dtype, current, value)
            if is_lazy(current) or current.is_meta:
                kept = _assign(target, value, wanted, device)
            elif wanted != current.dtype:
                kept = _assign(target, value, wanted, current.device)
            else:
                current.copy_(value)
                kept = False
            if not kept:  # the model holds its own copy: the checkpoint's pages can go
                pages = pages or FileBackedPages()
                pages.release(value)
            handled.add(key)
            loaded.add(id(current))
            del value
    missing, unexpected = _load_rest(module, state_dict, handled, delegated, dtype, device)
    if errors or (strict and (missing or unexpected)):
        raise RuntimeError(_message(module, missing, unexpected, errors))
    return LoadResult(missing, unexpected)


def _collect(module: Module) -> tuple[dict[str, _Target], dict[str, Tensor]]:
    """The module's state-dict tensors by key: those ``load_into`` loads itself, and those of
    modules that load themselves (left to torch)."""
    own: dict[str, _Target] = {}
    delegated: dict[str, Tensor] = {}

    def walk(sub: Module, prefix: str) -> None:
        custom = _loads_itself(sub)
        local: list[tuple[str, Tensor | None]] = [*sub._parameters.items()]
        local += [
            (n, b) for n, b in sub._buffers.items() if n not in sub._non_persistent_buffers_set
        ]
        for name, tensor in local:
            if tensor is None:
                continue
            if custom or not (type(tensor) in (Tensor, Parameter) or is_lazy(tensor)):
                delegated[prefix + name] = tensor
            else:
                own[prefix + name] = _Target(sub, name, tensor)
        for name, child in sub._modules.items():
            if child is not None:
                walk(child, f"{prefix}{name}.")

    walk(module, "")
    return own, delegated


def _loads_itself(module: Module) -> bool:
    """Whether ``module`` has its own loading logic that ``load_into`` must leave to torch."""
    if type(module)._load_from_state_dict is not Module._load_from_state_dict:
        return True
    if module._load_state_dict_post_hooks:
        return True
    hooks = list(module._load_state_dict_pre_hooks.values())
    if isinstance(module, LazyModuleMixin):  # its hook only materializes; assigning does that
        hooks = [h for h in hooks if getattr(h, "hook", None) != module._lazy_load_hook]
    return bool(hooks)


def _check(key: str, current: Tensor, value: object) -> str | None:
    if not isinstance(value, Tensor):
        return f'While copying the parameter named "{key}", expected a tensor from the checkpoint but received {type(value).__name__}'  # noqa: E501
    if not is_lazy(current) and value.shape != current.shape:
        return (
            f"size mismatch for {key}: copying a param with shape {value.shape} from checkpoint, "
            f"the shape in current model is {current.shape}."
        )
    return None


def _wanted_dtype(policy: DtypePolicy, current: Tensor, value: Tensor) -> torch.dtype:
    if policy == "model":
        return current.dtype
    if policy == "checkpoint":
        return value.dtype
    assert isinstance(policy, torch.dtype)
    return policy if value.is_floating_point() else current.dtype


def _assign(target: _Target, value: Tensor, dtype: torch.dtype, device: DeviceLike) -> bool:
    """Make ``target`` hold ``value`` (converted), keeping its Python object; whether it kept the
    checkpoint's memory (no conversion was needed)."""
    new = value.detach().to(device=value.device if device is None else device, dtype=dtype)
    kept = new.untyped_storage().data_ptr() == value.untyped_storage().data_ptr()
    old = target.tensor
    if isinstance(old, Parameter):
        new = Parameter(new, requires_grad=old.requires_grad)
    try:
        torch.utils.swap_tensors(old, new)  # type: ignore[no-untyped-call]
    except RuntimeError:  # the object cannot be swapped (weak references to it): replace it
        setattr(target.module, target.name, new)
    return kept


def _load_rest(
    module: Module,
    state_dict: Mapping[str, Any],
    handled: set[str],
    delegated: dict[str, Tensor],
    policy: DtypePolicy,
    device: DeviceLike,
) -> tuple[list[str], list[str]]:
    """Hand what ``load_into`` did not load to ``module.load_state_dict``; the missing and
    unexpected keys of the whole load."""
    rest: dict[str, Any] = {key: state_dict[key] for key in state_dict if key not in handled}
    # torch copies into tensors that have memory; it must assign to those that have none and to
    # those whose dtype changes. Assigning, it does so to all, and adopts the checkpoint's dtypes:
    # convert as the policy says first.
    assign = any(
        isinstance(rest.get(k), Tensor)
        and (t.is_meta or is_lazy(t) or _wanted_dtype(policy, t, rest[k]) != t.dtype)
        for k, t in delegated.items()
    )
    if assign:
        for key, current in delegated.items():
            value = rest.get(key)
            if isinstance(value, Tensor):
                where = device if current.is_meta or is_lazy(current) else current.device
                wanted = _wanted_dtype(policy, current, value)
                rest[key] = value.to(device=value.device if where is None else where, dtype=wanted)
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:
        carrier = _WithMetadata(rest)
        carrier._metadata = metadata
        rest = carrier
    swap = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(swap or assign)  # keep the objects
    try:
        result = module.load_state_dict(rest, strict=False, assign=assign)
    finally:
        torch.__future__.set_swap_module_params_on_conversion(swap)
    missing = [k for k in result.missing_keys if k not in handled]
    return missing, list(result.unexpected_keys)


class _WithMetadata(dict[str, Any]):
    """A dict that carries a state dict's ``_metadata`` (module versions) as torch's do."""

    _metadata: Any


def _message(module: Module, missing: list[str], unexpected: list[str], errors: list[str]) -> str:
    lines = []
    if missing:
        lines.append("Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ".")
    if unexpected:
        keys = ", ".join(f'"{k}"' for k in unexpected)
        lines.append(f"Unexpected key(s) in state_dict: {keys}.")
    lines += errors
    return f"Error(s) in loading state_dict for {type(module).__name__}:\n\t" + "\n\t".join(lines)
