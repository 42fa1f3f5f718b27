"""Throughput and ThroughputMonitor: windowed rates from running totals, logged on rank zero."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import pytest
import torch

from fab.core import Fabric
from fab.core.strategies.strategy import Strategy
from fab.core.utilities import Throughput, ThroughputMonitor

TOTALS = {"time", "batches", "samples"}


def feed(throughput: Throughput, updates: int, **extra: Any) -> None:
    """``updates`` steps of 1 second, 1 batch of 4 samples of 10 items each."""
    for i in range(1, updates + 1):
        kwargs = {key: (value(i) if callable(value) else value) for key, value in extra.items()}
        throughput.update(time=float(i), batches=i, samples=4 * i, **kwargs)


# -- Throughput.compute ------------------------------------------------------------------


def test_compute_before_the_window_is_full_returns_only_the_totals() -> None:
    throughput = Throughput(window_size=3)
    feed(throughput, 2, lengths=lambda i: 40 * i, flops=100.0)
    assert throughput.compute() == {"time": 2.0, "batches": 2, "samples": 8, "lengths": 80}


def test_compute_with_a_full_window_gives_the_device_rates() -> None:
    throughput = Throughput(window_size=3)
    feed(throughput, 3)
    assert throughput.compute() == {
        "time": 3.0,
        "batches": 3,
        "samples": 12,
        "device/batches_per_sec": 1.0,
        "device/samples_per_sec": 4.0,
    }


def test_rates_cover_only_the_last_window_size_updates() -> None:
    throughput = Throughput(window_size=2)
    throughput.update(time=1.0, batches=1, samples=1)
    throughput.update(time=100.0, batches=2, samples=2)  # a slow first step
    throughput.update(time=101.0, batches=12, samples=12)
    metrics = throughput.compute()
    assert metrics["device/batches_per_sec"] == 10.0
    assert metrics["batches"] == 12


def test_lengths_give_items_per_second() -> None:
    throughput = Throughput(window_size=3)
    feed(throughput, 3, lengths=lambda i: 40 * i)
    metrics = throughput.compute()
    assert metrics["lengths"] == 120
    assert metrics["device/items_per_sec"] == 40.0


def test_flops_give_flops_per_second_and_mfu_with_available_flops() -> None:
    throughput = Throughput(available_flops=1000.0, window_size=3)
    feed(throughput, 3, flops=250.0)
    metrics = throughput.compute()
    assert metrics["device/flops_per_sec"] == 250.0  # 500 FLOPs in the 2 seconds of the window
    assert metrics["device/mfu"] == 0.25


def test_without_available_flops_there_is_no_mfu() -> None:
    throughput = Throughput(window_size=2)
    feed(throughput, 2, flops=10.0)
    metrics = throughput.compute()
    assert metrics["device/flops_per_sec"] == 10.0
    assert "device/mfu" not in metrics


def test_flops_rates_wait_until_every_update_in_the_window_gave_flops() -> None:
    throughput = Throughput(window_size=3)
    throughput.update(time=1.0, batches=1, samples=1, flops=5.0)
    throughput.update(time=2.0, batches=2, samples=2)
    throughput.update(time=3.0, batches=3, samples=3, flops=5.0)
    assert "device/flops_per_sec" not in throughput.compute()
    throughput.update(time=4.0, batches=4, samples=4, flops=5.0)
    assert throughput.compute()["device/flops_per_sec"] == 5.0


def test_world_size_adds_rates_for_all_devices_without_the_device_prefix() -> None:
    throughput = Throughput(available_flops=1000.0, world_size=4, window_size=2)
    feed(throughput, 2, lengths=lambda i: 40 * i, flops=100.0)
    metrics = throughput.compute()
    assert metrics["batches_per_sec"] == 4.0
    assert metrics["samples_per_sec"] == 16.0
    assert metrics["items_per_sec"] == 160.0
    assert metrics["flops_per_sec"] == 400.0
    assert metrics["device/flops_per_sec"] == 100.0
    assert metrics["device/mfu"] == 0.1
    assert "mfu" not in metrics


def test_one_device_has_no_global_rates() -> None:
    throughput = Throughput(window_size=2)
    feed(throughput, 2, lengths=lambda i: 40 * i, flops=100.0)
    assert not [key for key in throughput.compute() if key.endswith("_sec") and "/" not in key]


def test_the_separator_joins_device_and_the_metric() -> None:
    throughput = Throughput(window_size=2, separator=".")
    feed(throughput, 2)
    assert "device.batches_per_sec" in throughput.compute()


def test_compute_without_updates_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="at least one update"):
        Throughput().compute()


def test_reset_forgets_every_update() -> None:
    throughput = Throughput(window_size=2)
    feed(throughput, 2, lengths=lambda i: 40 * i)
    throughput.reset()
    throughput.update(time=0.5, batches=1, samples=1)  # smaller than before: allowed after reset
    assert throughput.compute() == {"time": 0.5, "batches": 1, "samples": 1}


# -- Throughput.update errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "second"),
    [
        ("time", {"time": 1.0, "batches": 2, "samples": 2}),
        ("time", {"time": 0.5, "batches": 2, "samples": 2}),
        ("batches", {"time": 2.0, "batches": 1, "samples": 2}),
        ("samples", {"time": 2.0, "batches": 2, "samples": 1}),
    ],
)
def test_update_with_a_total_that_does_not_increase_raises(
    name: str, second: dict[str, Any]
) -> None:
    throughput = Throughput()
    throughput.update(time=1.0, batches=1, samples=1)
    with pytest.raises(ValueError, match=f"^{name} must increase"):
        throughput.update(**second)


def test_update_with_lengths_that_do_not_increase_raises() -> None:
    throughput = Throughput()
    throughput.update(time=1.0, batches=1, samples=1, lengths=10)
    with pytest.raises(ValueError, match="lengths must increase"):
        throughput.update(time=2.0, batches=2, samples=2, lengths=10)


def test_update_with_fewer_samples_than_batches_raises() -> None:
    with pytest.raises(ValueError, match=r"samples \(1\) must be >= batches \(2\)"):
        Throughput().update(time=1.0, batches=2, samples=1)


def test_update_with_fewer_lengths_than_samples_raises() -> None:
    with pytest.raises(ValueError, match=r"lengths \(3\) must be >= samples \(4\)"):
        Throughput().update(time=1.0, batches=1, samples=4, lengths=3)


def test_update_with_negative_flops_raises() -> None:
    with pytest.raises(ValueError, match="flops must be >= 0"):
        Throughput().update(time=1.0, batches=1, samples=1, flops=-1.0)


@pytest.mark.parametrize("lengths_first", [True, False])
def test_lengths_must_be_given_in_every_update_or_in_none(lengths_first: bool) -> None:
    throughput = Throughput()
    throughput.update(time=1.0, batches=1, samples=1, lengths=10 if lengths_first else None)
    with pytest.raises(ValueError, match="every update"):
        throughput.update(time=2.0, batches=2, samples=2, lengths=None if lengths_first else 20)


def test_a_rejected_update_records_nothing() -> None:
    throughput = Throughput(window_size=2)
    throughput.update(time=1.0, batches=1, samples=1)
    with pytest.raises(ValueError, match="samples must increase"):
        throughput.update(time=2.0, batches=3, samples=1)  # time and batches fine, samples not
    throughput.update(time=2.0, batches=2, samples=2)  # would fail had time=2.0 been recorded
    assert throughput.compute()["device/batches_per_sec"] == 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window_size": 1}, "window_size must be an int of at least 2"),
        ({"window_size": 0}, "window_size must be an int of at least 2"),
        ({"world_size": 0}, "world_size must be an int of at least 1"),
        ({"available_flops": 0.0}, "available_flops must be positive"),
    ],
)
def test_invalid_construction_arguments_raise(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Throughput(**kwargs)


# -- ThroughputMonitor ------------------------------------------------------------------------


class RecordingFabric(Fabric):
    """A CPU Fabric that keeps what log_dict was given."""

    def __init__(self) -> None:
        super().__init__(accelerator="cpu", devices=1)
        self.logged: list[tuple[dict[str, Any], int | None]] = []

    def log_dict(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        self.logged.append((dict(metrics), step))


def make_monitor(fabric: Fabric, **kwargs: Any) -> ThroughputMonitor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no peak FLOPs for CPUs
        return ThroughputMonitor(fabric, **kwargs)


def as_rank(fabric: Fabric, monkeypatch: pytest.MonkeyPatch, rank: int) -> None:
    monkeypatch.setattr(type(fabric.strategy), "global_rank", property(lambda self: rank))


def test_monitor_logs_the_metrics_through_fabric_at_counted_steps() -> None:
    fabric = RecordingFabric()
    monitor = make_monitor(fabric, window_size=2)
    monitor.update(time=1.0, batches=1, samples=2)
    first = monitor.compute_and_log()
    monitor.update(time=2.0, batches=2, samples=4)
    second = monitor.compute_and_log()
    assert first == {"time": 1.0, "batches": 1, "samples": 2}
    assert second["device/samples_per_sec"] == 2.0
    assert fabric.logged == [(first, 0), (second, 1)]


def test_monitor_logs_at_the_step_given() -> None:
    fabric = RecordingFabric()
    monitor = make_monitor(fabric)
    monitor.update(time=1.0, batches=1, samples=1)
    monitor.compute_and_log(step=10)
    monitor.compute_and_log()
    assert [step for _, step in fabric.logged] == [10, 11]


def test_monitor_takes_the_world_size_from_fabric(monkeypatch: pytest.MonkeyPatch) -> None:
    fabric = RecordingFabric()
    monkeypatch.setattr(type(fabric.strategy), "world_size", property(lambda self: 8))
    assert make_monitor(fabric).world_size == 8
    with pytest.raises(TypeError, match="world_size"):
        ThroughputMonitor(fabric, world_size=2)


def test_monitor_on_cpu_has_no_available_flops_and_warns() -> None:
    with pytest.warns(UserWarning, match="peak FLOPs are unknown for 'cpu'"):
        monitor = ThroughputMonitor(RecordingFabric())
    assert monitor.available_flops is None


def test_monitor_takes_given_available_flops_without_looking_them_up() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        monitor = ThroughputMonitor(RecordingFabric(), available_flops=1e12, window_size=2)
    monitor.update(time=1.0, batches=1, samples=1, flops=1e11)
    monitor.update(time=2.0, batches=2, samples=2, flops=1e11)
    assert monitor.compute()["device/mfu"] == pytest.approx(0.1)


def test_monitor_uses_the_peak_of_the_precisions_compute_dtype(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[torch.device, torch.dtype | str]] = []

    def fake_get_available_flops(device: torch.device, dtype: torch.dtype | str) -> int:
        seen.append((device, dtype))
        return 1000

    from fab.core.utilities import throughput

    monkeypatch.setattr(throughput, "get_available_flops", fake_get_available_flops)
    fabric = RecordingFabric()
    monkeypatch.setattr(type(fabric.strategy.precision), "precision", "bf16-mixed")
    assert ThroughputMonitor(fabric).available_flops == 1000
    assert seen == [(torch.device("cpu"), torch.bfloat16)]


def test_monitor_on_another_rank_records_and_logs_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fabric = RecordingFabric()
    monitor = make_monitor(fabric, window_size=2)
    as_rank(fabric, monkeypatch, 1)
    monitor.update(time=1.0, batches=1, samples=1)
    monitor.update(time=0.5, batches=1, samples=1)  # not even checked
    assert monitor.compute() == {}
    assert monitor.compute_and_log() == {}
    monitor.reset()
    assert fabric.logged == []
    assert monitor.step == -1


def test_monitor_is_a_throughput() -> None:
    assert isinstance(make_monitor(RecordingFabric()), Throughput)
    assert issubclass(type(RecordingFabric().strategy), Strategy)
