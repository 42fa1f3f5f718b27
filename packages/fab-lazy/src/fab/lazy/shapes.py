"""Lazy shapes: which modules of a model have not inferred their shapes yet, and a clear error for
the places that need every shape (wrapping in DistributedDataParallel, allocating, saving)."""

from __future__ import annotations

from torch.nn import Module
from torch.nn.parameter import is_lazy

#: What the errors tell the user to do.
FIX = (
    "run `fab.lazy.infer_shapes(model, *example_inputs)` (a dry run on the meta device: nothing "
    "is computed) or one forward with a real batch first"
)


class LazyModuleError(RuntimeError):
    """Raised where a model still has lazy modules whose shapes are unknown and they are needed."""


def uninitialized_modules(module: Module) -> list[str]:
    """The qualified names of the submodules (``""`` for ``module`` itself) that still hold
    uninitialized parameters or buffers, as torch's lazy modules (``LazyLinear``, ...) do until
    their first forward."""
    return list(uninitialized_tensors(module))


def uninitialized_tensors(module: Module) -> dict[str, list[str]]:
    """For each submodule that is still lazy, the names of its own uninitialized parameters and
    buffers: ``{"encoder.0": ["weight", "bias"], ...}``."""
    found: dict[str, list[str]] = {}
    for name, sub in module.named_modules(remove_duplicate=True):
        own = [
            *sub.named_parameters(recurse=False, remove_duplicate=False),
            *sub.named_buffers(recurse=False, remove_duplicate=False),
        ]
        lazy = [tensor_name for tensor_name, tensor in own if is_lazy(tensor)]
        if lazy:
            found[name] = lazy
    return found


def has_uninitialized(module: Module) -> bool:
    """Whether any parameter or buffer of ``module`` is still uninitialized."""
    return any(is_lazy(t) for t in (*module.parameters(), *module.buffers()))


def describe_uninitialized(module: Module) -> str:
    """``"fc1 (LazyLinear: weight, bias), 2.1 (LazyBatchNorm1d: ...)"``; empty when none is."""
    parts = []
    for name, tensors in uninitialized_tensors(module).items():
        sub = module.get_submodule(name)
        parts.append(f"{name or '<root>'} ({type(sub).__name__}: {', '.join(tensors)})")
    return ", ".join(parts)


def require_initialized(module: Module, action: str) -> None:
    """Raise :class:`LazyModuleError` naming every lazy module and the fix when ``module`` still
    has uninitialized parameters or buffers; ``action`` says what needs them ("saving the
    model")."""
    described = describe_uninitialized(module)
    if described:
        raise LazyModuleError(
            f"{action} needs the shape of every parameter, but these lazy modules have not "
            f"inferred theirs yet: {described}. Fix: {FIX}."
        )
