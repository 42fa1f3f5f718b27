"""Where plugins come from: one scan of the installed distributions' entry points, read as data."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import re
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

from fab.core.registry.errors import PluginWarning
from fab.core.registry.groups import (
    DISABLE_AUTOLOAD_ENV,
    DISABLED_PLUGINS_ENV,
    FIRST_PARTY_DISTRIBUTIONS,
    GROUPS,
    group_of,
)


@dataclass(frozen=True)
class PluginEntry:
    """Where a plugin comes from. Reading one imports nothing."""

    group: str
    name: str
    target: str
    distribution: str | None  # None: registered at run time with register()
    version: str | None = None
    disabled_by: str | None = None  # the environment variable that switched it off
    #: The distribution's extras the plugin needs (``name = "module:Class [extra]"`` in the entry
    #: point): their requirements must be installed for the plugin to work.
    extras: tuple[str, ...] = ()

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


Status = Literal["ok", "not loaded", "error", "disabled", "shadowed", "needs"]


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
    #: What the plugin needs and is missing ("needs" status): requirements as pip takes them.
    missing: tuple[str, ...] = ()


def _normalize_distribution(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _disabled_names() -> dict[str, set[str]]:
    """Parse FAB_DISABLED_PLUGINS (``group:name,...``; group full or short: ``strategies:ddp``)."""
    out: dict[str, set[str]] = {}
    raw = os.environ.get(DISABLED_PLUGINS_ENV, "")
    for item in filter(None, (part.strip() for part in raw.split(","))):
        group_spec, sep, name = item.rpartition(":")
        group = group_of(group_spec) if sep else None
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


class Scan:
    """The result of reading every installed distribution's fab entry points, once."""

    _lock = threading.RLock()
    _entries: dict[str, list[PluginEntry]] | None = None
    _distributions: ClassVar[dict[str, importlib.metadata.Distribution]] = {}

    @classmethod
    def entries(cls, group: str) -> list[PluginEntry]:
        with cls._lock:
            cls._ensure_read()
            assert cls._entries is not None
            return list(cls._entries.get(group, ()))

    @classmethod
    def installed_version(cls, distribution: str) -> str | None:
        """The version of an installed distribution (any name spelling), or None: read from the
        same scan, so asking imports and rescans nothing."""
        with cls._lock:
            cls._ensure_read()
            dist = cls._distributions.get(_normalize_distribution(distribution))
            return None if dist is None else dist.version

    @classmethod
    def requirements(cls, distribution: str) -> list[str]:
        """The ``Requires-Dist`` lines of an installed distribution (empty if not installed)."""
        with cls._lock:
            cls._ensure_read()
            dist = cls._distributions.get(_normalize_distribution(distribution))
        return list(dist.requires or ()) if dist is not None else []

    @classmethod
    def clear(cls) -> None:
        with cls._lock:
            cls._entries = None
            cls._distributions = {}

    @classmethod
    def _ensure_read(cls) -> None:
        if cls._entries is None:
            cls._entries, cls._distributions = cls._read()

    @staticmethod
    def _read() -> tuple[dict[str, list[PluginEntry]], dict[str, importlib.metadata.Distribution]]:
        autoload = not _truthy(os.environ.get(DISABLE_AUTOLOAD_ENV))
        disabled = _disabled_names()
        found: dict[str, list[PluginEntry]] = {}
        seen: dict[str, importlib.metadata.Distribution] = {}
        for dist in importlib.metadata.distributions():
            # The first of several copies of one distribution on sys.path is the one Python uses.
            dist_name = _normalize_distribution(dist.metadata["Name"] or "")
            if not dist_name or dist_name in seen:
                continue
            seen[dist_name] = dist
            for ep in dist.entry_points:
                if ep.group in GROUPS:
                    entry = _entry_of(ep, dist_name, dist.version, autoload, disabled)
                    found.setdefault(ep.group, []).append(entry)
        return found, seen


def _entry_of(
    ep: importlib.metadata.EntryPoint,
    dist_name: str,
    version: str,
    autoload: bool,
    disabled: Mapping[str, set[str]],
) -> PluginEntry:
    # "module:attr [extra1, extra2]": the target is what to import, the extras what it needs.
    target, _, extras = ep.value.partition("[")
    entry = PluginEntry(
        ep.group,
        ep.name,
        target.strip(),
        dist_name,
        version,
        extras=tuple(e.strip() for e in extras.rstrip("] ").split(",") if e.strip()),
    )
    if ep.name in disabled.get(ep.group, ()):
        return _with_disabled(entry, DISABLED_PLUGINS_ENV)
    if not autoload and dist_name not in FIRST_PARTY_DISTRIBUTIONS:
        return _with_disabled(entry, DISABLE_AUTOLOAD_ENV)
    return entry


def _with_disabled(entry: PluginEntry, by: str) -> PluginEntry:
    return dataclasses.replace(entry, disabled_by=by)


def missing_requirements(entry: PluginEntry) -> tuple[str, ...]:
    """The requirements of ``entry``'s extras that are not installed (or not in a version they
    accept), as pip takes them. Reads installed metadata only: imports no plugin and no library."""
    if not entry.extras or entry.distribution is None:
        return ()
    from packaging.requirements import InvalidRequirement, Requirement

    missing: list[str] = []
    for line in Scan.requirements(entry.distribution):
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        marker = req.marker
        if marker is None or marker.evaluate({"extra": ""}):
            continue  # a requirement of the distribution itself, installed with it
        if not any(marker.evaluate({"extra": extra}) for extra in entry.extras):
            continue
        installed = Scan.installed_version(req.name)
        if installed is None or not req.specifier.contains(installed, prereleases=True):
            req.marker = None
            missing.append(str(req))
    return tuple(dict.fromkeys(missing))


def install_command(entry: PluginEntry) -> str:
    """The pip command that installs what ``entry``'s extras need."""
    return f'pip install "{entry.distribution}[{",".join(entry.extras)}]"'


def precedence(entry: PluginEntry) -> tuple[int, str]:
    return (0 if entry.first_party else 1, entry.distribution or "")
