"""suggested_max_num_workers: the machine's CPUs split among its processes."""

from __future__ import annotations

import os

import pytest

from fab.core.utilities import data, suggested_max_num_workers


@pytest.mark.parametrize(
    ("cpus", "local_world_size", "expected"),
    [(16, 1, 15), (16, 2, 7), (16, 8, 1), (16, 16, 1), (16, 64, 1), (1, 1, 1), (3, 2, 1)],
)
def test_workers_are_the_cpus_per_process_minus_one_and_at_least_one(
    monkeypatch: pytest.MonkeyPatch, cpus: int, local_world_size: int, expected: int
) -> None:
    monkeypatch.setattr(data, "_available_cpus", lambda: cpus)
    assert suggested_max_num_workers(local_world_size) == expected


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="needs sched_getaffinity")
def test_the_cpus_are_the_processs_affinity_not_the_machines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(os, "cpu_count", lambda: 128)
    assert suggested_max_num_workers(1) == 3


def test_without_affinity_the_cpu_count_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert suggested_max_num_workers(2) == 3
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert suggested_max_num_workers(1) == 1


@pytest.mark.parametrize("local_world_size", [0, -1])
def test_a_local_world_size_below_one_is_an_error(local_world_size: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        suggested_max_num_workers(local_world_size)


@pytest.mark.parametrize("local_world_size", [1.5, "2", True])
def test_a_local_world_size_that_is_not_an_int_is_an_error(local_world_size: object) -> None:
    with pytest.raises(TypeError, match="must be an int"):
        suggested_max_num_workers(local_world_size)  # type: ignore[arg-type]
