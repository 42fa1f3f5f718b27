"""The wrappers page's multi-device example (shared/seeds/fabric-wrappers.rst.txt) under real
2-process DDP: calling a method that runs the model raises until it is marked, and the page's own
``model.mark_forward_method(model.generate)`` then routes it through DistributedDataParallel."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
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


#: The page's examples as one script, with only the imports changed (``lightning`` -> fab), run
#: the way the page runs them: ``Fabric(accelerator="cpu", devices=2)`` and ``fabric.launch()``,
#: i.e. the default strategy on 2 devices, ``ddp``, which re-runs this script for rank 1.
PAGE_AS_A_SCRIPT = """
import sys

import torch
import fab.core as L
from fab.core import is_wrapped


def say(*parts):  # one write per line: the two ranks share the pipe
    sys.stdout.write(" ".join(str(p) for p in parts) + "\\n")
    sys.stdout.flush()


fabric = L.Fabric(accelerator="cpu", devices=2)
fabric.launch()
rank = fabric.global_rank

# Models wrapped by Fabric
model = torch.nn.Linear(10, 2)
model = fabric.setup(model)
say(rank, "type", type(model).__name__, type(model._forward_module).__name__)
say(rank, "device", model.device)

# Accessing methods and attributes
model = torch.nn.Linear(10, 2)
fabric_model = fabric.setup(model)
say(rank, "redirect", fabric_model.weight is model.weight)

# Unwrapping the model
say(rank, "is_wrapped", is_wrapped(model), is_wrapped(fabric_model))
original_model = fabric_model.module
say(rank, "original", original_model is model)


# Using methods other than forward for computation
class MyModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(10, 2)

    def forward(self, x):
        return self.layer(x)

    def generate(self):
        sample = torch.randn(10)
        return self(sample)


model = MyModel()
model = fabric.setup(model)
output = model(torch.randn(10))
output = model.forward(torch.randn(10))
try:
    output = model.generate()
    say(rank, "unmarked", "no error")
except RuntimeError as err:
    say(rank, "unmarked", type(err).__name__, "mark_forward_method" in str(err))
model.mark_forward_method(model.generate)
model.mark_forward_method("generate")
output = model.generate()
say(rank, "generated", tuple(output.shape))
"""


def test_the_whole_page_as_a_script_under_two_process_ddp(tmp_path: Path) -> None:
    script = tmp_path / "page.py"
    script.write_text(PAGE_AS_A_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=100,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    lines = set(result.stdout.splitlines())
    for rank in (0, 1):
        assert f"{rank} type FabricModule DistributedDataParallel" in lines
        assert f"{rank} device cpu" in lines
        assert f"{rank} redirect True" in lines
        assert f"{rank} is_wrapped False True" in lines
        assert f"{rank} original True" in lines
        assert f"{rank} unmarked RuntimeError True" in lines
        assert f"{rank} generated (2,)" in lines
