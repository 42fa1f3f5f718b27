"""Fixtures for fab-core's tests: throwaway plugin distributions, found through entry points."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fab.core import registry

MakeDistribution = Callable[..., Path]


@pytest.fixture
def make_distribution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[MakeDistribution]:
    """Write a distribution (``NAME-VERSION.dist-info`` with entry_points.txt, and its modules)
    into a directory on sys.path, and rescan the registry. importlib.metadata finds it exactly like
    an installed one."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    added_modules: list[str] = []

    def make(
        name: str,
        entry_points: dict[str, dict[str, str]],
        modules: dict[str, str] | None = None,
        version: str = "1.0",
        requires: tuple[str, ...] = (),
    ) -> Path:
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
            + "".join(f"Requires-Dist: {line}\n" for line in requires)
        )
        lines = []
        for group, entries in entry_points.items():
            lines.append(f"[{group}]")
            lines.extend(f"{ep_name} = {target}" for ep_name, target in entries.items())
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        for module, source in (modules or {}).items():
            (site / f"{module}.py").write_text(textwrap.dedent(source))
            added_modules.append(module)
        registry.refresh()
        return info

    yield make
    for module in added_modules:
        sys.modules.pop(module, None)
    monkeypatch.undo()
    registry.refresh()


@pytest.fixture(autouse=True)
def _fresh_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test sees the installed plugins as the environment variables say, and leaves no
    run-time registration behind."""
    monkeypatch.delenv("FAB_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("FAB_DISABLED_PLUGINS", raising=False)
    registry.refresh()
    yield
    for reg in (registry.get_registry(g) for g in registry.GROUPS):
        for name in list(reg._runtime):
            reg.unregister(name)
    registry.refresh()
