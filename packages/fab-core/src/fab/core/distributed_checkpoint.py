"""Checkpoints that are directories written by ``torch.distributed.checkpoint`` (DCP).

A sharded strategy writes one (every process writes its own shards; ``save_directory``); any
strategy reads one, at any world size, one process included (``load_directory``), so a run saved
by FSDP on 2 processes resumes on one device. The state of a model and of its optimizers is
converted with torch's ``get_model_state_dict``/``get_optimizer_state_dict``, which know the
model an optimizer belongs to: the model's own keys (no wrapper prefixes) and optimizer state keyed
by parameter name, whatever the layout.

Everything here imports ``torch.distributed.checkpoint`` (which imports FSDP) inside the
functions, so ``import fab.core`` stays cheap. Plain values (step counts, dicts) are stored beside
the tensors and read back weights-only: a directory, like a file, never runs code on load.
"""

from __future__ import annotations

import os
import shutil
import uuid
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch.nn import Module
from torch.optim import Optimizer

from fab.core.strategies.strategy import StateFilter, check_state_filter

if TYPE_CHECKING:
    from torch.distributed.checkpoint.metadata import Metadata

#: The file DCP writes last, once every shard is on disk.
METADATA_FILE = ".metadata"


class DistributedCheckpointError(RuntimeError):
    """torch.distributed.checkpoint failed (on some rank); the message holds every rank's error.

    torch raises a ``CheckpointException``, which derives from ``BaseException`` and escapes
    ``except Exception``; fab turns it into this ordinary error."""


@contextmanager
def _ordinary_errors(action: str) -> Iterator[None]:
    from torch.distributed.checkpoint.api import CheckpointException

    try:
        yield
    except CheckpointException as err:
        raise DistributedCheckpointError(f"{action} failed: {err}") from None


def is_distributed_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a directory written by ``torch.distributed.checkpoint``."""
    return Path(path).is_dir() and Path(path, METADATA_FILE).is_file()


def owner_of(optimizer: Optimizer, modules: Mapping[str, Module], key: str) -> Module:
    """The model of ``optimizer``: the one it was set up with (``fabric.setup(model,
    optimizer)``, :mod:`fab.core.optimizer_pairs`), wherever that model is; for an optimizer set
    up alone (``fabric.setup_optimizers``), the model among ``modules`` whose parameters it
    updates."""
    from fab.core.optimizer_pairs import model_of

    paired = model_of(optimizer)
    if paired is not None:
        return paired
    params = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for module in modules.values():
        if any(id(p) in params for p in module.parameters()):
            return module
    raise ValueError(
        f"the optimizer under {key!r} updates parameters of none of the models in this state "
        f"({sorted(modules) or 'no model'}). A sharded checkpoint stores optimizer state by "
        "parameter name, which only the model knows: set both up together with "
        "fabric.setup(model, optimizer), or put the optimizer's model in the same save/load call "
        "(e.g. {'model': model, 'optimizer': optimizer})"
    )


def checkpoint_state(
    state: Mapping[str, Any], full: bool, filters: StateFilter | None = None
) -> dict[str, Any]:
    """``state`` with each model and optimizer turned into its state dict, the model's own keys
    and optimizer state keyed by parameter name: whole tensors on global rank 0 (empty dicts
    elsewhere) when ``full``, this process's shards otherwise. Collective under a process group
    when a model is sharded."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    filters = filters or {}
    check_state_filter(dict(state), filters)
    options = StateDictOptions(full_state_dict=full, cpu_offload=full)
    modules = {k: v for k, v in state.items() if isinstance(v, Module)}
    converted: dict[str, Any] = {}
    for key, value in state.items():
        if isinstance(value, Module):
            value = get_model_state_dict(value, options=options)
        elif isinstance(value, Optimizer):
            owner = owner_of(value, modules, key)
            value = get_optimizer_state_dict(owner, value, options=options)
        elif callable(getattr(value, "state_dict", None)):
            value = value.state_dict()
        if key in filters and isinstance(value, dict):
            keep = filters[key]
            value = {k: v for k, v in value.items() if keep(k, v)}
            if not value:
                continue  # as in every other save: an entry filtered to nothing is left out
        converted[key] = value
    return converted


