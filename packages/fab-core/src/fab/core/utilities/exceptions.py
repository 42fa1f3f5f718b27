"""Lightning's ``lightning.fabric.utilities.exceptions``: the exception Lightning programs catch
for a configuration Lightning cannot run."""

from __future__ import annotations

__all__ = ["MisconfigurationException"]


class MisconfigurationException(Exception):
    """A configuration that cannot run. fab itself raises ``ValueError``/``TypeError`` with the
    accepted values; this class exists so that code written for Lightning, which raises or
    catches it, runs unchanged."""
