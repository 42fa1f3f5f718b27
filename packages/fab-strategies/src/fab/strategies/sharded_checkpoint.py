"""Saving and loading the state of sharded models (FSDP2, tensor parallel).

Two formats, chosen by the strategy's ``state_dict_type``/``save_distributed_checkpoint``:

- **sharded**: a directory that every process writes its shards into
  (torch.distributed.checkpoint, :mod:`fab.core.distributed_checkpoint`); it loads at any world
  size, one process included, and ``fab consolidate`` turns it into one file.
- **full**: one file, written by global rank 0 through the strategy's ``CheckpointIO``, that
  ``torch.load(path, weights_only=True)`` reads: the model's own keys and whole tensors;
  optimizer state is keyed by parameter name.

Both keep the models and optimizers of one ``save`` call together: an optimizer's state is
converted with the model whose parameters it updates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from torch.nn import Module
from torch.optim import Optimizer

from fab.core import distributed_checkpoint as dcp_files
from fab.core.strategies.strategy import PRECISION_STATE_KEY, StateFilter, Strategy

Format = Literal["full", "sharded"]


def save(
    strategy: Strategy,
    path: str | Path,
    state: dict[str, Any],
    filters: StateFilter | None,
    format: Format,
) -> None:
    """Collective: write ``state`` to ``path`` in ``format``."""
    checkpoint = dcp_files.checkpoint_state(state, full=format == "full", filters=filters)
    precision_state = strategy.precision.state_dict()
    if precision_state:
        checkpoint[PRECISION_STATE_KEY] = precision_state
    if format == "sharded":
        dcp_files.save_directory(path, checkpoint)
    elif strategy.is_global_zero:
        strategy.checkpoint_io.save_checkpoint(checkpoint, path)


def load(
    strategy: Strategy,
    path: str | Path,
    state: Module | Optimizer | dict[str, Any] | None,
    strict: bool,
    weights_only: bool = True,
) -> dict[str, Any]:
    """Collective: restore ``state`` from the directory or file ``path``; return the rest. A
    model or optimizer as ``state`` takes the file as its raw, whole state dict."""
    if isinstance(state, Module | Optimizer):
        _load_raw(strategy, path, state, strict, weights_only)
        return {}
    if dcp_files.is_distributed_checkpoint(dcp_files.resolve(path)):
        rest = dcp_files.load_directory(path, state, strict=strict, weights_only=weights_only)
    else:
        rest = _load_full_file(strategy, path, state, strict, weights_only)
    precision_state = rest.pop(PRECISION_STATE_KEY, None)
    if precision_state is not None:
        strategy.precision.load_state_dict(precision_state)
    return rest


def _load_full_file(
    strategy: Strategy,
    path: str | Path,
    state: dict[str, Any] | None,
    strict: bool,
    weights_only: bool,
) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    checkpoint = strategy.checkpoint_io.load_checkpoint(
        path, map_location="cpu", weights_only=weights_only
    )
    if not state:
        return checkpoint
    missing = [key for key in state if key not in checkpoint]
    if missing and strict:
        raise KeyError(
            f"the checkpoint at {path} has no entry for {missing}; it has {sorted(checkpoint)}. "
            "Pass strict=False to load only what is there"
        )
    modules = {k: v for k, v in state.items() if isinstance(v, Module)}
    options = StateDictOptions(full_state_dict=True, strict=strict)
    for key, target in state.items():
        if key not in checkpoint:
            continue
        value = checkpoint.pop(key)
        if isinstance(target, Module):
            set_model_state_dict(target, value, options=options)
        elif isinstance(target, Optimizer):
            owner = dcp_files.owner_of(target, modules, key)
            set_optimizer_state_dict(owner, target, value, options=options)
        elif callable(getattr(target, "load_state_dict", None)):
            target.load_state_dict(value)
        else:
            state[key] = value
    return checkpoint


def _load_raw(
    strategy: Strategy, path: str | Path, obj: Module | Optimizer, strict: bool, weights_only: bool
) -> None:
    """Collective: a plain, whole state dict at ``path`` into ``obj`` (each rank keeps its part)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    if Path(path).is_dir():
        raise IsADirectoryError(
            f"{path} is a directory; load_raw reads one state-dict file. For a sharded checkpoint "
            "directory use fabric.load(path, {'model': model})"
        )
    state = strategy.checkpoint_io.load_checkpoint(
        path, map_location="cpu", weights_only=weights_only
    )
    if isinstance(obj, Module):
        options = StateDictOptions(full_state_dict=True, strict=strict)
        set_model_state_dict(obj, state, options=options)
    else:
        obj.load_state_dict(state)
