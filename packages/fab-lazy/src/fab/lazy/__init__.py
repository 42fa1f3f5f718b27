"""Everything deferred: lazy shapes, deferred allocation, deferred loading. Needs torch only.

The names below are imported from their modules on first use (PEP 562), so ``import fab.lazy``
(which ``import fab.core`` does) costs almost nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fab.lazy.dry_run import infer_shapes
    from fab.lazy.errors import CheckpointFormatError, UnsafeCheckpointError
    from fab.lazy.load_state import DtypePolicy, LoadResult, load_into
    from fab.lazy.loading import lazy_load, load_safetensors
    from fab.lazy.materializing import MaterializeError, has_meta, materialize, reset_method
    from fab.lazy.meta import meta_init
    from fab.lazy.shapes import (
        LazyModuleError,
        has_uninitialized,
        require_initialized,
        uninitialized_modules,
        uninitialized_tensors,
    )
    from fab.lazy.skipping import skip_init

#: Public name -> the module that defines it.
_WHERE = {
    "infer_shapes": "dry_run",
    "CheckpointFormatError": "errors",
    "UnsafeCheckpointError": "errors",
    "DtypePolicy": "load_state",
    "LoadResult": "load_state",
    "load_into": "load_state",
    "lazy_load": "loading",
    "load_safetensors": "loading",
    "MaterializeError": "materializing",
    "has_meta": "materializing",
    "materialize": "materializing",
    "reset_method": "materializing",
    "meta_init": "meta",
    "LazyModuleError": "shapes",
    "has_uninitialized": "shapes",
    "require_initialized": "shapes",
    "uninitialized_modules": "shapes",
    "uninitialized_tensors": "shapes",
    "skip_init": "skipping",
}

__all__ = [
    "CheckpointFormatError",
    "DtypePolicy",
    "LazyModuleError",
    "LoadResult",
    "MaterializeError",
    "UnsafeCheckpointError",
    "has_meta",
    "has_uninitialized",
    "infer_shapes",
    "lazy_load",
    "load_into",
    "load_safetensors",
    "materialize",
    "meta_init",
    "require_initialized",
    "reset_method",
    "skip_init",
    "uninitialized_modules",
    "uninitialized_tensors",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'fab.lazy' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"fab.lazy.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
