"""Choosing the cluster environment: ask every registered environment, most specific first."""

from __future__ import annotations

import warnings

from fab.core import registry
from fab.core.environments import ClusterEnvironment
from fab.strategies.environments.fab import FabEnvironment


def _candidates() -> list[tuple[int, str, type[ClusterEnvironment]]]:
    found: list[tuple[int, str, type[ClusterEnvironment]]] = []
    for name in registry.ENVIRONMENTS.names():
        try:
            cls = registry.ENVIRONMENTS.load_class(name)
        except registry.PluginError as err:
            warnings.warn(
                f"skipped while detecting the cluster environment: {err}",
                registry.PluginWarning,
                stacklevel=3,
            )
            continue
        if cls is not None:  # a factory is usable by name only
            found.append((cls.detect_priority, name, cls))
    return sorted(found, key=lambda c: (-c[0], c[1]))


def detect_environment() -> ClusterEnvironment:
    """An instance of the registered environment with the highest ``detect_priority`` whose
    ``detect()`` is True; :class:`FabEnvironment` when none is.

    Every class of the ``fab.environments`` group takes part, third parties' included. One that
    fails to load, or whose ``detect()`` raises, is skipped with a ``PluginWarning``.
    """
    seen: set[type[ClusterEnvironment]] = set()
    for _, name, cls in _candidates():
        if cls in seen:  # an alias of a class already asked
            continue
        seen.add(cls)
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
            return cls()
    return FabEnvironment()
