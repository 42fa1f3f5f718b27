"""What the registry raises and warns."""

from __future__ import annotations


class PluginError(Exception):
    """Base class of every registry error."""


class PluginNotFoundError(PluginError, ValueError):
    """No plugin of that name is registered in the group."""


class PluginDisabledError(PluginError, ValueError):
    """The plugin exists but was switched off by an environment variable."""


class PluginLoadError(PluginError, ImportError):
    """The plugin's module or target could not be imported."""


class PluginTypeError(PluginError, TypeError):
    """The plugin's target is not what its group accepts (not a subclass of the base class)."""


class PluginWarning(UserWarning):
    """Something about the installed plugins deserves attention but breaks nothing."""


class PluginConflictWarning(PluginWarning):
    """Two distributions register the same name in the same group."""
