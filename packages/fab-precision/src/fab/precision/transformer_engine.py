"""``transformer-engine`` and ``transformer-engine-float16``: FP8 compute with NVIDIA Transformer
Engine.

Needs the ``transformer_engine`` library (``pip install "transformer_engine[pytorch]"``) and an
NVIDIA GPU that computes in FP8 (Hopper, Ada or newer). This module imports nothing of the library
when it is imported, so the plugins can be listed without it; creating the precision without it
raises a ``ModuleNotFoundError`` that says what to install.

Not exercised on a GPU with the real library in fab's test suite: the tests run the glue (layer
replacement, dtype handling, the contexts) against stand-ins with Transformer Engine's documented
signatures (``transformer_engine.pytorch.Linear``/``LayerNorm``/``fp8_autocast``,
``transformer_engine.common.recipe.DelayedScaling``/``Format``).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from types import ModuleType
from typing import Any

import torch
from torch.nn import LayerNorm, Linear, Module

from fab.core.precision import Precision, default_dtype_context
from fab.precision._utils import convert_floating, convert_module_floating, import_optional

_INSTALL = '"transformer_engine[pytorch]"'
#: FP8 matrix products need both dimensions of a Linear's weight divisible by 16.
_FP8_DIVISOR = 16


class TransformerEnginePrecision(Precision):
    """FP8 mixed precision with NVIDIA Transformer Engine.

    - ``convert_module`` replaces the model's ``torch.nn.Linear`` and ``torch.nn.LayerNorm``
      layers (exactly those classes, not subclasses, whose forward may differ) by Transformer
      Engine's, copying their weights, unless the model already holds Transformer Engine layers
      or ``replace_layers=False``; then casts the model to ``weights_dtype``. A Linear whose
      dimensions are not multiples of 16 cannot compute in FP8 and is kept, with a warning.
    - Every forward of a wrapped model runs under ``transformer_engine.pytorch.fp8_autocast``
      with ``recipe``, inside ``torch.autocast("cuda", fallback_compute_dtype)`` for the
      operations FP8 does not cover, with torch's default dtype set to ``weights_dtype``.
    - ``Fabric.init_module``/``init_tensor`` create tensors in ``weights_dtype``; floating-point
      inputs are cast to it, floating-point outputs to torch's default dtype (float32).

    Args:
        weights_dtype: the dtype of the weights (bfloat16 for ``"transformer-engine"``, float16
            for ``"transformer-engine-float16"``).
        recipe: a Transformer Engine recipe, or a mapping of ``DelayedScaling`` arguments
            (``fp8_format`` may be given by name, like ``"HYBRID"``); default ``DelayedScaling()``.
        replace_layers: replace Linear and LayerNorm layers in ``convert_module`` (default: yes,
            unless the model already holds Transformer Engine layers).
        fallback_compute_dtype: the dtype of ``torch.autocast`` around FP8 (default
            ``weights_dtype``).
    """

    precision = "transformer-engine"

    def __init__(
        self,
        *,
        weights_dtype: torch.dtype = torch.bfloat16,
        recipe: Any = None,
        replace_layers: bool | None = None,
        fallback_compute_dtype: torch.dtype | None = None,
    ) -> None:
        name = "transformer-engine-float16" if weights_dtype == torch.float16 else self.precision
        feature = f"precision={name!r}"
        import_optional("transformer_engine.pytorch", _INSTALL, feature)
        recipes = import_optional("transformer_engine.common.recipe", _INSTALL, feature)
        if recipe is None:
            recipe = recipes.DelayedScaling()
        elif isinstance(recipe, Mapping):
            options = dict(recipe)
            if isinstance(options.get("fp8_format"), str):
                options["fp8_format"] = getattr(recipes.Format, options["fp8_format"])
            recipe = recipes.DelayedScaling(**options)
        if name != self.precision:
            # The base class declares `precision` as a class variable; the name depends on the
            # weights' dtype here.
            self.precision = name
        self.weights_dtype = weights_dtype
        self.recipe: Any = recipe
        self.replace_layers = replace_layers
        self.fallback_compute_dtype = fallback_compute_dtype or weights_dtype

    @property
    def _te(self) -> ModuleType:
        # Imported where used, not kept on the instance: a precision is pickled to the processes
        # of spawn launchers, and modules cannot be pickled. The import in __init__ checked it.
        return importlib.import_module("transformer_engine.pytorch")

    # -- models and tensors -----------------------------------------------------------------

    def convert_module(self, module: Module) -> Module:
        if self.replace_layers is not False and not _has_te_layers(module):
            self._replace_layers(module, prefix="")
        return convert_module_floating(module, self.weights_dtype)

    def tensor_init_context(self) -> AbstractContextManager[object]:
        return default_dtype_context(self.weights_dtype)

    def module_init_context(self) -> AbstractContextManager[object]:
        return default_dtype_context(self.weights_dtype)

    def _replace_layers(self, module: Module, prefix: str) -> None:
        for name, child in list(module.named_children()):
            qualified = f"{prefix}{name}"
            replacement: Module | None = None
            if type(child) is Linear:
                replacement = self._te_linear(child, qualified)
            elif type(child) is LayerNorm:
                replacement = self._te_layer_norm(child)
            else:
                self._replace_layers(child, prefix=f"{qualified}.")
            if replacement is not None:
                setattr(module, name, replacement)

    def _te_linear(self, linear: Linear, name: str) -> Module | None:
        if linear.in_features % _FP8_DIVISOR or linear.out_features % _FP8_DIVISOR:
            warnings.warn(
                f"precision='transformer-engine': the Linear layer {name!r} "
                f"({linear.in_features} -> {linear.out_features}) is kept as it is: FP8 needs "
                f"both dimensions divisible by {_FP8_DIVISOR}",
                stacklevel=4,
            )
            return None
        has_bias = linear.bias is not None
        layer: Module = self._te.Linear(
            linear.in_features,
            linear.out_features,
            bias=has_bias,
            params_dtype=linear.weight.dtype,
            **_device_kwargs(linear),
        )
        _copy_parameters(linear, layer, ("weight", "bias") if has_bias else ("weight",))
        return layer

    def _te_layer_norm(self, norm: LayerNorm) -> Module | None:
        if len(norm.normalized_shape) != 1 or norm.weight is None or norm.bias is None:
            return None  # Transformer Engine's LayerNorm is affine, over one dimension
        layer: Module = self._te.LayerNorm(
            norm.normalized_shape[0],
            eps=norm.eps,
            params_dtype=norm.weight.dtype,
            **_device_kwargs(norm),
        )
        _copy_parameters(norm, layer, ("weight", "bias"))
        return layer

    # -- forward ----------------------------------------------------------------------------

    def forward_context(self) -> AbstractContextManager[object]:
        return self._fp8_forward()

    @contextmanager
    def _fp8_forward(self) -> Iterator[None]:
        with (
            default_dtype_context(self.weights_dtype),
            torch.autocast("cuda", dtype=self.fallback_compute_dtype),
            self._te.fp8_autocast(enabled=True, fp8_recipe=self.recipe),
        ):
            yield

    def convert_input(self, data: Any) -> Any:
        return convert_floating(data, self.weights_dtype)

    def convert_output(self, data: Any) -> Any:
        return convert_floating(data, torch.get_default_dtype())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(weights_dtype={self.weights_dtype})"


def transformer_engine_float16() -> TransformerEnginePrecision:
    """The ``transformer-engine-float16`` entry point: float16 weights."""
    return TransformerEnginePrecision(weights_dtype=torch.float16)


def _has_te_layers(module: Module) -> bool:
    return any(type(m).__module__.startswith("transformer_engine") for m in module.modules())


def _device_kwargs(layer: Module) -> dict[str, Any]:
    """Build the replacement on the meta device when the original is there (``empty_init``);
    elsewhere on Transformer Engine's default device (CUDA)."""
    weight = next(layer.parameters(), None)
    return {"device": "meta"} if weight is not None and weight.is_meta else {}


def _copy_parameters(source: Module, target: Module, names: tuple[str, ...]) -> None:
    with torch.no_grad():
        for name in names:
            value = getattr(source, name)
            if not value.is_meta:
                getattr(target, name).copy_(value)
