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


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Linear(4, 4)
        self.head = torch.nn.Linear(4, 2)
        self.register_buffer("scale", torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)) * self.scale


def test_setting_a_submodule_on_the_wrapper_replaces_the_original_one(
    strategy: RecordingStrategy,
) -> None:
    model = Net()
    wrapped = FabricModule(model, strategy)
    head = torch.nn.Linear(4, 3)
    wrapped.head = head
    assert model.head is head
    assert wrapped(torch.randn(1, 4)).shape == (1, 3)
    assert "head" not in wrapped._modules


def test_setting_a_parameter_on_the_wrapper_registers_it_on_the_original(
    strategy: RecordingStrategy,
) -> None:
    model = Net()
    wrapped = FabricModule(model, strategy)
    wrapped.extra = torch.nn.Parameter(torch.zeros(2))
    assert model.extra is wrapped.extra
    assert "extra" in dict(model.named_parameters())
    del wrapped.extra
    assert not hasattr(model, "extra")


def test_parameters_buffers_and_modules_have_no_wrapper_prefix(
    strategy: RecordingStrategy,
) -> None:
    model = Net()
    wrapped = FabricModule(torch.nn.Sequential(model), strategy, original_module=model)
    assert list(wrapped.state_dict()) == list(model.state_dict())
    assert [n for n, _ in wrapped.named_parameters()] == [n for n, _ in model.named_parameters()]
    assert [n for n, _ in wrapped.named_buffers()] == ["scale"]
    assert [n for n, _ in wrapped.named_modules()] == ["", "body", "head"]
    assert list(wrapped.parameters()) == list(model.parameters())
    assert next(iter(wrapped.modules())) is model


def test_train_and_eval_reach_the_original_and_the_strategy_wrapper(
    strategy: RecordingStrategy,
) -> None:
    model = Net()
    outer = torch.nn.Sequential(model)
    wrapped = FabricModule(outer, strategy, original_module=model)
    assert wrapped.eval() is wrapped
    assert not wrapped.training
    assert not model.head.training
    assert not outer.training
    wrapped.train()
    assert wrapped.training
    assert model.head.training
    assert outer.training
    model.eval()  # the wrapper's mode is the original's
    assert not wrapped.training


def test_repr_shows_the_original(strategy: RecordingStrategy) -> None:
    assert repr(FabricModule(torch.nn.ReLU(), strategy)) == "FabricModule(ReLU())"


def test_dir_lists_the_original_attributes(strategy: RecordingStrategy) -> None:
    assert "temperature" in dir(FabricModule(WithGenerate(), strategy))


def test_an_empty_container_model_can_be_wrapped(strategy: RecordingStrategy) -> None:
    model = torch.nn.Sequential()
    assert FabricModule(model, strategy).module is model


def test_deepcopy_calls_the_copied_model(strategy: RecordingStrategy) -> None:
    import copy

    wrapped = FabricModule(Net().double(), RecordingStrategy(DoublePrecision()))
    clone = copy.deepcopy(wrapped)
    assert clone.module is not wrapped.module
    with torch.no_grad():
        clone.head.weight.zero_()
        clone.head.bias.zero_()
    assert clone(torch.randn(1, 4)).abs().sum() == 0
    assert wrapped.head.weight.abs().sum() > 0


# -- the cost of a call ---------------------------------------------------------------------


def test_a_call_without_hooks_on_the_wrapper_skips_module_call(
    strategy: RecordingStrategy, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("Module.__call__ ran for the wrapper")

    model = torch.nn.Linear(2, 2)
    wrapped = FabricModule(model, strategy)
    monkeypatch.setattr(FabricModule, "_call_impl", refuse)
    x = torch.randn(1, 2)
    assert torch.equal(wrapped(x), model(x))


def test_forward_hooks_on_the_wrapper_run(strategy: RecordingStrategy) -> None:
    wrapped = FabricModule(torch.nn.Linear(2, 2), strategy)
    seen: list[str] = []
    pre = wrapped.register_forward_pre_hook(lambda module, args: seen.append("pre"))
    post = wrapped.register_forward_hook(lambda module, args, output: output * 0)
    assert wrapped(torch.randn(1, 2)).abs().sum() == 0
    assert seen == ["pre"]
    pre.remove()
    post.remove()
    assert wrapped(torch.randn(1, 2)).abs().sum() > 0
    assert seen == ["pre"]


def test_backward_hooks_on_the_wrapper_run(strategy: RecordingStrategy) -> None:
    wrapped = FabricModule(torch.nn.Linear(2, 2), strategy)
    seen: list[str] = []
    wrapped.register_full_backward_hook(lambda module, grad_in, grad_out: seen.append("bwd"))
    wrapped(torch.randn(1, 2, requires_grad=True)).sum().backward()
    assert seen == ["bwd"]


def test_hooks_on_the_model_run_through_the_wrapper(strategy: RecordingStrategy) -> None:
    model = torch.nn.Linear(2, 2)
    seen: list[str] = []
    model.register_forward_hook(lambda module, args, output: seen.append("model"))
    FabricModule(model, strategy)(torch.randn(1, 2))
    assert seen == ["model"]
