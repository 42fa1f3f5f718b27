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

import difflib
import importlib
import importlib.metadata
import os
import re
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, NoReturn, TypeVar, cast

__all__ = [
    "ACCELERATORS",
    "CALLBACKS",
    "ENVIRONMENTS",
    "FIRST_PARTY_DISTRIBUTIONS",
    "GROUPS",
    "LOGGERS",
    "PRECISION",
    "STRATEGIES",
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
    "get_registry",
    "refresh",
]

T = TypeVar("T")

DISABLE_AUTOLOAD_ENV = "FAB_DISABLE_PLUGIN_AUTOLOAD"
DISABLED_PLUGINS_ENV = "FAB_DISABLED_PLUGINS"

#: Distributions whose entry points win a name collision, and which stay loaded when third-party
#: autoloading is switched off.
FIRST_PARTY_DISTRIBUTIONS = frozenset(
    {
        "fab-core",
        "fab-wrappers",
        "fab-lazy",
        "fab-accelerators",
        "fab-strategies",
        "fab-precision",
        "fab-loggers",
    }
)

#: Names that a first-party package provides, so that asking for one of them without that package
#: installed says what to install. Names only: nothing here is imported.
KNOWN_PROVIDERS: Mapping[str, Mapping[str, str]] = {
    "fab.accelerators": {n: "fab-accelerators" for n in ("cuda", "gpu", "mps")},
    "fab.strategies": {
        n: "fab-strategies"
        for n in (
            "ddp",
            "ddp_spawn",
            "ddp_fork",
            "ddp_notebook",
            "ddp_find_unused_parameters_true",
            "ddp_find_unused_parameters_false",
            "dp",
            "fsdp",
            "model_parallel",
            "deepspeed",
        )
    },
    "fab.precision": {
        n: "fab-precision"
        for n in (
            "64-true",
            "16-mixed",
            "bf16-mixed",
            "16-true",
            "bf16-true",
            "transformer-engine",
            "transformer-engine-float16",
            "bitsandbytes",
        )
    },
    "fab.environments": {
        n: "fab-strategies" for n in ("fab", "torchelastic", "slurm", "lsf", "mpi", "kubeflow")
    },
    "fab.loggers": {n: "fab-loggers" for n in ("csv", "tensorboard", "mlflow")},
}


@dataclass(frozen=True)
class _Group:
    name: str
    short: str
    kind: str
    base: str | None  # "module:Class" of the base class, imported only to validate a plugin


GROUPS: Mapping[str, _Group] = {
    g.name: g
    for g in (
        _Group(
            "fab.accelerators",
            "accelerators",
            "accelerator",
            "fab.core.accelerators.accelerator:Accelerator",
        ),
        _Group("fab.strategies", "strategies", "strategy", "fab.core.strategies.strategy:Strategy"),
        _Group("fab.precision", "precision", "precision", "fab.core.precision.precision:Precision"),
        _Group(
            "fab.environments",
            "environments",
            "cluster environment",
            "fab.core.environments.environment:ClusterEnvironment",
        ),
        _Group("fab.loggers", "loggers", "logger", "fab.core.loggers.logger:Logger"),
        _Group("fab.callbacks", "callbacks", "callback", None),
    )
}


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


@dataclass(frozen=True)
class PluginEntry:
    """Where a plugin comes from. Reading one imports nothing."""

    group: str
    name: str
    target: str
    distribution: str | None  # None: registered at run time with register()
    version: str | None = None
    disabled_by: str | None = None  # the environment variable that switched it off

    @property
    def origin(self) -> str:
        if self.distribution is None:
            return "registered at run time"
        return f"distribution '{self.distribution}'" + (f" {self.version}" if self.version else "")

    @property
    def first_party(self) -> bool:
        return self.distribution in FIRST_PARTY_DISTRIBUTIONS


@dataclass(frozen=True)
class Conflict:
    """Several distributions register one name; ``winner`` is the one in use."""

    group: str
    name: str
    winner: PluginEntry
    shadowed: tuple[PluginEntry, ...]

    def __str__(self) -> str:
        others = ", ".join(f"'{e.distribution}' ({e.target})" for e in self.shadowed)
        return (
            f"{self.group} name '{self.name}' is registered by several distributions: "
            f"'{self.winner.distribution}' ({self.winner.target}) is used; shadowed: {others}. "
            "First-party fab-* distributions win, then the alphabetically first distribution."
        )


Status = Literal["ok", "not loaded", "error", "disabled", "shadowed"]


@dataclass(frozen=True)
class PluginRecord:
    """One row of ``fab plugins``."""

    group: str
    name: str
    distribution: str | None
    version: str | None
    target: str
    status: Status
    detail: str = ""


