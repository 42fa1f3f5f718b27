"""Fabric with deferred allocation and lazy modules on one device.

``init_module(empty_init=True)`` allocates parameters on the device without initializing them (as
Lightning does), so every ordinary way of loading copies into the model's own memory. A strategy
whose ``empty_init_on_meta`` is True (one that materializes after sharding) creates them on the
meta device instead, and ``setup`` materializes and initializes what no checkpoint filled. A lazy
model initializes on its first forward and is never saved half-made."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from fab.core import Fabric
from fab.core.strategies import SingleDeviceStrategy
from fab.lazy import LazyModuleError, MaterializeError, has_meta


class MetaInitStrategy(SingleDeviceStrategy):
    """A strategy that, like a sharding one, wants ``empty_init`` on the meta device."""

    @property
    def empty_init_on_meta(self) -> bool:
        return True


def meta_fabric() -> Fabric:
    return Fabric(accelerator="cpu", strategy=MetaInitStrategy())


class Rotary(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / (10000 ** (torch.arange(0, 8, 2) / 8)), False)


class TiedLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(16, 8)
        self.rotary = Rotary()
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 16, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.emb(tokens)) * self.rotary.inv_freq.repeat(2))


def step(model: nn.Module, optimizer: torch.optim.Optimizer, fabric: Fabric) -> None:
    fabric.backward(model(torch.randint(0, 16, (2, 4))).sum())
    optimizer.step()
    optimizer.zero_grad()


class Normed(nn.Module):
    """Parameters and buffers (BatchNorm's running statistics) that training changes."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.norm = nn.BatchNorm1d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.linear(x))


def _storages(model: nn.Module) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in model.state_dict().values()}


def test_empty_init_allocates_on_the_device_without_initializing() -> None:
    fabric = Fabric(accelerator="cpu")
    torch.manual_seed(0)
    rng = torch.random.get_rng_state()
    with fabric.init_module(empty_init=True):
        model = TiedLM()
    assert torch.equal(torch.random.get_rng_state(), rng)  # no initialization drew numbers
    assert not has_meta(model)
    assert {p.device for p in model.parameters()} == {fabric.device}
    assert model.head.weight is model.emb.weight
    assert model.rotary.inv_freq[1] == pytest.approx(0.1)  # computed buffers stay computed


def test_an_optimizer_created_before_load_state_dict_trains_the_loaded_model() -> None:
    fabric = Fabric(accelerator="cpu")
    source = nn.Linear(4, 1)
    with fabric.init_module(empty_init=True):
        model = nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    model.load_state_dict(source.state_dict())  # the user's own load, not fabric.load
    model, optimizer = fabric.setup(model, optimizer)
    fabric.backward(model(torch.ones(1, 4)).sum())  # gradient of the weight: all ones
    optimizer.step()
    torch.testing.assert_close(model.weight, source.weight - 1.0)
    torch.testing.assert_close(model.bias, source.bias - 1.0)


def test_models_loaded_from_one_state_dict_share_no_memory() -> None:
    """A reference model or a distillation teacher loaded from the student's state dict."""
    fabric = Fabric(accelerator="cpu")
    state_dict = Normed().state_dict()
    saved = {k: v.clone() for k, v in state_dict.items()}
    with fabric.init_module(empty_init=True):
        student, teacher = Normed(), Normed()
    student.load_state_dict(state_dict)
    teacher.load_state_dict(state_dict)
    mine = _storages(student)
    assert mine.isdisjoint(_storages(teacher))
    assert mine.isdisjoint({t.untyped_storage().data_ptr() for t in state_dict.values()})
    model, optimizer = fabric.setup(student, torch.optim.SGD(student.parameters(), lr=0.5))
    fabric.backward(model(torch.randn(8, 4)).pow(2).sum())  # train mode: running stats move
    optimizer.step()
    assert not torch.equal(student.norm.running_mean, saved["norm.running_mean"])
    assert not torch.equal(student.linear.weight, saved["linear.weight"])
    for name, value in saved.items():
        assert torch.equal(teacher.state_dict()[name], value), name
        assert torch.equal(state_dict[name], value), name


def test_empty_init_on_meta_creates_parameters_on_meta_and_buffers_real() -> None:
    fabric = meta_fabric()
    with fabric.init_module(empty_init=True):
        model = TiedLM()
    assert all(p.is_meta for p in model.parameters())
    assert model.rotary.inv_freq.device == fabric.device
    assert model.rotary.inv_freq[1] == pytest.approx(0.1)


