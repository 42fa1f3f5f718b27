"""Fixtures for fab-strategies' tests: a clean process environment (the machine running the tests
may be inside a Slurm job or a torchrun) and a fresh registry."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from fab.core import registry

#: Every variable a cluster environment reads, by prefix or by name.
CLUSTER_PREFIXES = ("SLURM_", "LSB_", "JSM_NAMESPACE_", "OMPI_", "PMI_", "PMIX_", "KUBERNETES_")
CLUSTER_NAMES = (
    "FAB_LAUNCHED",
    "MASTER_ADDR",
    "MASTER_PORT",
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "NODE_RANK",
    "GROUP_RANK",
    "LOCAL_WORLD_SIZE",
    "TORCHELASTIC_RUN_ID",
    "MPI_LOCALRANKID",
    "MPI_LOCALNRANKS",
)


@pytest.fixture(autouse=True)
def _clean_cluster_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(CLUSTER_PREFIXES) or name in CLUSTER_NAMES:
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _fresh_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test sees every installed plugin, whatever the environment switched off."""
    monkeypatch.delenv("FAB_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("FAB_DISABLED_PLUGINS", raising=False)
    registry.refresh()
    yield
    monkeypatch.undo()
    registry.refresh()
