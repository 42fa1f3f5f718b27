"""A deliberately broken plugin: the ``acme_missing_dep`` strategy needs a package that is not
installed, so importing this module fails.

fab must report that only when ``acme_missing_dep`` is requested, naming this distribution and the
missing module, and every other plugin must keep working. Kept apart from the working plugins so
that its failure touches no other module.
"""

from __future__ import annotations

import acme_nonexistent_dependency  # type: ignore[import-not-found]  # missing on purpose

from fab.core.strategies import SingleDeviceStrategy


class MissingDependencyStrategy(SingleDeviceStrategy):
    """Would drive ``acme_nonexistent_dependency``; never gets past the import."""

    engine = acme_nonexistent_dependency
