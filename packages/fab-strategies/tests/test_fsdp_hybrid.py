"""The FSDPStrategy that LLM training libraries built on Fabric construct, for real on 2 CPU
processes: blocks wrapped and checkpointed, HYBRID_SHARD, full-file checkpoints."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from fab.core import Fabric
from fab.strategies.fsdp import FSDPStrategy

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(300)]

STEPS = 5


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(8)
        self.linear = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.linear(self.norm(x))


class GPT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, 8)
        self.blocks = nn.ModuleList([Block(), Block()])
        self.head = nn.Linear(8, 11)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def _batch(step: int) -> torch.Tensor:
    return torch.randint(0, 11, (4, 6), generator=torch.Generator().manual_seed(step))


def _train(fabric: Any, model: Any, optimizer: Any) -> None:
    for step in range(STEPS):
        idx = _batch(step)
        if fabric is not None:
            idx = idx[fabric.global_rank * 2 : (fabric.global_rank + 1) * 2]
        logits = model(idx[:, :-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, 11), idx[:, 1:].reshape(-1))
        optimizer.zero_grad()
        fabric.backward(loss) if fabric is not None else loss.backward()
        optimizer.step()


def _run(fabric: Fabric, folder: str) -> dict[str, Any]:
    from torch.distributed.tensor import DTensor

    torch.manual_seed(0)
    with fabric.init_module(empty_init=True):
        module = GPT()
    model, optimizer = fabric.setup(module, torch.optim.AdamW(module.parameters(), lr=0.01))
    _train(fabric, model, optimizer)
    fabric.save(Path(folder, "lit.pth"), {"model": model, "optimizer": optimizer, "iter": STEPS})
    weight = model.blocks[0].linear.weight
    return {
        "mesh": fabric.strategy.device_mesh.mesh_dim_names,  # type: ignore[attr-defined]
        "placements": [str(p) for p in weight.placements] if isinstance(weight, DTensor) else [],
        "weights": {k: v.full_tensor() for k, v in model.state_dict().items()},
    }


def test_hybrid_shard_with_wrapped_and_checkpointed_blocks_trains_and_saves_a_full_file(
    tmp_path: Path,
) -> None:
    strategy = FSDPStrategy(
        auto_wrap_policy={Block},
        state_dict_type="full",
        sharding_strategy="HYBRID_SHARD",
        activation_checkpointing_policy={Block},
        start_method="spawn",
    )
    fabric = Fabric(accelerator="cpu", devices=2, strategy=strategy)
    result = fabric.launch(_run, str(tmp_path))
    assert result["mesh"] == ("data_parallel_replicate", "data_parallel_shard")
    assert result["placements"] == ["R", "S(0)"]  # replicated over nodes, sharded within

    torch.manual_seed(0)
    reference = GPT()
    _train(None, reference, torch.optim.AdamW(reference.parameters(), lr=0.01))
    expected = reference.state_dict()
    assert max((result["weights"][k] - expected[k]).abs().max().item() for k in expected) < 1e-5

    checkpoint = torch.load(tmp_path / "lit.pth", weights_only=True)
    assert sorted(checkpoint) == ["iter", "model", "optimizer"]
    assert sorted(checkpoint["model"]) == sorted(expected)
    assert not multiprocessing.active_children()
