"""The wrappers page's multi-device example (shared/seeds/fabric-wrappers.rst.txt) under real
2-process DDP: calling a method that runs the model raises until it is marked, and the page's own
``model.mark_forward_method(model.generate)`` then routes it through DistributedDataParallel."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from fab.core import Fabric

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(120)]


class MyModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(10, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)

    def generate(self) -> torch.Tensor:
        sample = torch.randn(10)
        return self(sample)


def wrappers_page(fabric: Fabric) -> dict[str, Any]:
    model = fabric.setup(MyModel())
    hooks_before = sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())
    output = model(torch.randn(10))  # OK: calling the model directly
    output = model.forward(torch.randn(10))  # OK: calling the model's forward
    try:
        model.generate()  # ERROR: another method that calls forward indirectly
        unmarked = "no error"
    except RuntimeError as err:
        unmarked = str(err)
    hooks_after = sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())
    model.mark_forward_method(model.generate)  # the page's own call
    model.mark_forward_method("generate")  # passing just the name is also sufficient
    generated = model.generate()
    return {
        "wrapped": type(model._forward_module).__name__,
        "forward_shape": tuple(output.shape),
        "unmarked": unmarked,
        "hooks_left": hooks_after - hooks_before,
        "generated_shape": tuple(generated.shape),
    }


def test_wrappers_page_example_under_two_process_ddp() -> None:
    fabric = Fabric(accelerator="cpu", devices=2, strategy="ddp_spawn")
    result = fabric.launch(wrappers_page)
    assert result["wrapped"] == "DistributedDataParallel"
    assert result["forward_shape"] == (2,)
    assert "mark_forward_method" in result["unmarked"]
    assert result["hooks_left"] == 0
    assert result["generated_shape"] == (2,)
