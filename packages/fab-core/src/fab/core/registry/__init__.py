"""The plugin registry.

Every accelerator, strategy, precision, cluster environment, logger and callback factory, fab's own
included, is found through a Python entry point. Plugins are data until used: listing names reads
entry-point metadata only, and a plugin module is imported the first time that plugin is asked for.

Rules (see docs/plugins.md):

- The entry-point name is the user-facing alias; the target is a class or a zero-argument factory.
- One scan of the installed distributions per process (``refresh()`` scans again).
- A plugin that fails to import, or is not a subclass of its group's base class, breaks nothing
  else: its error names the distribution and is raised only when that plugin is requested.
- Name collisions: first-party ``fab-*`` distributions win, then alphabetical by distribution; every
  conflict is reported (a ``PluginConflictWarning`` and ``fab plugins``).
- ``register(name, target, override=True)`` replaces a name at run time; without ``override`` an
  existing name is refused.
- ``FAB_DISABLE_PLUGIN_AUTOLOAD=1`` loads only first-party entry points;
  ``FAB_DISABLED_PLUGINS=group:name,...`` switches single plugins off.
"""

from __future__ import annotations

import importlib
from typing import Any

from fab.core.registry.entries import Conflict, PluginEntry, PluginRecord, Scan
from fab.core.registry.errors import (
    PluginConflictWarning,
    PluginDisabledError,
    PluginError,
    PluginLoadError,
    PluginNotFoundError,
    PluginTypeError,
    PluginWarning,
)
from fab.core.registry.groups import (
    DISABLE_AUTOLOAD_ENV,
    DISABLED_PLUGINS_ENV,
    FAB_PACKAGES,
    FIRST_PARTY_DISTRIBUTIONS,
    GROUPS,
    KNOWN_PROVIDERS,
    group_of,
)
from fab.core.registry.lightning_registries import AcceleratorRegistry, StrategyRegistry
from fab.core.registry.plugin_registry import PluginRegistry

__all__ = [
    "ACCELERATORS",
    "ACCELERATOR_REGISTRY",
    "CALLBACKS",
    "DISABLED_PLUGINS_ENV",
    "DISABLE_AUTOLOAD_ENV",
    "ENVIRONMENTS",
    "FAB_PACKAGES",
    "FIRST_PARTY_DISTRIBUTIONS",
    "GROUPS",
    "KNOWN_PROVIDERS",
    "LOGGERS",
    "PRECISION",
    "STRATEGIES",
    "STRATEGY_REGISTRY",
    "AcceleratorRegistry",
    "Conflict",
    "PluginConflictWarning",
    "PluginDisabledError",
    "PluginEntry",
    "PluginError",
    "PluginLoadError",
    "PluginNotFoundError",
    "PluginRecord",
    "PluginRegistry",
    "PluginTypeError",
    "PluginWarning",
    "StrategyRegistry",
    "get_registry",
    "refresh",
]


def _make(group: str) -> PluginRegistry[Any]:
    return PluginRegistry(group)


ACCELERATORS: PluginRegistry[Any] = _make("fab.accelerators")
STRATEGIES: PluginRegistry[Any] = _make("fab.strategies")
PRECISION: PluginRegistry[Any] = _make("fab.precision")
ENVIRONMENTS: PluginRegistry[Any] = _make("fab.environments")
LOGGERS: PluginRegistry[Any] = _make("fab.loggers")
CALLBACKS: PluginRegistry[Any] = _make("fab.callbacks")

#: Lightning's registry objects (``lightning.fabric.strategies.STRATEGY_REGISTRY``,
#: ``lightning.fabric.accelerators.ACCELERATOR_REGISTRY``), as views of the two groups above.
STRATEGY_REGISTRY = StrategyRegistry(STRATEGIES)
ACCELERATOR_REGISTRY = AcceleratorRegistry(ACCELERATORS)

_REGISTRIES = {
    r.group: r for r in (ACCELERATORS, STRATEGIES, PRECISION, ENVIRONMENTS, LOGGERS, CALLBACKS)
}


def get_registry(group: str) -> PluginRegistry[Any]:
    """The registry of ``group``, given as ``fab.strategies`` or ``strategies``."""
    full = group_of(group)
    if full is None:
        accepted = ", ".join(g.short for g in GROUPS.values())
        raise ValueError(f"unknown plugin group {group!r}; accepted: {accepted}")
    return _REGISTRIES[full]


def refresh() -> None:
    """Scan the installed distributions again (after installing a plugin at run time).

    Names registered at run time are kept; loaded plugins are forgotten.
    """
    importlib.invalidate_caches()
    Scan.clear()
    for registry in _REGISTRIES.values():
        with registry._lock:
            registry._resolved = None
            registry._failures.clear()
            registry._loaded = {n: obj for n, (_, obj) in registry._runtime.items()}
