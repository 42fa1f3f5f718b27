"""64-true, 16-true and bf16-true: the whole model in one dtype."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import pytest
import torch
from torch import nn

from fab.core import Fabric, registry
from fab.precision import DoublePrecision, HalfPrecision, Precision

Train = Callable[..., list[float]]

DTYPES = {"64-true": torch.float64, "16-true": torch.float16, "bf16-true": torch.bfloat16}


class Pair(NamedTuple):
    features: torch.Tensor
    label: torch.Tensor


@pytest.fixture(params=list(DTYPES))
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_convert_module_casts_floating_parameters_and_buffers(name: str) -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    converted = registry.PRECISION.create(name).convert_module(model)
    assert {p.dtype for p in converted.parameters()} == {DTYPES[name]}
    assert converted[1].running_mean.dtype == DTYPES[name]
    assert converted[1].num_batches_tracked.dtype == torch.int64  # integers stay


def test_init_contexts_set_the_default_dtype_and_restore_it(name: str) -> None:
    precision = registry.PRECISION.create(name)
    with precision.module_init_context():
        layer = nn.Linear(2, 2)
    with precision.tensor_init_context():
        tensor = torch.zeros(3)
    assert layer.weight.dtype == tensor.dtype == DTYPES[name]
    assert torch.get_default_dtype() == torch.float32
    assert torch.zeros(1).dtype == torch.float32


def test_fabric_init_module_and_init_tensor_use_the_dtype(name: str) -> None:
    fabric = Fabric(accelerator="cpu", precision=name)
    with fabric.init_module():
        layer = nn.Linear(2, 2)
    with fabric.init_tensor():
        tensor = torch.ones(2)
    assert layer.weight.dtype == tensor.dtype == DTYPES[name]
    assert torch.get_default_dtype() == torch.float32


def test_inputs_are_converted_in_nested_collections_floating_tensors_only(name: str) -> None:
    precision = registry.PRECISION.create(name)
    batch = {
        "x": torch.ones(2),
        "ids": torch.arange(2),
        "mask": torch.ones(2, dtype=torch.bool),
        "pairs": [Pair(torch.ones(1), torch.tensor(1)), (torch.zeros(1), "text", 3.0)],
    }
    out = precision.convert_input(batch)
    assert out["x"].dtype == DTYPES[name]
    assert out["ids"].dtype == torch.int64
    assert out["mask"].dtype == torch.bool
    assert isinstance(out["pairs"][0], Pair)
    assert out["pairs"][0].features.dtype == DTYPES[name]
    assert out["pairs"][0].label.dtype == torch.int64
    assert out["pairs"][1][0].dtype == DTYPES[name]
    assert out["pairs"][1][1:] == ("text", 3.0)


def test_outputs_are_converted_back_to_the_default_dtype(name: str) -> None:
    precision = registry.PRECISION.create(name)
    output = (torch.ones(2, dtype=DTYPES[name]), {"n": torch.tensor(3)})
    converted = precision.convert_output(output)
    assert converted[0].dtype == torch.float32
    assert converted[1]["n"].dtype == torch.int64


class CreatesTensors(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 2)
        self.seen: dict[str, torch.dtype] = {}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.seen = {"input": x.dtype, "created": torch.zeros(1).dtype}
        return {"y": self.layer(x), "count": torch.tensor(1)}


def test_a_wrapped_forward_sees_the_dtype_and_returns_float32(name: str) -> None:
    fabric = Fabric(accelerator="cpu", precision=name)
    model = fabric.setup(CreatesTensors())
    out = model(torch.ones(3, 2))
    assert model.seen == {"input": DTYPES[name], "created": DTYPES[name]}
    assert model.layer.weight.dtype == DTYPES[name]
    assert out["y"].dtype == torch.float32
    assert out["count"].dtype == torch.int64
    assert torch.get_default_dtype() == torch.float32


def test_the_default_dtype_is_restored_when_a_forward_raises(name: str) -> None:
    class Fails(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    model = Fabric(accelerator="cpu", precision=name).setup(Fails())
    with pytest.raises(RuntimeError, match="boom"):
        model(torch.ones(1))
    assert torch.get_default_dtype() == torch.float32


def test_training_through_fabric_lowers_the_loss(name: str, train: Train) -> None:
    fabric = Fabric(accelerator="cpu", precision=name)
    losses = train(fabric, steps=40)
    assert losses[-1] < 0.5 * losses[0], losses


def test_half_precision_takes_lightnings_arguments() -> None:
    assert HalfPrecision().precision == "16-true"
    assert HalfPrecision("bf16-true").dtype == torch.bfloat16
    with pytest.raises(ValueError, match="'16-true' or 'bf16-true'"):
        HalfPrecision("32-true")  # type: ignore[arg-type]


def test_double_precision_is_a_precision_without_backward_work() -> None:
    precision: Precision = DoublePrecision()
    assert precision.precision == "64-true"
    assert not precision.requires_fabric_backward
    assert precision.state_dict() == {}


# -- complex tensors keep their imaginary part ---------------------------------------------------

#: The complex dtype each precision gives complex64 tensors: 64-true doubles both parts; the half
#: precisions leave them alone (torch has no complex bfloat16).
COMPLEX_DTYPES = {
    "64-true": torch.complex128,
    "16-true": torch.complex64,
    "bf16-true": torch.complex64,
}


class ComplexFilter(nn.Module):
    """A model with a complex parameter and a complex buffer beside a real layer."""

    def __init__(self) -> None:
        super().__init__()
        self.real = nn.Linear(2, 2)
        self.gain = nn.Parameter(torch.tensor([1.0 + 2.0j, -3.0 + 0.5j]))
        self.register_buffer("phase", torch.tensor([0.5j, 1.0 - 1.0j]))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.gain + self.phase


def test_complex_parameters_and_buffers_keep_their_imaginary_part_through_fabric(
    name: str,
) -> None:
    original = ComplexFilter()
    gain, phase = original.gain.detach().clone(), original.phase.clone()
    fabric = Fabric(accelerator="cpu", precision=name)
    model = fabric.setup(original)
    complex_dtype = COMPLEX_DTYPES[name]
    assert model.real.weight.dtype == DTYPES[name]
    assert model.gain.dtype == model.phase.dtype == complex_dtype
    assert torch.equal(model.gain.detach(), gain.to(complex_dtype))
    assert torch.equal(model.phase, phase.to(complex_dtype))

    z = torch.tensor([1.0 + 1.0j, 2.0j])
    output = model(z)
    assert output.dtype == torch.complex64  # what the program would get without fab
    torch.testing.assert_close(output, z * gain + phase)

    fabric.backward(output.abs().sum())
    assert model.gain.grad is not None
    assert model.gain.grad.dtype == complex_dtype
    assert model.gain.grad.imag.abs().sum() > 0


def test_convert_module_never_makes_a_complex_tensor_real(name: str) -> None:
    model = registry.PRECISION.create(name).convert_module(ComplexFilter())
    assert all(t.is_complex() for t in (model.gain, model.phase))
    assert model.gain.imag.abs().sum() > 0
    assert model.phase.imag.abs().sum() > 0


def test_64_true_converts_complex_inputs_to_complex128_and_outputs_back() -> None:
    precision = DoublePrecision()
    converted = precision.convert_input({"z": torch.ones(2, dtype=torch.complex64)})
    assert converted["z"].dtype == torch.complex128
    back = precision.convert_output(torch.ones(2, dtype=torch.complex128))
    assert back.dtype == torch.complex64
