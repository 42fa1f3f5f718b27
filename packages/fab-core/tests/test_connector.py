"""Fabric(...)'s arguments become a connected strategy, by registry name or instance."""

from __future__ import annotations

import warnings

import pytest
import torch

from fab.core import registry
from fab.core.accelerators import CPUAccelerator
from fab.core.connector import connect, normalize_precision
from fab.core.io import TorchCheckpointIO
from fab.core.precision import Precision
from fab.core.strategies import SingleDeviceStrategy


def test_defaults_give_single_device_on_cpu_in_32_true() -> None:
    strategy = connect()
    assert isinstance(strategy, SingleDeviceStrategy)
    assert isinstance(strategy.accelerator, CPUAccelerator)
    assert type(strategy.precision) is Precision
    assert strategy.root_device == torch.device("cpu")


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        (None, "32-true"),
        (32, "32-true"),
        ("32", "32-true"),
        (16, "16-mixed"),
        ("16", "16-mixed"),
        (64, "64-true"),
        ("64", "64-true"),
        ("bf16", "bf16-mixed"),
        ("bf16-true", "bf16-true"),
    ],
)
def test_precision_aliases_are_lightnings(given: str | int | None, canonical: str) -> None:
    assert normalize_precision(given) == canonical


def test_precision_that_no_package_provides_lists_accepted_values() -> None:
    with pytest.raises(
        ValueError, match=r"precision='8-bit' is not supported; accepted: '64-true', '32-true'"
    ):
        connect(precision="8-bit")


def test_precision_from_a_missing_package_names_the_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A name fab-precision provides, whether or not fab-precision is installed here.
    monkeypatch.setitem(registry.KNOWN_PROVIDERS["fab.precision"], "fp4-future", "fab-precision")  # type: ignore[index]
    # Missing: "pip install fab-precision"; installed without the name: "pip install -U ...".
    with pytest.raises(registry.PluginNotFoundError, match=r"pip install (-U )?fab-precision"):
        connect(precision="fp4-future")


def test_instances_are_used_as_given() -> None:
    precision = Precision()
    io = TorchCheckpointIO()
    strategy = SingleDeviceStrategy(device="cpu")
    result = connect(accelerator=CPUAccelerator(), strategy=strategy, plugins=[precision, io])
    assert result is strategy
    assert result.precision is precision
    assert result.checkpoint_io is io


def test_precision_given_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="precision was given twice"):
        connect(precision=Precision(), plugins=[Precision()])


def test_unknown_plugin_type_is_refused() -> None:
    with pytest.raises(TypeError, match="accepted: Precision, CheckpointIO and ClusterEnvironment"):
        connect(plugins=[object()])  # type: ignore[list-item]


@pytest.mark.parametrize("devices", [1, "1", "auto"])
def test_cpu_device_counts(devices: object) -> None:
    assert connect(devices=devices).root_device == torch.device("cpu")


@pytest.mark.parametrize("devices", [0, [0, 1], "0,1", 1.5, True, -1, "-1"])
def test_bad_cpu_devices_explain_what_is_accepted(devices: object) -> None:
    with pytest.raises((ValueError, TypeError), match="devices="):
        connect(devices=devices)


def test_several_devices_without_fab_strategies_say_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
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
    with pytest.raises(ValueError, match="'ddp', is provided by fab-strategies"):
        connect(devices=2)


def test_single_device_strategy_refuses_several_devices() -> None:
    with pytest.raises(ValueError, match="runs one process on one device, but 2 device"):
        connect(strategy="single_device", devices=2)


def test_auto_accelerator_takes_the_available_one_with_highest_priority() -> None:
    class Unavailable(CPUAccelerator):
        auto_priority = 100

        @staticmethod
        def is_available() -> bool:
            return False

    class Preferred(CPUAccelerator):
        auto_priority = 10

    registry.ACCELERATORS.register("unavailable", Unavailable)
    registry.ACCELERATORS.register("preferred", Preferred)
    assert type(connect().accelerator) is Preferred
    assert type(connect(accelerator="cpu").accelerator) is CPUAccelerator


def test_unavailable_named_accelerator_is_an_error() -> None:
    class Absent(CPUAccelerator):
        @staticmethod
        def is_available() -> bool:
            return False

    registry.ACCELERATORS.register("absent", Absent)
    with pytest.raises(RuntimeError, match="accelerator 'absent' is installed but not available"):
        connect(accelerator="absent")


def test_gpu_without_fab_accelerators_is_pointed_out_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from fab.core import connector

    # As if fab-accelerators were not installed (it may be, in the development environment).
    monkeypatch.setenv(
        "FAB_DISABLED_PLUGINS", "accelerators:cuda,accelerators:gpu,accelerators:mps"
    )
    registry.refresh()
    monkeypatch.setattr(connector, "_gpu_hint_given", False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.warns(registry.PluginWarning, match="CUDA GPU is available"):
        assert isinstance(connect().accelerator, CPUAccelerator)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        connect()


def test_no_gpu_hint_when_cpu_is_asked_for_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from fab.core import connector

    monkeypatch.setattr(connector, "_gpu_hint_given", False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        connect(accelerator="cpu")
