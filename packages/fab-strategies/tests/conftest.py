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


def _living_children() -> set[int]:
    """The pids of this process's living descendants (psutil when installed, else /proc's direct
    children), without multiprocessing's own long-lived helpers."""
    helpers = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")
    found: dict[int, str] = {}
    try:
        import psutil
    except ImportError:
        me = str(os.getpid())
        for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{entry}/cmdline") as fh:
                    cmdline = fh.read().replace("\0", " ")
            except (OSError, IndexError):
                continue
            if entry.isdigit() and fields[1] == me and fields[0] != "Z":
                found[int(entry)] = cmdline
    else:
        for child in psutil.Process().children(recursive=True):
            try:
                if child.status() != psutil.STATUS_ZOMBIE:
                    found[child.pid] = " ".join(child.cmdline())
            except psutil.Error:
                continue
    return {pid for pid, cmdline in found.items() if not any(h in cmdline for h in helpers)}


@pytest.fixture
def no_orphan_processes() -> Iterator[None]:
    """Fails the test if a process it started is still alive 5 s after it ends (opt in with
    ``pytest.mark.usefixtures("no_orphan_processes")``)."""
    import multiprocessing
    import time

    before = _living_children()
    yield
    deadline = time.monotonic() + 5
    while True:
        multiprocessing.active_children()  # reaps finished multiprocessing children
        left = _living_children() - before
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not left, f"processes left behind: {sorted(left)}"
