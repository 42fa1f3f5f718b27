"""The same surgery script on one process and on two processes under DDP, FSDP and tensor parallel
(real gloo, spawned) gives the same captures, edited outputs, input gradients and probe gradients,
with an uneven last batch (4 + 3 rows under data parallel) and no shape hints. One process group
per strategy for the whole module: each two-process run happens once, in a module-scoped fixture.

Every function given to ``launch`` is at module level (spawn pickles it)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from fab.core import Fabric
from fab.wrappers.surgery import FlexModel, HookContext, HookFunction, LayoutError, Surgery

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(180)]

WIDTH = 8
ROWS = 7  # split 4 + 3 over two processes: the last slice is shorter
#: Split by output columns (``ColwiseParallel``) under tensor parallel.
SHARDED_WEIGHT = "layers.0.mlp.0.weight"


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.Tanh())

    def forward(self, x: Tensor, *, gain: float = 1.0) -> Tensor:
        return x + self.mlp(x) * gain


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Block() for _ in range(3))
        self.head = nn.Linear(WIDTH, 3)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x, gain=0.5)
        return self.head(x)


def _ablate(t: Tensor, ctx: HookContext) -> Tensor:
    t = t.clone()
    t[:, :2] = 0  # ablate two units
    return t


def _add_probe(t: Tensor, ctx: HookContext) -> Tensor:
    ctx.save_ctx.calls = getattr(ctx.save_ctx, "calls", 0) + 1
    result: Tensor = t + ctx.probes["probe"](t)
    return result


def parallelize_blocks(model: Net, mesh: Any) -> Net:
    """Tensor parallel on every block's MLP: the Linear split by output columns, its output kept a
    DTensor through the Tanh, made whole and local where the MLP returns."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleOutput,
        parallelize_module,
    )

    tp_mesh = mesh["tensor_parallel"]
    for block in model.layers:
        parallelize_module(
            block,
            tp_mesh,
            {
                "mlp.0": ColwiseParallel(use_local_output=False),
                "mlp": PrepareModuleOutput(
                    output_layouts=Shard(-1), desired_output_layouts=Replicate()
                ),
            },
        )
    return model


def parallelize_and_shard(model: Net, mesh: Any) -> Net:
    """FSDP x TP: tensor parallel as above, then every block and the root sharded over the
    data-parallel dimension."""
    from torch.distributed.fsdp import fully_shard

    parallelize_blocks(model, mesh)
    for block in model.layers:
        fully_shard(block, mesh=mesh["data_parallel"])
    fully_shard(model, mesh=mesh["data_parallel"])
    return model


def _data_parallel(fabric: Fabric) -> tuple[int, int]:
    """How many different batches the step sees, and which one is this process's."""
    kwargs = fabric.strategy.distributed_sampler_kwargs or {"num_replicas": 1, "rank": 0}
    return int(kwargs["num_replicas"]), int(kwargs["rank"])


