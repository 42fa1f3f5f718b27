"""Models compiled with torch.compile: set up without the compile layer, compiled again."""

from __future__ import annotations

import subprocess
import sys
from typing import Any, cast

import pytest
import torch

from fab.wrappers import (
    CompileSettings,
    FabricModule,
    is_compiled,
    is_wrapped,
    rewrap_compiled,
    unwrap,
    unwrap_compiled,
)

from .conftest import RecordingStrategy, Wrapping


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)

    def generate(self) -> torch.Tensor:
        return self(torch.ones(1, 4))


def compiled(module: torch.nn.Module, **kwargs: Any) -> torch.nn.Module:
    """torch.compile with the eager backend: dynamo traces, nothing is code-generated."""
    return cast(torch.nn.Module, torch.compile(module, backend="eager", **kwargs))


def test_unwrap_compiled_returns_the_model_and_how_it_was_compiled() -> None:
    model = Net()
    original, settings = unwrap_compiled(compiled(model, dynamic=False))
    assert original is model
    assert isinstance(settings, CompileSettings)
    assert unwrap_compiled(model) == (model, None)


def test_rewrap_compiled_compiles_the_same_way() -> None:
    model = Net()
    first = compiled(model, fullgraph=True)
    _, settings = unwrap_compiled(first)
    again = rewrap_compiled(Wrapping(model), settings)
    assert is_compiled(again)
    assert again.dynamo_ctx is first.dynamo_ctx
    x = torch.randn(3, 4)
    assert torch.allclose(again(x), model(x))


def test_rewrap_compiled_takes_keyword_arguments_or_none() -> None:
    model = Net()
    assert rewrap_compiled(model, None) is model
    assert is_compiled(rewrap_compiled(model, {"backend": "eager"}))


def test_a_compiled_model_wrapped_directly_has_clean_state_dict_keys(
    strategy: RecordingStrategy,
) -> None:
    model = Net()
    wrapped = FabricModule(compiled(model), strategy)
    assert wrapped.module is model
    assert list(wrapped.state_dict()) == ["layer.weight", "layer.bias"]
    assert wrapped(torch.randn(2, 4)).shape == (2, 2)


def test_setup_of_a_compiled_model_the_way_fabric_does_it(strategy: RecordingStrategy) -> None:
    model = Net()
    original, settings = unwrap_compiled(compiled(model))
    forward_module = rewrap_compiled(Wrapping(original), settings)
    wrapped = FabricModule(forward_module, strategy, original_module=original)
    assert list(wrapped.state_dict()) == ["layer.weight", "layer.bias"]
    wrapped(torch.randn(2, 4))
    assert unwrap(forward_module).calls == 1


def test_compile_alone_does_not_guard_methods(strategy: RecordingStrategy) -> None:
    model = Net()
    wrapped = FabricModule(compiled(model), strategy)
    assert wrapped.generate().shape == (1, 2)  # nothing is skipped by calling it directly
    wrapped.mark_forward_method("generate")
    assert wrapped.generate().shape == (1, 2)  # through the compiled module
    assert "forward" not in model.__dict__


def test_a_wrapper_compiled_after_setup_is_still_wrapped(strategy: RecordingStrategy) -> None:
    model = Net()
    wrapped = FabricModule(model, strategy)
    compiled_wrapper = compiled(wrapped)
    assert is_wrapped(compiled_wrapper)
    assert unwrap(compiled_wrapper) is model
    assert compiled_wrapper(torch.randn(2, 4)).shape == (2, 2)


def test_a_compiled_plain_model_is_not_wrapped_and_unwraps_to_the_model() -> None:
    model = Net()
    assert not is_wrapped(compiled(model))
    assert unwrap(compiled(model)) is model


def test_importing_fab_wrappers_does_not_import_dynamo() -> None:
    code = "import sys, fab.wrappers; sys.exit('torch._dynamo' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.parametrize("obj", [torch.nn.Linear(1, 1), object(), None])
def test_is_compiled_is_false_for_other_objects(obj: object) -> None:
    assert not is_compiled(obj)
