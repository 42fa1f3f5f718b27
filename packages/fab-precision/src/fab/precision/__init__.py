"""Precisions for fab: the base class (which is also ``32-true``, from fab-core) under the name
users know. Other precisions are registered here through the ``fab.precision`` entry points."""

from fab.core.precision import Precision

__all__ = ["Precision"]
