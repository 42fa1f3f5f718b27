"""Fabric on one CPU device with fab-core alone: what the first example needs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from fab.core import Fabric, is_wrapped, seed_everything
from fab.core.loggers import Logger
from fab.wrappers import FabricDataLoader, FabricModule


def test_setup_model_and_optimizer_then_train() -> None:
    fabric = Fabric(accelerator="cpu", devices=1)
    fabric.launch()
    seed_everything(1)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    fmodel, foptimizer = fabric.setup(model, optimizer)
    assert is_wrapped(fmodel)
    assert is_wrapped(foptimizer)
    assert isinstance(foptimizer, torch.optim.SGD)
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    losses = []
    for _ in range(20):
        loss = torch.nn.functional.mse_loss(fmodel(x), y)
        fabric.backward(loss)
        foptimizer.step()
        foptimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert fmodel.module is model
    assert list(fmodel.state_dict()) == ["weight", "bias"]


def test_properties_on_one_device() -> None:
    fabric = Fabric()
    assert fabric.device == torch.device("cpu")
    assert (fabric.global_rank, fabric.local_rank, fabric.node_rank, fabric.world_size) == (
        0,
        0,
        0,
        1,
    )
    assert fabric.is_global_zero
    assert fabric.loggers == []


def test_setting_up_twice_is_refused() -> None:
    fabric = Fabric()
    model = fabric.setup(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="already set up"):
        fabric.setup(model)


def test_dataloader_batches_arrive_on_the_device_and_keep_their_length() -> None:
    fabric = Fabric()
    loader = DataLoader(TensorDataset(torch.arange(10.0)), batch_size=4)
    wrapped = fabric.setup_dataloaders(loader)
    assert isinstance(wrapped, FabricDataLoader)
    assert len(wrapped) == 3
    batches = [b[0] for b in wrapped]
    assert torch.equal(torch.cat(batches), torch.arange(10.0))
    assert wrapped.batch_size == 4


class Pair(NamedTuple):
    a: torch.Tensor
    b: list[torch.Tensor]


@dataclasses.dataclass
class Batch:
    x: torch.Tensor
    label: str


def test_to_device_keeps_collection_types() -> None:
    fabric = Fabric()
    moved = fabric.to_device(
        {"p": Pair(torch.ones(1), [torch.zeros(1)]), "d": Batch(torch.ones(2), "k")}
    )
    assert isinstance(moved["p"], Pair)
    assert isinstance(moved["d"], Batch)
    assert moved["d"].label == "k"


def test_single_process_collectives_return_their_input_as_lightning_does() -> None:
    fabric = Fabric()
    t = torch.tensor([1.0, 2.0])
    assert fabric.all_gather(t) is t  # no leading dimension of 1
    assert fabric.all_reduce(t) is t
    assert fabric.broadcast({"a": 1}) == {"a": 1}
    fabric.barrier("named")


def test_save_and_load_restore_in_place_and_return_the_rest(tmp_path: Path) -> None:
    fabric = Fabric()
    model = torch.nn.Linear(3, 3)
    optimizer = torch.optim.Adam(model.parameters())
    fmodel, foptimizer = fabric.setup(model, optimizer)
    fabric.backward(fmodel(torch.randn(2, 3)).sum())
    foptimizer.step()
    fabric.save(
        tmp_path / "c.pt", {"model": fmodel, "optimizer": foptimizer, "step": 5, "extra": "x"}
    )
    other = torch.nn.Linear(3, 3)
    other_opt = torch.optim.Adam(other.parameters())
    state: dict[str, Any] = {"model": other, "optimizer": other_opt, "step": 0}
    remainder = fabric.load(tmp_path / "c.pt", state)
    assert remainder == {"extra": "x"}
    assert state["step"] == 5
    assert torch.equal(other.weight, model.weight)
    assert other_opt.state_dict()["state"][0]["step"] == 1
    # The checkpoint loads with plain torch.load(weights_only=True).
    assert set(torch.load(tmp_path / "c.pt", weights_only=True)) == {
        "model",
        "optimizer",
        "step",
        "extra",
    }


def test_load_strict_reports_missing_keys(tmp_path: Path) -> None:
    fabric = Fabric()
    fabric.save(tmp_path / "c.pt", {"step": 1})
    with pytest.raises(KeyError, match="has no entry for \\['model'\\]"):
        fabric.load(tmp_path / "c.pt", {"model": torch.nn.Linear(1, 1)})
    assert fabric.load(tmp_path / "c.pt", {"model": torch.nn.Linear(1, 1)}, strict=False) == {
        "step": 1
    }


def test_save_filter_keeps_only_selected_entries(tmp_path: Path) -> None:
    fabric = Fabric()
    model = torch.nn.Linear(2, 2)
    fabric.save(tmp_path / "c.pt", {"model": model}, filter={"model": lambda k, v: k == "weight"})
    assert list(fabric.load(tmp_path / "c.pt")["model"]) == ["weight"]


class MemoryLogger(Logger):
    def __init__(self) -> None:
        self.rows: list[tuple[dict[str, float], int | None]] = []

    @property
    def name(self) -> str:
        return "memory"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics: Any, step: int | None = None) -> None:
        self.rows.append((dict(metrics), step))

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass


def test_log_turns_tensors_into_numbers_and_counts_steps() -> None:
    logger = MemoryLogger()
    fabric = Fabric(loggers=logger)
    fabric.log("loss", torch.tensor(0.5))
    fabric.log_dict({"a": torch.tensor(1.0), "b": 2})
    fabric.log("loss", 0.25, step=10)
    assert logger.rows == [({"loss": 0.5}, 0), ({"a": 1.0, "b": 2}, 1), ({"loss": 0.25}, 10)]
    assert fabric.logger is logger


def test_call_passes_only_the_keyword_arguments_a_callback_accepts() -> None:
    seen: list[Any] = []

    class Callback:
        def on_train_end(self, loss: float) -> None:
            seen.append(loss)

    fabric = Fabric(callbacks=[Callback(), object()])
    fabric.call("on_train_end", loss=1.5, unused="x")
    assert seen == [1.5]


def test_launch_calls_the_function_with_fabric_and_returns_its_result() -> None:
    fabric = Fabric()
    assert fabric.launch(lambda f, x: (f is fabric, x), 3) == (True, 3)


def test_wrapped_forward_in_32_true_is_the_module_itself() -> None:
    fabric = Fabric()
    model = torch.nn.Linear(2, 2)
    wrapped = fabric.setup(model)
    assert isinstance(wrapped, FabricModule)
    assert wrapped._run_forward is model  # no extra layer of Python in the hot path


def test_precision_state_is_saved_beside_the_state_and_restored(tmp_path: Path) -> None:
    from fab.core.precision import Precision

    class Scaled(Precision):
        def __init__(self) -> None:
            self.scale = 1.0

        def state_dict(self) -> dict[str, Any]:
            return {"scale": self.scale}

        def load_state_dict(self, state_dict: Any) -> None:
            self.scale = state_dict["scale"]

    precision = Scaled()
    fabric = Fabric(precision=precision)
    precision.scale = 4.0
    fabric.save(tmp_path / "c.pt", {"step": 1})
    precision.scale = 1.0
    assert fabric.load(tmp_path / "c.pt", {"step": 0}) == {}
    assert precision.scale == 4.0
    with pytest.raises(ValueError, match="'fab_precision' is a key fab reserves"):
        fabric.save(tmp_path / "c.pt", {"fab_precision": 1})
