"""``register`` adds or (explicitly) replaces a name at run time; ``unregister`` brings the
entry-point plugin back."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from fab.core import Fabric, registry
from fab.core.strategies import SingleDeviceStrategy

#: Every name a test here may register at run time.
RUNTIME_NAMES = ("acme_single", "acme_missing_dep", "other", "not_a_strategy")


class OtherStrategy(SingleDeviceStrategy):
    """A strategy registered in code."""


class NotAStrategy:
    """A class that is no Strategy."""


@pytest.fixture
def strategies() -> Iterator[registry.PluginRegistry[SingleDeviceStrategy]]:
    """The strategies registry; the names these tests register are removed after each test."""
    yield registry.STRATEGIES
    for name in RUNTIME_NAMES:
        with contextlib.suppress(ValueError):  # not registered at run time (any more)
            registry.STRATEGIES.unregister(name)


def test_registering_a_taken_name_without_override_is_refused_naming_its_distribution(
    strategies: registry.PluginRegistry[SingleDeviceStrategy],
) -> None:
    with pytest.raises(ValueError, match="already registered") as caught:
        strategies.register("acme_single", OtherStrategy)
    message = str(caught.value)
    assert "'acme-fab-plugins'" in message
    assert "acme_fab.strategy:AcmeSingleDeviceStrategy" in message
    assert "override=True" in message
    assert strategies.entry("acme_single").distribution == "acme-fab-plugins"


def test_override_replaces_an_entry_point_plugin_and_unregister_restores_it(
    strategies: registry.PluginRegistry[SingleDeviceStrategy],
) -> None:
    from acme_fab.strategy import AcmeSingleDeviceStrategy

    assert isinstance(strategies.create("acme_single"), AcmeSingleDeviceStrategy)  # loaded first

    strategies.register("acme_single", OtherStrategy, override=True)
    assert type(strategies.create("acme_single")) is OtherStrategy
    assert strategies.load("acme_single") is OtherStrategy
    entry = strategies.entry("acme_single")
    assert entry.distribution is None
    assert entry.origin == "registered at run time"
    assert type(Fabric(strategy="acme_single").strategy) is OtherStrategy

    strategies.unregister("acme_single")
    assert strategies.entry("acme_single").distribution == "acme-fab-plugins"
    assert type(strategies.create("acme_single")) is AcmeSingleDeviceStrategy
    assert type(Fabric(strategy="acme_single").strategy) is AcmeSingleDeviceStrategy


def test_override_replaces_even_a_broken_plugin(
    strategies: registry.PluginRegistry[SingleDeviceStrategy],
) -> None:
    with pytest.raises(registry.PluginLoadError):
        strategies.load("acme_missing_dep")
    strategies.register("acme_missing_dep", OtherStrategy, override=True)
    assert type(strategies.create("acme_missing_dep")) is OtherStrategy
    strategies.unregister("acme_missing_dep")
    with pytest.raises(registry.PluginLoadError, match="acme_nonexistent_dependency"):
        strategies.load("acme_missing_dep")


def test_registering_a_class_that_is_not_a_subclass_of_the_base_raises_plugin_type_error(
    strategies: registry.PluginRegistry[SingleDeviceStrategy],
) -> None:
    with pytest.raises(registry.PluginTypeError, match="not a subclass of"):
        strategies.register("not_a_strategy", NotAStrategy)  # type: ignore[arg-type]
    with pytest.raises(registry.PluginTypeError, match="not a subclass of"):
        strategies.register("acme_single", NotAStrategy, override=True)  # type: ignore[arg-type]
    assert "not_a_strategy" not in strategies.names()
    assert strategies.entry("acme_single").distribution == "acme-fab-plugins"


def test_a_new_name_registered_at_run_time_survives_refresh_until_unregistered(
    strategies: registry.PluginRegistry[SingleDeviceStrategy],
) -> None:
    strategies.register("other", OtherStrategy)
    registry.refresh()
    assert "other" in strategies.names()
    assert type(Fabric(strategy="other").strategy) is OtherStrategy
    strategies.unregister("other")
    assert "other" not in strategies.names()
    with pytest.raises(ValueError, match="was not registered at run time"):
        strategies.unregister("acme_single")  # an entry-point plugin cannot be unregistered
