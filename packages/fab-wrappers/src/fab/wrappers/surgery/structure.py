"""Finding and replacing one tensor inside any output structure.

A module may return a tensor, a tuple or list, a dict (model outputs are often ``OrderedDict``
subclasses), a namedtuple or a dataclass. A *part* says which tensor a hook looks at:

- ``None``: the first tensor found, depth first (fields and items in their order);
- an ``int``: that item of a sequence;
- a ``str``: that key of a mapping, else that attribute;
- a tuple of those: a path, outermost first;
- ``Leaf(n)``: the n-th tensor found, depth first.

Replacing builds a new container of the same type with the one tensor changed; nothing is
modified in place.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any, TypeAlias

from torch import Tensor

Key: TypeAlias = int | str


class Leaf(int):
    """A part naming the n-th tensor found depth first (FlexModel's ``unpack_idx``)."""


Part: TypeAlias = Key | tuple[Key, ...] | Leaf | None
Path: TypeAlias = tuple[Key, ...]


def tensor_paths(obj: object) -> list[Path]:
    """The paths of every tensor inside ``obj``, depth first, in field and item order."""
    found: list[Path] = []
    _walk(obj, (), found, set())
    return found


def _walk(obj: object, path: Path, found: list[Path], seen: set[int]) -> None:
    if isinstance(obj, Tensor):
        found.append(path)
        return
    if id(obj) in seen:
        return
    if isinstance(obj, Mapping):
        seen.add(id(obj))
        for key, value in obj.items():
            if isinstance(key, (int, str)):
                _walk(value, (*path, key), found, seen)
    elif isinstance(obj, (tuple, list)):
        seen.add(id(obj))
        for index, value in enumerate(obj):
            _walk(value, (*path, index), found, seen)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        seen.add(id(obj))
        for field in dataclasses.fields(obj):
            _walk(getattr(obj, field.name), (*path, field.name), found, seen)


def resolve(obj: object, part: Part) -> Path:
    """The path ``part`` names in ``obj``; ``None`` names the first tensor.

    Raises ``LookupError`` saying what the structure holds when there is no such tensor.
    """
    if part is None or isinstance(part, Leaf):
        paths = tensor_paths(obj)
        index = 0 if part is None else int(part)
        if len(paths) <= index:
            raise LookupError(
                f"holds {len(paths)} tensor(s), so it has no tensor number {index} "
                f"(it is a {describe(obj)})"
            )
        return paths[index]
    path: Path = part if isinstance(part, tuple) else (part,)
    value = get(obj, path)
    if not isinstance(value, Tensor):
        raise LookupError(
            f"part {part!r} is a {type(value).__name__}, not a tensor; the structure is "
            f"{describe(obj)} with tensors at {[_show(p) for p in tensor_paths(obj)]}"
        )
    return path


def get(obj: object, path: Path) -> Any:
    """The value at ``path`` inside ``obj``."""
    value: Any = obj
    for depth, key in enumerate(path):
        try:
            value = _child(value, key)
        except (KeyError, IndexError, AttributeError, TypeError):
            raise LookupError(
                f"has no part {_show(path[: depth + 1])} (it is a {describe(obj)} with tensors "
                f"at {[_show(p) for p in tensor_paths(obj)]})"
            ) from None
    return value


def _child(value: Any, key: Key) -> Any:
    if isinstance(value, Mapping):
        return value[key]
    if isinstance(key, int) and isinstance(value, (tuple, list)):
        return value[key]
    if isinstance(key, str):
        return getattr(value, key)
    raise KeyError(key)


def replace(obj: object, path: Path, new: object) -> Any:
    """A copy of ``obj`` with the value at ``path`` replaced by ``new`` (``obj`` is unchanged)."""
    if not path:
        return new
    key, rest = path[0], path[1:]
    child = _child(obj, key)
    value = replace(child, rest, new)
    if isinstance(obj, tuple) and hasattr(obj, "_replace") and isinstance(key, str):
        return obj._replace(**{key: value})
    if isinstance(obj, tuple) and isinstance(key, int):
        items = list(obj)
        items[key] = value
        if hasattr(obj, "_fields"):  # a namedtuple
            return type(obj)(*items)
        return tuple(items)
    if isinstance(obj, list) and isinstance(key, int):
        items = list(obj)
        items[key] = value
        return items
    if isinstance(obj, Mapping):
        mapping: Any = copy.copy(obj)
        mapping[key] = value
        return mapping
    if (
        dataclasses.is_dataclass(obj)
        and not isinstance(obj, type)
        and isinstance(key, str)
        and key in {f.name for f in dataclasses.fields(obj)}
    ):
        return dataclasses.replace(obj, **{key: value})
    fresh: Any = copy.copy(obj)
    setattr(fresh, str(key), value)
    return fresh


def describe(obj: object) -> str:
    if isinstance(obj, Tensor):
        return f"Tensor of shape {tuple(obj.shape)}"
    return type(obj).__name__


def _show(path: Path) -> str:
    return "".join(f"[{k!r}]" for k in path) or "(the whole value)"
