"""Catching ``loss.backward()`` where the run needs ``fabric.backward(loss)``.

Some precisions and strategies do work around backward (a mixed-precision loss scaler, DeepSpeed's
engine). With them, ``loss.backward()`` silently computes wrong or unscaled gradients. When, and
only when, the precision or strategy says so (``requires_fabric_backward``), the wrapper puts a
gradient hook on the tensors a forward returns; the hook raises unless the backward pass runs
inside ``fabric_backward()``, which ``Fabric.backward`` enters around ``strategy.backward``.

The flag is process-wide, not a thread-local: autograd runs the hooks of GPU tensors on its own
device threads, not on the thread that called backward. It counts the blocks running, which makes
it re-entrant.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from torch import Tensor

#: One entry per ``fabric_backward()`` block running, in any thread. ``list.append`` and
#: ``list.pop`` are atomic, so the count needs no lock, and entering and leaving a block costs two
#: C calls (``fabric.backward`` enters one on every training step).
_active: list[None] = []


class fabric_backward:  # lower case: used as a function, `with fabric_backward():`
    """Mark a backward pass as run by ``fabric.backward``; ``Fabric.backward`` enters it around
    ``strategy.backward``. Re-entrant.

    A class rather than a ``contextlib.contextmanager`` generator: creating it runs no Python
    code, and entering and leaving it two short methods."""

    __slots__ = ()

    def __enter__(self) -> None:
        _active.append(None)

    def __exit__(self, *exc: object) -> None:
        _active.pop()


def in_fabric_backward() -> bool:
    """Whether a ``fabric_backward()`` block is running (in any thread)."""
    return bool(_active)


class BackwardCheck:
    """A gradient hook that refuses a backward pass not run by ``fabric.backward``."""

    def __init__(self, needed_by: str) -> None:
        self.message = (
            f"loss.backward() was called on an output of a model set up by Fabric, but {needed_by} "
            "needs to run the backward pass itself (to scale the loss, for example). "
            "Call fabric.backward(loss) instead of loss.backward()."
        )

    def __call__(self, grad: Tensor) -> None:
        if not _active:
            raise RuntimeError(self.message)

    def attach(self, output: Any) -> Any:
        """Register this check on every tensor of ``output`` that autograd will reach."""
        for tensor in _tensors(output):
            if tensor.requires_grad:
                tensor.register_hook(self)  # type: ignore[no-untyped-call]
        return output


def _tensors(data: Any) -> Iterator[Tensor]:
    if isinstance(data, Tensor):
        yield data
    elif isinstance(data, Mapping):
        for value in data.values():
            yield from _tensors(value)
    elif isinstance(data, list | tuple):
        for value in data:
            yield from _tensors(value)
