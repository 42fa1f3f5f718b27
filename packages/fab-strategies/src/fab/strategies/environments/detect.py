"""Choosing the cluster environment: ask every registered environment, most specific first."""

from __future__ import annotations

import warnings

from fab.core import registry
from fab.core.environments import ClusterEnvironment
from fab.strategies.environments.fab import FabEnvironment


def detect_environment() -> ClusterEnvironment:
    """An instance of the registered environment with the highest ``detect_priority`` whose
    ``detect()`` is True; :class:`FabEnvironment` when none is.

    Every class of the ``fab.environments`` group takes part, third parties' included. One that
    fails to load, or whose ``detect()`` raises, is skipped with a ``PluginWarning``.
    """
    candidates = registry.ENVIRONMENTS.classes_by_priority(
        "detect_priority", "detecting the cluster environment"
    )
    for name, cls in candidates:
        try:
            detected = cls.detect()
        except Exception as err:
            warnings.warn(
                f"skipped the cluster environment '{name}' ({cls.__qualname__}): detect() raised "
                f"{type(err).__name__}: {err}",
                registry.PluginWarning,
                stacklevel=2,
            )
            continue
        if detected:
            environment: ClusterEnvironment = cls()
            return environment
    return FabEnvironment()
