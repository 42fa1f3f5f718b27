"""A broken plugin breaks nothing else: its error names its distribution and is raised only when it
is requested. acme-fab-plugins ships two: ``acme_missing_dep`` (its module imports a package that
is not installed) and ``acme_not_a_strategy`` (its target is not a Strategy)."""

from __future__ import annotations

import json
import subprocess
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from fab.core import Fabric, registry

MISSING_DEP = "acme_missing_dep"
NOT_A_STRATEGY = "acme_not_a_strategy"


def test_plugin_whose_module_fails_to_import_raises_load_error_naming_distribution_and_module() -> (
    None
):
    with pytest.raises(registry.PluginLoadError) as caught:
        registry.STRATEGIES.load(MISSING_DEP)
    message = str(caught.value)
    assert "'acme-fab-plugins'" in message
    assert "acme_nonexistent_dependency" in message
    assert f"FAB_DISABLED_PLUGINS=strategies:{MISSING_DEP}" in message
    assert isinstance(caught.value, ImportError)
    # Asking again gives the same answer, and so does asking through Fabric.
    with pytest.raises(registry.PluginLoadError, match="acme_nonexistent_dependency"):
        registry.STRATEGIES.create(MISSING_DEP)
    with pytest.raises(registry.PluginLoadError, match="acme-fab-plugins"):
        Fabric(strategy=MISSING_DEP)


def test_plugin_that_is_not_a_subclass_of_its_base_raises_type_error_naming_distribution() -> None:
    with pytest.raises(registry.PluginTypeError) as caught:
        registry.STRATEGIES.load(NOT_A_STRATEGY)
    message = str(caught.value)
    assert "'acme-fab-plugins'" in message
    assert "NotAStrategy" in message
    assert "fab.core.strategies.strategy.Strategy" in message
    assert isinstance(caught.value, TypeError)
    with pytest.raises(registry.PluginTypeError, match="acme-fab-plugins"):
        Fabric(strategy=NOT_A_STRATEGY)


def test_broken_plugins_raise_only_when_requested_and_everything_else_works(
    run_python: Callable[..., Any], acme_plugins: Mapping[str, str]
) -> None:
    result = run_python(
        """
        import sys
        import warnings

        from fab.core import Fabric, registry

        warnings.simplefilter("error")  # not even a warning about the broken plugins
        loaded = {}
        for group in registry.GROUPS:
            plugins = registry.get_registry(group)
            loaded[group] = []
            for name in plugins.names():
                if name in ("acme_missing_dep", "acme_not_a_strategy"):
                    continue
                # The plugins of fab-core and of the distribution that holds the broken ones;
                # fab's L2 packages, when installed, may need extras that are not.
                if plugins.entry(name).distribution in ("fab-core", "acme-fab-plugins"):
                    plugins.load(name)
                    loaded[group].append(name)
        fabric = Fabric()
        broken_modules = sorted(m for m in sys.modules if m.startswith("acme_fab.broken"))
        report({
            "loaded": loaded,
            "fabric": [type(fabric.accelerator).__name__, type(fabric.strategy).__name__],
            "broken_modules_imported": broken_modules,
        })
        """
    )
    for group, name in acme_plugins.items():
        assert name in result["loaded"][group]
    assert {"cpu"} <= set(result["loaded"]["fab.accelerators"])
    assert {"single_device"} <= set(result["loaded"]["fab.strategies"])
    assert {"32-true"} <= set(result["loaded"]["fab.precision"])
    assert result["fabric"] == ["CPUAccelerator", "SingleDeviceStrategy"]
    assert result["broken_modules_imported"] == []


def test_fab_plugins_lists_every_plugin_and_shows_both_errors(
    run_fab: Callable[..., subprocess.CompletedProcess[str]], acme_plugins: Mapping[str, str]
) -> None:
    proc = run_fab("plugins")
    assert proc.returncode == 0, proc.stderr
    rows = {
        tuple(line.split()[:2]): line.split()[-1]
        for line in proc.stdout.split("\n\n")[0].splitlines()[1:]
    }
    expected_ok = [
        ("accelerators", "cpu"),
        ("strategies", "single_device"),
        ("precision", "32-true"),
        *((group.removeprefix("fab."), name) for group, name in acme_plugins.items()),
    ]
    for key in expected_ok:
        assert rows.get(key) == "ok", (key, proc.stdout)
    assert rows[("strategies", MISSING_DEP)] == "error"
    assert rows[("strategies", NOT_A_STRATEGY)] == "error"
    problems = proc.stdout.split("\nproblems:\n", 1)[1]
    assert f"strategies:{MISSING_DEP}:" in problems
    assert "No module named 'acme_nonexistent_dependency'" in problems
    assert f"strategies:{NOT_A_STRATEGY}:" in problems
    assert "not a subclass of fab.core.strategies.strategy.Strategy" in problems


def test_fab_plugins_json_reports_error_status_for_both_broken_plugins(
    run_fab: Callable[..., subprocess.CompletedProcess[str]], acme_plugins: Mapping[str, str]
) -> None:
    proc = run_fab("plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    rows = {(row["group"], row["name"]): row for row in payload["plugins"]}
    for name, needle in (
        (MISSING_DEP, "acme_nonexistent_dependency"),
        (NOT_A_STRATEGY, "NotAStrategy"),
    ):
        row = rows[("fab.strategies", name)]
        assert row["status"] == "error"
        assert row["distribution"] == "acme-fab-plugins"
        assert row["version"] == "0.1.0"
        assert needle in row["detail"]
    for group, name in acme_plugins.items():
        assert rows[(group, name)]["status"] == "ok"
    assert rows[("fab.accelerators", "cpu")]["distribution"] == "fab-core"
    assert not [text for text in payload["conflicts"] if "acme" in text]


def test_broken_callback_plugin_does_not_break_fabric(
    plugin_env: Callable[..., None],
    make_dist: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    site = make_dist(
        "broken-callback", "1.0", {"fab.callbacks": {"broken": "acme_no_such_module:make"}}
    )
    monkeypatch.syspath_prepend(str(site))
    plugin_env()  # rescan: the distribution is now on sys.path
    assert registry.CALLBACKS.entry("broken").distribution == "broken-callback"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fabric = Fabric()
    assert type(fabric.strategy).__name__ == "SingleDeviceStrategy"
    notes = [str(w.message) for w in caught if issubclass(w.category, registry.PluginWarning)]
    assert [note for note in notes if "'broken-callback'" in note]
