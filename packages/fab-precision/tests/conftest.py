"""Shared helpers for fab-precision's tests: a small regression task trained through Fabric."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
from torch import nn

from fab.core import Fabric, registry

Train = Callable[..., list[float]]


@pytest.fixture(autouse=True)
def _clean_state() -> Iterator[None]:
    """Every test starts with the installed plugins and float32 as torch's default dtype, and must
    leave them so."""
    registry.refresh()
    assert torch.get_default_dtype() == torch.float32
    yield
    assert torch.get_default_dtype() == torch.float32, "a test leaked a default dtype"
    registry.refresh()


def regression_data(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=generator)
    y = x @ torch.linspace(-1.0, 1.0, 8).unsqueeze(1) + 0.5
    return x, y


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))


@pytest.fixture
def train() -> Train:
    """``train(fabric, steps=..., lr=...)``: set up a small model with SGD on ``fabric`` and run
    full-batch steps with ``fabric.backward``; returns the loss of every step."""

    def run(fabric: Fabric, steps: int = 30, lr: float = 0.05) -> list[float]:
        model = small_model()
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        model, optimizer = fabric.setup(model, optimizer)
        x, y = fabric.to_device(regression_data())
        losses = []
        for _ in range(steps):
            optimizer.zero_grad()
            output = model(x)
            loss = nn.functional.mse_loss(output, y)
            fabric.backward(loss)
            optimizer.step()
            losses.append(loss.item())
        return losses

    return run
