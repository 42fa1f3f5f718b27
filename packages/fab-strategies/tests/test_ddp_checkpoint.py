"""``fabric.save`` / ``load`` / ``load_raw`` under real 2-process DDP (gloo on the CPU, ddp_spawn).

One launch saves mid-training and keeps training; a fresh launch resumes from the file and must
end with the very same weights; a single-process Fabric loads the same file and continues to the
same weights (up to float rounding). Another launch goes through the failure paths: every
process raises, none hangs, the previous checkpoint survives. Every function given to ``launch``
is at module level (spawn pickles it).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.nn import Module
from torch.optim import Optimizer

from fab.core import Fabric
from fab.core.io.checkpoint_io import PathLike
from fab.core.io.torch_io import TorchCheckpointIO

pytestmark = [
    pytest.mark.distributed,
    pytest.mark.timeout(120),
    pytest.mark.usefixtures("no_orphan_processes"),
]

BATCH = 4  # per process
STEPS = 3  # before the save, and again after it


class CountingIO(TorchCheckpointIO):
    """Counts the writes made in this process."""

    def __init__(self) -> None:
        self.writes = 0

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: PathLike, storage_options: Any | None = None
    ) -> None:
        self.writes += 1
        super().save_checkpoint(checkpoint, path, storage_options=storage_options)


def _fabric() -> Fabric:
    return Fabric(accelerator="cpu", devices=2, strategy="ddp_spawn", plugins=[CountingIO()])


def _model(seed: int) -> Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets for 2 * STEPS steps of both processes' batches."""
    x = torch.randn(2 * STEPS, 2 * BATCH, 4, generator=torch.Generator().manual_seed(1))
    return x, x.sum(-1, keepdim=True).sin()


def _train(model: Any, optimizer: Any, backward: Any, first: int, rank: int, size: int) -> None:
    """STEPS steps from step ``first`` on this process's slice of every batch (``size`` rows)."""
    x, y = _data()
    for step in range(first, first + STEPS):
        xs = x[step, rank * size : (rank + 1) * size]
        ys = y[step, rank * size : (rank + 1) * size]
        optimizer.zero_grad()
        backward(torch.nn.functional.mse_loss(model(xs), ys))
        optimizer.step()


def _setup(fabric: Fabric, seed: int) -> tuple[Any, Any]:
    module = _model(seed)
    model, optimizer = fabric.setup(module, torch.optim.Adam(module.parameters(), lr=0.01))
    return model, optimizer


