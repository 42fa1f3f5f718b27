"""FAB_DISABLE_PLUGIN_AUTOLOAD=1 switches every third-party plugin off; FAB_DISABLED_PLUGINS
switches single ones off. fab-core's own plugins stay, so Fabric() keeps working.

The variables are read when the installed distributions are scanned; ``plugin_env`` sets them and
rescans with ``registry.refresh()``.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Mapping

import pytest

from fab.core import Fabric, registry

FALLBACKS = {
    "fab.accelerators": "cpu",
    "fab.strategies": "single_device",
    "fab.precision": "32-true",
}


def test_disable_autoload_hides_every_third_party_plugin_and_keeps_fab_core(
    plugin_env: Callable[..., None], acme_plugins: Mapping[str, str]
) -> None:
    from acme_fab.callbacks import AcmeCounter

    plugin_env(FAB_DISABLE_PLUGIN_AUTOLOAD="1", ACME_AVAILABLE="1")
    for group in registry.GROUPS:
        names = registry.get_registry(group).names()
        assert not [n for n in names if n.startswith("acme")], (group, names)
    for group, name in acme_plugins.items():
        with pytest.raises(registry.PluginDisabledError, match="FAB_DISABLE_PLUGIN_AUTOLOAD"):
            registry.get_registry(group).load(name)
    for group, name in FALLBACKS.items():
        assert name in registry.get_registry(group).names()
        assert registry.get_registry(group).entry(name).distribution == "fab-core"

    created = AcmeCounter.created
    fabric = Fabric()  # acme would be chosen by "auto" (ACME_AVAILABLE=1) were it not switched off
    assert type(fabric.accelerator).__name__ != "AcmeAccelerator"
    assert AcmeCounter.created == created  # no entry-point callback from a disabled distribution
    with pytest.raises(registry.PluginDisabledError, match="FAB_DISABLE_PLUGIN_AUTOLOAD"):
        Fabric(accelerator="acme")
    with pytest.raises(registry.PluginDisabledError, match="FAB_DISABLE_PLUGIN_AUTOLOAD"):
        Fabric(strategy="acme_single")
    with pytest.raises(registry.PluginDisabledError, match="FAB_DISABLE_PLUGIN_AUTOLOAD"):
        Fabric(loggers=["acme_memory"])


@pytest.mark.parametrize("value", ["0", "", "false"])
def test_autoload_stays_on_unless_the_switch_is_truthy(
    plugin_env: Callable[..., None], value: str
) -> None:
    plugin_env(FAB_DISABLE_PLUGIN_AUTOLOAD=value)
    assert "acme" in registry.ACCELERATORS.names()


def test_disabled_plugins_switch_off_exactly_the_named_ones_in_short_and_full_group_names(
    plugin_env: Callable[..., None], acme_plugins: Mapping[str, str]
) -> None:
    plugin_env(
        FAB_DISABLED_PLUGINS="accelerators:acme, fab.strategies:acme_single", ACME_AVAILABLE="1"
    )
    assert "acme" not in registry.ACCELERATORS.names()
    assert "acme_single" not in registry.STRATEGIES.names()
    for group, name in (("fab.accelerators", "acme"), ("fab.strategies", "acme_single")):
        with pytest.raises(registry.PluginDisabledError, match="FAB_DISABLED_PLUGINS"):
            registry.get_registry(group).load(name)
    for group, name in acme_plugins.items():
        if name not in ("acme", "acme_single"):
            assert registry.get_registry(group).entry(name).distribution == "acme-fab-plugins"
            registry.get_registry(group).load(name)
    # The same names in other groups are untouched: a switch names a group and a plugin.
    assert "acme_missing_dep" in registry.STRATEGIES.names()

    fabric = Fabric(precision="acme-true", loggers=["acme_memory"])
    assert type(fabric.accelerator).__name__ != "AcmeAccelerator"  # "auto" no longer sees acme
    assert type(fabric.strategy.precision).__name__ == "AcmeTruePrecision"


@pytest.mark.parametrize(
    ("value", "bad_item"),
    [
        ("acme", "acme"),  # no group
        ("gpus:acme", "gpus:acme"),  # unknown group
        ("accelerators:", "accelerators:"),  # no name
    ],
)
def test_malformed_disabled_plugins_value_warns_and_is_ignored(
    plugin_env: Callable[..., None], value: str, bad_item: str
) -> None:
    plugin_env(FAB_DISABLED_PLUGINS=f"{value},strategies:acme_single")
    with pytest.warns(registry.PluginWarning, match=f"FAB_DISABLED_PLUGINS: ignoring '{bad_item}'"):
        names = registry.ACCELERATORS.names()  # the first look-up scans, reading the variable
    assert "acme" in names
    assert "acme_single" not in registry.STRATEGIES.names()  # the well-formed part still applies


def test_fab_plugins_shows_switched_off_plugins_as_disabled(
    run_fab: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    proc = run_fab(
        "plugins",
        "--json",
        env={"FAB_DISABLED_PLUGINS": "strategies:acme_missing_dep,strategies:acme_not_a_strategy"},
    )
    assert proc.returncode == 0, proc.stderr
    rows = {(r["group"], r["name"]): r for r in json.loads(proc.stdout)["plugins"]}
    for name in ("acme_missing_dep", "acme_not_a_strategy"):
        row = rows[("fab.strategies", name)]
        assert row["status"] == "disabled"
        assert "FAB_DISABLED_PLUGINS" in row["detail"]
    assert rows[("fab.strategies", "acme_single")]["status"] == "ok"


def test_switched_off_precision_plugin_raises_plugin_disabled_error(
    plugin_env: Callable[..., None],
) -> None:
    plugin_env(FAB_DISABLED_PLUGINS="precision:acme-true")
    with pytest.raises(registry.PluginDisabledError, match="FAB_DISABLED_PLUGINS"):
        Fabric(precision="acme-true")


def test_switching_off_a_name_nobody_registers_still_reports_it_unknown(
    plugin_env: Callable[..., None],
) -> None:
    plugin_env(FAB_DISABLED_PLUGINS="accelerators:acme_quantum")
    with pytest.raises(registry.PluginNotFoundError, match="unknown accelerator 'acme_quantum'"):
        registry.ACCELERATORS.load("acme_quantum")
