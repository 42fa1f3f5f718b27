"""Everything deferred: lazy shapes, deferred allocation, deferred loading. Needs torch only."""

from fab.lazy.shapes import has_uninitialized, uninitialized_modules

__all__ = ["has_uninitialized", "uninitialized_modules"]
