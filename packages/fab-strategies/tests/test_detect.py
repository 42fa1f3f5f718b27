"""detect_environment(): every registered environment class, most specific first; plugins by entry
point; fab-strategies' own entry points."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import ClassVar

import pytest

from fab.core import registry
from fab.core.environments import ClusterEnvironment
from fab.strategies.environments import (
    FabEnvironment,
    KubeflowEnvironment,
    LSFEnvironment,
    MPIEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
    detect_environment,
)

OURS = {
    "fab": FabEnvironment,
    "torchelastic": TorchElasticEnvironment,
    "slurm": SLURMEnvironment,
    "lsf": LSFEnvironment,
    "mpi": MPIEnvironment,
    "kubeflow": KubeflowEnvironment,
}


class ToyEnv(FabEnvironment):
    detect_priority: ClassVar[int] = 1000

    @staticmethod
    def detect() -> bool:
        return os.environ.get("TOY_CLUSTER") == "1"


class RaisingEnv(FabEnvironment):
    detect_priority: ClassVar[int] = 999

    @staticmethod
    def detect() -> bool:
        raise OSError("scheduler unreachable")


@pytest.fixture
def toy() -> Iterator[None]:
    registry.ENVIRONMENTS.register("toy", ToyEnv)
    yield
    registry.ENVIRONMENTS.unregister("toy")


def set_all(monkeypatch: pytest.MonkeyPatch) -> None:
    """Variables of torchrun, Slurm, MPI (srun sets PMI_*), LSF and Kubeflow at once."""
    for name, value in {
        "TORCHELASTIC_RUN_ID": "r",
        "RANK": "0",
        "WORLD_SIZE": "2",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "h",
        "MASTER_PORT": "1234",
        "SLURM_NTASKS": "2",
        "SLURM_JOB_NAME": "train",
        "LSB_JOBID": "1",
        "LSB_HOSTS": "b h",
        "JSM_NAMESPACE_RANK": "0",
        "JSM_NAMESPACE_LOCAL_RANK": "0",
        "JSM_NAMESPACE_SIZE": "2",
        "KUBERNETES_PORT": "tcp://k:443",
        "PMI_RANK": "0",
        "PMI_SIZE": "2",
    }.items():
        monkeypatch.setenv(name, value)


def test_entry_points_come_from_fab_strategies() -> None:
    for name, cls in OURS.items():
        assert name in registry.ENVIRONMENTS.names()
        assert registry.ENVIRONMENTS.entry(name).distribution == "fab-strategies"
        assert registry.ENVIRONMENTS.load_class(name) is cls
        assert isinstance(registry.ENVIRONMENTS.create(name), ClusterEnvironment)


def test_nothing_detected_gives_fab() -> None:
    env = detect_environment()
    assert type(env) is FabEnvironment
    assert not env.creates_processes_externally


def test_priorities_ask_the_most_specific_first() -> None:
    order = sorted(OURS.values(), key=lambda c: -c.detect_priority)
    assert order == [
        TorchElasticEnvironment,
        SLURMEnvironment,
        LSFEnvironment,
        KubeflowEnvironment,
        MPIEnvironment,
        FabEnvironment,
    ]


def test_detection_order_when_several_are_set(monkeypatch: pytest.MonkeyPatch) -> None:
    set_all(monkeypatch)
    expected = [
        (None, TorchElasticEnvironment),  # torchrun inside a Slurm job: torchrun started us
        ("TORCHELASTIC_RUN_ID", SLURMEnvironment),  # srun with PMI: Slurm, not MPI
        ("SLURM_NTASKS", LSFEnvironment),  # jsrun sets Open MPI's variables too
        ("LSB_JOBID", KubeflowEnvironment),
        ("KUBERNETES_PORT", MPIEnvironment),
        ("PMI_RANK", FabEnvironment),
    ]
    for unset, cls in expected:
        if unset is not None:
            monkeypatch.delenv(unset)
        assert type(detect_environment()) is cls, unset


def test_interactive_slurm_falls_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "bash")
    assert type(detect_environment()) is FabEnvironment
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    assert type(detect_environment()) is SLURMEnvironment


def test_third_party_environment_by_priority(monkeypatch: pytest.MonkeyPatch, toy: None) -> None:
    set_all(monkeypatch)
    assert type(detect_environment()) is TorchElasticEnvironment
    monkeypatch.setenv("TOY_CLUSTER", "1")
    assert type(detect_environment()) is ToyEnv


def test_raising_detect_is_skipped_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    registry.ENVIRONMENTS.register("raising", RaisingEnv)
    try:
        monkeypatch.setenv("SLURM_NTASKS", "1")
        with pytest.warns(registry.PluginWarning, match="'raising'.*scheduler unreachable"):
            env = detect_environment()
        assert type(env) is SLURMEnvironment
    finally:
        registry.ENVIRONMENTS.unregister("raising")


def test_factory_entries_take_no_part(monkeypatch: pytest.MonkeyPatch) -> None:
    registry.ENVIRONMENTS.register("factory", lambda: ToyEnv())
    try:
        monkeypatch.setenv("TOY_CLUSTER", "1")
        assert type(detect_environment()) is FabEnvironment
        assert type(registry.ENVIRONMENTS.create("factory")) is ToyEnv
    finally:
        registry.ENVIRONMENTS.unregister("factory")


def test_broken_plugin_is_skipped_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    from fab.core.registry.entries import PluginEntry

    broken = PluginEntry("fab.environments", "broken", "no_such_module_fab:Env", "broken-dist", "1")
    real = registry.Scan.entries

    def entries(group: str) -> list[PluginEntry]:
        found = real(group)
        return [*found, broken] if group == "fab.environments" else found

    monkeypatch.setattr(registry.Scan, "entries", staticmethod(entries))
    registry.ENVIRONMENTS._resolved = None
    monkeypatch.setenv("SLURM_NTASKS", "1")
    with pytest.warns(registry.PluginWarning, match="broken-dist"):
        env = detect_environment()
    assert type(env) is SLURMEnvironment


def test_import_does_not_pull_in_dynamo() -> None:
    code = (
        "import sys, fab.strategies, fab.strategies.environments; "
        "print('torch._dynamo' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "False"
