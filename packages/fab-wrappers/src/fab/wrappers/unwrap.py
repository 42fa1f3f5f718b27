"""Telling wrapped objects from plain ones, and getting the plain ones back."""

from __future__ import annotations

from typing import Any

import torch

from fab.wrappers.compiled import unwrap_compiled
from fab.wrappers.dataloader import FabricDataLoader
from fab.wrappers.module import FabricModule
from fab.wrappers.optimizer import FabricOptimizer

_WRAPPERS = (FabricModule, FabricOptimizer, FabricDataLoader)


def is_wrapped(obj: object) -> bool:
    """Whether ``obj`` was set up by Fabric (a FabricModule, FabricOptimizer or FabricDataLoader),
    also when it was compiled with ``torch.compile`` after setup."""
    if isinstance(obj, _WRAPPERS):
        return True
    if isinstance(obj, torch.nn.Module):
        return isinstance(unwrap_compiled(obj)[0], FabricModule)
    return False


def unwrap(obj: Any) -> Any:
    """The plain object under Fabric's wrappers: the original model (also without a
    ``torch.compile`` layer, before or after setup), optimizer or data loader. Anything else
    comes back as it is."""
    if isinstance(obj, torch.nn.Module):
        obj = unwrap_compiled(obj)[0]
    if isinstance(obj, FabricModule):
        return obj.module
    if isinstance(obj, FabricOptimizer):
        return obj.optimizer
    if isinstance(obj, FabricDataLoader):
        return obj.dataloader
    return obj
