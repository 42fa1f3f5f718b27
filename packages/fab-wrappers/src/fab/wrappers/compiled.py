"""Models compiled with ``torch.compile``: taking the compile layer off and putting it back.

``torch.compile(model)`` returns an ``OptimizedModule`` that holds the model as ``_orig_mod``, so
its state-dict keys start with ``_orig_mod.``. ``Fabric.setup`` sets up the original model (the
strategy wraps and shards the real layers) and compiles the result again, the same way::

    original, compiled_with = unwrap_compiled(model)
    forward_module = strategy.setup_module(original)
    forward_module = rewrap_compiled(forward_module, compiled_with)

torch records no keyword arguments of ``torch.compile``; what it keeps is the context it made from
them (backend, mode, options, fullgraph, dynamic), and applying that context to another module is
exactly what ``torch.compile`` itself does. So the compile settings are carried over as they are,
without guessing keyword arguments and without patching ``torch.compile``.

Nothing here imports ``torch._dynamo``: a compiled module can exist only once torch has imported
it, so its class is looked up in ``sys.modules``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch.nn import Module


@dataclass(frozen=True)
class CompileSettings:
    """How a module was compiled: ``torch.compile``'s context for it, which compiles another module
    with the same backend, mode and options when called on it."""

    context: Callable[[Module], Module]

    def apply(self, module: Module) -> Module:
        """``module`` compiled the way the original was."""
        return self.context(module)


def is_compiled(module: object) -> bool:
    """Whether ``module`` is what ``torch.compile(model)`` returns (an ``OptimizedModule``)."""
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    optimized_module = getattr(eval_frame, "OptimizedModule", None)
    return optimized_module is not None and isinstance(module, optimized_module)


def unwrap_compiled(module: Module) -> tuple[Module, CompileSettings | None]:
    """The module inside a ``torch.compile`` wrapper and how it was compiled; a module that is not
    compiled comes back as it is, with ``None``."""
    if not is_compiled(module):
        return module, None
    original = cast(Module, module._orig_mod)
    return original, CompileSettings(cast(Callable[[Module], Module], module.dynamo_ctx))


def rewrap_compiled(
    module: Module, compile_kwargs: CompileSettings | Mapping[str, Any] | None
) -> Module:
    """Compile ``module`` again: with the settings ``unwrap_compiled`` returned, or with keyword
    arguments for ``torch.compile``. ``None`` returns ``module`` unchanged."""
    if compile_kwargs is None:
        return module
    if isinstance(compile_kwargs, CompileSettings):
        return compile_kwargs.apply(module)
    return cast(Module, torch.compile(module, **compile_kwargs))
