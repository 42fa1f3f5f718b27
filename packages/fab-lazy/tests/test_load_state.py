"""Deferred loading into a model: assign where there is no memory yet, copy otherwise, keep the
Parameter objects, and an explicit dtype policy (fab.lazy.load_state)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from fab.lazy import lazy_load, load_into


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.body = nn.Linear(4, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.body(self.emb(x))))


def _saved(tmp_path: Path, module: nn.Module, name: str = "c.pt") -> Path:
    path = tmp_path / name
    torch.save(module.state_dict(), path)
    return path


def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    optimizer.zero_grad()
    model(torch.tensor([1, 2, 3])).sum().backward()
    optimizer.step()


def test_assigning_into_a_meta_model_gives_working_parameters_without_a_copy(
    tmp_path: Path,
) -> None:
    source = Tied()
    path = _saved(tmp_path, source)
    with torch.device("meta"):
        model = Tied()
    params = dict(model.named_parameters())
    state = lazy_load(path)
    load_into(model, state)
    assert all(p is params[n] for n, p in model.named_parameters())  # same objects
    assert model.head.weight is model.emb.weight  # still tied
    assert not any(p.is_meta for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert model.body.weight.data_ptr() == state["body.weight"].data_ptr()  # a view of the file
    for name, tensor in source.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    _train_step(model, optimizer)
    assert not torch.equal(model.body.weight, source.body.weight)  # it trains
    assert torch.equal(lazy_load(path)["body.weight"], source.body.weight)  # the file does not


def test_copying_into_a_real_model_keeps_the_objects_and_the_optimizer_trains(
    tmp_path: Path,
) -> None:
    source = Tied()
    path = _saved(tmp_path, source)
    model = Tied()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    before = {n: (p, p.data_ptr()) for n, p in model.named_parameters()}
    load_into(model, lazy_load(path))
    for name, param in model.named_parameters():
        assert param is before[name][0]
        assert param.data_ptr() == before[name][1]
        assert torch.equal(param, source.get_parameter(name))
    _train_step(model, optimizer)  # the optimizer built before the load updates the loaded weights
    assert not torch.equal(model.body.weight, source.body.weight)


def test_an_optimizer_built_on_meta_parameters_trains_after_the_load(tmp_path: Path) -> None:
    path = _saved(tmp_path, Tied())
    with torch.device("meta"):
        model = Tied()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    load_into(model, lazy_load(path))
    weight = model.body.weight.detach().clone()
    _train_step(model, optimizer)
    assert not torch.equal(model.body.weight, weight)


@pytest.mark.parametrize("meta", [False, True], ids=["real", "meta"])
def test_the_model_dtype_is_kept_by_default(tmp_path: Path, meta: bool) -> None:
    source = nn.Linear(4, 4).to(torch.bfloat16)
    path = _saved(tmp_path, source)
    with torch.device("meta" if meta else "cpu"):
        model = nn.Linear(4, 4)
    load_into(model, lazy_load(path))
    assert model.weight.dtype == torch.float32
    assert model.weight.device.type == "cpu"
    assert torch.equal(model.weight, source.weight.float())


def test_torch_assign_would_have_adopted_the_checkpoint_dtype(tmp_path: Path) -> None:
    """Why the policy exists: this is what load_into(dtype="model") does not do."""
    path = _saved(tmp_path, nn.Linear(4, 4).to(torch.bfloat16))
    with torch.device("meta"):
        model = nn.Linear(4, 4)
    model.load_state_dict(lazy_load(path), assign=True)
    assert model.weight.dtype == torch.bfloat16


@pytest.mark.parametrize("meta", [False, True], ids=["real", "meta"])
def test_the_checkpoint_dtype_is_adopted_on_request(tmp_path: Path, meta: bool) -> None:
    source = nn.Linear(4, 4).to(torch.bfloat16)
    path = _saved(tmp_path, source)
    with torch.device("meta" if meta else "cpu"):
        model = nn.Linear(4, 4)
    weight = model.weight
    load_into(model, lazy_load(path), dtype="checkpoint")
    assert model.weight is weight
    assert weight.dtype == torch.bfloat16
    assert torch.equal(weight, source.weight)


def test_an_explicit_dtype_converts_floating_point_tensors_only(tmp_path: Path) -> None:
    source = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    path = _saved(tmp_path, source)
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    load_into(model, lazy_load(path), dtype=torch.float64)
    assert model[0].weight.dtype == torch.float64
    assert model[1].running_mean.dtype == torch.float64
    assert model[1].num_batches_tracked.dtype == torch.int64


def test_a_module_that_loads_itself_is_assigned_on_meta_in_the_model_dtype(tmp_path: Path) -> None:
    """BatchNorm overrides _load_from_state_dict: torch loads it, assigning since it is on meta."""
    source = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)).double()
    source[1].running_mean.fill_(2.0)
    path = _saved(tmp_path, source)
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    bn_weight = model[1].weight
    load_into(model, lazy_load(path))
    assert model[1].weight is bn_weight
    assert not bn_weight.is_meta
    assert bn_weight.dtype == torch.float32
    assert torch.equal(model[1].running_mean, torch.full((3,), 2.0))
    assert model[1].num_batches_tracked.device.type == "cpu"


def test_a_lazy_module_takes_the_checkpoint_values_in_the_model_dtype(tmp_path: Path) -> None:
    source = nn.Sequential(nn.Linear(5, 3), nn.ReLU(), nn.Linear(3, 2)).half()
    path = _saved(tmp_path, source)
    model = nn.Sequential(nn.LazyLinear(3), nn.ReLU(), nn.LazyLinear(2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    load_into(model, lazy_load(path))
    assert model[0].weight.shape == (3, 5)
    assert model[0].weight.dtype == torch.float32
    assert torch.equal(model[0].weight, source[0].weight.float())
    out = model(torch.randn(2, 5))  # the lazy modules become Linear on their first forward
    assert isinstance(model[0], nn.Linear)
    assert out.shape == (2, 2)
    out.sum().backward()
    optimizer.step()  # the optimizer built on the uninitialized parameters trains them
    assert not torch.equal(model[0].weight, source[0].weight.float())


def test_strict_raises_on_missing_and_unexpected_keys_like_load_state_dict(tmp_path: Path) -> None:
    state = {"weight": torch.ones(2, 2), "extra": torch.ones(1)}
    model = nn.Linear(2, 2)
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "bias"') as info:
        load_into(model, state)
    assert 'Unexpected key(s) in state_dict: "extra"' in str(info.value)
    result = load_into(model, state, strict=False)
    assert result.missing_keys == ["bias"]
    assert result.unexpected_keys == ["extra"]
    assert torch.equal(model.weight, torch.ones(2, 2))


def test_a_size_mismatch_always_raises(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="size mismatch for weight"):
        load_into(
            nn.Linear(2, 2), {"weight": torch.ones(3, 2), "bias": torch.ones(2)}, strict=False
        )


def test_an_unknown_dtype_policy_is_refused() -> None:
    with pytest.raises(ValueError, match=r"'model', 'checkpoint' or a torch\.dtype"):
        load_into(nn.Linear(2, 2), {}, dtype="fp32")  # type: ignore[arg-type]


def test_a_nested_checkpoint_loads_its_model_entry(tmp_path: Path) -> None:
    source = Tied()
    optimizer = torch.optim.Adam(source.parameters())
    _train_step(source, optimizer)
    torch.save(
        {"model": source.state_dict(), "optimizer": optimizer.state_dict(), "step": 1},
        tmp_path / "c.pt",
    )
    with torch.device("meta"):
        model = Tied()
    load_into(model, lazy_load(tmp_path / "c.pt")["model"])
    assert torch.equal(model.body.weight, source.body.weight)


def test_safetensors_weights_load_into_a_meta_model(tmp_path: Path) -> None:
    pytest.importorskip("numpy", reason="safetensors needs numpy to write torch tensors")
    safetensors_torch = pytest.importorskip(
        "safetensors.torch", reason="the safetensors package is not installed"
    )
    source = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    safetensors_torch.save_file(source.state_dict(), str(tmp_path / "m.safetensors"))
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    load_into(model, lazy_load(tmp_path / "m.safetensors"))
    assert all(
        torch.equal(a, b) for a, b in zip(model.parameters(), source.parameters(), strict=True)
    )
