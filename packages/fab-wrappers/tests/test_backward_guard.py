"""loss.backward() on a model's output is refused where the run needs fabric.backward(loss)."""

from __future__ import annotations

import threading

import pytest
import torch

from fab.wrappers import FabricModule, fabric_backward, in_fabric_backward

from .conftest import RecordingStrategy, ScalingPrecision


class TwoOutputs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> dict[str, object]:
        y = self.layer(x)
        return {"logits": y, "extra": [y * 2, "text"]}


def scaled_model() -> FabricModule:
    return FabricModule(TwoOutputs(), RecordingStrategy(ScalingPrecision()))


def test_plain_backward_is_refused_with_a_pointer_to_fabric_backward() -> None:
    wrapped = scaled_model()
    output = wrapped(torch.randn(1, 2))
    with pytest.raises(RuntimeError, match=r"ScalingPrecision.*fabric\.backward\(loss\)"):
        output["logits"].sum().backward()


def test_nested_outputs_are_checked() -> None:
    output = scaled_model()(torch.randn(1, 2))
    with pytest.raises(RuntimeError, match=r"fabric\.backward"):
        output["extra"][0].sum().backward()


def test_backward_inside_fabric_backward_works() -> None:
    wrapped = scaled_model()
    output = wrapped(torch.randn(1, 2))
    with fabric_backward():
        output["logits"].sum().backward()
    assert wrapped.layer.weight.grad is not None


def test_fabric_backward_is_reentrant_and_resets() -> None:
    assert not in_fabric_backward()
    with fabric_backward():
        with fabric_backward():
            assert in_fabric_backward()
        assert in_fabric_backward()
    assert not in_fabric_backward()
    with pytest.raises(KeyError), fabric_backward():
        raise KeyError
    assert not in_fabric_backward()


def test_fabric_backward_is_seen_from_other_threads() -> None:
    # Autograd runs the hooks of GPU tensors on its own threads.
    seen: list[bool] = []
    with fabric_backward():
        thread = threading.Thread(target=lambda: seen.append(in_fabric_backward()))
        thread.start()
        thread.join()
    assert seen == [True]


def test_outputs_without_grad_are_left_alone() -> None:
    wrapped = scaled_model()
    with torch.no_grad():
        output = wrapped(torch.randn(1, 2))
    assert not output["logits"].requires_grad


def test_no_hook_is_registered_when_fabric_backward_is_not_required(
    strategy: RecordingStrategy,
) -> None:
    model = TwoOutputs()
    wrapped = FabricModule(model, strategy)
    assert wrapped._run_forward is model
    output = wrapped(torch.randn(1, 2))
    assert output["logits"]._backward_hooks is None
    output["logits"].sum().backward()


def test_a_strategy_that_needs_fabric_backward_is_named() -> None:
    class DeepSpeedLike(RecordingStrategy):
        @property
        def requires_fabric_backward(self) -> bool:
            return True

    wrapped = FabricModule(TwoOutputs(), DeepSpeedLike())
    with pytest.raises(RuntimeError, match="strategy DeepSpeedLike"):
        wrapped(torch.randn(1, 2))["logits"].sum().backward()
