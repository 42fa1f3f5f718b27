"""Two distributions registering one name: first-party fab-* distributions win, then the
alphabetically first distribution, and every conflict is reported.

The competing distributions are real installed-looking ``*.dist-info`` directories on the
subprocess's PYTHONPATH, discovered by importlib.metadata as pip-installed ones are.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

FAKE_CPU = """
from fab.core.accelerators.cpu import CPUAccelerator


class EvilCPUAccelerator(CPUAccelerator):
    pass
"""

COLLECT_CONFLICTS = """
import warnings

from fab.core import registry

plugins = registry.get_registry(GROUP)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    entry = plugins.entry(NAME)
    plugins.names()
    plugins.names()  # a conflict is reported once per scan, not once per look-up
target = plugins.load(NAME)
instance = plugins.create(NAME)
report({
    "distribution": entry.distribution,
    "target": f"{target.__module__}:{target.__qualname__}",
    "instance": type(instance).__name__,
    "warnings": [
        str(w.message) for w in caught if issubclass(w.category, registry.PluginConflictWarning)
    ],
    "conflicts": [
        {
            "winner": c.winner.distribution,
            "shadowed": [e.distribution for e in c.shadowed],
        }
        for c in plugins.conflicts()
    ],
})
"""


def collect_conflicts(group: str, name: str) -> str:
    return COLLECT_CONFLICTS.replace("GROUP", repr(group)).replace("NAME", repr(name))


@pytest.fixture
def evil_cpu(make_dist: Callable[..., Path]) -> Path:
    """A third-party distribution that registers the name ``cpu``, which fab-core owns."""
    return make_dist(
        "evil-cpu",
        "1.0",
        {"fab.accelerators": {"cpu": "evil_cpu:EvilCPUAccelerator"}},
        {"evil_cpu": FAKE_CPU},
    )


def test_first_party_cpu_wins_over_a_third_party_cpu_with_a_conflict_warning(
    run_python: Callable[..., Any], evil_cpu: Path
) -> None:
    result = run_python(collect_conflicts("fab.accelerators", "cpu"), pythonpath=[evil_cpu])
    assert result["distribution"] == "fab-core"
    assert result["target"] == "fab.core.accelerators.cpu:CPUAccelerator"
    assert result["instance"] == "CPUAccelerator"
    assert result["conflicts"] == [{"winner": "fab-core", "shadowed": ["evil-cpu"]}]
    assert len(result["warnings"]) == 1
    warning = result["warnings"][0]
    assert "'fab-core'" in warning
    assert "'evil-cpu'" in warning
    assert "evil_cpu:EvilCPUAccelerator" in warning


def test_fab_plugins_reports_the_conflict_and_shows_the_loser_as_shadowed(
    run_fab: Callable[..., subprocess.CompletedProcess[str]], evil_cpu: Path
) -> None:
    proc = run_fab("plugins", "--json", pythonpath=[evil_cpu])
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    cpu_rows = {
        row["distribution"]: row["status"]
        for row in payload["plugins"]
        if (row["group"], row["name"]) == ("fab.accelerators", "cpu")
    }
    assert cpu_rows == {"fab-core": "ok", "evil-cpu": "shadowed"}
    conflicts = [text for text in payload["conflicts"] if "'cpu'" in text]
    assert len(conflicts) == 1
    assert "'fab-core'" in conflicts[0]
    assert "'evil-cpu'" in conflicts[0]

    text = run_fab("plugins", pythonpath=[evil_cpu])
    assert text.returncode == 0, text.stderr
    assert any(
        line.split()[:3] == ["accelerators", "cpu", "evil-cpu"] and line.endswith("shadowed")
        for line in text.stdout.splitlines()
    ), text.stdout
    conflict_section = text.stdout.split("\nname conflicts:\n", 1)[1]
    assert "'evil-cpu'" in conflict_section


def _strategy_module(cls: str) -> str:
    return f"""
        from fab.core.strategies import SingleDeviceStrategy


        class {cls}(SingleDeviceStrategy):
            pass
        """


def test_alphabetically_first_third_party_distribution_wins_a_name(
    run_python: Callable[..., Any],
    run_fab: Callable[..., subprocess.CompletedProcess[str]],
    make_dist: Callable[..., Path],
) -> None:
    beta = make_dist(
        "beta-plugins",
        "2.0",
        {"fab.strategies": {"shared_strategy": "beta_strategy:BetaStrategy"}},
        {"beta_strategy": _strategy_module("BetaStrategy")},
    )
    alpha = make_dist(
        "alpha-plugins",
        "1.0",
        {"fab.strategies": {"shared_strategy": "alpha_strategy:AlphaStrategy"}},
        {"alpha_strategy": _strategy_module("AlphaStrategy")},
    )
    # beta comes first on sys.path, so it is also found first: alphabetical order must still win.
    path = [beta, alpha]

    result = run_python(collect_conflicts("fab.strategies", "shared_strategy"), pythonpath=path)
    assert result["distribution"] == "alpha-plugins"
    assert result["target"] == "alpha_strategy:AlphaStrategy"
    assert result["instance"] == "AlphaStrategy"
    assert result["conflicts"] == [{"winner": "alpha-plugins", "shadowed": ["beta-plugins"]}]
    assert len(result["warnings"]) == 1
    assert "'alpha-plugins'" in result["warnings"][0]
    assert "'beta-plugins'" in result["warnings"][0]

    proc = run_fab("plugins", "--json", "--group", "strategies", pythonpath=path)
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    rows = {
        row["distribution"]: (row["status"], row["version"], row["target"])
        for row in payload["plugins"]
        if row["name"] == "shared_strategy"
    }
    assert rows == {
        "alpha-plugins": ("ok", "1.0", "alpha_strategy:AlphaStrategy"),
        "beta-plugins": ("shadowed", "2.0", "beta_strategy:BetaStrategy"),
    }
    assert len(payload["conflicts"]) == 1
    assert "'alpha-plugins'" in payload["conflicts"][0]
    assert "'beta-plugins'" in payload["conflicts"][0]


def test_switched_off_plugin_is_still_listed_when_another_distribution_has_its_name(
    plugin_env: Callable[..., None],
    evil_cpu: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fab.core import registry

    monkeypatch.syspath_prepend(str(evil_cpu))
    plugin_env(FAB_DISABLE_PLUGIN_AUTOLOAD="1")
    rows = {
        (row.name, row.distribution): row.status
        for row in registry.ACCELERATORS.records(load=False)
    }
    assert rows[("cpu", "fab-core")] == "not loaded"
    assert rows.get(("cpu", "evil-cpu")) == "disabled"
