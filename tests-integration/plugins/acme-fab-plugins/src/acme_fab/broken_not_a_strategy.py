"""A deliberately broken plugin: ``acme_not_a_strategy`` is registered in ``fab.strategies`` but
its target is not a ``fab.core.strategies.Strategy`` subclass.

fab must refuse it (``PluginTypeError`` naming this distribution) only when it is requested.
"""

from __future__ import annotations


class NotAStrategy:
    """A plain class, registered by mistake as a strategy."""

    def __init__(self) -> None:
        self.created = True
