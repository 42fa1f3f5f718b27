"""Deferred allocation, second half: give a model created on the meta device real memory on a
device and initialize it.

``materialize`` keeps every Parameter object (an optimizer created before still trains) and so
every weight tie; it allocates only the tensors still on the meta device, so values that are
already real (buffers that ``meta_init`` kept real, weights loaded from a checkpoint) are kept.
Each new tensor is then initialized by, in order: the user's ``init_fn``, the ``reset_parameters``
(or ``_reset_parameters``, as ``nn.MultiheadAttention`` has) of the module that owns it; a tensor
that neither writes is an error naming its module, never left silently uninitialized.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.nn import Module, Parameter
from torch.nn.parameter import is_lazy
from torch.overrides import TorchFunctionMode

from fab.lazy._tensors import swap, uninitialized_like
from fab.lazy.skipping import _NN_INITS, _is_tensor_method

#: A user's initializer: called once with the root module, it writes the tensors it knows.
InitFn = Callable[[Module], object]


class MaterializeError(RuntimeError):
    """Raised when ``materialize`` cannot initialize some of the tensors it allocated."""


@dataclass
class _Owned:
    """A tensor materialize allocated, where it lives, and whether something wrote it since."""

    tensor: Tensor
    owners: list[tuple[str, Module, str]] = field(default_factory=list)
    storage: int = 0
    written: bool = False


def materialize(
    module: Module, device: torch.device | str | None = None, init_fn: InitFn | None = None
) -> Module:
    """Allocate every parameter and buffer of ``module`` that is on the meta device on ``device``
    (the default device when None), keeping its dtype and the Parameter objects, move the other
    tensors there too, and initialize the new ones: ``init_fn(module)`` first, then
    ``reset_parameters()`` of each module with tensors that ``init_fn`` left unwritten.

    Lazy modules created on the meta device stay lazy, now on ``device``: they initialize on
    their first forward (or with :func:`fab.lazy.infer_shapes`).

    Raises :class:`MaterializeError` naming the modules whose new tensors nothing initialized.
    Returns ``module``.
    """
    target = torch.device(device) if device is not None else torch.get_default_device()
    with torch.no_grad():
        owned = _allocate(module, target)
        if any(t.device != target for t in (*module.parameters(), *module.buffers())):
            module.to(target)  # keeps the Parameter objects: it sets .data
    initialize(module, owned, init_fn)
    return module


def has_meta(module: Module) -> bool:
    """Whether any parameter or buffer of ``module`` is on the meta device (lazy ones included)."""
    return any(t.is_meta for t in (*module.parameters(), *module.buffers()))


def _allocate(module: Module, device: torch.device) -> list[_Owned]:
    """Swap every meta tensor's contents for new memory on ``device``: the Python objects stay."""
    found: dict[int, _Owned] = {}
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.is_meta:
            found.setdefault(id(tensor), _Owned(tensor))
    for entry in found.values():
        old = entry.tensor
        new: Tensor
        if is_lazy(old):
            swap(old, uninitialized_like(old, device, old.dtype))  # shape unknown: stays lazy
            continue
        new = torch.empty_like(old, device=device)
        if isinstance(old, Parameter):
            new = Parameter(new, requires_grad=old.requires_grad)
        swap(old, new)
        entry.storage = old.untyped_storage().data_ptr()
        entry.written = old.numel() == 0
    return [entry for entry in found.values() if not is_lazy(entry.tensor)]


def _own_tensors(module: Module) -> Iterator[tuple[str, Tensor]]:
    yield from module.named_parameters(recurse=False, remove_duplicate=False)
    yield from module.named_buffers(recurse=False, remove_duplicate=False)


