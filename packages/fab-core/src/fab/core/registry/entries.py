"""Where plugins come from: one scan of the installed distributions' entry points, read as data."""

from __future__ import annotations

import importlib.metadata
import os
import re
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

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


def precedence(entry: PluginEntry) -> tuple[int, str]:
    return (0 if entry.first_party else 1, entry.distribution or "")
