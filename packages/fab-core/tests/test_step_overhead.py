"""A 32-true training step on one device does only the work Fabric's API needs (issue 10 item 19).

Timing is for tools/bench (``--only step``, docs/benchmarks.md); these tests pin the structure
instead: the Python calls a step through Fabric makes beyond the same step in plain torch, and
that no hook is put on a module or a tensor.
"""

from __future__ import annotations

import sys
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from fab.core import Fabric
from fab.core.precision import Precision
from fab.core.strategies import SingleDeviceStrategy

#: Every Python call a 32-true single-device step through Fabric adds to plain torch's
#: (``file:function``), with how often it runs per step.
EXTRA_CALLS_PER_STEP = Counter(
    {
        "optimizer.py:FabricOptimizer.zero_grad": 1,
        "module.py:FabricModule.__call__": 1,
        "fabric.py:Fabric.backward": 1,
        "backward_guard.py:fabric_backward.__enter__": 1,
        "backward_guard.py:fabric_backward.__exit__": 1,
        "optimizer.py:FabricOptimizer.step": 1,
    }
)


def tiny_mlp() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8))
    return model, torch.optim.SGD(model.parameters(), lr=0.01)


def python_calls(step: Callable[[], None]) -> Counter[str]:
    """The Python functions one call of ``step`` runs, as ``file:qualified name``."""
    calls: Counter[str] = Counter()

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            code = frame.f_code
            name = getattr(code, "co_qualname", code.co_name)
            calls[f"{Path(code.co_filename).name}:{name}"] += 1

    step()  # warm: optimizer state, lazily built paths
    sys.setprofile(profile)
    try:
        step()
    finally:
        sys.setprofile(None)
    return calls


def test_a_32_true_step_adds_only_the_calls_the_api_needs() -> None:
    x, y = torch.randn(32, 32), torch.randint(0, 8, (32,))
    raw_model, raw_optimizer = tiny_mlp()
    fabric = Fabric(accelerator="cpu", devices=1)
    model, optimizer = fabric.setup(*tiny_mlp())

    def raw_step() -> None:
        raw_optimizer.zero_grad()
        F.cross_entropy(raw_model(x), y).backward()
        raw_optimizer.step()

    def fab_step() -> None:
        optimizer.zero_grad()
        fabric.backward(F.cross_entropy(model(x), y))
        optimizer.step()

    raw, fab = python_calls(raw_step), python_calls(fab_step)
    del raw[f"{Path(__file__).name}:{raw_step.__qualname__}"]
    del fab[f"{Path(__file__).name}:{fab_step.__qualname__}"]
    assert fab - raw == EXTRA_CALLS_PER_STEP
    assert raw - fab == Counter()  # and none of torch's work is skipped or done differently


def test_a_32_true_step_puts_no_hook_on_modules_or_outputs() -> None:
    fabric = Fabric(accelerator="cpu", devices=1)
    model, optimizer = fabric.setup(*tiny_mlp())
    output = model(torch.randn(4, 32))
    assert output._backward_hooks is None
    for module in (model, *model.module.modules()):
        assert not module._forward_pre_hooks
        assert not module._forward_hooks
        assert not module._backward_pre_hooks
        assert not module._backward_hooks
    for parameter in model.parameters():
        assert parameter._backward_hooks is None
    fabric.backward(output.sum())
    optimizer.step()
    assert all(p.grad is not None for p in model.parameters())


class Recorder:
    """Where the overridden methods below write what ran."""

    calls: ClassVar[list[str]] = []


class CountingPrecision(Precision):
    def pre_backward(self, tensor: torch.Tensor, module: nn.Module | None) -> torch.Tensor:
        Recorder.calls.append("pre_backward")
        return tensor

    def post_backward(self, tensor: torch.Tensor, module: nn.Module | None) -> torch.Tensor:
        Recorder.calls.append("post_backward")
        return tensor

    def optimizer_step(self, optimizer: torch.optim.Optimizer, **kwargs: Any) -> Any:
        Recorder.calls.append("precision.optimizer_step")
        return super().optimizer_step(optimizer, **kwargs)


class CountingStrategy(SingleDeviceStrategy):
    def backward(
        self, tensor: torch.Tensor, module: nn.Module | None, *args: Any, **kwargs: Any
    ) -> None:
        Recorder.calls.append("strategy.backward")
        super().backward(tensor, module, *args, **kwargs)

    def optimizer_step(self, optimizer: torch.optim.Optimizer, **kwargs: Any) -> Any:
        Recorder.calls.append("strategy.optimizer_step")
        return super().optimizer_step(optimizer, **kwargs)


def one_step(fabric: Fabric) -> None:
    model, optimizer = fabric.setup(*tiny_mlp())
    optimizer.zero_grad()
    fabric.backward(model(torch.randn(4, 32)).sum())
    optimizer.step()


def test_a_precision_that_overrides_backward_or_step_gets_every_call() -> None:
    Recorder.calls = []
    one_step(Fabric(accelerator="cpu", devices=1, plugins=[CountingPrecision()]))
    assert Recorder.calls == ["pre_backward", "post_backward", "precision.optimizer_step"]


def test_a_strategy_that_overrides_backward_or_step_gets_every_call() -> None:
    Recorder.calls = []
    one_step(Fabric(strategy=CountingStrategy(device=torch.device("cpu"))))
    assert Recorder.calls == ["strategy.backward", "strategy.optimizer_step"]


def test_the_direct_step_leaves_the_optimizer_exactly_where_torch_does() -> None:
    """Fabric's step and torch's step give the same weights, closures included, and a scheduler
    made after set-up on the original optimizer sees its steps (no 'lr_scheduler.step() before
    optimizer.step()' warning)."""
    x, y = torch.randn(32, 32), torch.randint(0, 8, (32,))
    raw_model, raw_optimizer = tiny_mlp()
    fabric = Fabric(accelerator="cpu", devices=1)
    model, optimizer = fabric.setup(*tiny_mlp())
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer.optimizer, step_size=1, gamma=0.5)
    raw_scheduler = torch.optim.lr_scheduler.StepLR(raw_optimizer, step_size=1, gamma=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for step in range(3):

            def closure() -> torch.Tensor:
                optimizer.zero_grad()
                loss = F.cross_entropy(model(x), y)
                fabric.backward(loss)
                return loss

            if step == 1:
                optimizer.step(closure)
            else:
                closure()
                optimizer.step()
            raw_optimizer.zero_grad()
            F.cross_entropy(raw_model(x), y).backward()
            raw_optimizer.step()
            scheduler.step()
            raw_scheduler.step()
    for ours, theirs in zip(model.parameters(), raw_model.parameters(), strict=True):
        assert torch.equal(ours, theirs)
