"""seed_everything, reset_seed and data-loader worker seeding (seed_worker, add_worker_init_fn)."""

from __future__ import annotations

import functools
import logging
import os
import pickle
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from fab.core.utilities import (
    add_worker_init_fn,
    global_seed,
    rank_zero_only,
    reset_seed,
    seed_everything,
    seed_worker,
)


@pytest.fixture(autouse=True)
def _restore_seed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts without the seed variables (fab's and Lightning's) and leaves them as
    they were."""
    for name in ("FAB_GLOBAL_SEED", "FAB_SEED_WORKERS", "PL_GLOBAL_SEED", "PL_SEED_WORKERS"):
        monkeypatch.setenv(name, "")  # recorded, so that what seed_everything sets is undone
        monkeypatch.delenv(name)
    monkeypatch.setattr(rank_zero_only, "rank", 0)


def draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), torch.rand(()).item()


class RandomAugmentation(Dataset[torch.Tensor]):
    """Each item: (worker id, a python, a numpy and a torch random draw)."""

    def __len__(self) -> int:
        return 16

    def __getitem__(self, index: int) -> torch.Tensor:
        info = get_worker_info()
        return torch.tensor([-1 if info is None else info.id, *draws()], dtype=torch.float64)


def loader_draws(
    seed: int, worker_init_fn: Callable[[int], None] | None
) -> dict[int, list[list[float]]]:
    """Seed, iterate a 2-worker loader once, and return the draws grouped by worker id."""
    seed_everything(seed, verbose=False)
    loader = DataLoader(
        RandomAugmentation(),
        batch_size=2,
        num_workers=2,
        worker_init_fn=worker_init_fn,
        multiprocessing_context="fork",
    )
    by_worker: dict[int, list[list[float]]] = {}
    for batch in loader:
        for row in batch.tolist():
            by_worker.setdefault(int(row[0]), []).append(row[1:])
    return by_worker


# -- seed_everything ------------------------------------------------------------------------


def test_seed_everything_makes_python_numpy_and_torch_repeat() -> None:
    seed_everything(123, verbose=False)
    first = draws()
    seed_everything(123, verbose=False)
    assert draws() == first


def test_seed_everything_records_the_seed_and_the_workers_flag_in_the_environment() -> None:
    assert seed_everything(7, workers=True, verbose=False) == 7
    assert os.environ["FAB_GLOBAL_SEED"] == "7"
    assert os.environ["FAB_SEED_WORKERS"] == "1"
    seed_everything(8, verbose=False)
    assert os.environ["FAB_SEED_WORKERS"] == "0"


def test_seed_everything_without_a_seed_reuses_the_environments() -> None:
    seed_everything(99, verbose=False)
    assert seed_everything(verbose=False) == 99


def test_seed_everything_without_any_seed_warns_and_uses_zero() -> None:
    with pytest.warns(UserWarning, match="neither FAB_GLOBAL_SEED nor PL_GLOBAL_SEED is set"):
        assert seed_everything() == 0


def test_seed_everything_logs_the_seed_when_verbose(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="fab"):
        seed_everything(5)
    assert "Seed set to 5" in caplog.text


def test_seed_everything_accepts_integer_likes() -> None:
    assert seed_everything(np.int64(11), verbose=False) == 11  # type: ignore[arg-type]
    assert seed_everything("12", verbose=False) == 12  # type: ignore[arg-type]
    assert seed_everything(13.0, verbose=False) == 13  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "abc"])
def test_seed_everything_rejects_what_is_not_a_seed(seed: Any) -> None:
    with pytest.raises(ValueError, match="seed"):
        seed_everything(seed, verbose=False)


def test_seed_everything_rejects_a_boolean() -> None:
    with pytest.raises(TypeError, match="integer"):
        seed_everything(True, verbose=False)


def test_seed_everything_rejects_a_malformed_environment_seed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAB_GLOBAL_SEED", "forty-two")
    with pytest.raises(ValueError, match="FAB_GLOBAL_SEED='forty-two' is not an integer"):
        seed_everything(verbose=False)


# -- Lightning's variables and global_seed ----------------------------------------------------


def test_seed_everything_sets_lightnings_variables_too() -> None:
    seed_everything(21, workers=True, verbose=False)
    assert os.environ["PL_GLOBAL_SEED"] == "21"
    assert os.environ["PL_SEED_WORKERS"] == "1"
    seed_everything(22, verbose=False)
    assert (os.environ["PL_GLOBAL_SEED"], os.environ["PL_SEED_WORKERS"]) == ("22", "0")


def test_seed_everything_without_a_seed_takes_lightnings_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PL_GLOBAL_SEED", "1234")
    assert seed_everything(verbose=False) == 1234
    assert os.environ["FAB_GLOBAL_SEED"] == "1234"


def test_global_seed_prefers_fabs_variable_over_lightnings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert global_seed() is None
    monkeypatch.setenv("PL_GLOBAL_SEED", "5")
    assert global_seed() == 5
    monkeypatch.setenv("FAB_GLOBAL_SEED", "6")
    assert global_seed() == 6


def test_global_seed_follows_seed_everything() -> None:
    seed_everything(77, verbose=False)
    assert global_seed() == 77


def test_global_seed_names_a_malformed_lightning_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PL_GLOBAL_SEED", "-3")
    with pytest.raises(
        ValueError, match=r"PL_GLOBAL_SEED='-3' is not an integer in 0\.\.4294967295"
    ):
        global_seed()


def test_pl_seed_workers_alone_makes_setup_seed_the_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PL_SEED_WORKERS", "1")
    loader = DataLoader(RandomAugmentation(), batch_size=2)
    assert add_worker_init_fn(loader, rank=3)
    assert isinstance(loader.worker_init_fn, functools.partial)
    assert loader.worker_init_fn.keywords == {"rank": 3}


def test_reset_seed_reapplies_a_seed_set_by_lightning_tooling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PL_GLOBAL_SEED", "9")
    reset_seed()
    first = draws()
    seed_everything(9, verbose=False)
    assert draws() == first


def test_pl_worker_init_function_is_seed_worker_where_lightning_has_it() -> None:
    from fab.core.utilities.seed import pl_worker_init_function

    assert pl_worker_init_function is seed_worker


# -- reset_seed -------------------------------------------------------------------------------


def test_reset_seed_reapplies_the_last_seed() -> None:
    seed_everything(31, workers=True, verbose=False)
    first = draws()
    draws()
    reset_seed()
    assert draws() == first
    assert os.environ["FAB_SEED_WORKERS"] == "1"


def test_reset_seed_without_a_seed_does_nothing() -> None:
    state = torch.random.get_rng_state()
    reset_seed()
    assert torch.equal(torch.random.get_rng_state(), state)
    assert "FAB_GLOBAL_SEED" not in os.environ


# -- seed_worker ------------------------------------------------------------------------------


def test_seeded_workers_repeat_their_draws_across_runs() -> None:
    worker_init_fn = functools.partial(seed_worker, rank=0)
    assert loader_draws(42, worker_init_fn) == loader_draws(42, worker_init_fn)


def test_seeded_workers_draw_differently_from_each_other() -> None:
    by_worker = loader_draws(42, functools.partial(seed_worker, rank=0))
    assert sorted(by_worker) == [0, 1]
    first, second = by_worker[0], by_worker[1]
    for source in range(3):  # python, numpy and torch each differ
        assert {row[source] for row in first}.isdisjoint(row[source] for row in second)


def test_seeded_workers_of_different_ranks_draw_differently() -> None:
    rank0 = loader_draws(42, functools.partial(seed_worker, rank=0))
    rank1 = loader_draws(42, functools.partial(seed_worker, rank=1))
    for worker in (0, 1):
        for source in range(3):
            assert {r[source] for r in rank0[worker]}.isdisjoint(r[source] for r in rank1[worker])


def test_unseeded_workers_of_different_ranks_draw_the_same() -> None:
    """What seed_worker fixes: with the same global seed, torch alone repeats across ranks."""
    assert loader_draws(42, None) == loader_draws(42, None)


def test_another_global_seed_changes_the_workers_draws() -> None:
    worker_init_fn = functools.partial(seed_worker, rank=0)
    assert loader_draws(1, worker_init_fn) != loader_draws(2, worker_init_fn)


def test_seed_worker_takes_the_rank_from_rank_zero_only_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch.manual_seed(5)
    seed_worker(0)
    default = draws()
    torch.manual_seed(5)
    seed_worker(0, rank=3)
    assert draws() != default
    monkeypatch.setattr(rank_zero_only, "rank", 3)
    torch.manual_seed(5)
    seed_worker(0)
    assert draws() != default


# -- add_worker_init_fn ----------------------------------------------------------------------


def test_add_worker_init_fn_seeds_workers_after_seed_everything_with_workers() -> None:
    seed_everything(3, workers=True, verbose=False)
    loader = DataLoader(RandomAugmentation(), num_workers=2)
    assert add_worker_init_fn(loader, rank=1)
    assert isinstance(loader.worker_init_fn, functools.partial)
    assert loader.worker_init_fn.func is seed_worker
    assert loader.worker_init_fn.keywords == {"rank": 1}
    pickle.dumps(loader.worker_init_fn)  # spawned workers need it pickled


def test_add_worker_init_fn_does_nothing_unless_workers_were_asked_for() -> None:
    loader = DataLoader(RandomAugmentation(), num_workers=2)
    assert not add_worker_init_fn(loader, rank=0)
    seed_everything(3, workers=False, verbose=False)
    assert not add_worker_init_fn(loader, rank=0)
    assert loader.worker_init_fn is None


def test_add_worker_init_fn_keeps_the_users_worker_init_fn() -> None:
    seed_everything(3, workers=True, verbose=False)

    def mine(worker_id: int) -> None:
        pass

    loader = DataLoader(RandomAugmentation(), num_workers=2, worker_init_fn=mine)
    assert not add_worker_init_fn(loader, rank=0)
    assert loader.worker_init_fn is mine
