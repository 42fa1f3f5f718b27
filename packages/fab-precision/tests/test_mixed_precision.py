"""16-mixed and bf16-mixed: torch.autocast, loss scaling with a GradScaler for float16."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from fab.core import Fabric, registry
from fab.core.strategies import SingleDeviceStrategy
from fab.precision import MixedPrecision

Train = Callable[..., list[float]]
DTYPES = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only fallback")


@pytest.fixture(params=list(DTYPES))
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(32, 4, generator=generator)
    return x, x.sum(dim=1, keepdim=True)


def fp16_fabric(init_scale: float = 256.0) -> Fabric:
    """16-mixed with a scale small enough that this test's float16 gradients do not overflow
    (the default, 2**16, overflows on the first steps and skips them, as it should)."""
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    return Fabric(accelerator="cpu", plugins=[MixedPrecision("16-mixed", scaler=scaler)])


def model_and_sgd() -> tuple[nn.Module, torch.optim.Optimizer]:
    model = nn.Linear(4, 1)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


# -- forward ----------------------------------------------------------------------------------


def test_forward_context_autocasts_a_cpu_matmul(name: str) -> None:
    precision = MixedPrecision(name, device="cpu")  # type: ignore[arg-type]
    a = torch.randn(4, 4)
    with precision.forward_context():
        assert torch.is_autocast_enabled("cpu")
        assert (a @ a).dtype == DTYPES[name]
    assert (a @ a).dtype == torch.float32
    assert not torch.is_autocast_enabled("cpu")


class Probe(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 1)
        self.seen: dict[str, object] = {}

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.layer(x)
        self.seen = {
            "autocast": torch.is_autocast_enabled("cpu"),
            "autocast_dtype": torch.get_autocast_dtype("cpu"),
            "input": x.dtype,
            "ids": ids.dtype,
            "matmul": y.dtype,
        }
        return y, ids


def test_a_wrapped_forward_runs_under_autocast_and_returns_float32(name: str) -> None:
    fabric = Fabric(accelerator="cpu", precision=name)
    model = fabric.setup(Probe())
    y, ids = model(torch.randn(2, 4), ids=torch.arange(2))
    assert model.seen == {
        "autocast": True,
        "autocast_dtype": DTYPES[name],
        "input": torch.float32,  # inputs are left to autocast (Lightning casts them)
        "ids": torch.int64,
        "matmul": DTYPES[name],
    }
    assert y.dtype == torch.float32
    assert ids.dtype == torch.int64
    assert model.layer.weight.dtype == torch.float32  # the weights stay float32


def test_fabric_autocast_is_the_forward_context(name: str) -> None:
    fabric = Fabric(accelerator="cpu", precision=name)
    a = torch.randn(3, 3)
    with fabric.autocast():
        assert (a @ a).dtype == DTYPES[name]


def test_the_device_is_settled_when_the_strategy_sets_the_first_model_up() -> None:
    precision = registry.PRECISION.create("bf16-mixed")
    fabric = Fabric(accelerator="cpu", plugins=[precision])
    assert precision.device == "auto"
    fabric.setup(nn.Linear(2, 2))
    assert precision.device == "cpu"  # before any forward: Precision.connect told it


def test_an_explicit_device_is_kept_when_the_strategy_connects() -> None:
    precision = MixedPrecision("bf16-mixed", device="cuda")
    Fabric(accelerator="cpu", plugins=[precision]).setup(nn.Linear(2, 2))
    assert precision.device == "cuda"


def test_a_forward_without_tensor_inputs_autocasts_on_the_connected_device() -> None:
    class Constant(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(2, 2))

        def forward(self, scale: float) -> torch.Tensor:
            return self.weight @ self.weight * scale

    class Recording(Constant):
        def forward(self, scale: float) -> torch.Tensor:
            self.inner = (self.weight @ self.weight).dtype
            return super().forward(scale)

    precision = MixedPrecision("bf16-mixed")
    model = Fabric(accelerator="cpu", plugins=[precision]).setup(Recording())
    assert model(2.0).dtype == torch.float32
    assert model.inner == torch.bfloat16
    assert precision.device == "cpu"


@no_cuda
def test_before_it_is_settled_autocast_acts_on_the_cpu_without_cuda() -> None:
    precision = MixedPrecision("bf16-mixed")
    with precision.forward_context():
        assert torch.is_autocast_enabled("cpu")
    assert precision.device == "auto"


def test_an_explicit_device_is_reduced_to_its_type() -> None:
    assert MixedPrecision("bf16-mixed", device="cuda:0").device == "cuda"
    assert MixedPrecision("bf16-mixed", "cpu").device == "cpu"


def test_a_device_without_autocast_is_refused() -> None:
    with pytest.raises(ValueError, match="does not support device type 'meta'"):
        MixedPrecision("bf16-mixed", device="meta")


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="'16-mixed' or 'bf16-mixed'"):
        MixedPrecision("16-true")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="uses no gradient scaler"):
        MixedPrecision("bf16-mixed", scaler=torch.amp.GradScaler("cpu"))


# -- backward and steps -----------------------------------------------------------------------


def test_bf16_mixed_has_no_scaler_and_needs_no_fabric_backward() -> None:
    precision = registry.PRECISION.create("bf16-mixed")
    assert precision.scaler is None
    assert not precision.requires_fabric_backward
    assert precision.state_dict() == {}


def test_16_mixed_has_a_scaler_and_needs_fabric_backward() -> None:
    precision = registry.PRECISION.create("16-mixed")
    assert isinstance(precision.scaler, torch.amp.GradScaler)
    assert precision.scaler.is_enabled()
    assert precision.requires_fabric_backward
    assert Fabric(accelerator="cpu", plugins=[precision]).strategy.requires_fabric_backward


def scaled_gradient(precision: MixedPrecision, loss_factor: float = 2.0) -> float:
    """The gradient ``precision.backward`` gives ``w`` for the loss ``loss_factor * w``."""
    w = torch.tensor(1.0, requires_grad=True)
    precision.backward(w * loss_factor, None)
    assert w.grad is not None
    return float(w.grad)


def test_a_given_scaler_is_the_one_used() -> None:
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    precision = MixedPrecision("16-mixed", "cpu", scaler)
    assert precision.scaler is scaler
    assert scaled_gradient(precision) == 16.0


def test_the_precisions_backward_scales_the_loss_and_pre_backward_changes_nothing() -> None:
    precision = MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu", init_scale=8.0))
    loss = torch.tensor(2.0)
    assert precision.pre_backward(loss, None) is loss
    assert precision.post_backward(loss, None) is loss
    assert scaled_gradient(precision) == 16.0
    assert scaled_gradient(MixedPrecision("bf16-mixed", "cpu")) == 2.0  # no scaler


class LightningStyleStrategy(SingleDeviceStrategy):
    """A third-party strategy written as Lightning's are: it calls the precision's hooks and
    ignores what ``pre_backward`` returns."""

    def backward(
        self, tensor: torch.Tensor, module: nn.Module | None, *args: Any, **kwargs: Any
    ) -> None:
        self.precision.pre_backward(tensor, module)
        self.precision.backward(tensor, module, *args, **kwargs)
        self.precision.post_backward(tensor, module)


@pytest.mark.parametrize("strategy", ["fab's own", "Lightning-style"])
def test_16_mixed_gives_scaled_gradients_and_a_true_step_under_any_strategy(strategy: str) -> None:
    scaler = torch.amp.GradScaler("cpu", init_scale=256.0)
    fabric = Fabric(
        accelerator="cpu",
        strategy=LightningStyleStrategy() if strategy == "Lightning-style" else "single_device",
        plugins=[MixedPrecision("16-mixed", scaler=scaler)],
    )
    model, optimizer = fabric.setup(*model_and_sgd())
    plain = unscaled_gradient(fabric, model)
    before = model.weight.detach().clone()
    x, y = data()
    fabric.backward(nn.functional.mse_loss(model(x), y))
    torch.testing.assert_close(model.weight.grad, plain * 256.0, rtol=1e-3, atol=1e-3)
    optimizer.step()
    # the scaler unscaled the gradients once: the step is the true gradient's (lr 0.1)
    torch.testing.assert_close(model.weight.detach(), before - 0.1 * plain, rtol=1e-3, atol=1e-3)


def unscaled_gradient(fabric: Fabric, model: nn.Module) -> torch.Tensor:
    """The gradient of the loss without loss scaling: the same model and autocast, not wrapped."""
    raw = model.module
    x, y = data()
    with fabric.autocast():
        output = raw(x)
    nn.functional.mse_loss(output.float(), y).backward()
    assert raw.weight.grad is not None
    gradient = raw.weight.grad.clone()
    raw.zero_grad(set_to_none=True)
    return gradient


def test_fabric_backward_scales_the_loss_under_16_mixed() -> None:
    fabric = fp16_fabric()
    model = fabric.setup(nn.Linear(4, 1))
    plain = unscaled_gradient(fabric, model)
    x, y = data()
    fabric.backward(nn.functional.mse_loss(model(x), y))
    scale = fabric.strategy.precision.scaler.get_scale()
    assert scale == 256.0
    torch.testing.assert_close(model.weight.grad, plain * scale, rtol=1e-3, atol=1e-3)


def test_training_through_fabric_lowers_the_loss(name: str, train: Train) -> None:
    losses = train(Fabric(accelerator="cpu", precision=name), steps=40)
    assert losses[-1] < 0.5 * losses[0], losses


def test_bf16_mixed_trains_with_plain_loss_backward() -> None:
    fabric = Fabric(accelerator="cpu", precision="bf16-mixed")
    model, optimizer = fabric.setup(*model_and_sgd())
    x, y = data()
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]


def test_a_step_with_infinite_gradients_is_skipped_and_the_scale_backs_off() -> None:
    fabric = Fabric(accelerator="cpu", precision="16-mixed")
    model, optimizer = fabric.setup(*model_and_sgd())
    before = model.weight.detach().clone()
    x, _ = data()
    fabric.backward(model(x).sum() * float("inf"))
    optimizer.step()
    torch.testing.assert_close(model.weight.detach(), before)
    assert fabric.strategy.precision.scaler.get_scale() == 2.0**15


def test_clip_gradients_unscales_before_clipping_and_the_step_does_not_unscale_again() -> None:
    fabric = fp16_fabric()
    model, optimizer = fabric.setup(*model_and_sgd())
    plain = unscaled_gradient(fabric, model)
    x, y = data()
    fabric.backward(nn.functional.mse_loss(model(x), y))
    norm = fabric.clip_gradients(model, optimizer, max_norm=1e6)
    torch.testing.assert_close(model.weight.grad, plain, rtol=1e-3, atol=1e-3)
    assert norm is not None
    unscaled = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    torch.testing.assert_close(norm, unscaled.norm())
    before = model.weight.detach().clone()
    optimizer.step()
    torch.testing.assert_close(model.weight.detach(), before - 0.1 * plain, rtol=1e-3, atol=1e-3)


def test_clip_gradients_works_with_a_fused_optimizer() -> None:
    fabric = fp16_fabric()
    model = nn.Linear(4, 1)
    model, optimizer = fabric.setup(model, torch.optim.Adam(model.parameters(), fused=True))
    x, y = data()
    before = model.weight.detach().clone()
    fabric.backward(nn.functional.mse_loss(model(x), y))
    fabric.clip_gradients(model, optimizer, max_norm=0.5)
    assert model.weight.grad.norm() <= 0.5 + 1e-4
    optimizer.step()
    assert not torch.equal(model.weight.detach(), before)


def test_a_closure_runs_first_and_step_returns_its_loss() -> None:
    fabric = Fabric(accelerator="cpu", precision="16-mixed")
    model, optimizer = fabric.setup(*model_and_sgd())
    x, y = data()
    calls = []

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        fabric.backward(loss)
        calls.append(loss.item())
        return loss

    results = [optimizer.step(closure) for _ in range(20)]
    assert len(calls) == 20
    assert [r.item() for r in results] == calls
    assert calls[-1] < 0.2 * calls[0]


def test_lbfgs_is_refused_under_16_mixed_with_a_clear_error() -> None:
    fabric = Fabric(accelerator="cpu", precision="16-mixed")
    model = nn.Linear(4, 1)
    model, optimizer = fabric.setup(model, torch.optim.LBFGS(model.parameters()))
    with pytest.raises(TypeError, match="cannot step LBFGS"):
        optimizer.step(lambda: torch.tensor(0.0))


def test_lbfgs_works_under_bf16_mixed() -> None:
    fabric = Fabric(accelerator="cpu", precision="bf16-mixed")
    model = nn.Linear(4, 1)
    model, optimizer = fabric.setup(model, torch.optim.LBFGS(model.parameters(), max_iter=5))
    x, y = data()

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        fabric.backward(loss)
        return loss

    first = optimizer.step(closure).item()
    assert optimizer.step(closure).item() < first


# -- state ------------------------------------------------------------------------------------


def test_the_scaler_state_is_saved_by_fabric_save_and_restored_by_fabric_load(
    tmp_path: Path, train: Train
) -> None:
    fabric = Fabric(accelerator="cpu", precision="16-mixed")
    train(fabric, steps=3)
    precision = fabric.strategy.precision
    precision.scaler.update(1024.0)  # a scale the fresh scaler below does not have
    saved = precision.state_dict()
    assert saved["scale"] == 1024.0
    path = tmp_path / "checkpoint.pt"
    fabric.save(path, {"precision": precision, "step": 3})
    assert torch.load(path, weights_only=True)["precision"] == saved

    restored = Fabric(accelerator="cpu", precision="16-mixed")
    assert restored.strategy.precision.scaler.get_scale() == 2.0**16
    remainder = restored.load(path, {"precision": restored.strategy.precision})
    assert remainder == {"step": 3}
    assert restored.strategy.precision.state_dict() == saved
    assert restored.strategy.precision.scaler.get_scale() == 1024.0
    # and training goes on from the restored scale
    assert scaled_gradient(restored.strategy.precision) == 2048.0


def test_the_scaler_itself_can_be_checkpointed(tmp_path: Path, train: Train) -> None:
    fabric = Fabric(accelerator="cpu", precision="16-mixed")
    train(fabric, steps=2)
    scaler = fabric.strategy.precision.scaler
    scaler.update(64.0)
    fabric.save(tmp_path / "ckpt.pt", {"scaler": scaler})
    other = Fabric(accelerator="cpu", precision="16-mixed")
    other.load(tmp_path / "ckpt.pt", {"scaler": other.strategy.precision.scaler})
    assert other.strategy.precision.scaler.get_scale() == 64.0


def test_an_empty_state_leaves_a_fresh_scaler_and_bf16_ignores_a_scaler_state() -> None:
    fp16 = MixedPrecision("16-mixed", "cpu")
    fp16.load_state_dict({})  # saved by bf16-mixed or 32-true
    assert fp16.scaler is not None
    assert fp16.scaler.get_scale() == 2.0**16
    bf16 = MixedPrecision("bf16-mixed", "cpu")
    bf16.load_state_dict(fp16.state_dict())
    assert bf16.state_dict() == {}
