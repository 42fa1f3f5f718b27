"""The examples of the Fabric API reference page (shared/seeds/fabric-api.txt), on fab."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from fab.core import Fabric


def test_barrier_example() -> None:
    fabric = Fabric()
    downloaded = []
    if fabric.global_rank == 0:
        downloaded.append("dataset")  # let process 0 download the dataset
    fabric.barrier()  # let all processes wait before reading the dataset
    assert downloaded == ["dataset"]


def test_call_example() -> None:
    seen: list[Any] = []

    class MyCallback:
        def on_train_epoch_end(self, results: dict[str, Any]) -> None:
            seen.append(results)

    fabric = Fabric(callbacks=[MyCallback()])
    fabric.call("on_train_epoch_end", results={"loss": 1.0})
    assert seen == [{"loss": 1.0}]


def test_no_backward_sync_example_accumulates_gradients() -> None:
    fabric = Fabric()
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = fabric.setup(model, optimizer)
    for batch_idx in range(8):
        # Accumulate gradient 8 batches at a time
        with fabric.no_backward_sync(model, enabled=(batch_idx % 8 != 0)):
            output = model(torch.ones(2, 4))
            loss = output.sum()
            fabric.backward(loss)
    assert model.weight.grad is not None
    assert torch.allclose(model.weight.grad, torch.full((1, 4), 16.0))


def test_sharded_model_example_is_a_deprecated_no_op_here() -> None:
    fabric = Fabric()
    with pytest.warns(DeprecationWarning, match="init_module"), fabric.sharded_model():
        model = torch.nn.Linear(2, 2)
    assert model.weight.device == torch.device("cpu")


def test_run_subclass_example() -> None:
    class MyFabric(Fabric):
        def run(self, epochs: int) -> int:
            model = self.setup(torch.nn.Linear(1, 1))
            for _ in range(epochs):
                self.backward(model(torch.ones(1)).sum())
            return epochs

    assert MyFabric().run(2) == 2


def test_all_gather_on_one_process_returns_the_data_unchanged() -> None:
    """Lightning 2.6's all_gather: "For the special case where world_size is 1, no additional
    dimension is added to the tensor(s)"."""
    fabric = Fabric()
    out = fabric.all_gather({"a": torch.ones(3, 2), "b": (torch.zeros(1),)})
    assert out["a"].shape == (3, 2)
    assert out["b"][0].shape == (1,)


def test_setup_dataloaders_with_use_distributed_sampler_false_and_no_device_move() -> None:
    from torch.utils.data import DataLoader

    fabric = Fabric()
    loader = fabric.setup_dataloaders(
        DataLoader(torch.arange(6.0), batch_size=2),
        use_distributed_sampler=False,
        move_to_device=False,
    )
    assert [b.tolist() for b in loader] == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
