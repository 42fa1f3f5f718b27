"""What every Logger gets from the base class: rank zero only, plain numbers, counted steps."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pytest
import torch

from fab.core import Fabric
from fab.core.loggers import Logger
from fab.core.utilities.rank_zero import rank_zero_only


class Recorder(Logger):
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    @property
    def name(self) -> str:
        return "recorder"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.calls.append(("metrics", (dict(metrics), step)))

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        self.calls.append(("hparams", params))

    def save(self) -> None:
        self.calls.append(("save", None))

    def finalize(self, status: str) -> None:
        self.calls.append(("finalize", status))
        super().finalize(status)


class PrefixingRecorder(Recorder):
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        super().log_metrics({f"p/{k}": v for k, v in metrics.items()}, step)


class EveryRank(Recorder):
    log_on_every_rank = True


@pytest.fixture
def rank() -> Iterator[Any]:
    saved = rank_zero_only.rank  # type: ignore[attr-defined]

    def set_rank(value: int) -> None:
        rank_zero_only.rank = value  # type: ignore[attr-defined]

    set_rank(0)
    yield set_rank
    set_rank(saved)


def test_direct_calls_get_numbers_and_counted_steps(rank: Any) -> None:
    logger = Recorder()
    logger.log_metrics({"a": torch.tensor(2.0, requires_grad=True), "b": np.float32(0.5)})
    logger.log_metrics({"a": 1}, step=torch.tensor(5))
    logger.log_metrics(metrics={"a": np.array(3.0)})
    assert logger.calls == [
        ("metrics", ({"a": 2.0, "b": 0.5}, 0)),
        ("metrics", ({"a": 1}, 5)),
        ("metrics", ({"a": 3.0}, 6)),
    ]
    assert all(type(v) in (int, float) for _, (m, _) in logger.calls for v in m.values())


def test_a_tensor_of_several_elements_is_refused(rank: Any) -> None:
    with pytest.raises(ValueError, match="one element"):
        Recorder().log_metrics({"a": torch.ones(3)})


def test_other_ranks_record_nothing_unless_the_logger_asks(rank: Any) -> None:
    rank(1)
    quiet, loud = Recorder(), EveryRank()
    for logger in (quiet, loud):
        logger.log_metrics({"a": 1.0})
        logger.log_hyperparams({"lr": 1})
        logger.finalize("success")
    assert quiet.calls == []
    assert [kind for kind, _ in loud.calls] == ["metrics", "hparams", "finalize", "save"]


def test_nested_calls_are_prepared_once(rank: Any) -> None:
    logger = PrefixingRecorder()
    logger.log_metrics({"a": torch.tensor(1.0)})
    logger.log_metrics({"a": 2.0})
    logger.finalize("failed")
    assert logger.calls == [
        ("metrics", ({"p/a": 1.0}, 0)),
        ("metrics", ({"p/a": 2.0}, 1)),
        ("finalize", "failed"),
        ("save", None),
    ]


def test_fabric_and_direct_calls_share_one_step_count(rank: Any) -> None:
    logger = Recorder()
    fabric = Fabric(loggers=logger)
    fabric.log("a", 1.0)
    logger.log_metrics({"b": 2.0})
    fabric.log_dict({"c": torch.tensor(3.0)})
    assert [step for _, (_, step) in logger.calls] == [0, 1, 2]
