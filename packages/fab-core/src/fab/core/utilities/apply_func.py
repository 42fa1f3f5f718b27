"""Apply a function to every tensor in a nested collection, keeping the collection's type."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

_LEAVES = frozenset({int, float, bool, str, bytes, complex, type(None)})


def apply_to_tensors(data: Any, function: Callable[[Tensor], Any]) -> Any:
    """Return ``data`` with ``function`` applied to every tensor in it.

    Walks dicts (and other mappings), lists, tuples, namedtuples, sets and dataclass instances;
    everything else is returned as is.
    """
    # Exact types first: this runs on every forward of a converting precision.
    cls = type(data)
    if cls is Tensor:
        return function(data)
    if cls is tuple or cls is list:
        return cls(apply_to_tensors(v, function) for v in data)
    if cls is dict:
        return {k: apply_to_tensors(v, function) for k, v in data.items()}
    if cls in _LEAVES:
        return data
    if isinstance(data, Tensor):
        return function(data)
    if isinstance(data, Mapping):
        items = {k: apply_to_tensors(v, function) for k, v in data.items()}
        try:
            return type(data)(items)  # type: ignore[call-arg]
        except TypeError:  # a mapping type that cannot be built from a dict (defaultdict and co.)
            return items
    if isinstance(data, tuple) and hasattr(data, "_fields"):  # namedtuple
        return type(data)(*(apply_to_tensors(v, function) for v in data))
    if isinstance(data, (list, tuple, set, frozenset)):
        return type(data)(apply_to_tensors(v, function) for v in data)
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        changes = {
            f.name: apply_to_tensors(getattr(data, f.name), function)
            for f in dataclasses.fields(data)
            if f.init
        }
        return dataclasses.replace(data, **changes)
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        return data
    return data


def move_data_to_device(batch: Any, device: torch.device | str | int) -> Any:
    """Move every tensor in ``batch`` to ``device`` (non-blocking where the copy allows it)."""
    device = torch.device(device)
    non_blocking = device.type in ("cuda", "xpu")
    return apply_to_tensors(batch, lambda t: t.to(device, non_blocking=non_blocking))


def convert_tensors_to_scalars(data: Any) -> Any:
    """Return ``data`` with every one-element tensor replaced by its Python number
    (``tensor.item()``), as loggers want metrics. A tensor of several elements raises
    ``ValueError``: it has no single value to log."""

    def to_item(tensor: Tensor) -> int | float | bool:
        if tensor.numel() != 1:
            raise ValueError(
                f"the metric {tensor} has {tensor.numel()} elements (shape "
                f"{tuple(tensor.shape)}), so it cannot be converted to a number; log one "
                "element, or reduce it first (.mean(), .sum())"
            )
        value: int | float | bool = tensor.item()
        return value

    return apply_to_tensors(data, to_item)
