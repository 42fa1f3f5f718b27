"""Tensor parallel x FSDP2 for real: four processes over gloo on the CPU, a 2x2 mesh; and tensor
parallel alone on two.

One launch per layout runs every check and reports; the tests compare it with the same training
on one device, computed here. Every function given to ``launch`` is at module level (spawn pickles
it).
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from fab.core import Fabric
from fab.strategies.model_parallel import ModelParallelStrategy

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(300)]

STEPS = 20
BATCH = 4  # per data-parallel rank


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(6, 16)
        self.down = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.tanh(self.up(x)))


def parallelize(model: nn.Module, mesh: Any) -> nn.Module:
    """Megatron-style tensor parallel over ``tensor_parallel``, FSDP2 over ``data_parallel``."""
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        parallelize_module,
    )

    parallelize_module(
        model, mesh["tensor_parallel"], {"up": ColwiseParallel(), "down": RowwiseParallel()}
    )
    fully_shard(model, mesh=mesh["data_parallel"])
    return model


def parallelize_tensors(model: nn.Module, mesh: Any) -> nn.Module:
    """Tensor parallel only: every process of the pair takes the whole batch."""
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        parallelize_module,
    )

    parallelize_module(
        model, mesh["tensor_parallel"], {"up": ColwiseParallel(), "down": RowwiseParallel()}
    )
    return model


def _optimizer(name: str, model: nn.Module) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1)


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(2 * BATCH, 6, generator=torch.Generator().manual_seed(2000 + step))
    return x, x[:, :3].sin() * 3


def _full(model: nn.Module) -> dict[str, torch.Tensor]:
    from torch.distributed.tensor import DTensor

    return {
        k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().clone()
        for k, v in model.state_dict().items()
    }


def _mine(fabric: Any, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This process's rows of the global batch of ``step``: its data-parallel rank's share."""
    x, y = _batch(step)
    if fabric is not None and fabric.world_size > 1:
        layout = fabric.strategy.layout
        share = 2 * BATCH // layout.data_parallel_size
        data_rank = layout.data_parallel_rank(fabric.global_rank)
        rows = slice(data_rank * share, (data_rank + 1) * share)
        x, y = x[rows], y[rows]
    return x, y


def _train(fabric: Any, model: Any, optimizer: Any, first: int, steps: int) -> None:
    for step in range(first, first + steps):
        x, y = _mine(fabric, step)
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        fabric.backward(loss) if fabric is not None else loss.backward()
        optimizer.step()


def _reference(name: str, steps: int = STEPS) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = MLP()
    optimizer = _optimizer(name, model)
    _train(None, model, optimizer, 0, steps)
    return _full(model)


