"""meta_init and materialize: a model created on the meta device gets real memory keeping its
Parameter objects, ties, computed buffers and dtype, and is initialized or an error says what
could not be."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from torch import nn

from fab.lazy import MaterializeError, has_meta, materialize, meta_init
from fab.lazy.meta import is_meta_assign_hook


class Rotary(nn.Module):
    """RoPE-style: a non-persistent buffer that __init__ computes; no reset_parameters."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        inv_freq = 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)


def expected_inv_freq(dim: int = 8) -> torch.Tensor:
    return 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim))


class TinyLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(16, 8)
        self.rotary = Rotary(8)
        self.norm = nn.LayerNorm(8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 16, bias=False)
        self.head.weight = self.emb.weight  # tied

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.emb(tokens)) * self.rotary.inv_freq.repeat(2)
        x, _ = self.attn(x, x, x)
        return self.head(x)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    model(torch.randint(0, 16, (2, 5))).sum().backward()
    optimizer.step()
    optimizer.zero_grad()


def test_meta_init_puts_parameters_on_meta_and_keeps_buffers_real() -> None:
    with meta_init():
        model = TinyLM()
    assert all(p.is_meta for p in model.parameters())
    assert torch.equal(model.rotary.inv_freq, expected_inv_freq())
    assert model.head.weight is model.emb.weight
    assert has_meta(model)


def test_meta_init_allocates_nothing_for_parameters() -> None:
    with meta_init():
        model = nn.Linear(1 << 14, 1 << 14)  # 1 GiB in float32
    assert model.weight.is_meta
    assert model.weight.untyped_storage().nbytes() == 4 << 28  # a shape, not memory


def test_parameter_identity_ties_and_computed_buffers_are_kept() -> None:
    with meta_init():
        model = TinyLM()
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    materialize(model, "cpu")
    assert all(a is b for a, b in zip(params, model.parameters(), strict=True))
    assert model.head.weight is model.emb.weight
    assert not has_meta(model)
    assert torch.equal(model.rotary.inv_freq, expected_inv_freq())
    before = model.emb.weight.detach().clone()
    train_step(model, optimizer)  # the optimizer created on meta trains the real parameters
    assert not torch.equal(model.emb.weight, before)


def test_parameters_are_initialized_by_reset_parameters() -> None:
    with meta_init():
        model = TinyLM()
    materialize(model, "cpu")
    assert torch.equal(model.norm.weight, torch.ones(8))
    assert torch.equal(model.norm.bias, torch.zeros(8))
    assert 0.5 < model.emb.weight.std() < 1.5  # Embedding: normal(0, 1)
    # MultiheadAttention has _reset_parameters: xavier weights, zero biases (out_proj's too)
    assert torch.equal(model.attn.in_proj_bias, torch.zeros(24))
    assert torch.equal(model.attn.out_proj.bias, torch.zeros(8))
    assert model.attn.in_proj_weight.std() > 0


def test_the_models_dtype_is_kept() -> None:
    with meta_init():
        model = TinyLM().to(torch.bfloat16)
    materialize(model, "cpu")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_a_user_init_fn_runs_first_and_its_values_win() -> None:
    def init(module: nn.Module) -> None:
        for sub in module.modules():
            if isinstance(sub, nn.Linear):
                nn.init.constant_(sub.weight, 0.5)
            if isinstance(sub, nn.LayerNorm):
                sub.weight.data.fill_(2.0)  # through .data: seen as well

    with meta_init():
        model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    materialize(model, "cpu", init_fn=init)
    assert torch.equal(model[0].weight, torch.full((4, 4), 0.5))
    assert model[0].bias.abs().max() > 0  # left to reset_parameters
    assert torch.equal(model[1].weight, torch.full((4,), 2.0))
    assert torch.equal(model[1].bias, torch.zeros(4))


def test_modules_without_an_initializer_are_named() -> None:
    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gain = nn.Parameter(torch.ones(4))

    with meta_init():
        model = nn.Sequential(nn.Linear(4, 4), Scale())
    with pytest.raises(MaterializeError, match=r"1 \(Scale: gain\)"):
        materialize(model, "cpu")
    with meta_init():
        model = nn.Sequential(nn.Linear(4, 4), Scale())
    materialize(model, "cpu", init_fn=lambda m: m[1].gain.fill_(1.0))
    assert torch.equal(model[1].gain, torch.ones(4))


def test_buffers_created_on_meta_must_be_recomputed_and_are_reported() -> None:
    with torch.device("meta"):  # plain meta device: the buffer is garbage
        model = TinyLM()
    with pytest.raises(MaterializeError, match=r"rotary \(Rotary: inv_freq\)"):
        materialize(model, "cpu")
    with torch.device("meta"):
        model = TinyLM()

    def recompute(module: nn.Module) -> None:
        module.rotary.inv_freq.copy_(expected_inv_freq())

    materialize(model, "cpu", init_fn=recompute)
    assert torch.equal(model.rotary.inv_freq, expected_inv_freq())


def test_values_that_are_already_real_are_kept() -> None:
    with meta_init():
        model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    loaded = torch.full((4, 4), 3.0)
    model.load_state_dict({"0.weight": loaded}, strict=False)
    materialize(model, "cpu")
    assert torch.equal(model[0].weight, loaded)  # the reset of its module did not overwrite it
    assert model[0].bias.abs().max() > 0


def test_a_state_dict_loads_into_a_meta_model_as_before() -> None:
    """model.load_state_dict(sd) on a model from meta_init assigns (torch alone would warn that
    copying into meta is a no-op), in the model's dtype, keeping ties."""
    source = TinyLM().to(torch.bfloat16)
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    with meta_init():
        model = TinyLM()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.load_state_dict(state)
    assert not has_meta(model)
    assert model.head.weight is model.emb.weight
    assert model.emb.weight.dtype == torch.float32
    assert torch.equal(model.emb.weight, source.emb.weight.float())
    plain = TinyLM()
    weight = plain.emb.weight
    plain.load_state_dict(state)  # the same state dict into a real model still copies
    assert plain.emb.weight is weight


def test_lazy_modules_on_meta_stay_lazy_on_the_device() -> None:
    with meta_init():
        model = nn.Sequential(nn.Linear(3, 4), nn.LazyLinear(2))
    materialize(model, "cpu")
    assert model[1].weight.device.type == "cpu"
    model(torch.randn(2, 3))  # initializes on its first forward, as usual
    assert model[1].weight.shape == (2, 4)


def test_a_model_with_nothing_on_meta_is_unchanged() -> None:
    model = nn.Linear(2, 2)
    before = model.weight.detach().clone()
    materialize(model, "cpu")
    assert torch.equal(model.weight, before)


def test_the_load_hooks_are_recognizable_and_step_aside_for_an_explicit_assign() -> None:
    with meta_init():
        model = nn.Linear(2, 2)
    hooks = [
        *model._load_state_dict_pre_hooks.values(),
        *model._load_state_dict_post_hooks.values(),
    ]
    assert len(hooks) == 2
    assert all(is_meta_assign_hook(hook) for hook in hooks)
    state = {"weight": torch.ones(2, 2, dtype=torch.float64), "bias": torch.zeros(2).double()}
    model.load_state_dict(state, assign=True)  # the caller's choice: torch's assign, its dtype
    assert model.weight.dtype == torch.float64
