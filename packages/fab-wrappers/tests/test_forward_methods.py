"""Methods other than forward: marked ones go through the strategy's wrapper, unmarked ones that
run layers are refused, and nothing is left behind either way."""

from __future__ import annotations

import pytest
import torch
from torch.nn import Module

from fab.wrappers import FabricModule

from .conftest import DoublePrecision, RecordingStrategy, ScalingPrecision, Wrapping


class Generator(Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(10, 2)
        self.seen_forward_of: list[str] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)

    def generate(self, n: int = 1) -> torch.Tensor:
        return self(torch.randn(n, 10))

    def generate_and_fail(self) -> torch.Tensor:
        self(torch.randn(1, 10))
        raise ValueError("boom")

    def fail_before_running_layers(self) -> None:
        raise ValueError("early")

    def weight_norm(self) -> torch.Tensor:
        return self.layer.weight.norm()

    def dtype_seen(self, x: torch.Tensor) -> torch.dtype:
        return x.dtype


def hook_counts(model: Module) -> list[tuple[int, int]]:
    return [(len(m._forward_pre_hooks), len(m._forward_hooks)) for m in model.modules()]


def wrapped_in_ddp_stand_in(
    strategy: RecordingStrategy | None = None,
) -> tuple[FabricModule, Generator, Wrapping]:
    model = Generator()
    outer = Wrapping(model)
    wrapped = FabricModule(outer, strategy or RecordingStrategy(), original_module=model)
    return wrapped, model, outer


def test_marked_method_runs_through_the_strategy_wrapper() -> None:
    wrapped, model, outer = wrapped_in_ddp_stand_in()
    wrapped.mark_forward_method("generate")
    assert wrapped.generate(n=3).shape == (3, 2)
    assert outer.calls == 1
    assert "forward" not in model.__dict__  # forward is put back


def test_the_wrappers_own_generate_can_be_marked() -> None:
    wrapped, _, outer = wrapped_in_ddp_stand_in()
    wrapped.mark_forward_method(wrapped.generate)
    assert wrapped.generate().shape == (1, 2)
    assert outer.calls == 1


def test_a_method_of_the_original_model_can_be_marked() -> None:
    wrapped, model, outer = wrapped_in_ddp_stand_in()
    wrapped.mark_forward_method(model.generate)
    wrapped.generate()
    assert outer.calls == 1


def test_marking_a_method_of_another_module_is_refused() -> None:
    wrapped, _, _ = wrapped_in_ddp_stand_in()
    with pytest.raises(ValueError, match="not of the model"):
        wrapped.mark_forward_method(Generator().generate)


def test_marked_method_restores_forward_when_it_raises() -> None:
    wrapped, model, _ = wrapped_in_ddp_stand_in()
    wrapped.mark_forward_method("generate_and_fail")
    with pytest.raises(ValueError, match="boom"):
        wrapped.generate_and_fail()
    assert "forward" not in model.__dict__
    assert model(torch.randn(1, 10)).shape == (1, 2)


def test_marked_method_keeps_a_forward_the_user_patched_on_the_instance() -> None:
    wrapped, model, _ = wrapped_in_ddp_stand_in()
    patched = model.forward
    model.forward = patched  # type: ignore[method-assign]
    wrapped.mark_forward_method("generate")
    wrapped.generate()
    assert model.__dict__["forward"] is patched


def test_marked_method_gets_the_precision_conversion_and_context() -> None:
    precision = DoublePrecision()
    model = Generator()
    seen: list[bool] = []
    model.register_forward_pre_hook(lambda module, args: seen.append(precision.active))
    wrapped = FabricModule(Wrapping(model), RecordingStrategy(precision), original_module=model)
    wrapped.mark_forward_method("dtype_seen")
    assert wrapped.dtype_seen(torch.ones(1)) == torch.float64
    assert seen == [True]


def test_unmarked_method_under_a_wrapping_strategy_raises_and_leaves_no_hooks() -> None:
    wrapped, model, outer = wrapped_in_ddp_stand_in()
    before = hook_counts(model)
    with pytest.raises(RuntimeError, match=r"mark_forward_method\('generate'\)") as error:
        wrapped.generate()
    assert "Generator.generate()" in str(error.value)
    assert "Wrapping" in str(error.value)
    assert hook_counts(model) == before
    assert outer.calls == 0


def test_unmarked_method_that_raises_itself_leaves_no_hooks() -> None:
    wrapped, model, _ = wrapped_in_ddp_stand_in()
    before = hook_counts(model)
    with pytest.raises(ValueError, match="early"):
        wrapped.fail_before_running_layers()
    assert hook_counts(model) == before


def test_unmarked_method_that_runs_no_layers_works() -> None:
    wrapped, model, _ = wrapped_in_ddp_stand_in()
    before = hook_counts(model)
    assert torch.equal(wrapped.weight_norm(), model.layer.weight.norm())
    assert hook_counts(model) == before


def test_forward_and_calling_the_wrapper_are_not_guarded() -> None:
    wrapped, _, outer = wrapped_in_ddp_stand_in()
    wrapped(torch.randn(10))
    wrapped.forward(torch.randn(10))
    assert outer.calls == 2


def test_methods_are_returned_as_they_are_when_the_strategy_does_not_wrap(
    strategy: RecordingStrategy,
) -> None:
    model = Generator()
    wrapped = FabricModule(model, strategy)
    assert wrapped.generate == model.generate  # the bound method itself, no guard
    assert wrapped.generate().shape == (1, 2)
    wrapped.mark_forward_method("generate")
    assert wrapped.generate == model.generate


def test_marked_method_output_is_checked_for_fabric_backward() -> None:
    wrapped, _, _ = wrapped_in_ddp_stand_in(RecordingStrategy(ScalingPrecision()))
    wrapped.mark_forward_method("generate")
    with pytest.raises(RuntimeError, match=r"fabric\.backward\(loss\)"):
        wrapped.generate().sum().backward()