def save_directory(path: str | os.PathLike[str], checkpoint: dict[str, Any]) -> None:
    """Write ``checkpoint`` (from :func:`checkpoint_state` with ``full=False``) as a DCP
    directory at ``path``; collective under a process group.

    Atomic: the shards go to a hidden directory beside ``path``, which global rank 0 renames to
    ``path`` once DCP wrote its metadata (its last file). A save that dies midway leaves the
    previous checkpoint at ``path`` as it was; the next save removes the partial directory."""
    from torch.distributed.checkpoint.state_dict_saver import save

    target = Path(path)
    distributed = dist.is_available() and dist.is_initialized()
    zero = not distributed or dist.get_rank() == 0
    names: list[Any] = [f".{target.name}.partial-{uuid.uuid4().hex}" if zero else None]
    if zero:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(target)
    if distributed:
        dist.broadcast_object_list(names, src=0)
    partial = target.parent / str(names[0])
    with warnings.catch_warnings(), _ordinary_errors(f"saving the checkpoint to {path}"):
        warnings.filterwarnings("ignore", message=".*assuming the intent is to save.*")
        save(checkpoint, checkpoint_id=partial, no_dist=not distributed)
    if distributed:
        dist.barrier()
    if zero:
        _replace(partial, target)
    if distributed:
        dist.barrier()


