"""Which model each optimizer belongs to, as ``Fabric.setup(model, *optimizers)`` learned it.

The checkpoint functions (:mod:`fab.core.distributed_checkpoint`) need the model of an optimizer
to key its state by parameter name (torch's ``get_optimizer_state_dict(model, optimizer)``); the
pairing recorded here names it, so a checkpoint may hold an optimizer without its model and several
models with their optimizers. The pairing is a fact about the optimizer object, kept as long as it
lives (a weak mapping, module-level so that nothing pickled for a spawned launch holds one).
"""

from __future__ import annotations

import weakref

from torch.nn import Module
from torch.optim import Optimizer

_MODEL_OF: weakref.WeakKeyDictionary[Optimizer, Module] = weakref.WeakKeyDictionary()


def pair(module: Module, optimizers: list[Optimizer]) -> None:
    """Record that ``optimizers`` train ``module`` (the model as the user knows it)."""
    for optimizer in optimizers:
        _MODEL_OF[optimizer] = module


def model_of(optimizer: Optimizer) -> Module | None:
    """The model ``optimizer`` was set up with, or None when it was not set up with one."""
    return _MODEL_OF.get(optimizer)


__all__ = ["model_of", "pair"]
