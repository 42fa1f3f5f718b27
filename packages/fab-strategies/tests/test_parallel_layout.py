"""Every parallel strategy holds a layout (DESIGN §4): DDP is one data-parallel dimension, and
data sharding asks the layout which processes share a batch instead of using the world size."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fab.core import Fabric
from fab.strategies.layout import Layout
from fab.strategies.model_parallel import ModelParallelStrategy


def _keep(model: nn.Module, mesh: object) -> nn.Module:
    return model


def test_ddp_is_the_one_dimension_layout_and_its_sampler_numbers_are_unchanged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # process 1 of 2 as torchrun starts it
    for name, value in {
        "WORLD_SIZE": "2",
        "RANK": "1",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "2",
        "GROUP_RANK": "0",
        "TORCHELASTIC_RUN_ID": "test",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29999",
    }.items():
        monkeypatch.setenv(name, value)
    strategy = Fabric(accelerator="cpu", devices=2, strategy="ddp").strategy
    assert strategy.layout == Layout((("data_parallel", 2),))  # type: ignore[attr-defined]
    assert strategy.distributed_sampler_kwargs == {"num_replicas": 2, "rank": 1}


def test_the_processes_of_a_tensor_parallel_group_share_a_batch() -> None:
    strategy = ModelParallelStrategy(_keep, data_parallel_size=1, tensor_parallel_size=2)
    Fabric(accelerator="cpu", devices=2, strategy=strategy)
    assert strategy.layout == Layout((("data_parallel", 1), ("tensor_parallel", 2)))
    assert strategy.distributed_sampler_kwargs == {"num_replicas": 1, "rank": 0}
    loader = torch.utils.data.DataLoader(list(range(8)), batch_size=2)
    assert len(strategy.process_dataloader(loader)) == 4  # the whole data: nobody else takes it
