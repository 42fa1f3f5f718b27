"""Lazy shapes: which modules of a model have not inferred their shapes yet."""

from __future__ import annotations

from torch.nn import Module
from torch.nn.parameter import is_lazy


def uninitialized_modules(module: Module) -> list[str]:
    """The qualified names of the submodules (``""`` for ``module`` itself) that still hold
    uninitialized parameters or buffers, as torch's lazy modules (``LazyLinear``, ...) do until
    their first forward."""
    names = []
    for name, sub in module.named_modules(remove_duplicate=True):
        own = [*sub.parameters(recurse=False), *sub.buffers(recurse=False)]
        if any(is_lazy(t) for t in own):
            names.append(name)
    return names


def has_uninitialized(module: Module) -> bool:
    """Whether any parameter or buffer of ``module`` is still uninitialized."""
    return any(is_lazy(t) for t in (*module.parameters(), *module.buffers()))
