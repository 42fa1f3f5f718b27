"""``Strategy.setup`` owns a model's set-up (DESIGN §4): Fabric's ``setup``/``setup_module`` are
thin callers of it, a strategy may override the whole order, and Fabric records which optimizers
belong to which model, which the checkpoint functions use."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import Module
from torch.optim import Optimizer

import fab.core
from fab.core import Fabric
from fab.core.distributed_checkpoint import checkpoint_state, save_directory
from fab.core.strategies import ModelSetup, SingleDeviceStrategy


class Recording(SingleDeviceStrategy):
    """The base order, with every step written down."""

    def __init__(self) -> None:
        super().__init__(device="cpu")
        self.calls: list[str] = []

    def materialize_module(self, module: Module) -> None:
        self.calls.append("materialize")
        super().materialize_module(module)

    def module_to_device(self, module: Module) -> None:
        self.calls.append("to_device")
        super().module_to_device(module)

    def setup_module(self, module: Module) -> Module:
        self.calls.append("setup_module")
        return super().setup_module(module)

    def setup_optimizer(self, optimizer: Optimizer) -> Optimizer:
        self.calls.append("setup_optimizer")
        return super().setup_optimizer(optimizer)


class Wrapper(nn.Module):
    def __init__(self, inner: Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * 2


class OwnOrder(SingleDeviceStrategy):
    """A strategy that replaces the whole set-up: what sharded strategies do."""

    def __init__(self) -> None:
        super().__init__(device="cpu")
        self.seen: list[tuple[int, bool]] = []

    def setup(
        self, module: Module, optimizers: list[Optimizer], move_to_device: bool = True
    ) -> ModelSetup:
        self.seen.append((len(optimizers), move_to_device))
        return ModelSetup(Wrapper(module), optimizers, module)


def test_fabric_setup_runs_the_strategy_s_order() -> None:
    strategy = Recording()
    fabric = Fabric(accelerator="cpu", devices=1, strategy=strategy)
    model = nn.Linear(2, 2)
    fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    assert strategy.calls == ["materialize", "to_device", "setup_module", "setup_optimizer"]
    strategy.calls.clear()
    fabric.setup_module(nn.Linear(2, 2), move_to_device=False)
    assert strategy.calls == ["setup_module"]


def test_a_strategy_that_overrides_setup_decides_what_forward_runs() -> None:
    strategy = OwnOrder()
    fabric = Fabric(accelerator="cpu", devices=1, strategy=strategy)
    model = nn.Linear(2, 2)
    wrapped, _ = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    plain = fabric.setup_module(nn.Linear(2, 2), move_to_device=False)
    assert strategy.seen == [(1, True), (0, False)]
    assert isinstance(wrapped.forward_module, Wrapper)
    assert wrapped.module is model
    x = torch.ones(1, 2)
    assert torch.equal(wrapped(x), model(x) * 2)
    assert isinstance(plain.forward_module, Wrapper)


def test_forward_module_is_what_a_call_runs() -> None:
    fabric = Fabric(accelerator="cpu", devices=1)
    model = nn.Linear(2, 2)
    assert fabric.setup(model).forward_module is model


def _trained_pair() -> tuple[Module, Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.ones(2, 3)).sum().backward()
        optimizer.step()
    return model, optimizer


def test_an_optimizer_set_up_with_its_model_loads_from_a_directory_alone(tmp_path: Path) -> None:
    fabric = Fabric(accelerator="cpu", devices=1)
    model, optimizer = _trained_pair()
    path = tmp_path / "ckpt"
    save_directory(path, checkpoint_state({"model": model, "optimizer": optimizer}, full=False))

    torch.manual_seed(1)
    fresh = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    _, fresh_optimizer = fabric.setup(fresh, torch.optim.AdamW(fresh.parameters(), lr=0.01))
    # the optimizer alone: its state is keyed by parameter name, which its model knows
    fabric.load(path, {"optimizer": fresh_optimizer})
    expected = optimizer.state_dict()["state"]
    loaded = fresh_optimizer.state_dict()["state"]
    assert sorted(loaded) == sorted(expected)
    for index, values in expected.items():
        assert torch.equal(loaded[index]["exp_avg"], values["exp_avg"])


def test_an_optimizer_never_set_up_with_a_model_still_needs_it_in_the_call() -> None:
    _, optimizer = _trained_pair()
    with pytest.raises(ValueError, match=r"set both up together with fabric\.setup"):
        checkpoint_state({"optimizer": optimizer}, full=False)


def _imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("name", ["cli_settings", "precision_names"])
def test_the_command_line_settings_do_not_import_the_connector(name: str) -> None:
    (package,) = fab.core.__path__
    assert "fab.core.connector" not in _imported_modules(Path(package, f"{name}.py"))