def surgery_script(fabric: Fabric, param_grad_hook: bool = True) -> dict[str, Any]:
    """What a researcher runs: capture, ablate, a probe trained beside a frozen model.

    ``param_grad_hook``: also capture with hooks the gradients of the probe and of one weight of
    the model, the first block's Linear (split by output columns under tensor parallel), which is
    then not frozen; not under FSDP, whose sharded parameters never see their gradient in a hook
    (``read_gradient`` works everywhere)."""
    torch.manual_seed(0)
    model = Net()
    model.requires_grad_(False)
    if param_grad_hook:
        model.get_parameter(SHARDED_WEIGHT).requires_grad_(True)
    surgery = Surgery(model)
    surgery.add_probe("probe", nn.Linear(WIDTH, WIDTH))
    surgery.capture("layers.*.mlp")
    surgery.capture("layers.0", "input", part="x")
    surgery.edit("layers.1", _add_probe)
    surgery.edit("layers.2.mlp", _ablate, capture=True, groups="ablation")
    surgery.capture("head")  # the edited output
    surgery.capture("layers.1", "grad_input")
    if param_grad_hook:
        surgery.capture("surgery_probes.probe.weight", "param_grad")
        surgery.capture(SHARDED_WEIGHT, "param_grad")
    fabric_model = fabric.setup(model)
    surgery.bind(fabric_model)
    param_grad_error = ""
    if fabric.world_size > 1:  # a hook added after set-up: taken, or refused under FSDP
        late = Surgery(fabric_model)
        try:
            late.capture(SHARDED_WEIGHT, "param_grad")
        except LayoutError as error:
            param_grad_error = str(error)
        late.restore()

    x_all = torch.randn(ROWS, WIDTH, generator=torch.Generator().manual_seed(3))
    # the processes of one tensor-parallel group take the same slice
    replicas, replica = _data_parallel(fabric)
    tensor_parallel = fabric.world_size // replicas
    x = torch.tensor_split(x_all, replicas)[replica].clone().requires_grad_()
    out = fabric_model(x)
    # A sum over the batch: each row's gradient is the same whichever process holds the row.
    fabric.backward(out.sum())
    assert x.grad is not None
    first = {key: surgery.captures.all(key) for key in surgery.captures}
    held = fabric.all_gather(torch.tensor([len(surgery.captures)])).flatten().tolist()
    input_grad = surgery.layout.gather("x", x.grad, 0)
    # DDP averages parameter gradients over the replicas; times their number it is the sum.
    probe_grad = surgery.read_gradient("surgery_probes.probe.weight") * replicas

    with torch.no_grad():  # a second forward without the ablation group
        surgery.captures.clear()
        surgery.forward(x, groups="ablation", complement=True)
        without_ablation = surgery.captures.get("head")

    plain_error = ""
    if fabric.world_size > 1:
        other = Surgery(nn.Linear(2, 2))
        other.capture("")
        try:
            other.module(torch.ones(1, 2))
        except LayoutError as error:
            plain_error = str(error)

    layout_errors: list[str] = []
    if tensor_parallel > 1:  # a plain tensor that differs inside a tensor-parallel group
        try:
            surgery.layout.gather("a local shard", torch.full((1, 2), float(fabric.global_rank)), 0)
        except LayoutError as error:
            layout_errors.append(str(error))
    elif fabric.world_size > 1:
        rank = fabric.global_rank
        try:  # the processes disagree outside the batch dimension
            surgery.layout.gather("disagreeing", torch.zeros(1, 2 + rank), 0)
        except LayoutError as error:
            layout_errors.append(str(error))
        try:  # tensor parallel over processes that only split the batch
            FlexModel(fabric_model, {}, tensor_parallel_size=2)
        except LayoutError as error:
            layout_errors.append(str(error))
    # the batch along another dimension, in uneven slices
    columns = torch.tensor_split(torch.arange(14.0).reshape(2, ROWS), replicas, dim=1)
    along_dim_1 = surgery.layout.gather("columns", columns[replica], 1)

    calls = surgery.save_ctx.calls  # two forwards ran the probe edit
    # the FlexModel facade on the same set-up model: only the import differs from FlexModel's
    output_ptr: dict[str, list[Tensor]] = {}
    flex = FlexModel(
        fabric_model,
        output_ptr,
        data_parallel_size=replicas,
        tensor_parallel_size=tensor_parallel,
    )
    flex.register_forward_hook(HookFunction("layers.0.mlp", expected_shape=None))
    with torch.no_grad():
        flex(x)
    flex.restore()

    return {
        "flex": output_ptr.get("layers.0.mlp"),
        "captures": first,
        "input_grad": input_grad,
        "probe_grad": probe_grad,
        "without_ablation": without_ablation,
        "save_ctx_calls": calls,
        "held_per_rank": held,
        "weight": surgery.read_parameter("layers.0.mlp.0.weight"),
        "plain_error": plain_error,
        "param_grad_error": param_grad_error,
        "layout_errors": layout_errors,
        "along_dim_1": along_dim_1,
        "replicas": replicas,
        "world_size": fabric.world_size,
    }


