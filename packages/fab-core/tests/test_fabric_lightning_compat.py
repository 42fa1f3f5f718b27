"""Lightning Fabric programs run on fab with only the import changed (issue 10, one process):
collectives of Python numbers, ``setup(scheduler=...)``, duck-typed loggers, the callback hooks
Lightning calls itself, ``save(filter=...)``'s rules, raw state dicts through
``Strategy.load_checkpoint``, and models compiled after ``setup``."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch
from torch import nn

from fab.core import Fabric
from fab.core.strategies import Strategy

# -- collectives -----------------------------------------------------------------------------


def test_collectives_take_python_numbers_as_tensors_on_the_device() -> None:
    fabric = Fabric(accelerator="cpu")
    gathered = fabric.all_gather(3)
    assert isinstance(gathered, torch.Tensor)
    assert gathered.device == fabric.device
    assert (gathered.dtype, gathered.item()) == (torch.int32, 3)
    reduced = fabric.all_reduce(7, reduce_op="sum")
    assert (reduced.dtype, reduced.item()) == (torch.int32, 7)
    assert fabric.all_reduce(2.5).dtype == torch.float32
    assert fabric.all_gather(True).dtype == torch.uint8
    mixed = fabric.all_reduce({"loss": 0.5, "steps": [1, torch.tensor(2.0)], "name": "x"})
    assert mixed["loss"].dtype == torch.float32
    assert mixed["steps"][0].dtype == torch.int32
    assert mixed["name"] == "x"


# -- setup ------------------------------------------------------------------------------------


def test_setup_returns_the_scheduler_after_the_optimizers() -> None:
    fabric = Fabric(accelerator="cpu")
    model = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    fmodel, foptimizer, fscheduler = fabric.setup(model, optimizer, scheduler=scheduler)
    assert fscheduler is scheduler
    fabric.backward(fmodel(torch.ones(2)).sum())
    foptimizer.step()
    fscheduler.step()
    assert foptimizer.param_groups[0]["lr"] == 0.5
    assert len(fabric.setup(nn.Linear(1, 1), torch.optim.SGD([nn.Parameter(torch.ones(1))]))) == 2


def test_setup_without_reapplying_compile_sets_up_the_compiled_module() -> None:
    fabric = Fabric(accelerator="cpu")
    model = nn.Linear(2, 2)
    compiled = torch.compile(model, backend="eager")
    wrapped = fabric.setup(compiled, _reapply_compile=False)
    assert wrapped._forward_module is compiled
    assert wrapped.module is model
    assert list(wrapped.state_dict()) == ["weight", "bias"]
    assert fabric.setup_module(torch.compile(nn.Linear(2, 2)), _reapply_compile=False)


# -- loggers ----------------------------------------------------------------------------------


class DuckLogger:
    """Lightning's tests use loggers that only look like loggers."""

    def __init__(self) -> None:
        self.rows: list[tuple[dict[str, Any], int | None]] = []

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        self.rows.append((dict(metrics), step))


def test_any_object_with_the_logger_interface_is_a_logger() -> None:
    duck, mocked = DuckLogger(), mock.MagicMock()
    fabric = Fabric(loggers=[duck, mocked])
    fabric.log("loss", torch.tensor(0.5), step=3)
    assert duck.rows == [({"loss": 0.5}, 3)]
    mocked.log_metrics.assert_called_once_with({"loss": 0.5}, step=3)
    assert fabric.logger is duck
    assert fabric.loggers == [duck, mocked]


def test_what_is_not_a_logger_is_refused_naming_what_is_accepted() -> None:
    with pytest.raises(TypeError, match=r"got 3: pass a .*log_metrics\(metrics, step\)"):
        Fabric(loggers=3)


# -- callbacks --------------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def on_after_setup(self, fabric: Fabric, module: nn.Module) -> None:
        self.calls.append(("on_after_setup", {"fabric": fabric, "module": module}))

    def on_after_optimizer_step(self, strategy: Strategy, optimizer: torch.optim.Optimizer) -> None:
        self.calls.append(
            ("on_after_optimizer_step", {"strategy": strategy, "optimizer": optimizer})
        )


def test_the_hooks_lightning_calls_are_called_at_the_same_points() -> None:
    recorder = Recorder()
    fabric = Fabric(accelerator="cpu", callbacks=[recorder])
    model = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    fmodel, foptimizer = fabric.setup(model, optimizer)
    assert recorder.calls == [("on_after_setup", {"fabric": fabric, "module": fmodel})]
    fabric.backward(fmodel(torch.ones(2)).sum())
    foptimizer.step()
    assert recorder.calls[1] == (
        "on_after_optimizer_step",
        {"strategy": fabric.strategy, "optimizer": optimizer},
    )
    later = fabric.setup_optimizers(torch.optim.SGD(model.parameters(), lr=0.1))
    later.step()
    assert [name for name, _ in recorder.calls] == ["on_after_setup"] + [
        "on_after_optimizer_step"
    ] * 2


