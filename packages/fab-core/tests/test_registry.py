"""The registry's rules (DESIGN section 2), on fab-core alone and throwaway distributions."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from fab.core import registry
from fab.core.accelerators import Accelerator, CPUAccelerator
from fab.core.precision import Precision
from fab.core.strategies import SingleDeviceStrategy

MakeDistribution = Callable[..., Path]

GOOD_ACCELERATOR = """
import torch
from fab.core.accelerators import CPUAccelerator

class ToyAccelerator(CPUAccelerator):
    pass
"""


def test_fallbacks_are_found_through_fab_cores_own_entry_points() -> None:
    assert registry.ACCELERATORS.entry("cpu").distribution == "fab-core"
    assert registry.STRATEGIES.entry("single_device").distribution == "fab-core"
    assert registry.PRECISION.entry("32-true").distribution == "fab-core"
    assert registry.ACCELERATORS.load("cpu") is CPUAccelerator
    assert registry.STRATEGIES.load("single_device") is SingleDeviceStrategy
    assert registry.PRECISION.load("32-true") is Precision


def test_group_is_accepted_by_full_or_short_name() -> None:
    assert registry.get_registry("strategies") is registry.get_registry("fab.strategies")
    with pytest.raises(ValueError, match="unknown plugin group 'nope'; accepted: accelerators"):
        registry.get_registry("nope")


def test_listing_names_does_not_import_the_plugin(make_distribution: MakeDistribution) -> None:
    make_distribution(
        "toy-plugins",
        {"fab.accelerators": {"toy": "toy_accel:ToyAccelerator"}},
        {"toy_accel": GOOD_ACCELERATOR},
    )
    assert "toy" in registry.ACCELERATORS.names()
    assert "toy_accel" not in sys.modules
    assert registry.ACCELERATORS.entry("toy").distribution == "toy-plugins"
    assert "toy_accel" not in sys.modules
    assert issubclass(registry.ACCELERATORS.load("toy"), Accelerator)  # type: ignore[arg-type]
    assert "toy_accel" in sys.modules


def test_a_plugin_that_fails_to_import_names_its_distribution_and_breaks_nothing_else(
    make_distribution: MakeDistribution,
) -> None:
    make_distribution(
        "broken-plugins",
        {"fab.strategies": {"broken": "broken_strategy:Broken"}},
        {"broken_strategy": "import a_package_that_is_not_installed\n"},
    )
    assert "broken" in registry.STRATEGIES.names()
    with pytest.raises(
        registry.PluginLoadError, match=r"distribution 'broken-plugins' 1\.0"
    ) as info:
        registry.STRATEGIES.load("broken")
    assert "a_package_that_is_not_installed" in str(info.value)
    assert isinstance(info.value, ImportError)
    # Asked again, the same error, without a second import attempt.
    with pytest.raises(registry.PluginLoadError):
        registry.STRATEGIES.create("broken")
    assert registry.STRATEGIES.load("single_device") is SingleDeviceStrategy


def test_a_plugin_that_is_not_a_subclass_is_refused_when_requested(
    make_distribution: MakeDistribution,
) -> None:
    make_distribution(
        "wrong-plugins",
        {"fab.precision": {"wrong": "wrong_precision:NotAPrecision"}},
        {"wrong_precision": "class NotAPrecision:\n    pass\n"},
    )
    with pytest.raises(
        registry.PluginTypeError, match=r"'wrong-plugins'.*not a subclass of .*Precision"
    ):
        registry.PRECISION.load("wrong")
    assert registry.PRECISION.create("32-true").precision == "32-true"


def test_a_factory_target_is_called_and_its_result_checked(
    make_distribution: MakeDistribution,
) -> None:
    make_distribution(
        "factory-plugins",
        {"fab.strategies": {"on_meta": "factories:on_meta", "bad": "factories:bad"}},
        {
            "factories": """
            from fab.core.strategies import SingleDeviceStrategy

            def on_meta():
                return SingleDeviceStrategy(device="meta")

            def bad():
                return object()
            """
        },
    )
    strategy = registry.STRATEGIES.create("on_meta")
    assert strategy.root_device == torch.device("meta")
    with pytest.raises(registry.PluginTypeError, match="returned object, which is not a Strategy"):
        registry.STRATEGIES.create("bad")


def test_first_party_distribution_wins_a_collision_and_it_is_reported(
    make_distribution: MakeDistribution,
) -> None:
    make_distribution(
        "aaa-plugins",
        {"fab.accelerators": {"cpu": "toy_accel:ToyAccelerator"}},
        {"toy_accel": GOOD_ACCELERATOR},
    )
    with pytest.warns(
        registry.PluginConflictWarning, match="'fab-core'.* is used; shadowed: 'aaa-plugins'"
    ):
        registry.ACCELERATORS.names()
    assert registry.ACCELERATORS.load("cpu") is CPUAccelerator
    (conflict,) = registry.ACCELERATORS.conflicts()
    assert conflict.winner.distribution == "fab-core"
    assert [e.distribution for e in conflict.shadowed] == ["aaa-plugins"]
    statuses = {
        (r.name, r.distribution): r.status for r in registry.ACCELERATORS.records(load=False)
    }
    assert statuses[("cpu", "aaa-plugins")] == "shadowed"


def test_third_party_collision_goes_to_the_alphabetically_first_distribution(
    make_distribution: MakeDistribution,
) -> None:
    modules = {"toy_accel": GOOD_ACCELERATOR}
    make_distribution(
        "beta-plugins", {"fab.accelerators": {"toy": "toy_accel:ToyAccelerator"}}, modules
    )
    make_distribution("alpha-plugins", {"fab.accelerators": {"toy": "toy_accel:ToyAccelerator"}})
    with pytest.warns(
        registry.PluginConflictWarning, match="'alpha-plugins'.* is used; shadowed: 'beta-plugins'"
    ):
        registry.ACCELERATORS.names()
    assert registry.ACCELERATORS.entry("toy").distribution == "alpha-plugins"


def test_disable_autoload_keeps_first_party_plugins_only(
    make_distribution: MakeDistribution,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAB_DISABLE_PLUGIN_AUTOLOAD", "1")
    make_distribution(
        "toy-plugins",
        {"fab.accelerators": {"toy": "toy_accel:ToyAccelerator"}},
        {"toy_accel": GOOD_ACCELERATOR},
    )
    assert "toy" not in registry.ACCELERATORS.names()
    assert "cpu" in registry.ACCELERATORS.names()  # first-party plugins stay
    with pytest.raises(
        registry.PluginDisabledError, match="switched off by FAB_DISABLE_PLUGIN_AUTOLOAD"
    ):
        registry.ACCELERATORS.load("toy")
    (row,) = [r for r in registry.ACCELERATORS.records() if r.name == "toy"]
    assert row.status == "disabled"


def test_disabled_plugins_variable_takes_short_and_full_group_names(
    make_distribution: MakeDistribution,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAB_DISABLED_PLUGINS", "accelerators:toy, fab.strategies:single_device")
    make_distribution(
        "toy-plugins",
        {"fab.accelerators": {"toy": "toy_accel:ToyAccelerator"}},
        {"toy_accel": GOOD_ACCELERATOR},
    )
    assert "toy" not in registry.ACCELERATORS.names()
    assert "single_device" not in registry.STRATEGIES.names()
    with pytest.raises(registry.PluginDisabledError, match="FAB_DISABLED_PLUGINS"):
        registry.STRATEGIES.create("single_device")
    assert "cpu" in registry.ACCELERATORS.names()


def test_malformed_disabled_plugins_entry_warns_and_is_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAB_DISABLED_PLUGINS", "nonsense")
    registry.refresh()
    with pytest.warns(registry.PluginWarning, match="ignoring 'nonsense': expected 'group:name'"):
        registry.ACCELERATORS.names()
    assert "cpu" in registry.ACCELERATORS.names()


def test_register_refuses_an_existing_name_without_override() -> None:
    class Faster(SingleDeviceStrategy):
        pass

    with pytest.raises(
        ValueError, match=r"'single_device' is already registered \(distribution 'fab-core'"
    ):
        registry.STRATEGIES.register("single_device", Faster)
    registry.STRATEGIES.register("single_device", Faster, override=True)
    assert isinstance(registry.STRATEGIES.create("single_device"), Faster)
    assert registry.STRATEGIES.entry("single_device").distribution is None
    registry.STRATEGIES.unregister("single_device")
    assert registry.STRATEGIES.load("single_device") is SingleDeviceStrategy


def test_register_validates_the_base_class() -> None:
    class NotAStrategy:
        pass

    with pytest.raises(
        registry.PluginTypeError,
        match=r"not a subclass of fab\.core\.strategies\.strategy\.Strategy",
    ):
        registry.STRATEGIES.register("odd", NotAStrategy)
    assert "odd" not in registry.STRATEGIES.names()


def test_unknown_name_lists_installed_and_suggests(monkeypatch: pytest.MonkeyPatch) -> None:
    # As if fab-strategies were not installed (it is, in the development environment).
    names = (
        "ddp",
        "dp",
        "ddp_spawn",
        "ddp_fork",
        "ddp_notebook",
        "ddp_find_unused_parameters_true",
    )
    monkeypatch.setenv("FAB_DISABLED_PLUGINS", ",".join(f"strategies:{n}" for n in names))
    registry.refresh()
    with pytest.raises(
        registry.PluginNotFoundError,
        match=r"unknown strategy 'singel_device'\. Installed: .*'single_device'.* "
        r"Did you mean 'single_device'",
    ):
        registry.STRATEGIES.load("singel_device")
    # Switched off here; where fab-strategies is missing, the hint names it.
    with pytest.raises(
        registry.PluginNotFoundError,
        match=r"Did you mean 'ddp' \((from fab-strategies, not installed|switched off by "
        r"FAB_DISABLED_PLUGINS)\)",
    ):
        registry.STRATEGIES.load("ddpp")


def test_known_name_of_a_missing_package_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As if fab-loggers were not installed (it is, in the all-packages environment).
    every = importlib.metadata.distributions

    def all_but_fab_loggers(**kwargs: Any) -> list[importlib.metadata.Distribution]:
        return [d for d in every(**kwargs) if d.metadata["Name"] != "fab-loggers"]

    monkeypatch.setattr(importlib.metadata, "distributions", all_but_fab_loggers)
    registry.refresh()
    with pytest.raises(
        registry.PluginNotFoundError,
        match="provided by fab-loggers, which is not installed: pip install fab-loggers",
    ):
        registry.LOGGERS.load("tensorboard")


def test_names_are_read_in_one_scan_per_process() -> None:
    code = """
