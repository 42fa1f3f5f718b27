"""FabricOptimizer stays an instance of its class, steps through the strategy, and everything
else reaches the real optimizer."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import pytest
import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR, ReduceLROnPlateau, StepLR

from fab.wrappers import FabricOptimizer, is_wrapped, unwrap

from .conftest import RecordingStrategy


def sgd(lr: float = 1.0) -> tuple[torch.nn.Parameter, torch.optim.SGD]:
    param = torch.nn.Parameter(torch.ones(2))
    return param, torch.optim.SGD([param], lr=lr)


def test_optimizer_is_still_an_instance_of_its_class_and_steps_through_the_strategy(
    strategy: RecordingStrategy,
) -> None:
    param = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.AdamW([param], lr=0.1)
    wrapped = FabricOptimizer(optimizer, strategy)
    assert isinstance(wrapped, torch.optim.AdamW)
    assert isinstance(wrapped, FabricOptimizer)
    assert wrapped.param_groups is optimizer.param_groups
    assert wrapped.state is optimizer.state
    assert wrapped.defaults is optimizer.defaults
    param.grad = torch.ones(2)
    wrapped.step()
    assert strategy.steps == 1
    assert len(optimizer.state[param]) > 0
    assert is_wrapped(wrapped)
    assert unwrap(wrapped) is optimizer


def test_wrapping_twice_is_refused(strategy: RecordingStrategy) -> None:
    wrapped = FabricOptimizer(sgd()[1], strategy)
    with pytest.raises(TypeError, match="already set up"):
        FabricOptimizer(wrapped, strategy)


def test_setting_the_learning_rate_through_the_wrapper(strategy: RecordingStrategy) -> None:
    _, optimizer = sgd()
    wrapped = FabricOptimizer(optimizer, strategy)
    wrapped.param_groups[0]["lr"] = 0.25
    assert optimizer.param_groups[0]["lr"] == 0.25


def test_closure_step(strategy: RecordingStrategy) -> None:
    param, optimizer = sgd(lr=0.5)
    wrapped = FabricOptimizer(optimizer, strategy)

    def closure() -> torch.Tensor:
        wrapped.zero_grad()
        loss = (param**2).sum()
        loss.backward()
        return loss

    loss = wrapped.step(closure)
    assert loss.item() == 2.0
    assert torch.equal(param.detach(), torch.zeros(2))
    assert strategy.steps == 1


def test_zero_grad_reaches_the_real_optimizer(strategy: RecordingStrategy) -> None:
    param, optimizer = sgd()
    param.grad = torch.ones(2)
    FabricOptimizer(optimizer, strategy).zero_grad()
    assert param.grad is None


def test_state_dict_round_trip_and_load_replaces_the_real_state(
    strategy: RecordingStrategy,
) -> None:
    param = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.Adam([param], lr=0.1)
    wrapped = FabricOptimizer(optimizer, strategy)
    param.grad = torch.ones(2)
    wrapped.step()
    saved = copy.deepcopy(wrapped.state_dict())

    other_param = torch.nn.Parameter(torch.ones(2))
    other = FabricOptimizer(torch.optim.Adam([other_param], lr=0.5), strategy)
    other.load_state_dict(saved)
    assert other.param_groups[0]["lr"] == 0.1
    assert other.optimizer.param_groups[0]["lr"] == 0.1
    assert other.state is other.optimizer.state
    assert torch.equal(other.state[other_param]["exp_avg"], optimizer.state[param]["exp_avg"])


def test_add_param_group_reaches_the_real_optimizer(strategy: RecordingStrategy) -> None:
    _, optimizer = sgd()
    wrapped = FabricOptimizer(optimizer, strategy)
    wrapped.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.1})
    assert len(optimizer.param_groups) == 2
    assert wrapped.param_groups is optimizer.param_groups


def test_other_attributes_are_read_from_the_real_optimizer(strategy: RecordingStrategy) -> None:
    _, optimizer = sgd()
    optimizer.custom = "yes"  # type: ignore[attr-defined]
    wrapped = FabricOptimizer(optimizer, strategy)
    assert wrapped.custom == "yes"
    with pytest.raises(AttributeError):
        wrapped.missing


def test_step_hooks_registered_on_the_wrapper_run_once_per_step(
    strategy: RecordingStrategy,
) -> None:
    param, optimizer = sgd()
    wrapped = FabricOptimizer(optimizer, strategy)
    calls: list[str] = []
    wrapped.register_step_pre_hook(lambda opt, args, kwargs: calls.append("pre"))
    param.grad = torch.ones(2)
    wrapped.step()
    assert calls == ["pre"]


def test_deepcopy_wraps_a_copy_of_the_optimizer(strategy: RecordingStrategy) -> None:
    _, optimizer = sgd()
    wrapped = FabricOptimizer(optimizer, strategy)
    clone = copy.deepcopy(wrapped)
    assert isinstance(clone, FabricOptimizer)
    assert isinstance(clone, torch.optim.SGD)
    assert clone.optimizer is not optimizer
    assert clone.param_groups[0]["lr"] == 1.0


SCHEDULERS: dict[str, Callable[[Optimizer], LRScheduler | ReduceLROnPlateau]] = {
    "StepLR": lambda opt: StepLR(opt, step_size=1, gamma=0.5),
    "LambdaLR": lambda opt: LambdaLR(opt, lambda epoch: 0.5**epoch),
    "OneCycleLR": lambda opt: OneCycleLR(opt, max_lr=1.0, total_steps=10),
    "ReduceLROnPlateau": lambda opt: ReduceLROnPlateau(opt, factor=0.5, patience=0),
}


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_lr_schedulers_accept_the_wrapper_and_step_without_warnings(
    name: str, strategy: RecordingStrategy
) -> None:
    param, optimizer = sgd()
    reference_param, reference = sgd()
    wrapped = FabricOptimizer(optimizer, strategy)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scheduler = SCHEDULERS[name](wrapped)
        reference_scheduler = SCHEDULERS[name](reference)
        for _ in range(3):
            for p, opt in ((param, wrapped), (reference_param, reference)):
                p.grad = torch.ones(2)
                opt.step()
            if isinstance(scheduler, ReduceLROnPlateau):
                scheduler.step(1.0)
                assert isinstance(reference_scheduler, ReduceLROnPlateau)
                reference_scheduler.step(1.0)
            else:
                scheduler.step()
                reference_scheduler.step()
            assert optimizer.param_groups[0]["lr"] == reference.param_groups[0]["lr"]
    assert strategy.steps == 3
    assert optimizer.param_groups[0]["lr"] != 1.0


def test_scheduler_step_before_optimizer_step_still_warns(strategy: RecordingStrategy) -> None:
    wrapped = FabricOptimizer(sgd()[1], strategy)
    scheduler = StepLR(wrapped, step_size=1)
    with pytest.warns(UserWarning, match="before `optimizer.step"):
        scheduler.step()


def test_scheduler_made_before_setup_counts_steps_through_the_wrapper(
    strategy: RecordingStrategy,
) -> None:
    param, optimizer = sgd()
    scheduler = StepLR(optimizer, step_size=1, gamma=0.5)
    wrapped = FabricOptimizer(optimizer, strategy)
    param.grad = torch.ones(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wrapped.step()
        scheduler.step()
    assert wrapped.param_groups[0]["lr"] == 0.5
