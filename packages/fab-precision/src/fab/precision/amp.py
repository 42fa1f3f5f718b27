"""``16-mixed`` and ``bf16-mixed``: automatic mixed precision with ``torch.autocast``.

Which device autocast acts on
-----------------------------
``torch.autocast`` needs a device type (``"cuda"``, ``"cpu"``, ...). Lightning's connector passes
it to ``MixedPrecision``; fab's registry creates every precision with no arguments, so ``device``
defaults to ``"auto"`` and is settled at the first moment it can be known for sure:

1. An explicit device wins: ``MixedPrecision("bf16-mixed", device="cuda")``, or
   ``precision.device = "cuda"`` set (by a user or a strategy) before the first forward.
2. Otherwise the strategy settles it when it sets the first model up: it calls
   ``connect(PrecisionContext(device=...))`` with the device this process computes on (its
   ``root_device``, also when it keeps the parameters elsewhere, as CPU offloading does).
3. Otherwise (a wrapped model that no strategy set up) the first forward of a wrapped model
   settles it, from the first tensor among its inputs.
4. Until then (``fabric.autocast()`` before any set-up and forward), autocast uses ``"cuda"``
   when CUDA is available and ``"cpu"`` otherwise, without settling it.

After it is settled, ``precision.device`` holds the device type.

Loss scaling
------------
``16-mixed`` scales the loss with a ``torch.amp.GradScaler`` (float16 gradients underflow
otherwise), so ``fabric.backward(loss)`` is required; ``bf16-mixed`` has float32's range and uses
no scaler, so ``loss.backward()`` is fine there. The scaler is made at construction for the
explicit device, or for ``"cuda"`` when CUDA is available and ``"cpu"`` otherwise: a GradScaler
keeps its scale on the device of the first loss it scales, so the one made for ``"cpu"`` works on
any device's losses; the device given to it only decides whether it is enabled (one made for
``"cuda"`` without CUDA disables itself).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any, Literal, cast

import torch
from torch import Tensor
from torch.amp import GradScaler
from torch.nn import Module
from torch.optim import LBFGS, Optimizer

from fab.core.precision import Precision, PrecisionContext
from fab.core.utilities import apply_to_tensors
from fab.precision._utils import FLOAT_CASTS, convert_floating

MixedName = Literal["16-mixed", "bf16-mixed"]
_DTYPES: dict[str, torch.dtype] = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}
AUTO = "auto"


class MixedPrecision(Precision):
    """Automatic mixed precision: float32 weights, forwards under ``torch.autocast``.

    - Every forward of a wrapped model (and ``fabric.autocast()``) runs under
      ``torch.autocast(device, dtype)``: matrix products and convolutions compute in float16 or
      bfloat16, numerically sensitive operations stay in float32.
    - Floating-point inputs of a wrapped model's forward are cast to the autocast dtype, and
      floating-point outputs to torch's default dtype (float32), as Lightning does.
    - ``16-mixed`` scales the loss in ``fabric.backward``, unscales gradients before clipping,
      steps through the scaler (a step whose gradients hold inf or NaN is skipped and the scale
      lowered) and saves the scaler's state in ``state_dict``.

    Args:
        precision: ``"16-mixed"`` (float16) or ``"bf16-mixed"`` (bfloat16).
        device: the device type autocast acts on (``"cuda"``, ``"cpu"``, ...; a device such as
            ``"cuda:0"`` is reduced to its type); ``"auto"`` (the default) settles it at the
            first forward, see the module's documentation.
        scaler: the ``torch.amp.GradScaler`` to use with ``"16-mixed"`` (one with default
            settings is made otherwise); ``"bf16-mixed"`` takes none.
    """

    def __init__(
        self,
        precision: MixedName,
        device: str = AUTO,
        scaler: GradScaler | None = None,
    ) -> None:
        if precision not in _DTYPES:
            raise ValueError(
                f"MixedPrecision(precision={precision!r}): expected '16-mixed' or 'bf16-mixed'"
            )
        if scaler is not None and precision == "bf16-mixed":
            raise ValueError(
                f"precision='bf16-mixed' uses no gradient scaler, got scaler={scaler!r}; "
                "bfloat16 has the range of float32, so its gradients do not underflow"
            )
        if device != AUTO:
            device = torch.device(device).type  # "cuda:0" -> "cuda": autocast takes a type
            _check_autocast_device(device)
        # The base class declares `precision` as a class variable; Lightning's API sets it per
        # instance, as here.
        self.precision = precision
        self.dtype: torch.dtype = _DTYPES[precision]
        #: The device type autocast acts on; "auto" until settled (see the module's docs).
        self.device: str = device
        if scaler is None and precision == "16-mixed":
            scaler = GradScaler(device if device != AUTO else _fallback_device())
        self.scaler: GradScaler | None = scaler
        self._autocast: _ReusableAutocast | None = None

    # -- the run ----------------------------------------------------------------------------

    def connect(self, context: PrecisionContext) -> None:
        """Settle the device autocast acts on to the type of the device the strategy computes on,
        unless a device was given (see the module's documentation)."""
        if self.device == AUTO:
            _check_autocast_device(context.device.type)
            self.device = context.device.type

    # -- forward ----------------------------------------------------------------------------

    def forward_context(self) -> AbstractContextManager[object]:
        device = self.device if self.device != AUTO else _fallback_device()
        cached = self._autocast
        if cached is not None and not cached.in_use and cached.device == device:
            return cached  # building a torch.autocast costs about 1 µs per forward
        fresh = _ReusableAutocast(device, dtype=self.dtype)
        if cached is None or not cached.in_use:
            self._autocast = fresh
        return fresh

    def convert_input(self, data: Any) -> Any:
        # Inputs are not cast: autocast casts the inputs of the operations that run in the half
        # dtype, and the others keep float32's accuracy (Lightning casts them; see
        # docs/decisions.md). Only the device autocast acts on may be settled here.
        if self.device == AUTO:
            self._settle_device(data)
        return data

    def convert_output(self, data: Any) -> Any:
        default = torch.get_default_dtype()
        if type(data) is Tensor and data.dtype is self.dtype:  # the common case, without a walk
            cast = FLOAT_CASTS.get(default)
            return cast(data) if cast is not None else data.to(default)
        return convert_floating(data, default)

    def _settle_device(self, data: Any) -> None:
        found: list[str] = []

        def first_device(tensor: Tensor) -> Tensor:
            if not found and tensor.device.type != "meta":
                found.append(tensor.device.type)
            return tensor

        apply_to_tensors(data, first_device)
        if found:
            _check_autocast_device(found[0])
            self.device = found[0]

    # -- backward and steps -----------------------------------------------------------------

    @property
    def requires_fabric_backward(self) -> bool:
        """True with a gradient scaler (``16-mixed``): the loss must be scaled before backward."""
        return self.scaler is not None

    def backward(self, tensor: Tensor, model: Module | None, *args: Any, **kwargs: Any) -> None:
        """Backward of the loss scaled by the gradient scaler (``16-mixed``), so that float16
        gradients do not underflow; ``optimizer_step`` unscales them. Scaling here, not in
        ``pre_backward``, gives every strategy scaled gradients, also one that ignores what
        ``pre_backward`` returns (as Lightning's strategies do)."""
        scaler = self.scaler
        if scaler is not None:
            tensor = scaler.scale(tensor)
        tensor.backward(*args, **kwargs)  # type: ignore[no-untyped-call]

    def optimizer_step(self, optimizer: Optimizer, **kwargs: Any) -> Any:
        scaler = self.scaler
        if scaler is None:
            return optimizer.step(**kwargs)
        if isinstance(optimizer, LBFGS):
            raise TypeError(
                "precision='16-mixed' cannot step LBFGS: LBFGS evaluates its closure several "
                "times per step, which a gradient scaler cannot follow. Use precision='bf16-mixed' "
                "or '32-true' with LBFGS"
            )
        closure = cast("Callable[[], Any] | None", kwargs.pop("closure", None))
        if closure is None:
            return_value = scaler.step(optimizer, **kwargs)
        else:
            # A GradScaler takes no closure: compute the loss and the (scaled) gradients first,
            # then step without it, and return what optimizer.step(closure) would: the loss.
            return_value = closure()
            scaler.step(optimizer, **kwargs)
        scaler.update()
        return return_value

    def unscale_gradients(self, optimizer: Optimizer) -> None:
        # GradScaler.step knows an optimizer was unscaled already, fused optimizers included.
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    # -- state ------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The gradient scaler's state (scale, growth tracker, ...); empty without a scaler."""
        if self.scaler is None:
            return {}
        return self.scaler.state_dict()

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the scaler's state. An empty state (saved by ``bf16-mixed`` or ``32-true``)
        leaves a fresh scaler as it is; a scaler's state is ignored by ``bf16-mixed``."""
        if self.scaler is not None and state_dict:
            self.scaler.load_state_dict(dict(state_dict))

    def __getstate__(self) -> dict[str, Any]:
        # The cached autocast is rebuilt on demand; a spawned process gets none.
        return {**self.__dict__, "_autocast": None}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(precision={self.precision!r}, device={self.device!r})"


class _ReusableAutocast(torch.autocast):
    """A ``torch.autocast`` that knows whether it is entered, so that it can be entered again
    later (not while it is active: nested forwards get a fresh one)."""

    in_use = False

    def __enter__(self) -> None:
        self.in_use = True
        _autocast_enter(self)  # type: ignore[no-untyped-call]

    def __exit__(self, *exc: Any) -> None:
        try:
            _autocast_exit(self, *exc)
        finally:
            self.in_use = False


# Called directly: a super() call costs more than the rest of the bookkeeping.
_autocast_enter = torch.autocast.__enter__
_autocast_exit = torch.autocast.__exit__


def float16_mixed() -> MixedPrecision:
    """The ``16-mixed`` entry point: ``MixedPrecision("16-mixed")``, device settled lazily."""
    return MixedPrecision("16-mixed")


def bfloat16_mixed() -> MixedPrecision:
    """The ``bf16-mixed`` entry point: ``MixedPrecision("bf16-mixed")``, device settled lazily."""
    return MixedPrecision("bf16-mixed")


def _fallback_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _check_autocast_device(device: str) -> None:
    if not torch.amp.is_autocast_available(device):
        raise ValueError(
            f"MixedPrecision: torch.autocast does not support device type {device!r}; "
            "give the device type the model computes on, like 'cuda' or 'cpu'"
        )