def test_a_hook_that_is_not_callable_is_skipped_with_a_warning() -> None:
    seen: list[int] = []

    class NotAHook:
        on_epoch_end = 42

    class Hook:
        def on_epoch_end(self, epoch: int) -> None:
            seen.append(epoch)

    fabric = Fabric(callbacks=[NotAHook(), Hook()])
    with pytest.warns(UserWarning, match=r"skipped the callback NotAHook\.on_epoch_end.*int"):
        fabric.call("on_epoch_end", epoch=1)
    assert seen == [1]


def test_a_hook_whose_signature_cannot_be_read_gets_every_keyword_argument() -> None:
    received: dict[str, Any] = {}

    class Builtin:
        on_epoch_end = received.update  # a builtin method: inspect.signature cannot read it

    fabric = Fabric(callbacks=[Builtin()])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fabric.call("on_epoch_end", epoch=1, loss=0.5)
    assert received == {"epoch": 1, "loss": 0.5}


# -- checkpoints ------------------------------------------------------------------------------


def test_save_leaves_out_an_entry_its_filter_empties(tmp_path: Path) -> None:
    fabric = Fabric(accelerator="cpu")
    model = nn.Linear(2, 2)
    state = {"model": model, "optimizer": torch.optim.SGD(model.parameters()), "step": 1}
    fabric.save(tmp_path / "c.pt", state, filter={"model": lambda name, value: False})
    assert set(torch.load(tmp_path / "c.pt", weights_only=True)) == {"optimizer", "step"}


@pytest.mark.parametrize(
    ("bad_filter", "error", "message"),
    [
        ([("model", None)], TypeError, r"filter must be a dict"),
        ({"model": "weight"}, TypeError, r"filter\['model'\] must be a callable"),
        ({"nothing": lambda n, v: True}, ValueError, r"\['nothing'\] that are not in the state"),
    ],
)
def test_a_bad_filter_raises_as_lightning_does_and_writes_nothing(
    tmp_path: Path, bad_filter: Any, error: type[Exception], message: str
) -> None:
    fabric = Fabric(accelerator="cpu")
    with pytest.raises(error, match=message):
        fabric.save(tmp_path / "c.pt", {"model": nn.Linear(1, 1)}, filter=bad_filter)
    assert not (tmp_path / "c.pt").exists()


def test_strategy_load_checkpoint_into_a_module_or_optimizer_reads_a_raw_state_dict(
    tmp_path: Path,
) -> None:
    strategy = Fabric(accelerator="cpu").strategy
    source = nn.Linear(2, 2)
    source_optimizer = torch.optim.SGD(source.parameters(), lr=0.25)
    torch.save(source.state_dict(), tmp_path / "model.pt")
    torch.save(source_optimizer.state_dict(), tmp_path / "optimizer.pt")
    target = nn.Linear(2, 2)
    assert strategy.load_checkpoint(tmp_path / "model.pt", state=target) == {}
    assert torch.equal(target.weight, source.weight)
    optimizer = torch.optim.SGD(target.parameters(), lr=1.0)
    assert strategy.load_checkpoint(tmp_path / "optimizer.pt", state=optimizer) == {}
    assert optimizer.param_groups[0]["lr"] == 0.25


# -- compiled models --------------------------------------------------------------------------


def test_a_model_compiled_after_setup_works_with_every_method_taking_a_module(
    tmp_path: Path,
) -> None:
    fabric = Fabric(accelerator="cpu")
    model = nn.Linear(4, 1)
    fmodel, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    compiled = torch.compile(fmodel, backend="eager")
    with fabric.no_backward_sync(compiled):
        fabric.backward(compiled(torch.ones(2, 4)).sum(), model=compiled)
    assert fabric.clip_gradients(compiled, optimizer, max_norm=1.0) is not None
    optimizer.step()
    fabric.save(tmp_path / "c.pt", {"model": compiled})
    assert list(torch.load(tmp_path / "c.pt", weights_only=True)["model"]) == ["weight", "bias"]
    other = torch.compile(fabric.setup(nn.Linear(4, 1)), backend="eager")
    fabric.load(tmp_path / "c.pt", {"model": other})
    assert torch.equal(other.weight, model.weight)
    with pytest.raises(TypeError, match=r"got Linear: set the model up first"):
        fabric.no_backward_sync(nn.Linear(1, 1))  # type: ignore[arg-type]
