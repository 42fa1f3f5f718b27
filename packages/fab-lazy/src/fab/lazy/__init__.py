"""Everything deferred: lazy shapes, deferred allocation, deferred loading. Needs torch only."""

from fab.lazy.dry_run import infer_shapes
from fab.lazy.load_state import DtypePolicy, LoadResult, load_into
from fab.lazy.loading import (
    CheckpointFormatError,
    UnsafeCheckpointError,
    lazy_load,
    load_safetensors,
)
from fab.lazy.materialize import MaterializeError, has_meta, materialize
from fab.lazy.meta import meta_init
from fab.lazy.shapes import (
    LazyModuleError,
    has_uninitialized,
    require_initialized,
    uninitialized_modules,
    uninitialized_tensors,
)
from fab.lazy.skip_init import skip_init

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
    "skip_init",
    "uninitialized_modules",
    "uninitialized_tensors",
]