def test_setup_materializes_and_initializes_keeping_ties_and_the_optimizer() -> None:
    fabric = meta_fabric()
    with fabric.init_module(empty_init=True):
        model = TiedLM()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)  # created on the meta parameters
    model, optimizer = fabric.setup(model, optimizer)
    assert not has_meta(model)
    assert model.head.weight is model.emb.weight
    assert torch.equal(model.norm.weight, torch.ones(8))
    assert model.rotary.inv_freq[1] == pytest.approx(0.1)
    before = model.emb.weight.detach().clone()
    step(model, optimizer, fabric)
    assert not torch.equal(model.emb.weight, before)


def test_setup_module_materializes_too() -> None:
    fabric = meta_fabric()
    with fabric.init_module(empty_init=True):
        model = nn.Linear(4, 4)
    model = fabric.setup_module(model)
    assert not has_meta(model)
    assert model.weight.abs().max() > 0


def test_setup_without_move_to_device_leaves_a_meta_model_on_meta() -> None:
    fabric = meta_fabric()
    with fabric.init_module(empty_init=True):
        model = nn.Linear(4, 4)
    assert fabric.setup(model, move_to_device=False).weight.is_meta


def test_materialize_keeps_the_models_dtype() -> None:
    fabric = meta_fabric()
    with fabric.init_module(empty_init=True):
        model = TiedLM().to(torch.bfloat16)
    model = fabric.setup(model)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_a_checkpoint_loaded_before_setup_is_kept(tmp_path: Path) -> None:
    fabric = Fabric(accelerator="cpu")
    source = TiedLM()
    fabric.save(tmp_path / "ckpt.pt", {"model": source})
    with fabric.init_module(empty_init=True):
        model = TiedLM()
    fabric.load(tmp_path / "ckpt.pt", {"model": model})
    assert not has_meta(model)
    model = fabric.setup(model)  # nothing left on meta: nothing to initialize
    for name, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    assert model.head.weight is model.emb.weight


def test_a_checkpoint_loaded_after_setup_overwrites_the_initialization(tmp_path: Path) -> None:
    fabric = Fabric(accelerator="cpu")
    source = TiedLM()
    fabric.save(tmp_path / "ckpt.pt", {"model": source})
    with fabric.init_module(empty_init=True):
        model = TiedLM()
    model = fabric.setup(model)
    fabric.load(tmp_path / "ckpt.pt", {"model": model})
    for name, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name


def test_a_lazy_model_just_works_on_one_device() -> None:
    fabric = Fabric(accelerator="cpu")
    model = nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.LazyLinear(1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = fabric.setup(model, optimizer)
    loss = model(torch.randn(4, 3)).sum()  # initializes on the first forward
    fabric.backward(loss)
    optimizer.step()
    assert model.module[0].weight.shape == (8, 3)


def test_a_lazy_model_takes_a_checkpoints_values_through_fabric_load(tmp_path: Path) -> None:
    fabric = Fabric(accelerator="cpu")
    source = nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.LazyLinear(1))
    source(torch.randn(2, 3))
    fabric.save(tmp_path / "ckpt.pt", {"model": source})
    assert torch.load(tmp_path / "ckpt.pt", weights_only=True)["model"].keys()
    model = nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.LazyLinear(1))
    fabric.load(tmp_path / "ckpt.pt", {"model": model})
    for name, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
        assert model.state_dict()[name].dtype == value.dtype


def test_saving_a_model_with_uninitialized_lazy_modules_is_refused(tmp_path: Path) -> None:
    fabric = Fabric(accelerator="cpu")
    model = nn.Sequential(nn.Linear(3, 3), nn.LazyLinear(2))
    with pytest.raises(LazyModuleError, match=r"saving 'model'.*1 \(LazyLinear: weight, bias\)"):
        fabric.save(tmp_path / "ckpt.pt", {"model": model})
    assert not (tmp_path / "ckpt.pt").exists()


def test_setup_names_what_it_cannot_initialize_and_how_to_avoid_it(tmp_path: Path) -> None:
    class Gain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gain = nn.Parameter(torch.ones(4))

    fabric = meta_fabric()
    with fabric.init_module(empty_init=True):
        model = nn.Sequential(nn.Linear(4, 4), Gain())
    with pytest.raises(MaterializeError, match=r"1 \(Gain: gain\).*load the checkpoint before"):
        fabric.setup(model)
    fabric.save(tmp_path / "ckpt.pt", {"model": nn.Sequential(nn.Linear(4, 4), Gain())})
    with fabric.init_module(empty_init=True):
        model = nn.Sequential(nn.Linear(4, 4), Gain())
    fabric.load(tmp_path / "ckpt.pt", {"model": model})
    model = fabric.setup(model)  # loaded first: nothing to initialize
    assert torch.equal(model.module[1].gain, torch.ones(4))
