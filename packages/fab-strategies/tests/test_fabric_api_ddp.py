"""Lightning Fabric programs under DDP, for real: two processes over gloo (issue 10).

One ``ddp_spawn`` launch runs every check (``torch.compile`` costs seconds per process), and
each test reads its part of the result: collectives of Python numbers, models compiled before
and after ``setup`` through every Fabric method that takes a module, and
``init_module(empty_init=True)``. The errors before ``launch()`` need no processes.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from fab.core import Fabric

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(180)]

Checks = dict[str, Any]


# -- run in each of the two spawned processes ----------------------------------------------------


def _numbers(fabric: Fabric) -> Checks:
    rank = fabric.global_rank
    mean = fabric.all_reduce(7)
    return {
        "gather_rank": fabric.all_gather(rank),
        "reduce_sum": fabric.all_reduce(7, reduce_op="sum"),
        "reduce_mean": mean,
        "gather_floats": fabric.all_gather({"loss": 0.5 + rank, "flags": [rank == 0]}),
    }


def _grads(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def _both_equal(fabric: Fabric, tensor: torch.Tensor) -> bool:
    gathered = fabric.all_gather(tensor)
    return bool(torch.equal(gathered[0], gathered[1]))


def _compiled(fabric: Fabric, directory: str, when: str) -> Checks:
    """``when``: "before" (torch.compile, then setup) or "after" (setup, then torch.compile)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    if when == "before":
        fmodel, optimizer = fabric.setup(torch.compile(model, backend="eager"), optimizer)
    else:
        fmodel, optimizer = fabric.setup(model, optimizer)
        fmodel = torch.compile(fmodel, backend="eager")
    out: Checks = {"compiled": type(fmodel._forward_module if when == "before" else fmodel)}
    batch = torch.full((2, 4), float(fabric.global_rank + 1))  # different data on each rank
    with fabric.no_backward_sync(fmodel):  # Lightning's gradient accumulation
        fabric.backward(fmodel(batch).sum(), model=fmodel)
    out["differ_without_sync"] = not _both_equal(fabric, _grads(model))
    optimizer.zero_grad()
    with fabric.no_backward_sync(fmodel, enabled=False):
        fabric.backward(fmodel(batch).sum(), model=fmodel)
    out["agree_with_sync"] = _both_equal(fabric, _grads(model))
    out["norm"] = fabric.clip_gradients(fmodel, optimizer, max_norm=1e-3)
    optimizer.step()
    out["weights_agree"] = _both_equal(fabric, nn.utils.parameters_to_vector(model.parameters()))
    path = Path(directory) / f"compiled-{when}.pt"
    fabric.save(path, {"model": fmodel, "optimizer": optimizer})
    out["saved_keys"] = list(torch.load(path, weights_only=True)["model"])
    torch.save(model.state_dict(), Path(directory) / f"raw-{when}-{fabric.global_rank}.pt")
    other = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    fother = fabric.setup_module(torch.compile(other, backend="eager"))
    fabric.load(path, {"model": fother})
    out["loaded"] = all(
        torch.equal(a, b) for a, b in zip(other.parameters(), model.parameters(), strict=True)
    )
    fabric.to_device(fother)
    third = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    fabric.load_raw(Path(directory) / f"raw-{when}-{fabric.global_rank}.pt", third)
    out["loaded_raw"] = torch.equal(third[0].weight, model[0].weight)
    return out


def _empty_init(fabric: Fabric) -> Checks:
    source = nn.Linear(4, 1)
    with fabric.init_module(empty_init=True):
        model = nn.Linear(4, 1)
    out: Checks = {"meta": any(p.is_meta for p in model.parameters())}
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)  # created before the load
    model.load_state_dict(source.state_dict())
    fmodel, optimizer = fabric.setup(model, optimizer)
    fabric.backward(fmodel(torch.ones(1, 4)).sum())  # the same gradient on both ranks: ones
    optimizer.step()
    out["moved_by_one"] = bool(torch.allclose(model.weight, source.weight - 1.0))
    out["shares_memory"] = model.weight.data_ptr() == source.weight.data_ptr()
    return out