import torch  # torch scans entry points for its own device backends at import
import importlib.metadata as md
calls = 0
real = md.distributions
def counting(*a, **k):
    global calls
    calls += 1
    return real(*a, **k)
md.distributions = counting
from fab.core import registry
for g in registry.GROUPS:
    reg = registry.get_registry(g)
    reg.names(); reg.names()
    for n in reg.names():
        try:
            reg.load(n)
        except registry.PluginError:  # a broken plugin installed beside fab-core
            pass
print(calls)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "1"


def test_classes_by_priority_orders_skips_broken_and_lists_aliases_once(
    make_distribution: MakeDistribution,
) -> None:
    make_distribution(
        "toy-plugins",
        {
            "fab.accelerators": {
                "toy": "toy_accel:ToyAccelerator",
                "toy_alias": "toy_accel:ToyAccelerator",
                "broken": "toy_missing_module:Nothing",
            }
        },
        {"toy_accel": GOOD_ACCELERATOR.replace("pass", "auto_priority = 7")},
    )
    with pytest.warns(registry.PluginWarning, match="skipped while testing: .*'broken'"):
        ordered = registry.ACCELERATORS.classes_by_priority("auto_priority", "testing")
    names = [name for name, _ in ordered]
    assert names.index("toy") < names.index("cpu")
    assert "toy_alias" not in names
    assert "broken" not in names


def test_a_known_name_missing_from_an_installed_provider_says_upgrade_not_install(
    make_distribution: MakeDistribution,
) -> None:
    """The provider is installed but does not register the name (an older release): no
    "pip install" of a package that is already there (issue 10, item 15)."""
    make_distribution(
        "fab-strategies", {"fab.strategies": {"ddp_old": "old_ddp:Nothing"}}, version="0.0.1"
    )
    with pytest.raises(registry.PluginNotFoundError) as info:
        registry.STRATEGIES.load("fsdp")
    message = str(info.value)
    assert "is provided by fab-strategies, but the installed fab-strategies 0.0.1 does not" in (
        message
    )
    assert "pip install -U fab-strategies" in message
    assert "which is not installed" not in message


def test_a_name_no_package_provides_gets_no_install_hint() -> None:
    with pytest.raises(registry.PluginNotFoundError) as info:
        registry.STRATEGIES.load("deepspeed")
    assert "pip install" not in str(info.value)
