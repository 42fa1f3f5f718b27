"""DDP for real: two processes over gloo on the CPU, started by ``ddp_spawn``.

Every function given to ``launch`` is at module level (spawn pickles it). Each test is bounded
by a timeout and checks that no child process is left behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

from fab.core import Fabric, seed_everything
from fab.strategies import DDPStrategy, FabEnvironment, MultiProcessingLauncher
from fab.strategies.launchers import LaunchError, SubprocessScriptLauncher
from fab.strategies.launchers.subprocess_script import rerun_command

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(120)]


@pytest.fixture(autouse=True)
def _no_orphans(no_orphan_processes: None) -> None:
    """Every test here checks that no process it started is left behind (conftest.py)."""


def _fabric() -> Fabric:
    return Fabric(accelerator="cpu", devices=2, strategy="ddp_spawn")


class _NotesTeardown(DDPStrategy):
    """A user's strategy whose ``teardown`` notes, in ``folder``, whether the process group was
    up when it was called and whether it is after the base's teardown."""

    def __init__(self, folder: Path, start_method: Any = "spawn") -> None:
        super().__init__(start_method=start_method)
        self.folder = folder

    def teardown(self) -> None:
        was_up = dist.is_initialized()
        super().teardown()
        (self.folder / str(self.global_rank)).write_text(f"{was_up} {dist.is_initialized()}")


# -- functions run in the spawned processes ------------------------------------------------------


def _ranks(fabric: Fabric, offset: int) -> tuple[int, int, int, int]:
    return (fabric.global_rank + offset, fabric.local_rank, fabric.world_size, os.getpid())


def _collectives(fabric: Fabric) -> dict[str, Any]:
    rank = fabric.global_rank
    out: dict[str, Any] = {}
    out["gather"] = fabric.all_gather(torch.tensor([rank, 10 + rank]))
    gathered = fabric.all_gather({"a": torch.tensor(float(rank)), "b": [torch.ones(2) * rank]})
    out["gather_dict_a"] = gathered["a"]
    out["gather_dict_b"] = gathered["b"][0]
    for op in ("mean", "sum", "max", "min"):
        tensor = torch.tensor([float(rank + 1), 5.0 - rank])
        result = fabric.all_reduce(tensor, reduce_op=op)
        out[op] = (result.clone(), result is tensor, tensor.clone())
    out["broadcast"] = fabric.broadcast({"rank": rank, "items": [rank] * 3}, src=1)
    # a layout dimension by name: under DDP "data_parallel" is every process
    out["dp_sum"] = fabric.all_reduce(
        torch.tensor([rank + 1]), group="data_parallel", reduce_op="sum"
    )
    out["dp_gather"] = fabric.all_gather(torch.tensor(rank), group="data_parallel")
    try:
        fabric.all_reduce(torch.ones(1), group="tensor_parallel")
    except ValueError as error:
        out["unknown_group"] = str(error)
    fabric.barrier("test")
    out["all_true"] = fabric.strategy.reduce_boolean_decision(rank == 0, all=True)
    out["any_true"] = fabric.strategy.reduce_boolean_decision(rank == 0, all=False)
    out["both_true"] = fabric.strategy.reduce_boolean_decision(True, all=True)
    # all_gather with sync_grads: the gradient flows back to this rank's input
    x = torch.tensor([float(rank + 1)], requires_grad=True)
    fabric.all_gather(x, sync_grads=True).sum().backward()
    assert x.grad is not None
    out["grad"] = x.grad.clone()
    # every rank checks the others' view too
    out["all_gather_ok"] = bool(
        fabric.strategy.reduce_boolean_decision(bool(out["gather"][1, 1] == 11))
    )
    return out


