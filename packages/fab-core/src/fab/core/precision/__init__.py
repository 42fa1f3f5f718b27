"""Precision base class (also the ``32-true`` fallback). Other precisions live in fab-precision."""

from fab.core.precision.precision import Precision, PrecisionContext, default_dtype_context

__all__ = ["Precision", "PrecisionContext", "default_dtype_context"]
