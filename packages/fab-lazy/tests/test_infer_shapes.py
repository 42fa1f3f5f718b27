"""infer_shapes: a dry run on the meta device gives lazy modules their shapes, then they get real
memory where and in the dtype they were created, initialized as a first forward would."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from fab.lazy import (
    LazyModuleError,
    has_uninitialized,
    infer_shapes,
    meta_init,
    require_initialized,
    uninitialized_modules,
    uninitialized_tensors,
)


def lazy_mlp() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(5, 6), nn.ReLU(), nn.LazyLinear(4), nn.LazyBatchNorm1d(), nn.LazyLinear(2)
    )


def test_the_shapes_are_those_a_real_forward_gives() -> None:
    dry, real = lazy_mlp(), lazy_mlp()
    infer_shapes(dry, torch.randn(3, 5))
    real(torch.randn(3, 5))
    assert [type(m) for m in dry] == [type(m) for m in real]
    assert [p.shape for p in dry.parameters()] == [p.shape for p in real.parameters()]
    assert [b.shape for b in dry.buffers()] == [b.shape for b in real.buffers()]
    assert not has_uninitialized(dry)


def test_nothing_real_is_computed_or_changed() -> None:
    model = lazy_mlp()
    before = {name: t.clone() for name, t in model[0].state_dict().items()}
    calls: list[str] = []
    model[0].register_forward_hook(lambda m, i, o: calls.append(o.device.type))
    infer_shapes(model, torch.randn(3, 5))
    assert calls == ["meta"]  # the forward ran, on meta tensors
    for name, tensor in model[0].state_dict().items():
        assert torch.equal(tensor, before[name])
    assert model[3].num_batches_tracked.item() == 0  # the running statistics were not updated
    assert torch.equal(model[3].running_mean, torch.zeros(4))


def test_parameters_get_the_models_dtype_and_device_and_normal_initialization() -> None:
    model = lazy_mlp().to(torch.float64)
    infer_shapes(model, torch.randn(3, 5))  # float32 inputs: only shapes are read
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    weight = model[2].weight
    bound = 1 / 6**0.5  # Linear.reset_parameters: kaiming_uniform(a=sqrt(5)) on fan_in 6
    assert weight.abs().max() <= bound
    assert weight.std() > 0.1 * bound
    assert torch.equal(model[3].weight, torch.ones(4, dtype=torch.float64))
    assert torch.equal(model[3].running_var, torch.ones(4, dtype=torch.float64))


def test_an_optimizer_built_before_trains_the_inferred_parameters() -> None:
    model = lazy_mlp()
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    infer_shapes(model, torch.randn(3, 5))
    assert all(a is b for a, b in zip(params, model.parameters(), strict=True))
    before = model[4].weight.detach().clone()
    model(torch.randn(3, 5)).sum().backward()
    optimizer.step()
    assert not torch.equal(model[4].weight, before)


def test_inputs_may_be_nested_and_keyword() -> None:
    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.LazyLinear(3)
            self.b = nn.LazyLinear(3)

        def forward(self, pair: tuple[torch.Tensor, torch.Tensor], *, scale: float) -> torch.Tensor:
            return (self.a(pair[0]) + self.b(pair[1])) * scale

    model = TwoInputs()
    infer_shapes(model, (torch.randn(2, 4), torch.randn(2, 7)), scale=2.0)
    assert model.a.weight.shape == (3, 4)
    assert model.b.weight.shape == (3, 7)


def test_a_model_created_on_meta_only_gets_its_shapes() -> None:
    with meta_init():
        model = lazy_mlp()
    infer_shapes(model, torch.randn(3, 5))
    assert model[2].weight.shape == (4, 6)
    assert model[2].weight.is_meta
    assert model[3].running_mean.device.type == "cpu"  # meta_init keeps buffers real


def test_modules_the_inputs_do_not_reach_are_named() -> None:
    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used = nn.LazyLinear(2)
            self.unused = nn.LazyLinear(2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x)

    model = Unused()
    with pytest.raises(
        LazyModuleError, match=r"did not reach.*unused \(LazyLinear: weight, bias\)"
    ):
        infer_shapes(model, torch.randn(1, 3))
    assert model.used.weight.shape == (2, 3)
    assert uninitialized_modules(model) == ["unused"]


def test_a_forward_that_reads_values_fails_clearly_and_leaves_the_model_usable() -> None:
    class ReadsValues(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first = nn.LazyLinear(3)
            self.second = nn.LazyLinear(2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.first(x)
            if x.sum().item() > 1e9:  # data-dependent: cannot run on meta
                x = x * 2
            return self.second(x)

    model = ReadsValues()
    with pytest.raises(LazyModuleError, match="run one forward with a real batch"):
        infer_shapes(model, torch.randn(2, 4))
    assert uninitialized_modules(model) == ["second"]
    assert model.first.weight.device.type == "cpu"
    model(torch.randn(2, 4))  # the real forward finishes the job
    assert not has_uninitialized(model)


def test_the_report_names_modules_and_their_tensors() -> None:
    model = lazy_mlp()
    assert uninitialized_tensors(model) == {
        "2": ["weight", "bias"],
        "3": ["weight", "bias", "running_mean", "running_var"],
        "4": ["weight", "bias"],
    }
    with pytest.raises(LazyModuleError) as info:
        require_initialized(model, "wrapping")
    message = str(info.value)
    assert "2 (LazyLinear: weight, bias)" in message
    assert "fab.lazy.infer_shapes(model, *example_inputs)" in message


def test_a_checkpoint_initializes_a_lazy_model_with_its_values() -> None:
    """torch's _lazy_load_hook materializes each lazy tensor with the checkpoint's shape, in the
    lazy tensor's own dtype, then copies the values in."""
    source = lazy_mlp()
    source(torch.randn(3, 5))
    model = lazy_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.load_state_dict(source.state_dict())
    assert not has_uninitialized(model)
    for name, tensor in source.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor)
    model(torch.randn(3, 5)).sum().backward()  # becomes Linear/BatchNorm1d on its first forward
    optimizer.step()
    assert isinstance(model[2], nn.Linear)


def test_an_initialized_lazy_models_state_dict_loads_weights_only() -> None:
    model = lazy_mlp()
    infer_shapes(model, torch.randn(3, 5))
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert state.keys() == model.state_dict().keys()