def _strategy(name: str) -> Any:
    if name == "fsdp":
        from fab.strategies.fsdp import FSDPStrategy

        return FSDPStrategy(start_method="spawn")
    from fab.strategies.model_parallel import ModelParallelStrategy

    if name == "tp":
        return ModelParallelStrategy(
            parallelize_blocks, data_parallel_size=1, tensor_parallel_size=2, start_method="spawn"
        )
    if name == "fsdp_tp":
        return ModelParallelStrategy(
            parallelize_and_shard,
            data_parallel_size=2,
            tensor_parallel_size=2,
            start_method="spawn",
        )
    return "ddp_spawn"


#: Whether the strategy's parameters run tensor hooks (FSDP's sharded parameters never see their
#: gradient in one; ``read_gradient`` works everywhere).
_PARAM_HOOKS = {"ddp": True, "fsdp": False, "tp": True, "fsdp_tp": False}


@pytest.fixture(scope="module", params=["ddp", "fsdp", "tp", "fsdp_tp"])
def two_processes(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The script on two processes (four for FSDP x TP, a 2 x 2 mesh), once per strategy for the
    whole module."""
    devices = 4 if request.param == "fsdp_tp" else 2
    fabric = Fabric(accelerator="cpu", devices=devices, strategy=_strategy(request.param))
    result: dict[str, Any] = fabric.launch(surgery_script, _PARAM_HOOKS[request.param])
    result["strategy"] = request.param
    return result


def _reduced_over_processes(key: str, strategy: str) -> bool:
    """Whether a capture's numbers come out of a sum across processes, whose order differs from
    one process's (tensor parallel all-reduces input gradients over its column shards)."""
    return key.endswith(":param_grad") or (strategy.endswith("tp") and ":grad" in key)


@pytest.fixture
def one_process(two_processes: dict[str, Any]) -> dict[str, Any]:
    """The same script on one process, with the same hooks."""
    with_hook = _PARAM_HOOKS[two_processes["strategy"]]
    result: dict[str, Any] = Fabric(accelerator="cpu", devices=1).launch(surgery_script, with_hook)
    return result


def test_captures_are_gathered_whole_and_bit_identical(
    one_process: dict[str, Any], two_processes: dict[str, Any]
) -> None:
    single, ddp = one_process["captures"], two_processes["captures"]
    strategy, replicas = two_processes["strategy"], two_processes["replicas"]
    assert sorted(ddp) == sorted(single)
    assert "layers.2.mlp" in ddp
    assert "layers.1:grad_input" in ddp
    for key, tensors in single.items():
        assert len(ddp[key]) == len(tensors), key
        for a, b in zip(tensors, ddp[key], strict=True):
            if key.endswith(":param_grad"):  # averaged over the replicas, as DDP does
                torch.testing.assert_close(b * replicas, a, rtol=0, atol=1e-6)
                continue
            if _reduced_over_processes(key, strategy):
                torch.testing.assert_close(b, a, rtol=0, atol=1e-6)
                continue
            assert a.shape == b.shape, key
            assert b.shape[0] == ROWS or key.endswith(":param_grad"), key
            assert torch.equal(a, b), key


def test_edited_outputs_and_input_gradients_match(
    one_process: dict[str, Any], two_processes: dict[str, Any]
) -> None:
    single_head, ddp_head = one_process["captures"]["head"], two_processes["captures"]["head"]
    assert torch.equal(single_head[0], ddp_head[0])
    torch.testing.assert_close(
        two_processes["without_ablation"], one_process["without_ablation"], rtol=0, atol=1e-6
    )
    assert not torch.equal(two_processes["without_ablation"], ddp_head[0])
    assert two_processes["input_grad"].shape == (ROWS, WIDTH)
    torch.testing.assert_close(
        two_processes["input_grad"], one_process["input_grad"], rtol=0, atol=1e-6
    )


def test_the_flexmodel_facade_gathers_the_same_without_shapes(
    one_process: dict[str, Any], two_processes: dict[str, Any]
) -> None:
    (single,), (parallel,) = one_process["flex"], two_processes["flex"]
    assert parallel.shape == (ROWS, WIDTH)
    assert torch.equal(parallel, single)


def test_probe_gradients_match_within_reduction_order(
    one_process: dict[str, Any], two_processes: dict[str, Any]
) -> None:
    torch.testing.assert_close(
        two_processes["probe_grad"], one_process["probe_grad"], rtol=0, atol=1e-6
    )


def test_a_param_grad_hook_on_a_sharded_weight_captures_the_whole_gradient(
    one_process: dict[str, Any], two_processes: dict[str, Any]
) -> None:
    if not _PARAM_HOOKS[two_processes["strategy"]]:
        pytest.skip("FSDP's sharded parameters run no gradient hook (bind refuses one)")
    key = f"{SHARDED_WEIGHT}:param_grad"
    (single,) = one_process["captures"][key]
    (parallel,) = two_processes["captures"][key]
    assert type(parallel) is Tensor  # a plain, whole tensor, not a DTensor or a local shard
    assert parallel.shape == single.shape == (WIDTH, WIDTH)
    # DDP averages over its replicas; tensor parallel (one replica) gives the sum itself
    torch.testing.assert_close(parallel * two_processes["replicas"], single, rtol=0, atol=1e-6)


def test_a_param_grad_hook_is_refused_only_where_fsdp_shards_the_parameter(
    two_processes: dict[str, Any],
) -> None:
    message = two_processes["param_grad_error"]
    if _PARAM_HOOKS[two_processes["strategy"]]:  # DDP, tensor parallel: the hook runs
        assert message == ""
        return
    assert f"parameter {SHARDED_WEIGHT!r} is sharded by FSDP" in message
    assert "surgery.read_gradient(name)" in message


def test_only_rank_zero_holds_captures_and_save_ctx_is_shared(
    one_process: dict[str, Any], two_processes: dict[str, Any]
) -> None:
    assert two_processes["held_per_rank"][0] > 0
    assert two_processes["held_per_rank"][1:] == [0] * (two_processes["world_size"] - 1)
    assert two_processes["save_ctx_calls"] == one_process["save_ctx_calls"] == 2
    assert torch.equal(two_processes["weight"], one_process["weight"])


def test_a_plain_module_under_many_processes_says_how_to_give_the_layout(
    two_processes: dict[str, Any],
) -> None:
    message = two_processes["plain_error"]
    assert f"{two_processes['world_size']} processes are running" in message
    assert "surgery.bind(model)" in message


def test_gathers_refuse_what_cannot_be_split_and_take_any_batch_dimension(
    two_processes: dict[str, Any],
) -> None:
    assert torch.equal(two_processes["along_dim_1"], torch.arange(14.0).reshape(2, ROWS))
    if two_processes["strategy"].endswith("tp"):
        (local_shard,) = two_processes["layout_errors"]
        assert "'a local shard'" in local_shard
        assert "differs between the 2 processes of a tensor-parallel group" in local_shard
        return
    disagreeing, tensor_parallel = two_processes["layout_errors"]
    assert "'disagreeing'" in disagreeing
    assert "[(1, 2), (1, 3)]" in disagreeing
    assert "tensor_parallel_size=2" in tensor_parallel
    assert torch.equal(two_processes["along_dim_1"], torch.arange(14.0).reshape(2, ROWS))


def test_fabric_save_checkpoints_the_probes_with_the_model(tmp_path: Any) -> None:
    fabric = Fabric(accelerator="cpu", devices=1)
    model = Net()
    surgery = Surgery(model)
    probe = surgery.add_probe("probe", nn.Linear(WIDTH, WIDTH))
    fabric_model = fabric.setup(model)
    fabric.save(tmp_path / "ckpt.pt", {"model": fabric_model})
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)["model"]
    assert torch.equal(state["surgery_probes.probe.weight"], probe.weight.detach())
    restored = surgery.restore()
    assert "surgery_probes.probe.weight" not in restored.state_dict()
