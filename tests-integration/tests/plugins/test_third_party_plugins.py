"""A third-party distribution's plugins (acme-fab-plugins) are found by name and work in Fabric."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from fab.core import Fabric, registry

ACME_PLUGINS = {
    "fab.accelerators": "acme",
    "fab.strategies": "acme_single",
    "fab.precision": "acme-true",
    "fab.environments": "acme_env",
    "fab.loggers": "acme_memory",
    "fab.callbacks": "acme_counter",
}


@pytest.mark.parametrize(("group", "name"), ACME_PLUGINS.items())
def test_every_group_lists_and_loads_the_third_party_plugin_by_name(group: str, name: str) -> None:
    plugins = registry.get_registry(group)
    assert name in plugins.names()
    entry = plugins.entry(name)
    assert entry.distribution == "acme-fab-plugins"
    assert entry.version == "0.1.0"
    assert entry.target.startswith("acme_fab.")
    target = plugins.load(name)
    module, _, qualname = entry.target.partition(":")
    assert (target.__module__, target.__qualname__) == (module, qualname)


def test_fabric_trains_a_step_with_every_third_party_plugin(
    plugin_env: Callable[..., None], tmp_path: Path
) -> None:
    from acme_fab.accelerator import AcmeAccelerator
    from acme_fab.callbacks import AcmeCounter
    from acme_fab.logger import MemoryLogger
    from acme_fab.precision import AcmeTruePrecision
    from acme_fab.strategy import AcmeSingleDeviceStrategy

    log_file = tmp_path / "metrics.jsonl"
    plugin_env(ACME_AVAILABLE="1", ACME_LOG_FILE=str(log_file))
    created = AcmeCounter.created

    fabric = Fabric(
        accelerator="acme", strategy="acme_single", precision="acme-true", loggers=["acme_memory"]
    )
    fabric.launch()
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    before = [p.detach().clone() for p in model.parameters()]
    loss = model(torch.randn(8, 4)).pow(2).mean()
    fabric.backward(loss)
    optimizer.step()
    fabric.log("loss", loss)
    fabric.log_dict({"lr": 0.1, "step_loss": loss.detach()})

    assert isinstance(fabric.accelerator, AcmeAccelerator)
    assert isinstance(fabric.strategy, AcmeSingleDeviceStrategy)
    assert fabric.device == torch.device("cpu")
    assert fabric.strategy.events == ["connect", "setup_module", "backward", "optimizer_step"]
    precision = fabric.strategy.precision
    assert isinstance(precision, AcmeTruePrecision)
    assert precision.optimizer_steps == 1
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    logger = fabric.logger
    assert isinstance(logger, MemoryLogger)
    expected = [
        {"kind": "metrics", "step": 0, "metrics": {"loss": pytest.approx(loss.item())}},
        {
            "kind": "metrics",
            "step": 1,
            "metrics": {"lr": 0.1, "step_loss": pytest.approx(loss.item())},
        },
    ]
    assert logger.records == expected
    written = [json.loads(line) for line in log_file.read_text(encoding="utf-8").splitlines()]
    assert written == expected
    # The entry-point callback factory was called once for this Fabric.
    assert AcmeCounter.created == created + 1


def test_entry_point_callback_is_added_to_every_fabric_and_called_by_hook_name() -> None:
    from acme_fab.callbacks import AcmeCounter

    created, total = AcmeCounter.created, AcmeCounter.total
    first, second = Fabric(), Fabric()
    first.call("on_acme_count", n=2)
    second.call("on_acme_count")
    second.call("on_some_other_hook", value=1)  # callbacks without the hook are left alone
    assert AcmeCounter.created == created + 2
    assert AcmeCounter.total == total + 3


def test_unavailable_third_party_accelerator_is_refused_by_name() -> None:
    with pytest.raises(RuntimeError, match="accelerator 'acme' is installed but not available"):
        Fabric(accelerator="acme")


@pytest.mark.parametrize(
    ("acme_available", "expected"), [("1", "AcmeAccelerator"), (None, "CPUAccelerator")]
)
def test_auto_accelerator_prefers_the_third_party_accelerator_only_where_available(
    run_python: Callable[..., Any], acme_available: str | None, expected: str
) -> None:
    env = {"ACME_AVAILABLE": acme_available} if acme_available else {}
    result = run_python(
        """
        from fab.core import Fabric
        fabric = Fabric()
        report([type(fabric.accelerator).__name__, type(fabric.strategy).__name__])
        """,
        env=env,
    )
    assert result == [expected, "SingleDeviceStrategy"]


def test_third_party_cluster_environment_reads_its_variables(
    plugin_env: Callable[..., None],
) -> None:
    environment_cls = registry.ENVIRONMENTS.load_class("acme_env")
    assert environment_cls is not None
    assert not environment_cls.detect()

    plugin_env(ACME_RANK="3", ACME_WORLD_SIZE="4")
    environment = registry.ENVIRONMENTS.create("acme_env")
    assert environment.detect()
    assert (environment.global_rank(), environment.world_size(), environment.local_rank()) == (
        3,
        4,
        3,
    )
    assert environment.creates_processes_externally
    environment.set_global_rank(1)
    assert environment.global_rank() == 1
