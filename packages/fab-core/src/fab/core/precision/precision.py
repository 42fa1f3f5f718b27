"""The Precision base class, which is also the ``32-true`` precision (fab-core's fallback)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.nn import Module, Parameter
from torch.optim import Optimizer

#: The methods a precision overrides to act on a forward pass. When none is overridden, the
#: wrapped module's forward is a plain call (see ``Precision.forward_is_identity``).
_FORWARD_HOOKS = ("forward_context", "convert_input", "convert_output")
#: The methods a precision overrides to act on backward (loss scaling and the like).
_BACKWARD_HOOKS = ("pre_backward", "backward", "post_backward")


@dataclass(frozen=True)
class PrecisionContext:
    """What a strategy tells its precision in :meth:`Precision.connect`."""

    #: The device this process computes on (the strategy's ``root_device``).
    device: torch.device


class Precision:
    """How tensors, modules and steps are typed: 32-bit floats, doing nothing extra.

    Subclasses (in fab-precision and third-party distributions) override only what their precision
    needs. The wrappers look at which methods are overridden to decide how much work a forward
    and a backward need, so a precision that changes nothing costs nothing per call.
    """

    #: The canonical name users pass as ``Fabric(precision=...)``.
    precision: str = "32-true"

    # -- the run ---------------------------------------------------------------------------

    def connect(self, context: PrecisionContext) -> None:
        """Learn where this process computes. The strategy calls it once, before it sets the
        first model up (``Strategy.connect_precision``): after ``launch``, so ``context.device``
        is this process's own device in every process, spawned ones included. Nothing to learn
        here; a precision that needs the device (autocast's device type) overrides it. A
        precision that does not override it keeps working unchanged.

        A sharding strategy may read the connected precision for what it must know (FSDP's
        ``MixedPrecisionPolicy``, see ``fab.strategies.fsdp.mixed_precision_policy``)."""

    # -- models and tensors ----------------------------------------------------------------

    def convert_module(self, module: Module) -> Module:
        """Convert the module's parameters and buffers (for the ``*-true`` precisions)."""
        return module

    def tensor_init_context(self) -> AbstractContextManager[object]:
        """Active in ``Fabric.init_tensor``: the default dtype for new tensors."""
        return nullcontext()

    def module_init_context(self) -> AbstractContextManager[object]:
        """Active in ``Fabric.init_module``: the dtype new parameters are created with."""
        return self.tensor_init_context()

    # -- forward --------------------------------------------------------------------------

    def forward_context(self) -> AbstractContextManager[object]:
        """Active around every forward of a wrapped module (autocast for the mixed precisions)."""
        return nullcontext()

    def convert_input(self, data: Any) -> Any:
        """Convert floating-point inputs of a wrapped module's forward."""
        return data

    def convert_output(self, data: Any) -> Any:
        """Convert floating-point outputs of a wrapped module's forward."""
        return data

    def forward_is_identity(self) -> bool:
        """True when a forward needs no context and no conversion: the wrapper then calls the
        module directly."""
        cls = type(self)
        return all(getattr(cls, name) is getattr(Precision, name) for name in _FORWARD_HOOKS)

    # -- backward and steps ---------------------------------------------------------------

    # A strategy runs backward as ``pre_backward(t, m)``, ``backward(t, m, ...)``,
    # ``post_backward(t, m)`` (Strategy.backward), and may ignore what pre_backward returns, as
    # Lightning's strategies and those written like them do. So whatever changes the tensor
    # that backward runs on (loss scaling) belongs in ``backward``, never in ``pre_backward``.

    def pre_backward(self, tensor: Tensor, module: Module | None) -> Tensor:
        """Runs before backward (bookkeeping only). Returns ``tensor`` unchanged: strategies may
        ignore the return value, so a precision that must change the tensor (scale a loss) does
        it in ``backward``."""
        return tensor

    def backward(self, tensor: Tensor, model: Module | None, *args: Any, **kwargs: Any) -> None:
        """Run the backward pass of ``tensor`` (``args``/``kwargs`` are ``Tensor.backward``'s).
        A precision that scales the loss scales it here, before calling backward."""
        tensor.backward(*args, **kwargs)  # type: ignore[no-untyped-call]

    def post_backward(self, tensor: Tensor, module: Module | None) -> Tensor:
        """Runs after backward (bookkeeping only); returns ``tensor`` unchanged."""
        return tensor

    @property
    def requires_fabric_backward(self) -> bool:
        """True when ``loss.backward()`` would be wrong and ``fabric.backward(loss)`` is needed."""
        cls = type(self)
        return any(getattr(cls, name) is not getattr(Precision, name) for name in _BACKWARD_HOOKS)

    def optimizer_step(self, optimizer: Optimizer, **kwargs: Any) -> Any:
        return optimizer.step(**kwargs)

    def unscale_gradients(self, optimizer: Optimizer) -> None:
        """Undo loss scaling on the gradients before they are clipped or inspected."""

    def main_params(self, optimizer: Optimizer) -> Iterator[Parameter]:
        """The parameters the optimizer updates (what gradient clipping acts on)."""
        for group in optimizer.param_groups:
            yield from group["params"]

    # -- state -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """State saved in checkpoints (a GradScaler's, for example)."""
        return {}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        pass

    def teardown(self) -> None:
        """Undo what this precision changed in the process (a default dtype, for example)."""


def default_dtype_context(dtype: torch.dtype) -> AbstractContextManager[object]:
    """Set torch's default dtype inside the block and restore it after."""
    return _DefaultDtype(dtype)


class _DefaultDtype(AbstractContextManager[object]):
    def __init__(self, dtype: torch.dtype) -> None:
        self._dtype = dtype
        self._previous = torch.get_default_dtype()

    def __enter__(self) -> None:
        self._previous = torch.get_default_dtype()
        torch.set_default_dtype(self._dtype)

    def __exit__(self, *exc: object) -> None:
        torch.set_default_dtype(self._previous)
