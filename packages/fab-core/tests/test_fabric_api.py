"""Every method and property of the API contract on one CPU process (DESIGN section 3)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from fab.core import Fabric, is_wrapped, seed_everything
from fab.core.accelerators import CPUAccelerator
from fab.core.strategies import SingleDeviceStrategy
from fab.wrappers import FabricModule


def test_accelerator_and_strategy_properties() -> None:
    fabric = Fabric(accelerator="cpu")
    assert isinstance(fabric.accelerator, CPUAccelerator)
    assert isinstance(fabric.strategy, SingleDeviceStrategy)
    assert fabric.strategy.accelerator is fabric.accelerator


def test_setup_module_then_setup_optimizers() -> None:
    fabric = Fabric()
    model = fabric.setup_module(torch.nn.Linear(2, 2))
    assert isinstance(model, FabricModule)
    optimizer = fabric.setup_optimizers(torch.optim.SGD(model.parameters(), lr=0.1))
    assert is_wrapped(optimizer)
    _, second = fabric.setup_optimizers(
        torch.optim.SGD(model.parameters(), lr=0.1), torch.optim.Adam(model.parameters())
    )
    assert isinstance(second, torch.optim.Adam)
    with pytest.raises(ValueError, match="at least one optimizer"):
        fabric.setup_optimizers()


def test_setup_without_optimizers_returns_the_module_alone() -> None:
    assert isinstance(Fabric().setup(torch.nn.Linear(1, 1)), FabricModule)


def test_setup_rejects_what_is_not_a_module_or_optimizer() -> None:
    fabric = Fabric()
    with pytest.raises(TypeError, match=r"takes a torch\.nn\.Module"):
        fabric.setup(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"expected a torch\.optim\.Optimizer"):
        fabric.setup(torch.nn.Linear(1, 1), object())  # type: ignore[arg-type]


def test_setup_with_move_to_device_false_leaves_the_model_where_it_is() -> None:
    model = torch.nn.Linear(2, 2).to("meta")
    wrapped = Fabric().setup(model, move_to_device=False)
    assert wrapped.device == torch.device("meta")


def test_to_device_moves_a_module_in_place_and_returns_it() -> None:
    fabric = Fabric()
    model = torch.nn.Linear(2, 2)
    assert fabric.to_device(model) is model
    assert fabric.to_device(torch.ones(1)).device == torch.device("cpu")


def test_clip_gradients_by_norm_and_by_value() -> None:
    fabric = Fabric()
    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    fmodel, foptimizer = fabric.setup(model, optimizer)
    fabric.backward(fmodel(torch.full((2, 4), 100.0)).sum())
    norm = fabric.clip_gradients(fmodel, foptimizer, max_norm=1.0)
    assert norm is not None
    assert norm > 1.0
    total = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert total == pytest.approx(1.0, rel=1e-4)
    fabric.clip_gradients(fmodel, foptimizer, clip_val=0.01)
    assert all(p.grad.abs().max() <= 0.01 for p in model.parameters())
    with pytest.raises(ValueError, match="exactly one of clip_val"):
        fabric.clip_gradients(fmodel, foptimizer)
    with pytest.raises(ValueError, match="exactly one of clip_val"):
        fabric.clip_gradients(fmodel, foptimizer, clip_val=1.0, max_norm=1.0)


def test_autocast_is_the_precisions_forward_context() -> None:
    with Fabric().autocast():
        assert torch.ones(2).dtype == torch.float32


def test_init_tensor_and_init_module_create_on_the_device() -> None:
    fabric = Fabric()
    with fabric.init_tensor():
        assert torch.empty(1).device == fabric.device
    with fabric.init_module():
        model = torch.nn.Linear(2, 2)
    assert model.weight.device == fabric.device


def test_init_module_with_empty_init_skips_initialization() -> None:
    fabric = Fabric()
    torch.manual_seed(0)
    state = torch.random.get_rng_state()
    with fabric.init_module(empty_init=True):
        model = torch.nn.Linear(64, 64)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert model.weight.shape == (64, 64)


def test_sharded_model_is_a_deprecated_no_op_on_one_device() -> None:
    with pytest.warns(DeprecationWarning, match="use Fabric.init_module"), Fabric().sharded_model():
        torch.nn.Linear(1, 1)


def test_no_backward_sync_is_a_no_op_on_one_device_and_checks_its_argument() -> None:
    fabric = Fabric()
    model = fabric.setup(torch.nn.Linear(1, 1))
    with fabric.no_backward_sync(model):
        fabric.backward(model(torch.ones(1)).sum())
    assert model.weight.grad is not None
    with pytest.raises(TypeError, match=r"the model returned by fabric\.setup"):
        fabric.no_backward_sync(torch.nn.Linear(1, 1))  # type: ignore[arg-type]


def test_rank_zero_first_runs_the_block_on_one_process() -> None:
    fabric = Fabric()
    ran = []
    with fabric.rank_zero_first():
        ran.append(1)
    with fabric.rank_zero_first(local=True):
        ran.append(2)
    assert ran == [1, 2]


def test_all_reduce_is_in_place_and_all_gather_takes_collections() -> None:
    fabric = Fabric()
    t = torch.tensor([3.0])
    assert fabric.all_reduce(t, reduce_op="sum") is t
    gathered = fabric.all_gather({"a": torch.ones(2), "b": [torch.zeros(1)]})
    assert gathered["a"].shape == (2,)  # one process: as it is, as in Lightning
    assert gathered["b"][0].shape == (1,)
    with pytest.raises(ValueError, match="accepted: 'mean', 'sum', 'max', 'min'"):
        fabric.all_reduce(t, reduce_op="prod")  # type: ignore[arg-type]


def test_load_raw_reads_a_plain_state_dict(tmp_path: Path) -> None:
    fabric = Fabric()
    source = torch.nn.Linear(2, 2)
    torch.save(source.state_dict(), tmp_path / "weights.pt")
    target = fabric.setup(torch.nn.Linear(2, 2))
    fabric.load_raw(tmp_path / "weights.pt", target)
    assert torch.equal(target.weight, source.weight)
    optimizer = torch.optim.SGD(source.parameters(), lr=0.5)
    torch.save(optimizer.state_dict(), tmp_path / "opt.pt")
    other = torch.optim.SGD(target.parameters(), lr=0.1)
    fabric.load_raw(tmp_path / "opt.pt", other)
    assert other.param_groups[0]["lr"] == 0.5


def test_run_must_be_overridden_and_launch_calls_it() -> None:
    with pytest.raises(NotImplementedError, match="override run"):
        Fabric().run()

    class MyFabric(Fabric):
        def run(self, x: int) -> int:
            return x + 1

    assert MyFabric().run(1) == 2


def test_launch_rejects_what_is_not_callable() -> None:
    with pytest.raises(TypeError, match=r"launch takes a function.*not its result"):
        Fabric().launch(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="takes no argument"):
        Fabric().launch(lambda: None)


def test_logger_without_loggers_is_an_error() -> None:
    with pytest.raises(AttributeError, match="has no logger"):
        _ = Fabric().logger


def test_print_only_prints(capsys: pytest.CaptureFixture[str]) -> None:
    Fabric().print("hello", 1)
    assert capsys.readouterr().out == "hello 1\n"


def test_seed_everything_is_reproducible_static_and_module_level() -> None:
    assert Fabric.seed_everything(7) == 7
    a = torch.rand(3)
    assert seed_everything(7) == 7
    assert torch.equal(torch.rand(3), a)
    with pytest.raises(ValueError, match="out of range"):
        seed_everything(-1)


def test_no_warning_on_a_plain_training_step() -> None:
    fabric = Fabric()
    model, optimizer = fabric.setup(
        torch.nn.Linear(2, 2), torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fabric.backward(model(torch.ones(2)).sum())
        optimizer.step()


def test_seed_everything_through_fabric_seeds_data_loader_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from torch.utils.data import DataLoader

    monkeypatch.delenv("FAB_SEED_WORKERS", raising=False)
    fabric = Fabric()
    fabric.seed_everything(3)  # workers=None means True, as in Lightning
    loader = DataLoader(list(range(4)), num_workers=1)
    wrapped = fabric.setup_dataloaders(loader)
    assert wrapped.dataloader.worker_init_fn is not None
    fabric.seed_everything(3, workers=False)
    assert fabric.setup_dataloaders(DataLoader(list(range(4)))).dataloader.worker_init_fn is None


def test_a_compiled_model_is_set_up_with_clean_state_dict_keys() -> None:
    fabric = Fabric()
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())
    compiled = torch.compile(model, backend="eager")
    wrapped, optimizer = fabric.setup(compiled, torch.optim.SGD(model.parameters(), lr=0.1))
    assert wrapped.module is model
    assert list(wrapped.state_dict()) == ["0.weight", "0.bias"]
    assert is_wrapped(wrapped)
    before = model[0].weight.detach().clone()
    fabric.backward(wrapped(torch.randn(2, 4)).sum())
    optimizer.step()
    assert not torch.equal(before, model[0].weight)


def test_plain_backward_is_refused_where_the_precision_needs_fabric_backward() -> None:
    from fab.core.precision import Precision

    class Scaling(Precision):
        def pre_backward(
            self, tensor: torch.Tensor, module: torch.nn.Module | None
        ) -> torch.Tensor:
            return tensor * 2

    fabric = Fabric(precision=Scaling())
    model = fabric.setup(torch.nn.Linear(2, 1))
    with pytest.raises(RuntimeError, match=r"fabric\.backward"):
        model(torch.ones(2)).sum().backward()
    fabric.backward(model(torch.ones(2)).sum())
    assert model.weight.grad is not None