def _remove_leftovers(target: Path) -> None:
    """Partial directories of saves to ``target`` that died, and an older checkpoint that a
    save died before removing (only when ``target`` itself exists)."""
    for leftover in target.parent.glob(f".{target.name}.partial-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    if target.exists():
        for leftover in target.parent.glob(f".{target.name}.previous-*"):
            shutil.rmtree(leftover, ignore_errors=True)


def _replace(partial: Path, target: Path) -> None:
    if not target.exists() and not target.is_symlink():
        partial.rename(target)
        return
    previous = target.parent / f".{target.name}.previous-{uuid.uuid4().hex}"
    target.rename(previous)  # a crash from here to the next rename: load finds `previous`
    partial.rename(target)
    if previous.is_dir():
        shutil.rmtree(previous, ignore_errors=True)
    else:
        previous.unlink(missing_ok=True)


def resolve(path: str | os.PathLike[str]) -> Path:
    """``path``, or the previous checkpoint a save that died while renaming left beside it."""
    target = Path(path)
    if target.exists():
        return target
    previous = sorted(target.parent.glob(f".{target.name}.previous-*"))
    return previous[0] if previous else target


def top_level_keys(path: str | os.PathLike[str]) -> set[str]:
    """The keys of the state that was saved to the directory ``path``."""
    metadata = _metadata(path)
    keys: set[str] = set()
    for fqn in metadata.state_dict_metadata:
        route = (metadata.planner_data or {}).get(fqn)
        keys.add(str(route[0]) if route else fqn.split(".", 1)[0])
    return keys


def _metadata(path: str | os.PathLike[str]) -> Metadata:
    from torch.distributed.checkpoint.filesystem import FileSystemReader

    if not is_distributed_checkpoint(path):
        raise FileNotFoundError(
            f"{path} is not a checkpoint directory: it has no {METADATA_FILE} file, which "
            "torch.distributed.checkpoint writes last (the save did not finish, or this is "
            "another kind of directory)"
        )
    return FileSystemReader(str(path)).read_metadata()


def read_values(
    path: str | os.PathLike[str], keys: set[str] | None = None, weights_only: bool = True
) -> dict[str, Any]:
    """The entries ``keys`` (all without) of the directory ``path``, whole, in this process's
    memory (tensors included)."""
    from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.filesystem import FileSystemReader
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    class _Planner(_EmptyStateDictLoadPlanner):
        def load_bytes(self, read_item: Any, value: Any) -> None:
            _load_bytes(self, read_item, value, weights_only)

    if keys is not None and not keys:
        return {}
    values: dict[str, Any] = {}
    # dcp.load fills only the keys it is given; this private loader (what torch's own
    # _load_state_dict_from_keys uses) rebuilds the entries from the metadata
    with _ordinary_errors(f"reading the checkpoint {path}"):
        _load_state_dict(
            values,
            storage_reader=FileSystemReader(str(path)),
            planner=_Planner(keys=keys),  # type: ignore[no-untyped-call]
            no_dist=True,
        )
    return values


def load_directory(
    path: str | os.PathLike[str],
    state: dict[str, Any] | None,
    strict: bool = True,
    weights_only: bool = True,
) -> dict[str, Any]:
    """Restore ``state``'s models, optimizers and stateful objects in place from the DCP
    directory ``path``, whatever world size wrote it; replace its plain values; return the
    checkpoint's other entries. Without ``state``, return every entry, whole. Collective under a
    process group when a model is sharded.

    With ``strict=False``, entries of ``state`` that the checkpoint lacks, and parameters a model
    has that the checkpoint lacks, are left as they are."""
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )
    from torch.distributed.checkpoint.state_dict_loader import load

    class _Planner(DefaultLoadPlanner):
        def load_bytes(self, read_item: Any, value: Any) -> None:
            _load_bytes(self, read_item, value, weights_only)

    path = resolve(path)
    saved = top_level_keys(path)
    if not state:
        return read_values(path, None, weights_only)
    missing = [key for key in state if key not in saved]
    if missing and strict:
        raise KeyError(
            f"the checkpoint at {path} has no entry for {missing}; it has {sorted(saved)}. "
            "Pass strict=False to load only what is there"
        )
    modules = {k: v for k, v in state.items() if isinstance(v, Module)}
    owners = {k: owner_of(v, modules, k) for k, v in state.items() if isinstance(v, Optimizer)}
    targets: dict[str, Any] = {}
    for key, value in state.items():
        if key not in saved:
            continue
        if isinstance(value, Module):
            targets[key] = get_model_state_dict(value)
        elif isinstance(value, Optimizer):
            targets[key] = get_optimizer_state_dict(owners[key], value)
    distributed = dist.is_available() and dist.is_initialized()
    if targets:
        with warnings.catch_warnings(), _ordinary_errors(f"loading the checkpoint {path}"):
            warnings.filterwarnings("ignore", message=".*assuming the intent is to load.*")
            load(
                targets,
                checkpoint_id=str(path),
                planner=_Planner(allow_partial_load=not strict),
                no_dist=not distributed,
            )
    options = StateDictOptions(strict=strict)
    for key, loaded in targets.items():
        target = state[key]
        if isinstance(target, Module):
            set_model_state_dict(target, loaded, options=options)
        else:
            set_optimizer_state_dict(owners[key], target, loaded, options=options)
    rest = read_values(path, saved - set(targets), weights_only)
    for key, target in state.items():
        if key in targets or key not in rest:
            continue
        value = rest.pop(key)
        if callable(getattr(target, "load_state_dict", None)):
            target.load_state_dict(value)
        else:
            state[key] = value
    return rest


def _load_bytes(planner: Any, read_item: Any, value: Any, weights_only: bool) -> None:
    """DCP's own ``load_bytes`` unpickles without ``weights_only``: this one keeps fab's
    default, so a checkpoint directory cannot run code."""
    from torch.distributed.checkpoint._traverse import set_element

    loaded = torch.load(value, weights_only=weights_only)
    if planner.flatten_state_dict:
        set_element(planner.original_state_dict, planner.mappings[read_item.dest_index.fqn], loaded)
    else:
        planner.state_dict[read_item.dest_index.fqn] = loaded


def consolidate(directory: str | os.PathLike[str], output_file: str | os.PathLike[str]) -> Path:
    """Turn the DCP directory ``directory`` into one file that ``torch.load(output_file,
    weights_only=True)`` reads (the same entries, whole tensors), written atomically. Runs in
    one process and needs the memory of the whole checkpoint."""
    values = read_values(directory)
    output = Path(output_file)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.parent / f".{output.name}.partial-{uuid.uuid4().hex}"
    try:
        torch.save(values, partial)
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)
    return output
