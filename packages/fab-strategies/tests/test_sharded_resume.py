"""A sharded checkpoint written by 2 FSDP processes resumes on 4 with the saving run's next step;
an optimizer saved and loaded without its model (Fabric knows which model it was set up with); a
``kill -9`` of a 2-process sharded save keeps the previous checkpoint loadable.

One process group per world size: the 2-process run happens once (module fixture), then the
4-process run loads what it wrote. Every function given to ``launch`` is at module level (spawn
pickles it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from fab.core import Fabric
from fab.strategies.fsdp import FSDPStrategy

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(240)]

ROWS = 8  # the global batch: 4 rows per process on 2, 2 on 4
WIDTH = 12


def _model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(5, WIDTH), nn.Tanh(), nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, 2)
    )


class Tied(nn.Module):
    """An embedding and an output layer sharing one weight, as language models do."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, WIDTH)
        self.head = nn.Linear(WIDTH, 10, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.embed(tokens)))


def _train_tied(fabric: Fabric | None, model: Any, optimizer: Any) -> None:
    for step in range(3):
        tokens = torch.randint(0, 10, (ROWS,), generator=torch.Generator().manual_seed(step))
        if fabric is not None:
            share = ROWS // fabric.world_size
            tokens = tokens[fabric.global_rank * share : (fabric.global_rank + 1) * share]
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(tokens), tokens)
        fabric.backward(loss) if fabric is not None else loss.backward()
        optimizer.step()


def tied_reference() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = Tied()
    _train_tied(None, model, torch.optim.SGD(model.parameters(), lr=0.5))
    return _full(model)