def _sampler(fabric: Fabric, shuffle: bool) -> dict[str, Any]:
    dataset = TensorDataset(torch.arange(20))
    loader = DataLoader(dataset, batch_size=3, shuffle=shuffle, drop_last=False)
    loader = fabric.setup_dataloaders(loader)
    mine = torch.cat([batch[0] for batch in loader])
    everyone = fabric.all_gather(mine)
    inner = loader.dataloader
    plain = fabric.setup_dataloaders(
        DataLoader(dataset, batch_size=3), use_distributed_sampler=False
    )
    return {
        "everyone": everyone,
        "batch_size": inner.batch_size,
        "plain": torch.cat([batch[0] for batch in plain]),
    }


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def _data(steps: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(steps, batch, 4, generator=generator)
    return x, x.sum(-1, keepdim=True).sin()


def _no_sync(fabric: Fabric) -> dict[str, bool]:
    model, _optimizer = fabric.setup(_model(), torch.optim.SGD(_model().parameters(), lr=0.1))
    x = torch.randn(4, 4, generator=torch.Generator().manual_seed(fabric.global_rank))
    with fabric.no_backward_sync(model):
        fabric.backward(model(x).pow(2).mean())
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    gathered = fabric.all_gather(grads)
    differ_inside = not torch.allclose(gathered[0], gathered[1])
    model.zero_grad()
    fabric.backward(model(x).pow(2).mean())
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    gathered = fabric.all_gather(grads)
    return {"differ_inside": differ_inside, "agree_after": torch.equal(gathered[0], gathered[1])}


def _train(fabric: Fabric, steps: int, batch: int) -> dict[str, torch.Tensor]:
    model = _model()
    model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    x, y = _data(steps, batch * fabric.world_size)
    rank = fabric.global_rank
    for step in range(steps):
        xs = x[step, rank * batch : (rank + 1) * batch]
        ys = y[step, rank * batch : (rank + 1) * batch]
        optimizer.zero_grad()
        fabric.backward(torch.nn.functional.mse_loss(model(xs), ys))
        optimizer.step()
    return {k: v.detach().clone() for k, v in model.module.state_dict().items()}


def _fail_on_rank_1(fabric: Fabric) -> None:
    if fabric.global_rank == 1:
        raise ValueError("rank one is broken on purpose")
    fabric.barrier()  # rank 0 waits for a peer that never comes
    time.sleep(60)


def _one_sgd_step(fabric: Fabric, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """One step with lr 1 and a gradient of 1 on every parameter; the buffer counts the steps.
    Returns what each rank's own model moved by."""
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    model, optimizer = fabric.setup(model, optimizer)
    fabric.backward(model(torch.ones(1, 1)).sum())
    optimizer.step()
    with torch.no_grad():
        model.steps += 1  # an in-place update of a buffer, as BatchNorm's running statistics
    fabric.barrier()  # both ranks stepped before either reads
    moved = {name: p.detach() - before[name] for name, p in model.module.named_parameters()}
    return {
        "moved": fabric.all_gather(torch.cat([moved["weight"].flatten(), moved["bias"]])),
        "steps": fabric.all_gather(model.module.steps.clone()),
    }


def _shuffled_orders(fabric: Fabric, seeds: list[int | None]) -> dict[str, list[torch.Tensor]]:
    """Each rank's shuffled order of range(16) after ``seed_everything(seed)`` (None: the seed
    set before launch), gathered from both ranks."""
    orders = []
    for seed in seeds:
        if seed is not None:
            fabric.seed_everything(seed)
        loader = DataLoader(TensorDataset(torch.arange(16)), batch_size=4, shuffle=True)
        loader = fabric.setup_dataloaders(loader)
        orders.append(fabric.all_gather(torch.cat([batch[0] for batch in loader])))
    return {"orders": orders}


def _expected_order(seed: int, rank: int) -> list[int]:
    """What torch's DistributedSampler seeded with ``seed`` gives ``rank`` of 2."""
    sampler = torch.utils.data.DistributedSampler(
        range(16), num_replicas=2, rank=rank, shuffle=True, seed=seed
    )
    return list(sampler)


class RunFabric(Fabric):
    """The subclass pattern: the training is in run()."""

    def run(self, scale: float) -> tuple[int, float]:
        total = self.all_reduce(torch.tensor([scale * (self.global_rank + 1)]), reduce_op="sum")
        return self.world_size, float(total)


# -- tests --------------------------------------------------------------------------------------


def test_launch_returns_rank_zero_result_and_each_rank_tears_its_strategy_down(
    tmp_path: Path,
) -> None:
    fabric = Fabric(accelerator="cpu", devices=2, strategy=_NotesTeardown(tmp_path))
    assert isinstance(fabric.strategy.launcher, MultiProcessingLauncher)
    rank, local_rank, world_size, pid = fabric.launch(_ranks, 100)
    assert (rank, local_rank, world_size) == (100, 0, 2)
    assert pid != os.getpid()
    # the user's teardown ran in each process once its function returned, and the base's
    # destroyed the process group
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {
        "0": "True False",
        "1": "True False",
    }


@pytest.mark.parametrize("strategy", ["ddp_spawn", "ddp_fork"])
def test_each_rank_steps_its_own_copy_of_the_model_given_to_launch(strategy: str) -> None:
    """Regression: under ddp_spawn the model passed to launch() was in memory shared by the
    ranks, so each step was applied once per rank (the weight moved -2 instead of -1)."""
    model = torch.nn.Linear(1, 1)
    model.register_buffer("steps", torch.zeros(1))
    weight = model.weight.detach().clone()
    fabric = Fabric(accelerator="cpu", devices=2, strategy=strategy)
    out = fabric.launch(_one_sgd_step, model)
    assert out["moved"].tolist() == [[-1.0, -1.0], [-1.0, -1.0]]  # per rank: weight, bias
    assert out["steps"].tolist() == [[1.0], [1.0]]
    assert torch.equal(model.weight, weight)  # the launching process's model is its own too
    assert model.steps.item() == 0


@pytest.mark.parametrize("strategy", ["ddp_spawn", "ddp_fork"])
def test_the_distributed_sampler_follows_the_global_seed(
    strategy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: the DistributedSampler that setup_dataloaders inserts always shuffled with
    seed 0. It follows seed_everything on every rank, called in the rank or before launch."""
    for variable in ("FAB_GLOBAL_SEED", "PL_GLOBAL_SEED", "FAB_SEED_WORKERS", "PL_SEED_WORKERS"):
        monkeypatch.setenv(variable, "")  # restored after the test, whatever seed_everything sets
    state = torch.get_rng_state()
    seed_everything(5, verbose=False)  # in the launching process: the ranks inherit it
    torch.set_rng_state(state)
    fabric = Fabric(accelerator="cpu", devices=2, strategy=strategy)
    orders = fabric.launch(_shuffled_orders, [None, 1, 2, 1])["orders"]
    for seed, gathered in zip([5, 1, 2, 1], orders, strict=True):
        for rank in (0, 1):
            assert gathered[rank].tolist() == _expected_order(seed, rank), (seed, rank)
    assert orders[1].tolist() != orders[2].tolist()  # seeds 1 and 2 differ
    assert orders[1].tolist() == orders[3].tolist()  # seed 1 again: the same order


def test_collectives() -> None:
    out = _fabric().launch(_collectives)
    assert torch.equal(out["gather"], torch.tensor([[0, 10], [1, 11]]))
    assert torch.equal(out["gather_dict_a"], torch.tensor([0.0, 1.0]))
    assert torch.equal(out["gather_dict_b"], torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    expected = {"mean": [1.5, 4.5], "sum": [3.0, 9.0], "max": [2.0, 5.0], "min": [1.0, 4.0]}
    for op, values in expected.items():
        result, same_object, original = out[op]
        assert torch.equal(result, torch.tensor(values)), op
        assert same_object, f"{op} is not in place"
        assert torch.equal(original, torch.tensor(values)), op
    assert out["broadcast"] == {"rank": 1, "items": [1, 1, 1]}
    assert torch.equal(out["dp_sum"], torch.tensor([3]))
    assert torch.equal(out["dp_gather"], torch.tensor([0, 1]))
    assert "'tensor_parallel'" in out["unknown_group"]
    assert "data_parallel" in out["unknown_group"]  # the accepted names
    assert out["all_true"] is False
    assert out["any_true"] is True
    assert out["both_true"] is True
    assert torch.equal(out["grad"], torch.tensor([2.0]))  # d(sum over 2 ranks)/dx, summed
    assert out["all_gather_ok"] is True


@pytest.mark.parametrize("shuffle", [False, True])
def test_distributed_sampler_gives_disjoint_halves(shuffle: bool) -> None:
    out = _fabric().launch(_sampler, shuffle)
    first, second = out["everyone"][0].tolist(), out["everyone"][1].tolist()
    assert len(first) == len(second) == 10
    assert set(first).isdisjoint(second)
    assert sorted(first + second) == list(range(20))
    assert out["batch_size"] == 3
    assert out["plain"].tolist() == list(range(20))
    if not shuffle:
        assert first == list(range(0, 20, 2))


def test_distributed_sampler_follows_the_original_sampler() -> None:
    strategy = DDPStrategy()
    loader = DataLoader(TensorDataset(torch.arange(8)), batch_size=2, shuffle=True, drop_last=True)
    assert isinstance(loader.sampler, RandomSampler)
    environment = FabEnvironment()
    environment.set_world_size(2)
    environment.set_global_rank(1)
    strategy.cluster_environment = environment
    new = strategy.process_dataloader(loader)
    sampler = new.sampler
    assert isinstance(sampler, torch.utils.data.DistributedSampler)
    assert sampler.shuffle
    assert sampler.drop_last
    assert new.drop_last
    assert (sampler.num_replicas, sampler.rank) == (2, 1)
    assert strategy.process_dataloader(loader, use_distributed_sampler=False) is loader


def test_no_backward_sync() -> None:
    out = _fabric().launch(_no_sync)
    assert out == {"differ_inside": True, "agree_after": True}


def test_ddp_matches_one_process_with_the_whole_batch() -> None:
    steps, batch = 4, 3
    ddp = _fabric().launch(_train, steps, batch)
    single = _train(Fabric(accelerator="cpu", devices=1), steps, 2 * batch)
    assert ddp.keys() == single.keys()
    for name in ddp:
        torch.testing.assert_close(ddp[name], single[name], atol=1e-5, rtol=0)


def test_a_failing_rank_raises_in_the_parent_with_its_traceback() -> None:
    start = time.monotonic()
    with pytest.raises(LaunchError) as info:
        _fabric().launch(_fail_on_rank_1)
    assert time.monotonic() - start < 30
    message = str(info.value)
    assert "rank one is broken on purpose" in message
    assert "Traceback" in message
    assert "_fail_on_rank_1" in message
    assert "Process 1" in message


def test_an_unpicklable_function_gives_a_clear_error() -> None:
    local_value = 3

    def nested(fabric: Fabric) -> int:
        return local_value

    with pytest.raises(TypeError, match=r"cannot be pickled.*module level"):
        _fabric().launch(nested)


def test_ddp_reruns_the_script() -> None:
    """``strategy="ddp"`` starts the other ranks by re-running the command line (the real runs
    are in test_launchers_for_real.py: pytest's own command line cannot be re-run here)."""
    fabric = Fabric(accelerator="cpu", devices=2, strategy="ddp")
    launcher = fabric.strategy.launcher
    assert isinstance(launcher, SubprocessScriptLauncher)
    assert (launcher.num_processes, launcher.num_nodes) == (2, 1)
    one = Fabric(accelerator="cpu", devices=1, strategy="ddp")
    assert one.strategy.launcher is None  # one process: nothing to start


def test_ddp_refuses_to_rerun_an_interactive_session(monkeypatch: pytest.MonkeyPatch) -> None:
    import __main__

    monkeypatch.setattr(sys, "orig_argv", [sys.executable], raising=False)
    monkeypatch.setattr(sys, "argv", [""])
    monkeypatch.delattr(__main__, "__file__", raising=False)
    with pytest.raises(RuntimeError, match=r"not started from a script.*ddp_notebook"):
        rerun_command()


@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
def test_ddp_and_ddp_spawn_are_refused_in_an_interactive_session(
    strategy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in Lightning Fabric: re-running a script or spawning cannot start processes from a
    notebook or a REPL, and ``Fabric(...)`` says so at once, not at ``launch``."""
    monkeypatch.setattr(sys, "ps1", ">>> ", raising=False)
    with pytest.raises(
        RuntimeError,
        match=rf"`Fabric\(strategy='{strategy}'\)` is not compatible with an interactive "
        r"environment\. .*`Fabric\(strategy='ddp_notebook'\)`",
    ):
        Fabric(accelerator="cpu", devices=2, strategy=strategy)


@pytest.mark.parametrize("strategy", ["ddp_notebook", "ddp_fork"])
def test_forking_strategies_and_one_process_are_accepted_in_an_interactive_session(
    strategy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "ps1", ">>> ", raising=False)
    launcher = Fabric(accelerator="cpu", devices=2, strategy=strategy).strategy.launcher
    assert isinstance(launcher, MultiProcessingLauncher)
    assert launcher.start_method == "fork"
    assert Fabric(accelerator="cpu", devices=1, strategy="ddp").strategy.launcher is None


def test_python_dash_i_refuses_ddp_when_the_fabric_is_created() -> None:
    code = "from fab.core import Fabric\nFabric(accelerator='cpu', devices=2, strategy='ddp')\n"
    done = subprocess.run(
        [sys.executable, "-i", "-c", code],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "RuntimeError: `Fabric(strategy='ddp')` is not compatible with an interactive" in (
        done.stderr
    )


def test_rerun_command_keeps_interpreter_options_and_arguments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import __main__

    monkeypatch.setattr(sys, "orig_argv", ["python3", "-X", "dev", "train.py", "--lr", "3"])
    monkeypatch.setattr(sys, "argv", ["train.py", "--lr", "3"])
    monkeypatch.setattr(__main__, "__file__", "train.py", raising=False)
    assert rerun_command() == [sys.executable, "-X", "dev", "train.py", "--lr", "3"]


def test_several_nodes_need_the_rendezvous_on_every_node() -> None:
    fabric = Fabric(accelerator="cpu", devices=2, num_nodes=2, strategy="ddp")
    with pytest.raises(RuntimeError, match=r"MASTER_ADDR, MASTER_PORT, NODE_RANK set on every"):
        fabric.launch()


@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn", "ddp_fork"])
def test_multi_process_methods_before_launch_are_an_error(strategy: str) -> None:
    """Before launch() the other processes do not exist: a collective would silently act alone."""
    fabric = Fabric(accelerator="cpu", devices=2, strategy=strategy)
    model = torch.nn.Linear(2, 2)
    calls = {
        "setup": lambda: fabric.setup(model),
        "setup_module": lambda: fabric.setup_module(model),
        "setup_optimizers": lambda: fabric.setup_optimizers(torch.optim.SGD(model.parameters())),
        "setup_dataloaders": lambda: fabric.setup_dataloaders(DataLoader(range(4))),
        "all_reduce": lambda: fabric.all_reduce(torch.ones(1)),
        "all_gather": lambda: fabric.all_gather(torch.ones(1)),
        "broadcast": lambda: fabric.broadcast(1),
        "barrier": lambda: fabric.barrier(),
    }
    for name, call in calls.items():
        with pytest.raises(RuntimeError, match=rf"Fabric\.{name}\(\) was called before .*launch"):
            call()


def test_a_subclass_run_launches_the_processes() -> None:
    fabric = RunFabric(accelerator="cpu", devices=2, strategy="ddp_spawn")
    assert fabric.run(2.0) == (2, 6.0)  # rank 0's result, after a real all_reduce


def test_dp_falls_back_to_ddp_with_a_warning_at_the_users_line() -> None:
    with pytest.warns(UserWarning, match="strategy='ddp'") as record:
        fabric = Fabric(accelerator="cpu", devices=1, strategy="dp")
    assert type(fabric.strategy) is DDPStrategy
    assert [w.filename for w in record] == [__file__]  # this line, not one inside fab


def test_dp_warns_on_global_rank_zero_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The script re-run for rank 1 (or a rank of `fab run`) says nothing: one warning per run
    (with real processes: test_launchers_for_real.py)."""
    from fab.core.utilities.rank_zero import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", 1)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fabric = Fabric(accelerator="cpu", devices=1, strategy="dp")
    assert type(fabric.strategy) is DDPStrategy
    assert not [w for w in record if "strategy='dp'" in str(w.message)]


def test_find_unused_parameters_alias() -> None:
    fabric = Fabric(accelerator="cpu", devices=1, strategy="ddp_find_unused_parameters_true")
    assert isinstance(fabric.strategy, DDPStrategy)
    assert fabric.strategy._ddp_kwargs == {"find_unused_parameters": True}
