"""The ``acme-true`` precision: 32-bit floats, counting optimizer steps.

Registered as ``acme-true`` in the ``fab.precision`` entry-point group. It overrides no forward or
backward hook, so fab's wrappers call the model directly, as in ``32-true``.
"""

from __future__ import annotations

from typing import Any

from torch.optim import Optimizer

from fab.core.precision import Precision


class AcmeTruePrecision(Precision):
    """``32-true`` with a count of optimizer steps."""

    precision = "acme-true"

    def __init__(self) -> None:
        self.optimizer_steps = 0

    def optimizer_step(self, optimizer: Optimizer, **kwargs: Any) -> Any:
        self.optimizer_steps += 1
        return super().optimizer_step(optimizer, **kwargs)
