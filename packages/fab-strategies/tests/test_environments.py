"""Each environment: its variables -> ranks, sizes, address, port; detect() with and without them;
validate_settings errors that name the variables."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from fab.core.environments import ClusterEnvironment
from fab.strategies.environments import (
    FabEnvironment,
    KubeflowEnvironment,
    LSFEnvironment,
    MPIEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
    find_free_port,
)


def setenv(monkeypatch: pytest.MonkeyPatch, **values: object) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, str(value))


def ranks(env: ClusterEnvironment) -> tuple[int, int, int, int]:
    return env.world_size(), env.global_rank(), env.local_rank(), env.node_rank()


# -- fab -------------------------------------------------------------------------------------------


def test_fab_defaults_in_the_users_process() -> None:
    env = FabEnvironment()
    assert not FabEnvironment.detect()
    assert not env.creates_processes_externally
    assert ranks(env) == (1, 0, 0, 0)
    assert env.main_address == "127.0.0.1"
    port = env.main_port
    assert 0 < port < 65536
    assert env.main_port == port  # chosen once
    env.set_world_size(4)
    env.set_global_rank(2)
    assert (env.world_size(), env.global_rank()) == (4, 2)
    env.validate_settings(4, 1)  # nothing launched: nothing to contradict


def test_fab_in_a_launched_process(monkeypatch: pytest.MonkeyPatch) -> None:
    variables = FabEnvironment.launch_variables(
        main_address="10.0.0.1",
        main_port=29501,
        world_size=8,
        global_rank=5,
        local_rank=1,
        node_rank=1,
    )
    assert variables["FAB_LAUNCHED"] == "1"
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    env = FabEnvironment()
    assert FabEnvironment.detect()
    assert env.creates_processes_externally
    assert ranks(env) == (8, 5, 1, 1)
    assert (env.main_address, env.main_port) == ("10.0.0.1", 29501)
    env.validate_settings(4, 2)
    with pytest.raises(ValueError, match="WORLD_SIZE=8"):
        env.validate_settings(2, 1)


def test_fab_needs_its_marker(monkeypatch: pytest.MonkeyPatch) -> None:
    setenv(monkeypatch, MASTER_ADDR="h", MASTER_PORT=1, WORLD_SIZE=2, RANK=0, LOCAL_RANK=0)
    assert not FabEnvironment.detect()
    monkeypatch.setenv("FAB_LAUNCHED", "1")
    assert FabEnvironment.detect()
    monkeypatch.delenv("RANK")
    assert not FabEnvironment.detect()


def test_find_free_port_can_be_bound() -> None:
    port = find_free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))


def test_non_integer_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        FabEnvironment().world_size()


# -- torchelastic ----------------------------------------------------------------------------------


def torchrun(monkeypatch: pytest.MonkeyPatch, **extra: object) -> None:
    setenv(
        monkeypatch,
        TORCHELASTIC_RUN_ID="abc",
        RANK=3,
        WORLD_SIZE=4,
        LOCAL_RANK=1,
        LOCAL_WORLD_SIZE=2,
        GROUP_RANK=1,
        MASTER_ADDR="node0",
        MASTER_PORT=29400,
        **extra,
    )


def test_torchelastic(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not TorchElasticEnvironment.detect()
    torchrun(monkeypatch)
    assert TorchElasticEnvironment.detect()
    env = TorchElasticEnvironment()
    assert env.creates_processes_externally
    assert ranks(env) == (4, 3, 1, 1)
    assert (env.main_address, env.main_port) == ("node0", 29400)
    env.validate_settings(2, 2)
    env.set_world_size(4)  # agreeing: silent
    with pytest.warns(RuntimeWarning, match="ignored set_world_size"):
        env.set_world_size(8)
    with pytest.warns(RuntimeWarning, match="ignored set_global_rank"):
        env.set_global_rank(0)
    assert ranks(env) == (4, 3, 1, 1)


def test_torchelastic_node_rank_falls_back_to_node_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    torchrun(monkeypatch)
    monkeypatch.delenv("GROUP_RANK")
    monkeypatch.setenv("NODE_RANK", "3")
    assert TorchElasticEnvironment().node_rank() == 3


def test_torchelastic_needs_the_run_id(monkeypatch: pytest.MonkeyPatch) -> None:
    torchrun(monkeypatch)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID")
    assert not TorchElasticEnvironment.detect()


def test_torchelastic_validate_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    torchrun(monkeypatch)
    env = TorchElasticEnvironment()
    with pytest.raises(ValueError, match=r"LOCAL_WORLD_SIZE=2.*devices=4"):
        env.validate_settings(4, 1)
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    with pytest.raises(ValueError, match=r"WORLD_SIZE=4.*devices=4 x num_nodes=2"):
        env.validate_settings(4, 2)


# -- slurm -----------------------------------------------------------------------------------------


def srun(monkeypatch: pytest.MonkeyPatch, **extra: object) -> None:
    setenv(
        monkeypatch,
        SLURM_NTASKS=8,
        SLURM_PROCID=6,
        SLURM_LOCALID=2,
        SLURM_NODEID=1,
        SLURM_NODELIST="gpu[007-008]",
        SLURM_JOB_ID=1234567,
        SLURM_JOB_NAME="train",
        **extra,
    )


def test_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not SLURMEnvironment.detect()
    srun(monkeypatch)
    assert SLURMEnvironment.detect()
    env = SLURMEnvironment()
    assert env.creates_processes_externally
    assert ranks(env) == (8, 6, 2, 1)
    assert env.main_address == "gpu007"
    assert env.main_port == 10000 + 1234567 % 10000 == 14567
    assert SLURMEnvironment.job_id() == 1234567
    env.set_world_size(1)  # ignored
    env.set_global_rank(0)
    assert ranks(env) == (8, 6, 2, 1)


def test_slurm_explicit_address_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    srun(monkeypatch, MASTER_ADDR="10.1.1.1", MASTER_PORT=23456)
    env = SLURMEnvironment()
    assert (env.main_address, env.main_port) == ("10.1.1.1", 23456)


def test_slurm_job_nodelist_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    srun(monkeypatch)
    monkeypatch.delenv("SLURM_NODELIST")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "a1,b[2-3]")
    assert SLURMEnvironment().main_address == "a1"
    monkeypatch.delenv("SLURM_JOB_NODELIST")
    monkeypatch.delenv("SLURM_JOB_ID")
    assert SLURMEnvironment().main_address == "127.0.0.1"
    assert SLURMEnvironment().main_port == 12910


@pytest.mark.parametrize("name", ["bash", "interactive"])
def test_slurm_interactive_is_not_detected(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    srun(monkeypatch)
    monkeypatch.setenv("SLURM_JOB_NAME", name)
    assert not SLURMEnvironment.detect()
    assert SLURMEnvironment.job_id() is None
    SLURMEnvironment().validate_settings(3, 5)  # the user starts the processes


def test_slurm_validate_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    srun(monkeypatch, SLURM_NTASKS_PER_NODE=4, SLURM_NNODES=2)
    env = SLURMEnvironment()
    env.validate_settings(4, 2)
    with pytest.raises(ValueError, match=r"SLURM_NTASKS_PER_NODE=4.*devices=2"):
        env.validate_settings(2, 2)
    with pytest.raises(ValueError, match=r"SLURM_NNODES=2.*num_nodes=1"):
        env.validate_settings(4, 1)
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4(x2)")
    env.validate_settings(4, 2)
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "many")
    with pytest.raises(ValueError, match="SLURM_NTASKS_PER_NODE='many'"):
        env.validate_settings(4, 2)


def test_slurm_requeue_job_id(monkeypatch: pytest.MonkeyPatch) -> None:
    env = SLURMEnvironment()
    with pytest.raises(RuntimeError, match="SLURM_JOB_ID"):
        env.requeue_job_id()
    srun(monkeypatch)
    assert env.requeue_job_id() == "1234567"
    setenv(monkeypatch, SLURM_ARRAY_JOB_ID=1200, SLURM_ARRAY_TASK_ID=3)
    assert env.requeue_job_id() == "1200_3"


# -- lsf -------------------------------------------------------------------------------------------


def jsrun(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **extra: object) -> None:
    rankfile = tmp_path / "rankfile"
    rankfile.write_text("batch1\nh1\nh1\nh2\nh2\n")
    values: dict[str, object] = {
        "LSB_JOBID": 98765,
        "LSB_DJOB_RANKFILE": rankfile,
        "JSM_NAMESPACE_RANK": 3,
        "JSM_NAMESPACE_LOCAL_RANK": 1,
        "JSM_NAMESPACE_SIZE": 4,
    }
    setenv(monkeypatch, **{**values, **extra})


def test_lsf(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert not LSFEnvironment.detect()
    jsrun(monkeypatch, tmp_path)
    assert LSFEnvironment.detect()
    monkeypatch.setattr(socket, "gethostname", lambda: "h2.cluster.org")
    env = LSFEnvironment()
    assert env.creates_processes_externally
    assert ranks(env) == (4, 3, 1, 1)
    assert env.main_address == "h1"
    assert env.main_port == 10000 + 98765 % 10000 == 18765
    env.validate_settings(2, 2)
    with pytest.raises(ValueError, match="JSM_NAMESPACE_SIZE=4"):
        env.validate_settings(4, 2)


def test_lsf_hosts_variable_and_unknown_host(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    jsrun(monkeypatch, tmp_path, LSB_HOSTS="batch1 h5 h5 h6")
    monkeypatch.delenv("LSB_DJOB_RANKFILE")
    assert LSFEnvironment.detect()
    monkeypatch.setattr(socket, "gethostname", lambda: "h6")
    env = LSFEnvironment()
    assert (env.main_address, env.node_rank()) == ("h5", 1)
    monkeypatch.setattr(socket, "gethostname", lambda: "elsewhere")
    with pytest.raises(RuntimeError, match="LSB_DJOB_RANKFILE or LSB_HOSTS"):
        env.node_rank()


def test_lsf_needs_every_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for missing in ("LSB_JOBID", "LSB_DJOB_RANKFILE", "JSM_NAMESPACE_SIZE"):
        jsrun(monkeypatch, tmp_path)
        monkeypatch.delenv(missing)
        assert not LSFEnvironment.detect(), missing


def test_lsf_unreadable_rankfile(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    jsrun(monkeypatch, tmp_path, LSB_DJOB_RANKFILE=tmp_path / "missing")
    with pytest.raises(RuntimeError, match="LSB_DJOB_RANKFILE"):
        LSFEnvironment().main_address


# -- mpi -------------------------------------------------------------------------------------------


def test_mpi_open_mpi(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not MPIEnvironment.detect()
    setenv(
        monkeypatch,
        OMPI_COMM_WORLD_RANK=5,
        OMPI_COMM_WORLD_SIZE=8,
        OMPI_COMM_WORLD_LOCAL_RANK=1,
        OMPI_COMM_WORLD_LOCAL_SIZE=4,
        OMPI_COMM_WORLD_NODE_RANK=1,
        MASTER_ADDR="node0",
        PMIX_NAMESPACE="prterun-node0-4242@1",
    )
    assert MPIEnvironment.detect()
    env = MPIEnvironment()
    assert env.creates_processes_externally
    assert ranks(env) == (8, 5, 1, 1)
    assert env.main_address == "node0"
    port = env.main_port
    assert 10000 <= port < 20000
    assert MPIEnvironment().main_port == port  # every rank derives the same
    env.validate_settings(4, 2)
    with pytest.raises(ValueError, match=r"OMPI_COMM_WORLD_LOCAL_SIZE=4.*devices=2"):
        env.validate_settings(2, 4)
    monkeypatch.setenv("MASTER_PORT", "30000")
    assert env.main_port == 30000


def test_mpi_several_nodes_need_master_addr(monkeypatch: pytest.MonkeyPatch) -> None:
    setenv(monkeypatch, PMI_RANK=0, PMI_SIZE=4, MPI_LOCALRANKID=0, MPI_LOCALNRANKS=2)
    env = MPIEnvironment()
    with pytest.raises(RuntimeError, match="set MASTER_ADDR"):
        env.main_address


def test_mpi_mpich_one_node(monkeypatch: pytest.MonkeyPatch) -> None:
    setenv(monkeypatch, PMI_RANK=2, PMI_SIZE=4)
    assert MPIEnvironment.detect()
    env = MPIEnvironment()
    assert ranks(env) == (4, 2, 2, 0)  # no local rank: one node
    assert (env.main_address, env.main_port) == ("127.0.0.1", 12910)
    with pytest.raises(ValueError, match=r"PMI_SIZE=4.*devices=2 x num_nodes=1"):
        env.validate_settings(2, 1)
    setenv(monkeypatch, MPI_LOCALRANKID=0, MPI_LOCALNRANKS=2)
    assert ranks(env) == (4, 2, 0, 1)


def test_mpi_needs_rank_and_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "0")
    assert not MPIEnvironment.detect()
    with pytest.raises(RuntimeError, match="PMI_RANK/PMI_SIZE"):
        MPIEnvironment().world_size()


# -- kubeflow --------------------------------------------------------------------------------------


def pytorchjob(monkeypatch: pytest.MonkeyPatch) -> None:
    setenv(
        monkeypatch,
        KUBERNETES_PORT="tcp://10.96.0.1:443",
        MASTER_ADDR="job-master-0",
        MASTER_PORT=23456,
        WORLD_SIZE=3,
        RANK=2,
    )


def test_kubeflow(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not KubeflowEnvironment.detect()
    pytorchjob(monkeypatch)
    assert KubeflowEnvironment.detect()
    env = KubeflowEnvironment()
    assert not env.creates_processes_externally
    assert env.num_pods() == 3
    assert ranks(env) == (3, 2, 0, 2)  # a pod is one process until fab's launcher says more
    assert (env.main_address, env.main_port) == ("job-master-0", 23456)
    env.set_world_size(12)
    env.set_global_rank(8)
    assert ranks(env) == (12, 8, 0, 2)
    env.validate_settings(4, 3)
    with pytest.raises(ValueError, match=r"WORLD_SIZE=3 pods.*num_nodes=2"):
        env.validate_settings(4, 2)


def test_kubeflow_steps_aside_in_processes_fab_launched(monkeypatch: pytest.MonkeyPatch) -> None:
    pytorchjob(monkeypatch)
    setenv(monkeypatch, FAB_LAUNCHED=1, LOCAL_RANK=1)
    assert not KubeflowEnvironment.detect()
    assert FabEnvironment.detect()


def test_kubeflow_needs_every_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    for missing in ("KUBERNETES_PORT", "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK"):
        pytorchjob(monkeypatch)
        monkeypatch.delenv(missing)
        assert not KubeflowEnvironment.detect(), missing