def initialize(module: Module, owned: list[_Owned], init_fn: InitFn | None) -> None:
    """Initialize the tensors in ``owned`` (just allocated, holding garbage) as ``materialize``
    documents; raise :class:`MaterializeError` for those nothing wrote."""
    if not owned:
        return
    by_id = {id(entry.tensor): entry for entry in owned}
    for entry in owned:
        entry.owners = []
    for name, sub in module.named_modules(remove_duplicate=True):
        for attr, tensor in _own_tensors(sub):
            if id(tensor) in by_id:
                by_id[id(tensor)].owners.append((name, sub, attr))
    by_storage = {entry.storage: entry for entry in owned}
    new = {id(entry.tensor) for entry in owned}
    with torch.no_grad():
        if init_fn is not None:
            with _WriteTracker(by_storage):
                init_fn(module)
        # the user's values, and values that were real before, win over the resets
        protected = {id(e.tensor) for e in owned if e.written}
        for sub in _post_order(module):  # children before parents, as in construction
            pending = [e for e in owned if not e.written and any(o[1] is sub for o in e.owners)]
            reset = reset_method(sub)
            if not pending or reset is None:
                continue
            keep = [
                (t, t.detach().clone())
                for t in (*sub.parameters(), *sub.buffers())
                if id(t) in protected or id(t) not in new
            ]
            with _WriteTracker(by_storage):
                reset()
            for tensor, value in keep:
                tensor.detach().copy_(value)
    _mark_replaced(owned)
    missing = [e for e in owned if not e.written]
    if missing:
        raise MaterializeError(_describe_missing(missing))


def _post_order(module: Module) -> list[Module]:
    """Every submodule once, each after its children, siblings in order: the order in which
    construction would have initialized them (a tie is initialized by its first owner)."""
    order: list[Module] = []
    seen: set[int] = set()

    def visit(sub: Module) -> None:
        if id(sub) in seen:
            return
        seen.add(id(sub))
        for child in sub.children():
            visit(child)
        order.append(sub)

    visit(module)
    return order


def reset_method(module: Module) -> Callable[[], object] | None:
    """The method that initializes ``module``'s own parameters and buffers
    (``reset_parameters``, else ``_reset_parameters``), or None when it has neither."""
    for name in ("reset_parameters", "_reset_parameters"):
        method = getattr(module, name, None)
        if callable(method):
            return method  # type: ignore[no-any-return]
    return None


def _mark_replaced(owned: list[_Owned]) -> None:
    """A tensor that an initializer replaced (``self.inv_freq = ...``) by a real one counts as
    written: its owners no longer hold the garbage."""
    for entry in owned:
        if entry.written:
            continue
        current = [getattr(sub, attr, None) for _n, sub, attr in entry.owners]
        entry.written = all(
            isinstance(t, Tensor)
            and not t.is_meta
            and (t is not entry.tensor or t.untyped_storage().data_ptr() != entry.storage)
            for t in current
        )


def _describe_missing(missing: list[_Owned]) -> str:
    per_module: dict[str, list[str]] = {}
    types: dict[str, str] = {}
    for entry in missing:
        name, sub, attr = entry.owners[0]
        per_module.setdefault(name, []).append(attr)
        types[name] = type(sub).__name__
    described = ", ".join(
        f"{name or '<root>'} ({types[name]}: {', '.join(attrs)})"
        for name, attrs in per_module.items()
    )
    return (
        f"these tensors were allocated on the device but nothing initialized them: {described}. "
        "Their modules have no reset_parameters(), and no init_fn wrote them. Fix: pass "
        "`init_fn=` a function that initializes them (for buffers computed in __init__, such as "
        "RoPE frequencies, recompute them there), give the module a reset_parameters() method, or "
        "create the model under `fab.lazy.meta_init()`, which keeps buffers real"
    )


class _WriteTracker(TorchFunctionMode):
    """Marks the tensors of ``by_storage`` that an in-place operation writes while active
    (``tensor.normal_()``, ``torch.nn.init.*``, ``copy_``, ``t[...] = x``, ``out=``), also
    through ``.data`` or a view."""

    def __init__(self, by_storage: dict[int, _Owned]) -> None:
        super().__init__()
        self._by_storage = by_storage

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Sequence[type],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        for target in _written(func, args, kwargs):
            entry = self._by_storage.get(_storage(target))
            if entry is not None:
                entry.written = True
        return func(*args, **kwargs)


def _written(
    func: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
) -> list[Tensor]:
    name = getattr(func, "__name__", "")
    targets: list[Any] = []
    if name in _NN_INITS and getattr(func, "__module__", None) == "torch.nn.init":
        targets.append(args[0] if args else kwargs.get("tensor"))
    elif name == "__setitem__" or (
        name.endswith("_") and not name.endswith("__") and _is_tensor_method(func)
    ):
        targets.append(args[0] if args else None)
    out = kwargs.get("out")
    targets.extend(out if isinstance(out, tuple | list) else [out])
    return [t for t in targets if isinstance(t, Tensor) and not t.is_meta]


def _storage(tensor: Tensor) -> int:
    try:
        return tensor.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # tensor subclasses without a storage
        return -1
