"""Where captured tensors go: an in-memory store on the main process, or a user's sink."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TypeAlias

import torch
from torch import Tensor

#: A sink receives each whole capture on the main process: ``sink(key, tensor)``.
Sink: TypeAlias = Callable[[str, Tensor], None]


class Captures(Mapping[str, Tensor]):
    """Captured tensors by key, on the main process (other processes hold nothing).

    ``captures[key]`` is the latest capture of that hook; ``captures.all(key)`` every capture
    since the last :meth:`clear` (a module called twice in a forward is captured twice). Keys are
    module names for forward outputs and ``"<module>:<point>"`` for the other points.
    """

    def __init__(self) -> None:
        self._store: dict[str, list[Tensor]] = {}

    def add(self, key: str, tensor: Tensor) -> None:
        self._store.setdefault(key, []).append(tensor)

    def __getitem__(self, key: str) -> Tensor:
        try:
            return self._store[key][-1]
        except KeyError:
            held = sorted(self._store) or "nothing"
            raise KeyError(
                f"no capture named {key!r}; held: {held}. (Only the main process holds "
                "captures; a hook in an inactive group captures nothing.)"
            ) from None

    def all(self, key: str) -> list[Tensor]:
        return list(self._store.get(key, []))

    def __iter__(self) -> Iterator[str]:
        return iter(self._store)

    def __len__(self) -> int:
        return len(self._store)

    def clear(self) -> None:
        self._store.clear()

    def __repr__(self) -> str:
        return f"Captures({ {k: len(v) for k, v in self._store.items()} })"


class DiskSink:
    """Writes each capture to ``directory/<key>/<n>.pt`` (n counts that key's captures from 0),
    so capturing every layer of a big model needs no memory for the captures."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._counts: dict[str, int] = {}

    def __call__(self, key: str, tensor: Tensor) -> None:
        index = self._counts.get(key, 0)
        self._counts[key] = index + 1
        folder = self.directory / key.replace("/", "_")
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(tensor, folder / f"{index}.pt")

    def load(self, key: str) -> list[Tensor]:
        """Every capture written for ``key``, in order."""
        folder = self.directory / key.replace("/", "_")
        count = len(list(folder.glob("*.pt"))) if folder.is_dir() else 0
        return [torch.load(folder / f"{i}.pt", weights_only=True) for i in range(count)]
