"""``bitsandbytes``: quantized Linear layers (4-bit NF4/FP4 or 8-bit) with the bitsandbytes
library.

Needs ``bitsandbytes`` (``pip install bitsandbytes``); bitsandbytes quantizes a layer's weights
when the layer is moved to a GPU, which fab's strategy does right after ``convert_module``. This
module imports nothing of the library when it is imported, so the plugin can be listed without it;
creating the precision without it raises a ``ModuleNotFoundError`` that says what to install.

Not exercised with the real library in fab's test suite (no GPU there): the tests run the glue
(which layers are replaced, with which arguments, dtypes) against stand-ins with the documented
signatures of ``bitsandbytes.nn.Linear4bit`` and ``bitsandbytes.nn.Linear8bitLt``, and the
replacement follows bitsandbytes' documented recipe: build the quantized layer, load the float
layer's state dict into it, move it to the GPU.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from contextlib import AbstractContextManager
from types import ModuleType
from typing import Any, Literal

import torch
from torch.nn import Linear, Module

from fab.core.precision import Precision, default_dtype_context
from fab.precision._utils import convert_floating, convert_module_floating, import_optional

Mode = Literal["nf4", "nf4-dq", "fp4", "fp4-dq", "int8", "int8-training"]
_MODES = ("nf4", "nf4-dq", "fp4", "fp4-dq", "int8", "int8-training")


class BitsandbytesPrecision(Precision):
    """Quantizes the model's ``torch.nn.Linear`` layers with bitsandbytes.

    Modes: ``"nf4"``/``"fp4"`` (4-bit NormalFloat or float, ``bitsandbytes.nn.Linear4bit``),
    ``"nf4-dq"``/``"fp4-dq"`` (the same with double quantization of the statistics), ``"int8"``
    (LLM.int8(), ``bitsandbytes.nn.Linear8bitLt`` with frozen int8 weights) and ``"int8-training"``
    (Linear8bitLt keeping trainable 16-bit weights). Quantized weights are frozen: train adapters
    (LoRA) beside them, or the layers left out with ``ignore_modules``.

    - ``convert_module`` casts the model to ``dtype``, then replaces every ``torch.nn.Linear``
      (exactly that class) not under ``ignore_modules`` by a bitsandbytes layer holding its
      weights; a model that already holds bitsandbytes layers is left as it is.
    - ``Fabric.init_module``/``init_tensor`` and every forward run with torch's default dtype set
      to ``dtype``; floating-point inputs are cast to ``dtype``, outputs to torch's default dtype.

    Args:
        mode: the quantization, above; ``"nf4"`` by default (what ``precision="bitsandbytes"``
            gives).
        dtype: the dtype of everything that is not quantized and of the computation; default
            float16 for the int8 modes, else bfloat16 where the GPU supports it and float16
            otherwise.
        ignore_modules: qualified names of submodules to leave unquantized; a name covers what is
            under it (``{"lm_head", "transformer.h.0"}``).
    """

    precision = "bitsandbytes"

    def __init__(
        self,
        mode: Mode = "nf4",
        dtype: torch.dtype | None = None,
        ignore_modules: Iterable[str] | None = None,
    ) -> None:
        if mode not in _MODES:
            raise ValueError(
                f"BitsandbytesPrecision(mode={mode!r}): expected one of {', '.join(_MODES)}"
            )
        import_optional("bitsandbytes", "bitsandbytes", "precision='bitsandbytes'")
        if dtype is None:
            dtype = torch.float16 if mode.startswith("int8") else _default_compute_dtype()
        self.mode: Mode = mode
        self.dtype = dtype
        self.ignore_modules = frozenset(ignore_modules or ())

    @property
    def _bnb(self) -> ModuleType:
        # Imported where used, not kept on the instance: a precision is pickled to the processes
        # of spawn launchers, and modules cannot be pickled. The import in __init__ checked it.
        return importlib.import_module("bitsandbytes")

    # -- models and tensors -----------------------------------------------------------------

    def convert_module(self, module: Module) -> Module:
        quantized = (self._bnb.nn.Linear4bit, self._bnb.nn.Linear8bitLt)
        if any(isinstance(m, quantized) for m in module.modules()):
            return module  # quantized by the user already
        module = convert_module_floating(module, self.dtype)
        self._replace_linears(module, prefix="")
        return module

    def tensor_init_context(self) -> AbstractContextManager[object]:
        return default_dtype_context(self.dtype)

    def module_init_context(self) -> AbstractContextManager[object]:
        return default_dtype_context(self.dtype)

    def _ignored(self, name: str) -> bool:
        return any(name == i or name.startswith(f"{i}.") for i in self.ignore_modules)

    def _replace_linears(self, module: Module, prefix: str) -> None:
        for name, child in list(module.named_children()):
            qualified = f"{prefix}{name}"
            if self._ignored(qualified):
                continue
            if type(child) is Linear:
                setattr(module, name, self._quantized_linear(child))
            else:
                self._replace_linears(child, prefix=f"{qualified}.")

    def _quantized_linear(self, linear: Linear) -> Module:
        bnb_nn = self._bnb.nn
        has_bias = linear.bias is not None
        with default_dtype_context(self.dtype):
            if self.mode.startswith("int8"):
                layer: Module = bnb_nn.Linear8bitLt(
                    linear.in_features,
                    linear.out_features,
                    bias=has_bias,
                    has_fp16_weights=self.mode == "int8-training",
                    threshold=6.0,
                )
            else:
                layer = bnb_nn.Linear4bit(
                    linear.in_features,
                    linear.out_features,
                    bias=has_bias,
                    compute_dtype=self.dtype,
                    compress_statistics=self.mode.endswith("-dq"),
                    quant_type=self.mode.removesuffix("-dq"),
                )
        # bitsandbytes' recipe: load the float weights; moving the layer to the GPU quantizes.
        layer.load_state_dict(linear.state_dict())
        return layer

    # -- forward ----------------------------------------------------------------------------

    def forward_context(self) -> AbstractContextManager[object]:
        return default_dtype_context(self.dtype)

    def convert_input(self, data: Any) -> Any:
        return convert_floating(data, self.dtype)

    def convert_output(self, data: Any) -> Any:
        return convert_floating(data, torch.get_default_dtype())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mode={self.mode!r}, dtype={self.dtype})"


def _default_compute_dtype() -> torch.dtype:
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16
