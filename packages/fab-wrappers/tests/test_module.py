"""FabricModule is transparent: attributes, state dicts and calls reach the original model."""

from __future__ import annotations

import pytest
import torch

from fab.wrappers import FabricModule, is_wrapped, unwrap

from .conftest import DoublePrecision, RecordingStrategy


class WithGenerate(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(10, 2)
        self.temperature = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)

    def generate(self) -> torch.Tensor:
        return self(torch.randn(10))


def test_attribute_reads_and_writes_reach_the_original(strategy: RecordingStrategy) -> None:
    model = WithGenerate()
    wrapped = FabricModule(model, strategy)
    assert wrapped.layer.weight is model.layer.weight
    wrapped.temperature = 0.5
    assert model.temperature == 0.5
    assert wrapped.module is model


def test_state_dict_and_named_parameters_have_no_wrapper_prefix(
    strategy: RecordingStrategy,
) -> None:
    model = WithGenerate()
    wrapped = FabricModule(model, strategy)
    assert list(wrapped.state_dict()) == ["layer.weight", "layer.bias"]
    assert [n for n, _ in wrapped.named_parameters()] == ["layer.weight", "layer.bias"]
    wrapped.load_state_dict({k: torch.zeros_like(v) for k, v in model.state_dict().items()})
    assert model.layer.weight.abs().sum() == 0


def test_is_wrapped_and_unwrap(strategy: RecordingStrategy) -> None:
    model = torch.nn.Linear(10, 2)
    wrapped = FabricModule(model, strategy)
    assert not is_wrapped(model)
    assert is_wrapped(wrapped)
    assert unwrap(wrapped) is model
    assert unwrap(model) is model


def test_device_is_where_the_parameters_are(strategy: RecordingStrategy) -> None:
    assert FabricModule(torch.nn.Linear(1, 1), strategy).device == torch.device("cpu")
    assert FabricModule(torch.nn.ReLU(), strategy).device == strategy.root_device


def test_identity_precision_calls_the_module_directly(strategy: RecordingStrategy) -> None:
    model = torch.nn.Linear(2, 2)
    wrapped = FabricModule(model, strategy)
    x = torch.randn(1, 2)
    assert torch.equal(wrapped(x), model(x))
    assert wrapped._run_forward is model


def test_converting_precision_runs_inputs_through_it_inside_its_context() -> None:
    precision = DoublePrecision()
    seen: list[tuple[torch.dtype, bool]] = []

    class Probe(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append((x.dtype, precision.active))
            return x

    wrapped = FabricModule(Probe(), RecordingStrategy(precision))
    wrapped(torch.ones(1))
    assert seen == [(torch.float64, True)]
    assert not precision.active


def test_mark_forward_method_accepts_a_name_or_a_bound_method(strategy: RecordingStrategy) -> None:
    wrapped = FabricModule(WithGenerate(), strategy)
    wrapped.mark_forward_method(wrapped.generate)
    wrapped.mark_forward_method("generate")
    assert wrapped._forward_methods == {"generate"}
    assert wrapped.generate().shape == (2,)


def test_mark_forward_method_rejects_forward_and_non_methods(strategy: RecordingStrategy) -> None:
    wrapped = FabricModule(WithGenerate(), strategy)
    with pytest.raises(ValueError, match="forward is the model's forward"):
        wrapped.mark_forward_method("forward")
    with pytest.raises(AttributeError, match="has no method 'temperature'"):
        wrapped.mark_forward_method("temperature")
    with pytest.raises(TypeError, match="method name or a bound method"):
        wrapped.mark_forward_method(lambda: None)
