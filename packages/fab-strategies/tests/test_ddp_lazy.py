"""Lazy modules and meta-device models under DDP, for real: two processes over gloo on the CPU.

A model with uninitialized lazy modules is refused by ``setup`` with an error that names them and
says what to do (torch's own error names none); after ``fab.lazy.infer_shapes`` it sets up and
trains. A model created on the meta device (``fab.lazy.meta_init``) is materialized and initialized
by ``setup`` before DistributedDataParallel wraps it, so every rank ends with rank 0's values.
Each rank seeds differently on purpose: equal parameters prove the broadcast, not the seed.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from fab.core import Fabric
from fab.lazy import LazyModuleError, infer_shapes, meta_init

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(120)]


@pytest.fixture(autouse=True)
def _no_orphans(no_orphan_processes: None) -> None:
    """Every test here checks that no process it started is left behind (conftest.py)."""


def _fabric() -> Fabric:
    return Fabric(accelerator="cpu", devices=2, strategy="ddp_spawn")


def _lazy_model() -> nn.Module:
    return nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.LazyBatchNorm1d(), nn.LazyLinear(2))


class _Rotary(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / (10000 ** (torch.arange(0, 8, 2) / 8)), False)


class _TiedLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(16, 8)
        self.rotary = _Rotary()
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 16, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.emb(tokens)) * self.rotary.inv_freq.repeat(2))


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _same_on_both_ranks(fabric: Fabric, model: nn.Module) -> bool:
    gathered = fabric.all_gather(_flat(model))
    return bool(torch.equal(gathered[0], gathered[1]))


# -- functions run in the spawned processes ------------------------------------------------------


def _lazy_refused_then_inferred(fabric: Fabric) -> dict[str, Any]:
    torch.manual_seed(fabric.global_rank)
    model = _lazy_model()
    out: dict[str, Any] = {}
    try:
        fabric.setup(model)
    except LazyModuleError as err:
        out["error"] = str(err)
    infer_shapes(model, torch.randn(4, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = fabric.setup(model, optimizer)
    out["same_after_setup"] = _same_on_both_ranks(fabric, model)
    before = _flat(model)
    fabric.backward(model(torch.randn(4, 3) + fabric.global_rank).sum())
    optimizer.step()
    out["changed"] = not torch.equal(before, _flat(model))
    out["same_after_step"] = _same_on_both_ranks(fabric, model)
    return out


def _meta_model_set_up(fabric: Fabric) -> dict[str, Any]:
    torch.manual_seed(fabric.global_rank)
    with fabric.init_module(), meta_init():  # DDP's empty_init allocates instead (not meta)
        model = _TiedLM()
    out: dict[str, Any] = {"meta": all(p.is_meta for p in model.parameters())}
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)  # built on the meta parameters
    model, optimizer = fabric.setup(model, optimizer)
    out["same_after_setup"] = _same_on_both_ranks(fabric, model)
    out["tied"] = model.module.head.weight is model.module.emb.weight
    out["inv_freq"] = model.module.rotary.inv_freq.clone()
    before = _flat(model)
    tokens = torch.randint(
        0, 16, (2, 4), generator=torch.Generator().manual_seed(fabric.global_rank)
    )
    fabric.backward(model(tokens).sum())
    optimizer.step()
    out["changed"] = not torch.equal(before, _flat(model))
    out["same_after_step"] = _same_on_both_ranks(fabric, model)
    return out


# -- tests ----------------------------------------------------------------------------------------


def test_a_lazy_model_is_refused_with_the_modules_named_then_trains_after_infer_shapes() -> None:
    out = _fabric().launch(_lazy_refused_then_inferred)
    assert "DistributedDataParallel" in out["error"]
    assert "0 (LazyLinear: weight, bias)" in out["error"]
    assert "2 (LazyBatchNorm1d: weight, bias, running_mean, running_var)" in out["error"]
    assert "fab.lazy.infer_shapes(model, *example_inputs)" in out["error"]
    assert out["same_after_setup"]
    assert out["changed"]
    assert out["same_after_step"]


def test_a_meta_initialized_model_ends_identical_on_both_ranks_and_trains() -> None:
    out = _fabric().launch(_meta_model_set_up)
    assert out["meta"]
    assert out["same_after_setup"]
    assert out["tied"]
    assert torch.allclose(out["inv_freq"], 1.0 / (10000 ** (torch.arange(0, 8, 2) / 8)))
    assert out["changed"]
    assert out["same_after_step"]
