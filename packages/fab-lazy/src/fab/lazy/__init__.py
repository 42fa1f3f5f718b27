"""Everything deferred: lazy shapes, deferred allocation, deferred loading. Needs torch only."""

from fab.lazy.shapes import has_uninitialized, uninitialized_modules
from fab.lazy.skip_init import skip_init

__all__ = ["has_uninitialized", "skip_init", "uninitialized_modules"]
