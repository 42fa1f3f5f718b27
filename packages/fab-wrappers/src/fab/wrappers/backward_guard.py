"""Catching ``loss.backward()`` where the run needs ``fabric.backward(loss)``.

Some precisions and strategies do work around backward (a mixed-precision loss scaler, DeepSpeed's
engine). With them, ``loss.backward()`` silently computes wrong or unscaled gradients. When, and
only when, the precision or strategy says so (``requires_fabric_backward``), the wrapper puts a
gradient hook on the tensors a forward returns; the hook raises unless the backward pass runs
inside ``fabric_backward()``, which ``Fabric.backward`` enters around ``strategy.backward``.

The flag is a process-wide counter, not a thread-local: autograd runs the hooks of GPU tensors on
its own device threads, not on the thread that called backward. A counter makes it re-entrant.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from torch import Tensor

_lock = threading.Lock()
_depth = 0


@contextmanager
def fabric_backward() -> Iterator[None]:
    """Mark a backward pass as run by ``fabric.backward``; ``Fabric.backward`` enters it around
    ``strategy.backward``. Re-entrant."""
    global _depth
    with _lock:
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1


def in_fabric_backward() -> bool:
    """Whether a ``fabric_backward()`` block is running (in any thread)."""
    return _depth > 0


class BackwardCheck:
    """A gradient hook that refuses a backward pass not run by ``fabric.backward``."""

    def __init__(self, needed_by: str) -> None:
        self.message = (
            f"loss.backward() was called on an output of a model set up by Fabric, but {needed_by} "
            "needs to run the backward pass itself (to scale the loss, for example). "
            "Call fabric.backward(loss) instead of loss.backward()."
        )

    def __call__(self, grad: Tensor) -> None:
        if _depth == 0:
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