def _flat(model: Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _both(fabric: Fabric, mine: Any) -> list[Any]:
    """[rank 0's value, rank 1's value], on every process."""
    return [fabric.broadcast(mine, src=0), fabric.broadcast(mine, src=1)]


def _writes(fabric: Fabric) -> int:
    io = fabric.strategy.checkpoint_io
    assert isinstance(io, CountingIO)
    return io.writes


# -- functions run in the spawned processes ------------------------------------------------------


def _save_then_continue(fabric: Fabric, folder: str) -> dict[str, Any]:
    path = Path(folder, "run.ckpt")
    rank = fabric.global_rank
    model, optimizer = _setup(fabric, seed=0)
    _train(model, optimizer, fabric.backward, 0, rank, BATCH)
    fabric.save(path, {"model": model, "optimizer": optimizer, "step": STEPS, "meta": {"a": 1}})
    # the file is complete on every process as soon as save returns
    seen = torch.load(path, weights_only=True) if path.exists() else None
    if fabric.is_global_zero:  # plain state dicts for load_raw
        torch.save(model.state_dict(), Path(folder, "raw_model.pt"))
        torch.save(optimizer.state_dict(), Path(folder, "raw_optimizer.pt"))
    fabric.barrier()
    out: dict[str, Any] = {
        "writes": _both(fabric, _writes(fabric)),
        "seen": _both(fabric, None if seen is None else sorted(seen)),
        "model_keys": None if seen is None else sorted(seen["model"]),
        "saved_weights": _flat(model).clone(),
        "wrapped": type(model._forward_module).__name__,
        # a bare DistributedDataParallel module given to the strategy: no "module." either
        "bare_ddp_keys": sorted(fabric.strategy.get_module_state_dict(model._forward_module)),
    }
    _train(model, optimizer, fabric.backward, STEPS, rank, BATCH)
    out["final"] = _both(fabric, _flat(model).clone())
    return out


def _resume(fabric: Fabric, folder: str) -> dict[str, Any]:
    path = Path(folder, "run.ckpt")
    rank = fabric.global_rank
    model, optimizer = _setup(fabric, seed=123)  # other weights, which the load overwrites
    state: dict[str, Any] = {"model": model, "optimizer": optimizer, "step": 0}
    remainder = fabric.load(path, state)
    out: dict[str, Any] = {
        "remainder": remainder,
        "step": _both(fabric, state["step"]),
        "model_is_same_object": state["model"] is model,
        "loaded": _both(fabric, _flat(model).clone()),
        "adam_steps": _both(
            fabric, sorted(float(s["step"]) for s in optimizer.state_dict()["state"].values())
        ),
    }
    loose = fabric.load(path, {"model": model, "not_in_file": 7}, strict=False)
    out["loose_remainder"] = sorted(loose)
    try:
        fabric.load(path, {"model": model, "not_in_file": 7})
        strict_error = "no error"
    except KeyError as err:
        strict_error = str(err)
    out["strict_error"] = _both(fabric, strict_error)
    # load_raw: plain state dicts into a model and an optimizer set up by fabric
    raw_model, raw_optimizer = _setup(fabric, seed=7)
    fabric.load_raw(Path(folder, "raw_model.pt"), raw_model)
    fabric.load_raw(Path(folder, "raw_optimizer.pt"), raw_optimizer)
    out["raw_model_equal"] = _both(fabric, torch.equal(_flat(raw_model), _flat(model)))
    raw_state = raw_optimizer.state_dict()["state"]
    out["raw_optimizer_equal"] = _both(
        fabric,
        all(
            torch.equal(raw_state[i]["exp_avg"], s["exp_avg"])
            for i, s in optimizer.state_dict()["state"].items()
        ),
    )
    _train(model, optimizer, fabric.backward, STEPS, rank, BATCH)
    out["final"] = _both(fabric, _flat(model).clone())
    out["writes"] = _both(fabric, _writes(fabric))
    return out


def _outcome(call: Any) -> tuple[str, str]:
    try:
        call()
    except Exception as err:
        return type(err).__name__, str(err)
    return "ok", ""


def _failures(fabric: Fabric, folder: str) -> dict[str, Any]:
    rank = fabric.global_rank
    model, optimizer = _setup(fabric, seed=0)
    good = Path(folder, "good.ckpt")
    fabric.save(good, {"model": model})
    before = _flat(model).clone()
    out: dict[str, Any] = {}
    # rank 0 cannot write (the path is a directory): every process raises, none waits forever
    directory = Path(folder, "a_directory")
    directory.mkdir(exist_ok=True)
    out["to_directory"] = _both(fabric, _outcome(lambda: fabric.save(directory, {"model": model})))
    # rank 0 fails in the middle of writing over the good checkpoint: it survives, intact
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    out["unpicklable"] = _both(
        fabric,
        _outcome(lambda: fabric.save(good, {"model": model, "bad": lambda: None})),
    )
    fabric.barrier()
    out["good_after"] = torch.load(good, weights_only=True)["model"]
    out["before"] = before
    out["leftovers"] = sorted(p.name for p in Path(folder).iterdir())
    # a missing file: every process raises its own FileNotFoundError
    missing = Path(folder, "missing.ckpt")
    out["missing"] = _both(fabric, _outcome(lambda: fabric.load(missing, {"model": model})))
    # a file that only rank 0 can read (no shared file system): every process raises
    mine = good if rank == 0 else missing
    out["only_rank_0"] = _both(fabric, _outcome(lambda: fabric.load(mine, {"model": model})))
    raw = Path(folder, "raw.pt")
    if rank == 0:
        torch.save(_model(0).state_dict(), raw)
    fabric.barrier()
    mine_raw = raw if rank == 0 else missing
    out["raw_only_rank_0"] = _both(fabric, _outcome(lambda: fabric.load_raw(mine_raw, model)))
    # the processes are still in step: a collective and a save/load that work
    out["gather"] = fabric.all_gather(torch.tensor(rank))
    fabric.save(good, {"model": model, "optimizer": optimizer})
    out["reload"] = _both(fabric, _outcome(lambda: fabric.load(good, {"model": model})))
    return out


# -- tests --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("ddp_checkpoint")
    return folder, _fabric().launch(_save_then_continue, str(folder))


def test_only_rank_zero_writes_and_every_rank_sees_the_file(
    saved: tuple[Path, dict[str, Any]],
) -> None:
    folder, out = saved
    assert out["wrapped"] == "DistributedDataParallel"
    assert out["writes"] == [1, 0]
    assert out["seen"][1] is not None, "rank 1 did not see the file when save returned"
    assert out["seen"] == [["meta", "model", "optimizer", "step"]] * 2
    assert out["model_keys"] == ["0.bias", "0.weight", "2.bias", "2.weight"]
    assert out["bare_ddp_keys"] == out["model_keys"]
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    checkpoint = torch.load(folder / "run.ckpt", weights_only=True)
    assert checkpoint["step"] == STEPS
    assert checkpoint["meta"] == {"a": 1}
    assert not [k for k in checkpoint["model"] if k.startswith(("module.", "_forward_module."))]
    assert len(checkpoint["optimizer"]["state"]) == 4
    final = out["final"]
    assert torch.equal(final[0], final[1])


def test_resume_in_a_fresh_two_process_run(saved: tuple[Path, dict[str, Any]]) -> None:
    folder, first = saved
    out = _fabric().launch(_resume, str(folder))
    assert out["remainder"] == {"meta": {"a": 1}}
    assert out["step"] == [STEPS, STEPS]  # a plain value is replaced in the caller's dict
    assert out["model_is_same_object"]
    for loaded in out["loaded"]:
        assert torch.equal(loaded, first["saved_weights"])
    assert out["adam_steps"] == [[float(STEPS)] * 4] * 2
    assert out["loose_remainder"] == ["meta", "optimizer", "step"]
    for message in out["strict_error"]:
        assert "not_in_file" in message
        assert "strict=False" in message
    assert out["raw_model_equal"] == [True, True]
    assert out["raw_optimizer_equal"] == [True, True]
    # training goes on exactly as in the run that never stopped, on both processes
    for final in out["final"]:
        assert torch.equal(final, first["final"][0])
    assert out["writes"] == [0, 0]


def test_resume_in_a_single_process(saved: tuple[Path, dict[str, Any]]) -> None:
    folder, first = saved
    fabric = Fabric(accelerator="cpu", devices=1)
    model, optimizer = _setup(fabric, seed=123)
    state: dict[str, Any] = {"model": model, "optimizer": optimizer}
    remainder = fabric.load(folder / "run.ckpt", state)
    assert sorted(remainder) == ["meta", "step"]
    assert torch.equal(_flat(model), first["saved_weights"])
    opt: Optimizer = optimizer
    assert [float(s["step"]) for s in opt.state_dict()["state"].values()] == [float(STEPS)] * 4
    # one process on both processes' batches: the same mean gradient as DDP's average
    _train(model, optimizer, fabric.backward, STEPS, 0, 2 * BATCH)
    torch.testing.assert_close(_flat(model), first["final"][0], rtol=1e-5, atol=1e-6)


def test_failures_raise_on_every_rank_without_hanging(tmp_path: Path) -> None:
    start = time.monotonic()
    out = _fabric().launch(_failures, str(tmp_path))
    assert time.monotonic() - start < 100  # a hang would wait for the 30-minute group timeout
    rank0, rank1 = out["to_directory"]
    assert rank0[0] == "IsADirectoryError"
    assert rank1[0] == "RuntimeError"
    assert "global rank 0" in rank1[1]
    assert "IsADirectoryError" in rank1[1]
    rank0, rank1 = out["unpicklable"]
    assert rank0[0] != "ok"
    assert rank1[0] == "RuntimeError"
    assert "global rank 0" in rank1[1]
    # the checkpoint that was there is intact, and no temporary file is left
    for key, value in out["good_after"].items():
        assert isinstance(value, torch.Tensor), key
    assert torch.equal(torch.cat([v.flatten() for v in out["good_after"].values()]), out["before"])
    assert out["leftovers"] == ["a_directory", "good.ckpt"]  # listed before raw.pt is written
    for kind, message in out["missing"]:
        assert kind == "FileNotFoundError"
        assert "missing.ckpt" in message
    rank0, rank1 = out["only_rank_0"]
    assert rank0[0] == "RuntimeError"
    assert "global rank 1" in rank0[1]
    assert "FileNotFoundError" in rank0[1]
    assert rank1[0] == "FileNotFoundError"
    rank0, rank1 = out["raw_only_rank_0"]  # load_raw too: every rank raises, none hangs
    assert rank0[0] == "RuntimeError"
    assert "global rank 1" in rank0[1]
    assert rank1[0] == "FileNotFoundError"
    assert torch.equal(out["gather"], torch.tensor([0, 1]))
    assert out["reload"] == [("ok", ""), ("ok", "")]
