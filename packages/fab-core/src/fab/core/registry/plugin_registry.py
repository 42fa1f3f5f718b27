"""PluginRegistry: the plugins of one group, by name; loaded on first request."""

from __future__ import annotations

import difflib
import importlib
import threading
import warnings
from collections.abc import Callable, Iterable
from typing import Any, Generic, NoReturn, TypeVar, cast

from fab.core.registry.entries import (
    Conflict,
    PluginEntry,
    PluginRecord,
    Scan,
    Status,
    install_command,
    missing_requirements,
    precedence,
)
from fab.core.registry.errors import (
    PluginConflictWarning,
    PluginDisabledError,
    PluginError,
    PluginLoadError,
    PluginNotFoundError,
    PluginTypeError,
    PluginWarning,
)
from fab.core.registry.groups import DISABLED_PLUGINS_ENV, GROUPS, KNOWN_PROVIDERS

T = TypeVar("T")


def _resolve(target: str) -> object:
    module_name, _, attrs = target.partition(":")
    obj: object = importlib.import_module(module_name.strip())
    for attr in filter(None, attrs.strip().split(".")):
        obj = getattr(obj, attr)
    return obj


def _qualified_name(obj: object) -> str:
    module = getattr(obj, "__module__", None) or "?"
    name = getattr(obj, "__qualname__", None) or repr(obj)
    return f"{module}:{name}"


