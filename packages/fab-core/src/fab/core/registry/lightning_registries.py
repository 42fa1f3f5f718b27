"""``STRATEGY_REGISTRY`` and ``ACCELERATOR_REGISTRY``: Lightning's registry objects, as views of
fab's registry.

Lightning programs list, look up and register strategies and accelerators through these two
dict-like objects (``"ddp" in STRATEGY_REGISTRY``, ``STRATEGY_REGISTRY.available_strategies()``,
``STRATEGY_REGISTRY.register("mine", MyStrategy, description=..., **init_params)``). Here they
read and write fab's registry: a name registered through one is seen by the other and by
``Fabric(strategy=...)``. Creating a view, listing names and membership import no plugin; a
plugin is imported when its entry is read or an instance is made.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from fab.core.registry.plugin_registry import PluginRegistry

__all__ = ["AcceleratorRegistry", "LightningRegistryView", "StrategyRegistry"]


class LightningRegistryView(Mapping[str, dict[str, Any]]):
    """A name -> ``{kind: class, f"{kind}_name": name, "description": str, "init_params":
    dict}`` mapping over one group of fab's registry (Lightning's ``_StrategyRegistry`` shape)."""

    #: "strategy" or "accelerator": the key of the class in an entry.
    kind = ""
    #: "Strategies" or "Accelerators", for ``str()``.
    title = ""

    def __init__(self, plugins: PluginRegistry[Any]) -> None:
        self._plugins = plugins
        self._descriptions: dict[str, str] = {}
        self._init_params: dict[str, dict[str, Any]] = {}

    # -- reading --------------------------------------------------------------------------------

    def __getitem__(self, name: str) -> dict[str, Any]:
        if name not in self._plugins:
            raise KeyError(name)
        target = self._plugins.load(name)
        target = getattr(target, "func", target)  # registered with init_params: the class
        return {
            self.kind: target,
            f"{self.kind}_name": name,
            "description": self._descriptions.get(name, ""),
            "init_params": dict(self._init_params.get(name, {})),
        }

    def __contains__(self, name: object) -> bool:
        return name in self._plugins

    def __iter__(self) -> Iterator[str]:
        return iter(self._plugins.names())

    def __len__(self) -> int:
        return len(self._plugins.names())

    def get(self, name: str, default: Any = None) -> Any:
        """An instance of the plugin ``name`` (with the ``init_params`` it was registered with);
        ``default`` when there is none and a default is given; else ``KeyError``."""
        if name in self._plugins:
            return self._plugins.create(name)
        if default is not None:
            return default
        available = ", ".join(self._plugins.names()) or "none"
        raise KeyError(f"'{name}' not found in registry. Available names: {available}")

    def __str__(self) -> str:
        return f"Registered {self.title}: {', '.join(self._plugins.names())}"

    # -- writing --------------------------------------------------------------------------------

    def register(
        self,
        name: str,
        target: Callable[..., Any] | None = None,
        description: str | None = None,
        override: bool = False,
        **init_params: Any,
    ) -> Callable[..., Any]:
        """Register ``target`` (a class) as ``name`` in fab's registry, made with
        ``init_params``; without ``target``, return a class decorator that does it."""
        if not isinstance(name, str):
            raise TypeError(f"`name` must be a str, found {name!r}")

        def do_register(cls: Callable[..., Any]) -> Callable[..., Any]:
            factory = functools.partial(cls, **init_params) if init_params else cls
            try:
                self._plugins.register(name, factory, override=override)
            except ValueError as err:
                raise self._refusal(str(err)) from err
            self._descriptions[name] = description or ""
            self._init_params[name] = dict(init_params)
            return cls

        return do_register if target is None else do_register(target)

    def remove(self, name: str) -> None:
        """Remove a name registered at run time. An installed plugin (an entry point) cannot be
        removed; switch it off with ``FAB_DISABLED_PLUGINS=group:name`` instead."""
        if name not in self._plugins:
            raise KeyError(name)
        try:
            self._plugins.unregister(name)
        except ValueError as err:
            entry = self._plugins.entry(name)
            raise ValueError(
                f"{self.kind} '{name}' comes from {entry.origin}, not from register(); switch it "
                f"off with FAB_DISABLED_PLUGINS={self._plugins.group}:{name}"
            ) from err
        self._descriptions.pop(name, None)
        self._init_params.pop(name, None)

    def _refusal(self, message: str) -> Exception:
        return ValueError(message)


class StrategyRegistry(LightningRegistryView):
    """Lightning's ``STRATEGY_REGISTRY`` over fab's ``fab.strategies`` group."""

    kind = "strategy"
    title = "Strategies"

    def available_strategies(self) -> list[str]:
        return list(self)


class AcceleratorRegistry(LightningRegistryView):
    """Lightning's ``ACCELERATOR_REGISTRY`` over fab's ``fab.accelerators`` group."""

    kind = "accelerator"
    title = "Accelerators"

    def available_accelerators(self) -> list[str]:
        return list(self)

    def _refusal(self, message: str) -> Exception:
        from fab.core.utilities.exceptions import MisconfigurationException

        return MisconfigurationException(message)