def _guarded(check: Callable[..., Checks], *args: Any) -> Checks:
    """A failing check reports its traceback instead of ending the run for the others."""
    try:
        return check(*args)
    except Exception:
        return {"error": traceback.format_exc()}


def _everything(fabric: Fabric, directory: str) -> dict[str, Checks]:
    return {
        "numbers": _guarded(_numbers, fabric),
        "compiled_before": _guarded(_compiled, fabric, directory, "before"),
        "compiled_after": _guarded(_compiled, fabric, directory, "after"),
        "empty_init": _guarded(_empty_init, fabric),
    }


# -- the tests ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rank_zero(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Checks]:
    """What rank 0 saw, from one 2-process ddp_spawn run."""
    directory = tmp_path_factory.mktemp("ddp")
    fabric = Fabric(accelerator="cpu", devices=2, strategy="ddp_spawn")
    result: dict[str, Checks] = fabric.launch(_everything, str(directory))
    return result


def _part(results: dict[str, Checks], name: str) -> Checks:
    part = results[name]
    assert "error" not in part, part.get("error")
    return part


def test_collectives_take_python_numbers(rank_zero: dict[str, Checks]) -> None:
    out = _part(rank_zero, "numbers")
    assert torch.equal(out["gather_rank"], torch.tensor([0, 1], dtype=torch.int32))
    assert torch.equal(out["reduce_sum"], torch.tensor(14, dtype=torch.int32))
    assert out["reduce_mean"].item() == 7
    assert torch.equal(out["gather_floats"]["loss"], torch.tensor([0.5, 1.5]))
    assert torch.equal(out["gather_floats"]["flags"][0], torch.tensor([1, 0], dtype=torch.uint8))


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_compiled_model_works_with_every_method_taking_a_module(
    rank_zero: dict[str, Checks], when: str
) -> None:
    out = _part(rank_zero, f"compiled_{when}")
    assert out["compiled"].__name__ == "OptimizedModule"
    assert out["differ_without_sync"] is True  # no_backward_sync skipped the all-reduce
    assert out["agree_with_sync"] is True
    assert out["norm"] > 1e-3  # the norm before clipping
    assert out["weights_agree"] is True
    assert out["saved_keys"] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert out["loaded"] is True
    assert out["loaded_raw"] is True


def test_empty_init_allocates_and_the_users_own_load_trains(rank_zero: dict[str, Checks]) -> None:
    out = _part(rank_zero, "empty_init")
    assert out == {"meta": False, "moved_by_one": True, "shares_memory": False}


# -- before launch(): no processes needed ----------------------------------------------------------


@pytest.mark.parametrize("strategy", ["ddp_spawn", "ddp_fork"])
def test_launch_without_a_function_where_processes_run_only_it_is_an_error(strategy: str) -> None:
    fabric = Fabric(accelerator="cpu", devices=2, strategy=strategy)
    with pytest.raises(TypeError, match=r"none was given.*fabric\.launch\(train\)"):
        fabric.launch()


@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
def test_checkpoints_before_launch_are_an_error_naming_the_method(
    tmp_path: Path, strategy: str
) -> None:
    fabric = Fabric(accelerator="cpu", devices=2, strategy=strategy)
    model = nn.Linear(2, 2)
    torch.save(model.state_dict(), tmp_path / "raw.pt")
    calls = {
        "save": lambda: fabric.save(tmp_path / "new.pt", {"model": model}),
        "load": lambda: fabric.load(tmp_path / "raw.pt", {"model": model}),
        "load_raw": lambda: fabric.load_raw(tmp_path / "raw.pt", model),
    }
    for name, call in calls.items():
        with pytest.raises(RuntimeError, match=rf"Fabric\.{name}\(\) was called before .*launch"):
            call()
    assert not (tmp_path / "new.pt").exists()
