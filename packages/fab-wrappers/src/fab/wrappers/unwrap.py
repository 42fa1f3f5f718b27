"""Telling wrapped objects from plain ones, and getting the plain ones back."""

from __future__ import annotations

from typing import Any

from fab.wrappers.dataloader import FabricDataLoader
from fab.wrappers.module import FabricModule
from fab.wrappers.optimizer import FabricOptimizer

_WRAPPERS = (FabricModule, FabricOptimizer, FabricDataLoader)


def is_wrapped(obj: object) -> bool:
    """Whether ``obj`` was set up by Fabric (a FabricModule, FabricOptimizer or FabricDataLoader),
    also when it was compiled with ``torch.compile`` after setup."""
    inner = getattr(obj, "_orig_mod", None)  # torch.compile's OptimizedModule
    return isinstance(obj, _WRAPPERS) or isinstance(inner, _WRAPPERS)


def unwrap(obj: Any) -> Any:
    """The object Fabric was given: the original model, optimizer or data loader."""
    inner = getattr(obj, "_orig_mod", None)
    if isinstance(inner, FabricModule):
        return inner.module
    if isinstance(obj, FabricModule):
        return obj.module
    if isinstance(obj, FabricOptimizer):
        return obj.optimizer
    if isinstance(obj, FabricDataLoader):
        return obj.dataloader
    return obj