def _run_all(fabric: Fabric, folder: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    mesh = fabric.strategy.device_mesh  # type: ignore[attr-defined]
    out["mesh"] = (mesh.mesh_dim_names, tuple(mesh.shape))
    out["data_ranks"] = fabric.all_gather(
        torch.tensor(fabric.strategy.layout.data_parallel_rank(fabric.global_rank))  # type: ignore[attr-defined]
    ).tolist()

    torch.manual_seed(0 if fabric.global_rank == 0 else 99)
    module = MLP()
    model, optimizer = fabric.setup(module, _optimizer("sgd", module))
    out["local_numel"] = fabric.all_gather(
        torch.tensor(sum(p.to_local().numel() for p in model.parameters()))
    ).tolist()
    _train(fabric, model, optimizer, 0, STEPS)
    out["sgd"] = _full(model)

    torch.manual_seed(0)
    with fabric.init_module(empty_init=True):
        module = MLP()
    model, optimizer = fabric.setup(module, _optimizer("adamw", module))
    out["init"] = _full(model)
    _train(fabric, model, optimizer, 0, STEPS)
    out["adamw"] = _full(model)
    fabric.save(Path(folder, "tp"), {"model": model, "optimizer": optimizer, "step": STEPS})
    _train(fabric, model, optimizer, STEPS, 1)
    out["next_step"] = _full(model)

    # gradient accumulation: the first micro-batch without synchronization over data_parallel
    torch.manual_seed(0)
    module = MLP()
    model, optimizer = fabric.setup(module, torch.optim.SGD(module.parameters(), lr=0.1))
    with fabric.no_backward_sync(model):
        x, y = _mine(fabric, 0)
        fabric.backward(nn.functional.mse_loss(model(x), y))
    out["reduced_inside_no_sync"] = [p.grad is not None for p in model.parameters()]
    x, y = _mine(fabric, 1)
    fabric.backward(nn.functional.mse_loss(model(x), y))
    optimizer.step()
    out["accumulated"] = _full(model)

    # collectives: the whole world by default (as Lightning), a mesh dimension by name
    one = torch.tensor(1.0)
    out["sums"] = {
        str(group): fabric.all_reduce(one.clone(), group=group, reduce_op="sum").item()
        for group in (None, "data_parallel", "tensor_parallel")
    }
    rank = torch.tensor(fabric.global_rank)
    out["gathered"] = {
        group: fabric.all_gather(fabric.all_gather(rank, group=group)).tolist()
        for group in ("data_parallel", "tensor_parallel")
    }
    sampler = fabric.strategy.distributed_sampler_kwargs
    assert sampler is not None
    out["samplers"] = fabric.all_gather(
        torch.tensor([sampler["num_replicas"], sampler["rank"]])
    ).tolist()
    return out


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("model_parallel")
    strategy = ModelParallelStrategy(
        parallelize, data_parallel_size=2, tensor_parallel_size=2, start_method="spawn"
    )
    fabric = Fabric(accelerator="cpu", devices=4, strategy=strategy)
    result: dict[str, Any] = fabric.launch(_run_all, str(folder))
    result["folder"] = folder
    return result


def _train_tensor_parallel(fabric: Fabric) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("sgd", "adamw"):
        torch.manual_seed(0)
        module = MLP()
        model, optimizer = fabric.setup(module, _optimizer(name, module))
        _train(fabric, model, optimizer, 0, STEPS)
        out[name] = _full(model)
    out["sampler"] = fabric.strategy.distributed_sampler_kwargs
    data = torch.utils.data.DataLoader(torch.arange(8), batch_size=2, shuffle=True)
    out["batches"] = fabric.all_gather(torch.stack(list(fabric.setup_dataloaders(data)))).tolist()
    return out


@pytest.fixture(scope="module")
def tensor_parallel_report() -> dict[str, Any]:
    strategy = ModelParallelStrategy(
        parallelize_tensors, data_parallel_size=1, tensor_parallel_size=2, start_method="spawn"
    )
    result: dict[str, Any] = Fabric(accelerator="cpu", devices=2, strategy=strategy).launch(
        _train_tensor_parallel
    )
    return result


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert sorted(a) == sorted(b)
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_the_mesh_is_named_data_parallel_by_tensor_parallel(report: dict[str, Any]) -> None:
    assert report["mesh"] == (("data_parallel", "tensor_parallel"), (2, 2))
    assert report["data_ranks"] == [0, 0, 1, 1]  # a tensor-parallel group shares a batch


def test_each_rank_holds_about_a_quarter_of_the_parameters(report: dict[str, Any]) -> None:
    total = sum(v.numel() for v in _reference("sgd", 0).values())
    # the row-parallel layer's bias is replicated over the tensor-parallel pair
    assert sum(report["local_numel"]) == total + 3
    assert all(n <= 0.3 * total for n in report["local_numel"])


def test_sgd_under_tensor_parallel_x_fsdp_gives_the_weights_of_one_device(
    report: dict[str, Any],
) -> None:
    assert _max_difference(report["sgd"], _reference("sgd")) < 1e-5


def test_adamw_under_tensor_parallel_x_fsdp_gives_the_weights_of_one_device(
    report: dict[str, Any],
) -> None:
    assert _max_difference(report["adamw"], _reference("adamw")) < 1e-5


def test_empty_init_gives_the_eager_initial_values_on_a_2x2_mesh(report: dict[str, Any]) -> None:
    torch.manual_seed(0)
    eager = _full(MLP())
    assert all(torch.equal(report["init"][k], eager[k]) for k in eager)


def test_a_2x2_sharded_save_resumes_on_one_device(report: dict[str, Any]) -> None:
    fabric = Fabric(accelerator="cpu", devices=1)
    module = MLP()
    model, optimizer = fabric.setup(module, _optimizer("adamw", module))
    state: dict[str, Any] = {"model": model, "optimizer": optimizer, "step": 0}
    assert fabric.load(Path(report["folder"], "tp"), state) == {}
    assert state["step"] == STEPS
    _train(fabric, model, optimizer, STEPS, 1)
    assert _max_difference(_full(model), report["next_step"]) < 1e-6


def test_no_backward_sync_under_tensor_parallel_x_fsdp_accumulates_as_one_big_batch(
    report: dict[str, Any],
) -> None:
    torch.manual_seed(0)
    model = MLP()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in (0, 1):
        x, y = _batch(step)
        nn.functional.mse_loss(model(x), y).backward()
    optimizer.step()
    assert _max_difference(report["accumulated"], _full(model)) < 1e-5
    # the skipped reduction is what no_backward_sync is for (a no-op would give the same
    # weights): inside the block no gradient was reduced over data_parallel yet
    assert report["reduced_inside_no_sync"]
    assert not any(report["reduced_inside_no_sync"])


def test_collectives_span_the_world_by_default_and_a_mesh_dimension_by_name(
    report: dict[str, Any],
) -> None:
    assert report["sums"] == {"None": 4, "data_parallel": 2, "tensor_parallel": 2}
    # ranks 0, 1 form a tensor-parallel pair (one batch), ranks 0, 2 a data-parallel pair
    assert report["gathered"]["tensor_parallel"] == [[0, 1], [0, 1], [2, 3], [2, 3]]
    assert report["gathered"]["data_parallel"] == [[0, 2], [1, 3], [0, 2], [1, 3]]
    assert report["samplers"] == [[2, 0], [2, 0], [2, 1], [2, 1]]


def test_no_process_is_left_behind(report: dict[str, Any]) -> None:
    assert not multiprocessing.active_children()


def test_the_two_ranks_of_a_tensor_parallel_group_see_the_same_batches(
    tensor_parallel_report: dict[str, Any],
) -> None:
    mine, theirs = tensor_parallel_report["batches"]
    assert mine == theirs  # the same (shuffled) batches, in the same order
    assert sorted(i for batch in mine for i in batch) == list(range(8))


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_tensor_parallel_alone_gives_the_weights_of_one_device(
    tensor_parallel_report: dict[str, Any], name: str
) -> None:
    assert tensor_parallel_report["sampler"] == {"num_replicas": 1, "rank": 0}
    assert _max_difference(tensor_parallel_report[name], _reference(name)) < 1e-5