def _mine(fabric: Fabric, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(ROWS, 5, generator=torch.Generator().manual_seed(500 + step))
    y = x[:, :2].cos()
    share = ROWS // fabric.world_size
    rows = slice(fabric.global_rank * share, (fabric.global_rank + 1) * share)
    return x[rows], y[rows]


def _step(fabric: Fabric, model: Any, optimizer: Any, step: int) -> None:
    x, y = _mine(fabric, step)
    optimizer.zero_grad()
    fabric.backward(nn.functional.mse_loss(model(x), y))
    optimizer.step()


def _full(model: nn.Module) -> dict[str, torch.Tensor]:
    from torch.distributed.tensor import DTensor

    return {
        k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().clone()
        for k, v in model.state_dict().items()
    }


def _fresh(fabric: Fabric, seed: int) -> tuple[Any, Any]:
    torch.manual_seed(seed)
    module = _model()
    return fabric.setup(module, torch.optim.AdamW(module.parameters(), lr=0.02))


def save_on_two(fabric: Fabric, folder: str) -> dict[str, Any]:
    """Train 3 steps, save (model and optimizer together, and the optimizer alone), take the
    next step; load the optimizer-only checkpoint into a fresh pair and take the same step."""
    model, optimizer = _fresh(fabric, 0)
    for step in range(3):
        _step(fabric, model, optimizer, step)
    fabric.save(Path(folder, "both"), {"model": model, "optimizer": optimizer, "step": 3})
    fabric.save(Path(folder, "model"), {"model": model})
    out: dict[str, Any] = {}
    try:  # the optimizer without its model: Fabric paired them in setup
        fabric.save(Path(folder, "optimizer"), {"optimizer": optimizer})
        out["optimizer_alone"] = "saved"
    except ValueError as error:
        out["optimizer_alone"] = str(error)
    _step(fabric, model, optimizer, 3)
    out["next_step"] = _full(model)
    if out["optimizer_alone"] == "saved":
        fresh, fresh_optimizer = _fresh(fabric, 9)
        fabric.load(Path(folder, "model"), {"model": fresh})
        fabric.load(Path(folder, "optimizer"), {"optimizer": fresh_optimizer})
        _step(fabric, fresh, fresh_optimizer, 3)
        out["next_step_from_separate_files"] = _full(fresh)
    for empty_init in (False, True):  # weight ties kept through sharding
        torch.manual_seed(0)
        with fabric.init_module(empty_init=empty_init):
            tied = Tied()
        model, optimizer = fabric.setup(tied, torch.optim.SGD(tied.parameters(), lr=0.5))
        out[f"tied_{empty_init}_is_tied"] = model.head.weight is model.embed.weight
        _train_tied(fabric, model, optimizer)
        out[f"tied_{empty_init}"] = _full(model)
    return out


def resume_on_four(fabric: Fabric, folder: str) -> dict[str, Any]:
    model, optimizer = _fresh(fabric, 7)
    state: dict[str, Any] = {"model": model, "optimizer": optimizer, "step": 0}
    fabric.load(Path(folder, "both"), state)
    _step(fabric, model, optimizer, state["step"])
    local = sum(p.to_local().numel() for p in model.parameters())
    return {
        "next_step": _full(model),
        "step": state["step"],
        "local_numel": fabric.all_gather(torch.tensor(local)).tolist(),
        "numel": sum(p.numel() for p in model.parameters()),
    }


def _fabric(devices: int) -> Fabric:
    return Fabric(accelerator="cpu", devices=devices, strategy=FSDPStrategy(start_method="spawn"))


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("resume")
    result: dict[str, Any] = _fabric(2).launch(save_on_two, str(folder))
    result["folder"] = str(folder)
    return result


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert sorted(a) == sorted(b)
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_a_save_on_two_processes_resumes_on_four_with_the_same_next_step(
    saved: dict[str, Any],
) -> None:
    resumed: dict[str, Any] = _fabric(4).launch(resume_on_four, saved["folder"])
    assert resumed["step"] == 3
    # each of the 4 ranks holds about a quarter of the parameters
    assert max(resumed["local_numel"]) <= resumed["numel"] // 4 + WIDTH * WIDTH
    # the optimizer state came back: a fresh AdamW would take a different step
    assert _max_difference(resumed["next_step"], saved["next_step"]) < 1e-6


def test_an_optimizer_is_saved_and_loaded_without_its_model(saved: dict[str, Any]) -> None:
    assert saved["optimizer_alone"] == "saved"
    difference = _max_difference(saved["next_step_from_separate_files"], saved["next_step"])
    assert difference < 1e-6


_SAVER = textwrap.dedent(
    """
    import sys, time
    import torch
    from torch import nn
    from fab.core import Fabric
    from fab.strategies.fsdp import FSDPStrategy

    class Stall:
        def __reduce__(self):
            print("inside the save", flush=True)
            time.sleep(600)
            return (int, (0,))

    def main(fabric, path):
        torch.manual_seed(0)
        model = fabric.setup(nn.Linear(6, 4))
        with torch.no_grad():
            model.weight.fill_(1.0)
        fabric.save(path, {"model": model, "step": 1})
        fabric.barrier()
        if fabric.global_rank == 0:
            print("first save done", flush=True)
        with torch.no_grad():
            model.weight.fill_(2.0)
        fabric.save(path, {"model": model, "step": 2, "stall": Stall()})

    if __name__ == "__main__":
        fabric = Fabric(accelerator="cpu", devices=2, strategy=FSDPStrategy())
        fabric.launch(main, sys.argv[1])
    """
)


def test_a_kill_9_during_a_two_process_sharded_save_keeps_the_previous_checkpoint(
    tmp_path: Path,
) -> None:
    script, path = tmp_path / "saver.py", tmp_path / "ckpt"
    script.write_text(_SAVER)
    # a session of its own: the kill reaches both ranks (the launcher's processes share it)
    process = subprocess.Popen(
        [sys.executable, str(script), str(path)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "first save done"
        assert process.stdout.readline().strip() == "inside the save"
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    assert [p for p in tmp_path.iterdir() if ".partial-" in p.name]  # it died mid-save
    loaded = Fabric(accelerator="cpu", devices=1).load(path)
    assert loaded["step"] == 1
    assert torch.equal(loaded["model"]["weight"], torch.ones(4, 6))


@pytest.mark.parametrize("empty_init", [False, True])
def test_weight_ties_survive_sharding_and_train_as_on_one_device(
    saved: dict[str, Any], empty_init: bool
) -> None:
    assert saved[f"tied_{empty_init}_is_tied"]
    assert _max_difference(saved[f"tied_{empty_init}"], tied_reference()) < 1e-5