class PluginRegistry(Generic[T]):
    """The plugins of one entry-point group, by user-facing name.

    ``names()`` and ``entry()`` read metadata only; ``load()`` imports the plugin; ``create()``
    instantiates it.
    """

    def __init__(self, group: str) -> None:
        if group not in GROUPS:
            raise ValueError(f"unknown plugin group '{group}'; accepted: {', '.join(GROUPS)}")
        self._group = GROUPS[group]
        self._lock = threading.RLock()
        self._resolved: dict[str, PluginEntry] | None = None
        self._disabled: dict[str, list[PluginEntry]] = {}
        self._shadowed: dict[str, list[PluginEntry]] = {}
        self._conflicts: list[Conflict] = []
        self._loaded: dict[str, object] = {}
        self._failures: dict[str, PluginError] = {}
        self._runtime: dict[str, tuple[PluginEntry, object]] = {}

    # -- reading (no plugin import) ---------------------------------------------------------

    @property
    def group(self) -> str:
        return self._group.name

    @property
    def kind(self) -> str:
        return self._group.kind

    def names(self) -> list[str]:
        """The names that can be requested, sorted. Imports no plugin module."""
        return sorted(self._table())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._table()

    def entry(self, name: str) -> PluginEntry:
        """Where ``name`` comes from; raises like ``load`` for unknown or disabled names."""
        table = self._table()
        if name in table:
            return table[name]
        self._raise_missing(name)

    def conflicts(self) -> list[Conflict]:
        self._table()
        return list(self._conflicts)

    # -- loading --------------------------------------------------------------------------

    def load(self, name: str) -> type[T] | Callable[..., T]:
        """Import and return the class or factory registered as ``name``."""
        entry = self.entry(name)
        with self._lock:
            if name in self._loaded:
                return cast("type[T] | Callable[..., T]", self._loaded[name])
            if name in self._failures:
                raise self._failures[name]
            try:
                obj = self._runtime[name][1] if name in self._runtime else self._import(entry)
                self._validate(entry, obj)
            except PluginError as err:
                self._failures[name] = err
                raise
            self._loaded[name] = obj
            return cast("type[T] | Callable[..., T]", obj)

    def load_class(self, name: str) -> type[T] | None:
        """The plugin's class, or None when the target is a factory function."""
        obj = self.load(name)
        return obj if isinstance(obj, type) else None

    def classes_by_priority(self, priority: str, purpose: str) -> list[tuple[str, type[T]]]:
        """The group's plugin classes, highest ``getattr(cls, priority)`` first (then by name),
        each class once (an alias of one already listed is left out), for choosing one
        automatically (``accelerator="auto"``, cluster-environment detection).

        A plugin that fails to load is skipped with a ``PluginWarning`` that says it was skipped
        while ``purpose``: a broken plugin never stops a run that did not ask for it by name. A
        factory entry is usable by name only and is not listed.
        """
        found: list[tuple[str, type[T]]] = []
        for name in self.names():
            try:
                cls = self.load_class(name)
            except PluginError as err:
                warnings.warn(f"skipped while {purpose}: {err}", PluginWarning, stacklevel=3)
                continue
            if cls is not None and all(cls is not other for _, other in found):
                found.append((name, cls))
        return sorted(found, key=lambda item: (-getattr(item[1], priority), item[0]))

    def create(self, name: str, /, **kwargs: Any) -> T:
        """Instantiate the plugin ``name`` (call the class or factory with ``kwargs``)."""
        obj = self.load(name)
        instance = obj(**kwargs)
        base = self._base()
        if base is not None and not isinstance(instance, base):
            entry = self.entry(name)
            raise PluginTypeError(
                f"{self.kind} plugin '{name}' from {entry.origin} (target '{entry.target}') "
                "returned "
                f"{type(instance).__name__}, which is not a {base.__name__}"
            )
        return instance

    # -- run-time registration ---------------------------------------------------------------

    def register(
        self, name: str, target: type[T] | Callable[..., T], *, override: bool = False
    ) -> None:
        """Register ``target`` (a class or a factory) as ``name``.

        An existing name is refused unless ``override=True``, which replaces it for this process.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"a plugin name must be a non-empty string, got {name!r}")
        with self._lock:
            table = self._table()
            if name in table and not override:
                current = table[name]
                raise ValueError(
                    f"{self.kind} '{name}' is already registered ({current.origin}, "
                    f"target '{current.target}'); pass override=True to replace it"
                )
            entry = PluginEntry(self.group, name, _qualified_name(target), None)
            self._validate(entry, target)
            self._runtime[name] = (entry, target)
            self._loaded[name] = target
            self._failures.pop(name, None)
            self._resolved = None

    def unregister(self, name: str) -> None:
        """Remove a name registered at run time (entry-point plugins come back into view)."""
        with self._lock:
            if name not in self._runtime:
                raise ValueError(f"{self.kind} '{name}' was not registered at run time")
            del self._runtime[name]
            self._loaded.pop(name, None)
            self._resolved = None

    # -- diagnostics ------------------------------------------------------------------------

    def records(self, *, load: bool = True) -> list[PluginRecord]:
        """Every plugin of the group, shadowed and disabled ones included (for ``fab plugins``)."""
        table = self._table()
        rows: list[PluginRecord] = []
        for name in sorted(set(table) | set(self._disabled) | set(self._shadowed)):
            if name in table:
                entry = table[name]
                status: Status = "not loaded"
                detail = ""
                missing = missing_requirements(entry)
                if missing:
                    # Reported without importing: the plugin would only fail when used.
                    status = "needs"
                    detail = f"needs {', '.join(missing)}: {install_command(entry)}"
                elif load:
                    try:
                        self.load(name)
                        status = "ok"
                    except PluginError as err:
                        status, detail = "error", str(err)
                elif name in self._loaded:
                    status = "ok"
                rows.append(self._record(entry, status, detail, missing))
            for off in self._disabled.get(name, ()):
                rows.append(self._record(off, "disabled", f"switched off by {off.disabled_by}"))
            for lost in self._shadowed.get(name, ()):
                rows.append(self._record(lost, "shadowed", f"name taken by {table[name].origin}"))
        return rows

    # -- internals --------------------------------------------------------------------------

    def _record(
        self, entry: PluginEntry, status: Status, detail: str, missing: tuple[str, ...] = ()
    ) -> PluginRecord:
        return PluginRecord(
            entry.group,
            entry.name,
            entry.distribution,
            entry.version,
            entry.target,
            status,
            detail,
            missing,
        )

    def _table(self) -> dict[str, PluginEntry]:
        with self._lock:
            if self._resolved is None:
                self._resolved = self._resolve_names(Scan.entries(self.group))
            return self._resolved

    def _resolve_names(self, entries: Iterable[PluginEntry]) -> dict[str, PluginEntry]:
        by_name: dict[str, list[PluginEntry]] = {}
        disabled: dict[str, list[PluginEntry]] = {}
        for entry in entries:
            if entry.disabled_by is not None:
                disabled.setdefault(entry.name, []).append(entry)
            else:
                by_name.setdefault(entry.name, []).append(entry)
        table: dict[str, PluginEntry] = {}
        shadowed: dict[str, list[PluginEntry]] = {}
        conflicts: list[Conflict] = []
        for name, candidates in by_name.items():
            candidates.sort(key=precedence)
            table[name] = candidates[0]
            if len(candidates) > 1:
                shadowed[name] = candidates[1:]
                conflicts.append(Conflict(self.group, name, candidates[0], tuple(candidates[1:])))
        report = [c for c in conflicts if c not in self._conflicts]
        for name, (entry, _) in self._runtime.items():
            table[name] = entry
        self._disabled = disabled
        self._shadowed = shadowed
        self._conflicts = conflicts
        for conflict in report:
            warnings.warn(str(conflict), PluginConflictWarning, stacklevel=4)
        return table

    def _import(self, entry: PluginEntry) -> object:
        try:
            return _resolve(entry.target)
        except Exception as err:
            short = self._group.short
            raise PluginLoadError(
                f"{self.kind} plugin '{entry.name}' from {entry.origin} (target '{entry.target}') "
                f"failed to import: {type(err).__name__}: {err}. Other plugins are unaffected. "
                f"Fix or uninstall '{entry.distribution}', or switch it off with "
                f"{DISABLED_PLUGINS_ENV}={short}:{entry.name}"
            ) from err

    def _base(self) -> type | None:
        if self._group.base is None:
            return None
        return cast(type, _resolve(self._group.base))

    def _validate(self, entry: PluginEntry, obj: object) -> None:
        base = self._base()
        if isinstance(obj, type):
            if base is not None and not issubclass(obj, base):
                raise PluginTypeError(
                    f"{self.kind} plugin '{entry.name}' from {entry.origin}: target "
                    f"'{entry.target}' is the class {obj.__name__}, which is not a subclass of "
                    f"{base.__module__}.{base.__qualname__}. Other plugins are unaffected"
                )
        elif not callable(obj):
            raise PluginTypeError(
                f"{self.kind} plugin '{entry.name}' from {entry.origin}: target '{entry.target}' "
                f"is a {type(obj).__name__}; expected a class or a zero-argument factory"
            )

    def _why_not_installed(self, name: str, installed: list[str]) -> str:
        """Why a suggested name cannot be used as it is ("" when it can)."""
        if name in installed:
            return ""
        if name in self._disabled:
            return f" (switched off by {self._disabled[name][0].disabled_by})"
        provider = KNOWN_PROVIDERS.get(self.group, {}).get(name)
        if provider is not None and Scan.installed_version(provider) is None:
            return f" (from {provider}, not installed)"
        return ""

    def _raise_missing(self, name: str) -> NoReturn:
        kind = self.kind
        if name in self._disabled:
            off = self._disabled[name][0]
            raise PluginDisabledError(
                f"{kind} '{name}' ({off.origin}) is installed but switched off by {off.disabled_by}"
            )
        installed = self.names()
        message = (
            f"unknown {kind} {name!r}. Installed: {', '.join(map(repr, installed)) or 'none'}."
        )
        known = KNOWN_PROVIDERS.get(self.group, {})
        provider = known.get(name)
        if provider is not None and Scan.installed_version(provider) is None:
            extra = provider.removeprefix("fab-")
            message += (
                f" {kind.capitalize()} '{name}' is provided by {provider}, which is not installed: "
                f'pip install {provider}  (or pip install "fab-core[{extra}]")'
            )
        elif provider is not None:
            # Installed, yet the name is not registered: an older release, or stale metadata.
            message += (
                f" {kind.capitalize()} '{name}' is provided by {provider}, but the installed "
                f"{provider} {Scan.installed_version(provider)} does not register it: upgrade "
                f"it (pip install -U {provider}), or reinstall it if it is an editable install"
            )
        else:
            close = difflib.get_close_matches(
                name, sorted(set(installed) | set(known) | set(self._disabled)), n=3
            )
            hints = [repr(c) + self._why_not_installed(c, installed) for c in close]
            if hints:
                message += f" Did you mean {' or '.join(hints)}?"
        raise PluginNotFoundError(message)