def _normalize_distribution(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _group_of(spec: str) -> str | None:
    spec = spec.strip()
    if spec in GROUPS:
        return spec
    for g in GROUPS.values():
        if spec == g.short:
            return g.name
    return None


def _disabled_names() -> dict[str, set[str]]:
    """Parse FAB_DISABLED_PLUGINS (``group:name,...``; group full or short: ``strategies:ddp``)."""
    out: dict[str, set[str]] = {}
    raw = os.environ.get(DISABLED_PLUGINS_ENV, "")
    for item in filter(None, (part.strip() for part in raw.split(","))):
        group_spec, sep, name = item.rpartition(":")
        group = _group_of(group_spec) if sep else None
        if group is None or not name:
            accepted = ", ".join(sorted({g.short for g in GROUPS.values()} | set(GROUPS)))
            warnings.warn(
                f"{DISABLED_PLUGINS_ENV}: ignoring '{item}': expected 'group:name' with group "
                "one of "
                f"{accepted}",
                PluginWarning,
                stacklevel=3,
            )
            continue
        out.setdefault(group, set()).add(name.strip())
    return out


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


class _Scan:
    """The result of reading every installed distribution's fab entry points, once."""

    _lock = threading.RLock()
    _entries: dict[str, list[PluginEntry]] | None = None

    @classmethod
    def entries(cls, group: str) -> list[PluginEntry]:
        with cls._lock:
            if cls._entries is None:
                cls._entries = cls._read()
            return list(cls._entries.get(group, ()))

    @classmethod
    def clear(cls) -> None:
        with cls._lock:
            cls._entries = None

    @staticmethod
    def _read() -> dict[str, list[PluginEntry]]:
        autoload = not _truthy(os.environ.get(DISABLE_AUTOLOAD_ENV))
        disabled = _disabled_names()
        found: dict[str, list[PluginEntry]] = {}
        seen: set[str] = set()
        for dist in importlib.metadata.distributions():
            # The first of several copies of one distribution on sys.path is the one Python uses.
            dist_name = _normalize_distribution(dist.metadata["Name"] or "")
            if not dist_name or dist_name in seen:
                continue
            seen.add(dist_name)
            for ep in dist.entry_points:
                if ep.group in GROUPS:
                    entry = _entry_of(ep, dist_name, dist.version, autoload, disabled)
                    found.setdefault(ep.group, []).append(entry)
        return found


def _entry_of(
    ep: importlib.metadata.EntryPoint,
    dist_name: str,
    version: str,
    autoload: bool,
    disabled: Mapping[str, set[str]],
) -> PluginEntry:
    entry = PluginEntry(ep.group, ep.name, ep.value, dist_name, version)
    if ep.name in disabled.get(ep.group, ()):
        return _with_disabled(entry, DISABLED_PLUGINS_ENV)
    if not autoload and dist_name not in FIRST_PARTY_DISTRIBUTIONS:
        return _with_disabled(entry, DISABLE_AUTOLOAD_ENV)
    return entry


def _with_disabled(entry: PluginEntry, by: str) -> PluginEntry:
    return PluginEntry(entry.group, entry.name, entry.target, entry.distribution, entry.version, by)


def _precedence(entry: PluginEntry) -> tuple[int, str]:
    return (0 if entry.first_party else 1, entry.distribution or "")


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
                if load:
                    try:
                        self.load(name)
                        status = "ok"
                    except PluginError as err:
                        status, detail = "error", str(err)
                elif name in self._loaded:
                    status = "ok"
                rows.append(self._record(entry, status, detail))
            for off in self._disabled.get(name, ()):
                rows.append(self._record(off, "disabled", f"switched off by {off.disabled_by}"))
            for lost in self._shadowed.get(name, ()):
                rows.append(self._record(lost, "shadowed", f"name taken by {table[name].origin}"))
        return rows

    # -- internals --------------------------------------------------------------------------

    def _record(self, entry: PluginEntry, status: Status, detail: str) -> PluginRecord:
        return PluginRecord(
            entry.group, entry.name, entry.distribution, entry.version, entry.target, status, detail
        )

    def _table(self) -> dict[str, PluginEntry]:
        with self._lock:
            if self._resolved is None:
                self._resolved = self._resolve_names(_Scan.entries(self.group))
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
            candidates.sort(key=_precedence)
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
        provider = KNOWN_PROVIDERS.get(self.group, {}).get(name)
        if provider is not None:
            extra = provider.removeprefix("fab-")
            message += (
                f" {kind.capitalize()} '{name}' is provided by {provider}, which is not installed: "
                f'pip install {provider}  (or pip install "fab-core[{extra}]")'
            )
        else:
            known = KNOWN_PROVIDERS.get(self.group, {})
            close = difflib.get_close_matches(name, sorted(set(installed) | set(known)), n=3)
            hints = [
                repr(c) + (f" (from {known[c]})" if c not in installed and c in known else "")
                for c in close
            ]
            if hints:
                message += f" Did you mean {' or '.join(hints)}?"
        raise PluginNotFoundError(message)


def _make(group: str) -> PluginRegistry[Any]:
    return PluginRegistry(group)


ACCELERATORS: PluginRegistry[Any] = _make("fab.accelerators")
STRATEGIES: PluginRegistry[Any] = _make("fab.strategies")
PRECISION: PluginRegistry[Any] = _make("fab.precision")
ENVIRONMENTS: PluginRegistry[Any] = _make("fab.environments")
LOGGERS: PluginRegistry[Any] = _make("fab.loggers")
CALLBACKS: PluginRegistry[Any] = _make("fab.callbacks")

_REGISTRIES = {
    r.group: r for r in (ACCELERATORS, STRATEGIES, PRECISION, ENVIRONMENTS, LOGGERS, CALLBACKS)
}


def get_registry(group: str) -> PluginRegistry[Any]:
    """The registry of ``group``, given as ``fab.strategies`` or ``strategies``."""
    full = _group_of(group)
    if full is None:
        accepted = ", ".join(g.short for g in GROUPS.values())
        raise ValueError(f"unknown plugin group {group!r}; accepted: {accepted}")
    return _REGISTRIES[full]


def refresh() -> None:
    """Scan the installed distributions again (after installing a plugin at run time).

    Names registered at run time are kept; loaded plugins are forgotten.
    """
    importlib.invalidate_caches()
    _Scan.clear()
    for registry in _REGISTRIES.values():
        with registry._lock:
            registry._resolved = None
            registry._failures.clear()
            registry._loaded = {n: obj for n, (_, obj) in registry._runtime.items()}
