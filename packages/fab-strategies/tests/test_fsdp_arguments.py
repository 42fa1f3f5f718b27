"""FSDPStrategy's and ModelParallelStrategy's arguments, checked without starting processes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fab.core import Fabric
from fab.strategies.fsdp import FSDPStrategy
from fab.strategies.layout import Layout
from fab.strategies.model_parallel import ModelParallelStrategy


def test_strategy_names_resolve_to_fsdp_and_model_parallel() -> None:
    fsdp = Fabric(accelerator="cpu", devices=2, strategy="fsdp").strategy
    assert isinstance(fsdp, FSDPStrategy)
    assert fsdp.state_dict_type == "sharded"
    offload = Fabric(accelerator="cpu", devices=2, strategy="fsdp_cpu_offload").strategy
    assert isinstance(offload, FSDPStrategy)
    assert offload.cpu_offload is True


@pytest.mark.parametrize(
    ("strategy", "layout"),
    [
        ("FULL_SHARD", (("data_parallel", 4),)),
        ("SHARD_GRAD_OP", (("data_parallel", 4),)),
        ("NO_SHARD", (("data_parallel_replicate", 4), ("data_parallel_shard", 1))),
        ("HYBRID_SHARD", (("data_parallel_replicate", 1), ("data_parallel_shard", 4))),
    ],
)
def test_sharding_strategies_map_onto_a_layout(strategy: str, layout: tuple[object, ...]) -> None:
    fabric = Fabric(accelerator="cpu", devices=4, strategy=FSDPStrategy(sharding_strategy=strategy))
    assert fabric.strategy.layout.dimensions == layout  # type: ignore[attr-defined]


def test_hybrid_shard_takes_its_split_from_device_mesh() -> None:
    strategy = FSDPStrategy(sharding_strategy="HYBRID_SHARD", device_mesh=(2, 2))
    Fabric(accelerator="cpu", devices=4, strategy=strategy)
    assert strategy.layout.shape == (2, 2)


def test_torch_sharding_strategy_members_are_accepted() -> None:
    from torch.distributed.fsdp import ShardingStrategy

    assert FSDPStrategy(sharding_strategy=ShardingStrategy.SHARD_GRAD_OP).sharding_strategy == (
        "SHARD_GRAD_OP"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sharding_strategy": "ZERO3"}, "accepted: FULL_SHARD"),
        ({"state_dict_type": "both"}, "accepted: 'full'"),
        ({"auto_wrap_policy": {nn.Linear, "Block"}}, "set of torch.nn.Module classes"),
        ({"device_mesh": (2, 2)}, "HYBRID_SHARD"),
        ({"device_mesh": (2,), "sharding_strategy": "HYBRID_SHARD"}, "two positive ints"),
        (
            {"activation_checkpointing": nn.Linear, "activation_checkpointing_policy": {nn.Linear}},
            "not both",
        ),
    ],
)
def test_bad_arguments_say_what_is_accepted(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        FSDPStrategy(**kwargs)  # type: ignore[arg-type]


def test_model_parallel_auto_sizes_and_errors() -> None:
    def identity(model: nn.Module, mesh: object) -> nn.Module:
        return model

    strategy = ModelParallelStrategy(identity)
    Fabric(accelerator="cpu", devices=4, strategy=strategy)
    assert strategy.layout.dimensions == (("data_parallel", 1), ("tensor_parallel", 4))
    strategy = ModelParallelStrategy(identity, data_parallel_size=2)
    Fabric(accelerator="cpu", devices=4, strategy=strategy)
    assert strategy.layout.shape == (2, 2)
    with pytest.raises(ValueError, match="positive int or 'auto'"):
        ModelParallelStrategy(identity, tensor_parallel_size=0)
    with pytest.raises(TypeError, match="parallelize_fn"):
        ModelParallelStrategy("not a function")  # type: ignore[arg-type]


def test_a_layout_says_which_ranks_share_a_batch() -> None:
    layout = Layout((("data_parallel", 2), ("tensor_parallel", 2)))
    assert layout.data_parallel_size == 2
    assert [layout.data_parallel_rank(r) for r in range(4)] == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="needs 4 processes, but the run has 2"):
        layout.check_world_size(2)
    with pytest.raises(ValueError, match="positive int"):
        Layout((("data_parallel", 0),))


def test_mixed_precision_comes_from_the_precision_plugin() -> None:
    from torch.distributed.fsdp import MixedPrecisionPolicy

    from fab.core.precision import Precision
    from fab.strategies.fsdp import mixed_precision_policy

    class BF16Mixed(Precision):  # what fab-precision registers as "bf16-mixed"
        precision = "bf16-mixed"

    policy = mixed_precision_policy(BF16Mixed())
    assert policy == MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    assert mixed_precision_policy(Precision()) is None


def test_the_policy_is_settled_when_the_strategy_connects_its_precision() -> None:
    from torch.distributed.fsdp import MixedPrecisionPolicy

    from fab.core.precision import Precision, PrecisionContext

    class BF16Mixed(Precision):
        precision = "bf16-mixed"

        def __init__(self) -> None:
            self.contexts: list[PrecisionContext] = []

        def connect(self, context: PrecisionContext) -> None:
            self.contexts.append(context)

    precision = BF16Mixed()
    strategy = FSDPStrategy()
    Fabric(accelerator="cpu", devices=2, strategy=strategy, precision=precision)
    assert precision.contexts == []
    assert strategy.mp_policy == MixedPrecisionPolicy(
        param_dtype=torch.bfloat16, reduce_dtype=torch.float32
    )
    assert precision.contexts == [PrecisionContext(device=torch.device("cpu"))]
    assert strategy.mp_policy is not None  # asked again: connected once
    assert len(precision.contexts) == 1
    # a third party's precision of another name keeps the parameters' dtype; one given wins
    other = FSDPStrategy()
    Fabric(accelerator="cpu", devices=2, strategy=other, precision=Precision())
    assert other.mp_policy is None
    given = MixedPrecisionPolicy(param_dtype=torch.float16)
    chosen = FSDPStrategy(mixed_precision=given)
    Fabric(accelerator="cpu", devices=2, strategy=chosen, precision=BF16Mixed())
    assert chosen.mp_policy is given


def test_a_group_name_outside_the_layout_says_which_names_are_accepted() -> None:
    strategy = ModelParallelStrategy(
        lambda model, mesh: model, data_parallel_size=1, tensor_parallel_size=2
    )
    Fabric(accelerator="cpu", devices=2, strategy=strategy)
    with pytest.raises(ValueError, match="'pipeline' is not a dimension") as caught:
        strategy.all_reduce(torch.tensor(1.0), group="pipeline")
    assert "'data_parallel', 'tensor_parallel'" in str(caught.value)
    # one process (not launched): a known name reduces nothing, as without a group
    assert strategy.all_reduce(torch.tensor(3.0), group="tensor_parallel").item() == 3.0


def test_data_parallel_names_every_process_that_takes_its_own_batch() -> None:
    hybrid = FSDPStrategy(sharding_strategy="HYBRID_SHARD", device_mesh=(2, 2))
    Fabric(accelerator="cpu", devices=4, strategy=hybrid)
    assert hybrid.layout.dimensions_of("data_parallel") == (0, 1)  # the whole mesh: the world
    assert hybrid.layout.dimensions_of("data_parallel_shard") == (1,)
    two_d = Layout((("data_parallel", 2), ("tensor_parallel", 2)))
    assert two_d.dimensions_of("data_parallel") == (0,)
    assert two_d.dimensions_of("tensor_parallel") == (1,)
