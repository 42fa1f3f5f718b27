"""The launchers that start real processes from a script: ``strategy="ddp"`` (the script re-run
for every rank) and ``fab run`` (torchrun underneath). Every run is a real 2-process gloo run, in
its own session so that a failing test can still kill all of it; every test checks that no
process of the run is left.

The failure tests hold the issue's bar: one rank raising, or a worker killed with SIGKILL, ends
every process within 30 s with a non-zero exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(120)]

#: The bar for a failed run: every process gone within this many seconds.
FAILURE_BUDGET_SECONDS = 30.0

WORKER = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    import torch
    from fab.core import Fabric

    mode, pid_dir = sys.argv[1], Path(sys.argv[2])
    kwargs = {"accelerator": "cpu", "devices": 2, "strategy": "ddp"}
    if os.environ.get("FAB_CLI_DEVICES"):  # under `fab run`: the command line decides
        devices = os.environ.get("WORKER_DEVICES")
        kwargs = {"devices": int(devices)} if devices else {}
    fabric = Fabric(**kwargs)

    def main(fabric):
        rank = fabric.global_rank
        (pid_dir / f"{rank}.pid").write_text(str(os.getpid()))
        total = fabric.all_reduce(torch.tensor([float(rank + 1)]), reduce_op="sum")
        fabric.barrier()
        if mode == "raise" and rank == int(sys.argv[3]):
            raise ValueError(f"rank {rank} is broken on purpose")
        if mode == "die" and rank == int(sys.argv[3]):
            os.kill(os.getpid(), signal.SIGKILL)  # the other rank goes on into a collective
        if mode == "hang":
            (pid_dir / f"{rank}.ready").write_text("")
            time.sleep(300)
        model, optimizer = fabric.setup(
            torch.nn.Linear(4, 1), torch.optim.SGD(torch.nn.Linear(4, 1).parameters(), lr=0.1)
        )
        fabric.backward(model(torch.ones(2, 4)).sum())
        optimizer.step()
        print(f"rank {rank} of {fabric.world_size} sum {total.item():.0f} "
              f"{type(fabric.strategy.cluster_environment).__name__} {sys.argv[1:]}", flush=True)
        return total.item()

    result = fabric.launch(main)
    print(f"result on rank {fabric.global_rank}: {result}", flush=True)
    """
)


@pytest.fixture
def worker(tmp_path: Path) -> Path:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    (tmp_path / "pids").mkdir()
    return script


def _buffered(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without PYTHONUNBUFFERED (tools/dev.py sets it for its own output): the ranks
    share one pipe, and unbuffered, ``print(line, flush=True)`` writes the line and its newline
    in two writes, which another rank's line can come between. Buffered, each print with
    ``flush=True`` is one write."""
    return {k: v for k, v in environ.items() if k != "PYTHONUNBUFFERED"}


class Run:
    """A command started in its own session, with the pids its ranks wrote."""

    def __init__(self, command: list[str], pid_dir: Path, env: dict[str, str] | None = None):
        self.pid_dir = pid_dir
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env={**_buffered(os.environ), "OMP_NUM_THREADS": "1", **(env or {})},
        )

    def wait(self, timeout: float) -> tuple[int, str, str]:
        out, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, out, err

    def rank_pids(self) -> dict[int, int]:
        return {int(p.stem): int(p.read_text()) for p in self.pid_dir.glob("*.pid")}

    def wait_until_ready(self, ranks: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(list(self.pid_dir.glob("*.ready"))) < ranks:
            if self.process.poll() is not None or time.monotonic() > deadline:
                out, err = self.process.communicate()
                raise AssertionError(f"the run did not get ready:\n{out}\n{err}")
            time.sleep(0.05)

    def kill_everything(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        for pid in self.rank_pids().values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    started: list[Run] = []
    yield started
    for run in started:
        run.kill_everything()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def assert_all_gone(run: Run, within: float = 5.0) -> None:
    pids = run.rank_pids()
    assert pids, "the ranks never started"
    deadline = time.monotonic() + within
    while any(_alive(pid) for pid in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = {rank: pid for rank, pid in pids.items() if _alive(pid)}
    assert not left, f"processes left behind: {left}"


def failure_report(err: str) -> str:
    """The launching process's line that names the rank the run failed on; there must be one."""
    lines = [line for line in err.splitlines() if line.startswith("fab: the run failed: ")]
    assert len(lines) == 1, f"expected one line naming the failed rank, got {lines}:\n{err}"
    return lines[0]


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def fab_run(*args: str) -> list[str]:
    return [sys.executable, "-m", "fab.core.cli", "run", *args]


# -- strategy="ddp": the script re-run for every rank -------------------------------------------


def test_ddp_reruns_the_script_for_every_rank(worker: Path, runs: list[Run]) -> None:
    run = Run(python(str(worker), "ok", str(worker.parent / "pids"), "x"), worker.parent / "pids")
    runs.append(run)
    code, out, err = run.wait(timeout=90)
    assert code == 0, err
    for rank in (0, 1):
        assert f"rank {rank} of 2 sum 3 FabEnvironment ['ok'" in out
    assert "result on rank 0: 3.0" in out  # launch() returns each rank's own result
    assert "result on rank 1: 3.0" in out
    assert_all_gone(run)


def test_ddp_reruns_code_given_with_dash_c_and_every_rank_tears_down_at_exit(
    tmp_path: Path, runs: list[Run]
) -> None:
    """The user's ``teardown`` override runs at exit on every rank, the process group still up;
    the base's destroys it."""
    code_text = textwrap.dedent(
        f"""
        import os, torch
        import torch.distributed as dist
        from fab.core import Fabric
        from fab.strategies import DDPStrategy

        class Noted(DDPStrategy):
            def teardown(self):
                was_up = dist.is_initialized()
                super().teardown()
                with open(os.path.join({str(tmp_path)!r}, f"{{self.global_rank}}.down"), "w") as fh:
                    fh.write(f"{{was_up}} {{dist.is_initialized()}}")

        f = Fabric(accelerator="cpu", devices=2, strategy=Noted()); f.launch()
        with open(os.path.join({str(tmp_path)!r}, f"{{f.global_rank}}.pid"), "w") as fh:
            fh.write(str(os.getpid()))
        total = f.all_reduce(torch.ones(1), reduce_op="sum").item()
        f.print("ranks", f.world_size, "sum", total)
        """
    )
    run = Run(python("-c", code_text), tmp_path)
    runs.append(run)
    code, out, err = run.wait(timeout=90)
    assert code == 0, err
    assert out.splitlines() == ["ranks 2 sum 2.0"]  # rank 0 prints
    assert_all_gone(run)
    downs = {p.name: p.read_text() for p in tmp_path.glob("*.down")}
    assert downs == {"0.down": "True False", "1.down": "True False"}


@pytest.mark.parametrize("failing_rank", [1, 0])
def test_ddp_one_rank_raising_ends_the_run(
    worker: Path, runs: list[Run], failing_rank: int
) -> None:
    pid_dir = worker.parent / "pids"
    start = time.monotonic()
    run = Run(python(str(worker), "raise", str(pid_dir), str(failing_rank)), pid_dir)
    runs.append(run)
    code, _out, err = run.wait(timeout=90)
    assert time.monotonic() - start < FAILURE_BUDGET_SECONDS + 15  # + start-up of 2 processes
    assert code == 1, err
    assert f"ValueError: rank {failing_rank} is broken on purpose" in err
    # Rank 0 is named whether it failed itself or lost its peer ("Connection reset by peer")
    report = failure_report(err)
    if failing_rank == 1:
        assert re.fullmatch(
            r"fab: the run failed: rank 1 \(pid \d+\) exited with code 1; .*", report
        )
    else:
        assert re.fullmatch(r"fab: the run failed: rank 0 \(pid \d+\) raised ValueError .*", report)
    assert_all_gone(run)


def test_ddp_a_worker_killed_while_rank_0_waits_for_it_is_named(
    worker: Path, runs: list[Run]
) -> None:
    """Regression: rank 0, waiting in a collective, died of gloo's "Connection reset by peer"
    and nothing said that rank 1 had been killed."""
    pid_dir = worker.parent / "pids"
    run = Run(python(str(worker), "die", str(pid_dir), "1"), pid_dir)
    runs.append(run)
    code, _out, err = run.wait(timeout=90)
    assert code == 1, err
    report = failure_report(err)
    assert re.fullmatch(
        r"fab: the run failed: rank 1 \(pid \d+\) was killed by SIGKILL; .*", report
    )
    assert "terminate called" not in err
    assert_all_gone(run)


@pytest.mark.parametrize("victim", [1, 0])
def test_ddp_a_worker_killed_with_sigkill_ends_the_run(
    worker: Path, runs: list[Run], victim: int
) -> None:
    pid_dir = worker.parent / "pids"
    run = Run(python(str(worker), "hang", str(pid_dir)), pid_dir)
    runs.append(run)
    run.wait_until_ready(ranks=2)
    killed_at = time.monotonic()
    os.kill(run.rank_pids()[victim], signal.SIGKILL)
    code, _out, err = run.wait(timeout=FAILURE_BUDGET_SECONDS)
    assert time.monotonic() - killed_at < FAILURE_BUDGET_SECONDS
    if victim == 1:  # rank 0 is the launching process: it says what happened
        assert code == 1, err
        report = failure_report(err)
        assert re.fullmatch(
            r"fab: the run failed: rank 1 \(pid \d+\) was killed by SIGKILL; .*", report
        )
    else:
        assert code == -signal.SIGKILL
    assert_all_gone(run)


def test_ddp_busy_port_is_a_clear_error(worker: Path, runs: list[Run]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        pid_dir = worker.parent / "pids"
        run = Run(python(str(worker), "ok", str(pid_dir)), pid_dir, env={"MASTER_PORT": str(port)})
        runs.append(run)
        code, _out, err = run.wait(timeout=60)
    assert code != 0
    assert f"PortInUseError: port {port} on 127.0.0.1 is already in use" in err
    assert "MASTER_PORT" in err
    assert not list(pid_dir.glob("*.pid"))  # nothing started


SEEDED_ORDERS = textwrap.dedent(
    """
    import os, sys
    import torch
    from torch.utils.data import DataLoader
    from fab.core import Fabric

    strategy, pid_dir, seeds = sys.argv[1], sys.argv[2], sys.argv[3:]
    fabric = Fabric() if os.environ.get("FAB_CLI_DEVICES") else Fabric(
        accelerator="cpu", devices=2, strategy=strategy
    )
    fabric.launch()
    open(os.path.join(pid_dir, f"{fabric.global_rank}.pid"), "w").write(str(os.getpid()))
    for seed in map(int, seeds):
        fabric.seed_everything(seed)
        loader = fabric.setup_dataloaders(DataLoader(range(16), batch_size=4, shuffle=True))
        order = [int(i) for batch in loader for i in batch]
        print(f"rank {fabric.global_rank} seed {seed} order {order}", flush=True)
    """
)


@pytest.mark.parametrize("launcher", ["ddp", "fab run"])
def test_the_distributed_sampler_follows_the_global_seed(
    tmp_path: Path, runs: list[Run], launcher: str
) -> None:
    """Regression: the DistributedSampler that setup_dataloaders inserts shuffled with seed 0
    whatever seed_everything said. Every rank follows the seed, whichever launcher started it
    (ddp_spawn and ddp_fork: test_ddp.py)."""
    from torch.utils.data import DistributedSampler

    script = tmp_path / "orders.py"
    script.write_text(SEEDED_ORDERS)
    args = [str(script), "ddp", str(tmp_path), "1", "2", "1"]
    command = python(*args) if launcher == "ddp" else fab_run("--devices", "2", *args)
    run = Run(command, tmp_path)
    runs.append(run)
    code, out, err = run.wait(timeout=90)
    assert code == 0, err
    orders = {}
    for line in out.splitlines():
        found = re.fullmatch(r"rank (\d) seed (\d) order (\[.*\])", line)
        if found:
            orders.setdefault((int(found[1]), int(found[2])), []).append(json.loads(found[3]))
    for rank in (0, 1):
        for seed in (1, 2):
            expected = list(DistributedSampler(range(16), 2, rank, shuffle=True, seed=seed))
            assert orders[rank, seed] == [expected] * (2 if seed == 1 else 1), (rank, seed)
    assert orders[0, 1] != orders[0, 2]
    assert_all_gone(run)


def test_the_dp_fallback_warns_once_at_the_users_line(tmp_path: Path, runs: list[Run]) -> None:
    """Regression: strategy="dp" (run as ddp) warned once per rank, at a line of fab's registry."""
    script = tmp_path / "dp.py"
    script.write_text(
        "import os\n"
        "from fab.core import Fabric\n"
        "fabric = Fabric(accelerator='cpu', devices=2, strategy='dp')\n"
        "fabric.launch()\n"
        f"open(os.path.join({str(tmp_path)!r}, f'{{fabric.global_rank}}.pid'), 'w')"
        ".write(str(os.getpid()))\n"
        "fabric.barrier()\n"
    )
    run = Run(python(str(script)), tmp_path)
    runs.append(run)
    code, _out, err = run.wait(timeout=90)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "UserWarning: strategy='dp'" in line]
    assert len(warnings) == 1, err
    assert warnings[0].startswith(f"{script}:3: UserWarning: strategy='dp'"), err
    assert_all_gone(run)


# -- fab run: torchrun underneath --------------------------------------------------------------


def test_fab_run_starts_every_rank(worker: Path, runs: list[Run]) -> None:
    pid_dir = worker.parent / "pids"
    run = Run(
        fab_run("--accelerator", "cpu", "--devices", "2", str(worker), "ok", str(pid_dir)),
        pid_dir,
    )
    runs.append(run)
    code, out, err = run.wait(timeout=90)
    assert code == 0, err
    for rank in (0, 1):
        assert f"rank {rank} of 2 sum 3 TorchElasticEnvironment ['ok'" in out
    assert_all_gone(run)


def test_fab_run_needs_no_launch(tmp_path: Path, runs: list[Run]) -> None:
    """Under `fab run` the processes exist already: Fabric() sets this one up at once (as
    Lightning's does under `fabric run`), so a script without launch() gets real collectives."""
    script = tmp_path / "bare.py"
    script.write_text(
        "import os, sys, torch\n"
        "from fab.core import Fabric\n"
        "fabric = Fabric()\n"
        f"open(os.path.join({str(tmp_path)!r}, f'{{fabric.global_rank}}.pid'), 'w')"
        ".write(str(os.getpid()))\n"
        "total = fabric.all_reduce(torch.ones(1), reduce_op='sum')\n"
        "sys.stdout.write(f'rank {fabric.global_rank} sum {total.item():.0f}\\n')\n"
    )
    run = Run(fab_run("--accelerator", "cpu", "--devices", "2", str(script)), tmp_path)
    runs.append(run)
    code, out, err = run.wait(timeout=90)
    assert code == 0, err
    assert sorted(out.split()) == sorted(["rank", "0", "sum", "2", "rank", "1", "sum", "2"])
    assert_all_gone(run)


def test_fab_run_and_the_code_must_agree(worker: Path, runs: list[Run]) -> None:
    pid_dir = worker.parent / "pids"
    # The script asks Fabric for 3 devices; the command line says 2.
    run = Run(
        fab_run("--accelerator", "cpu", "--devices", "2", str(worker), "ok", str(pid_dir)),
        pid_dir,
        env={"WORKER_DEVICES": "3"},
    )
    runs.append(run)
    code, _out, err = run.wait(timeout=90)
    assert code != 0
    assert "CLIConflictError: Fabric(devices=3) conflicts with `fab run --devices 2`" in err


def test_fab_run_one_rank_raising_ends_the_run(worker: Path, runs: list[Run]) -> None:
    pid_dir = worker.parent / "pids"
    start = time.monotonic()
    run = Run(
        fab_run("--accelerator", "cpu", "--devices", "2", str(worker), "raise", str(pid_dir), "1"),
        pid_dir,
    )
    runs.append(run)
    code, _out, err = run.wait(timeout=90)
    assert time.monotonic() - start < FAILURE_BUDGET_SECONDS + 15
    assert code == 1
    assert "ValueError: rank 1 is broken on purpose" in err
    assert "fab run: rank 1" in err
    assert_all_gone(run)


def test_fab_run_a_worker_killed_with_sigkill_ends_the_run(worker: Path, runs: list[Run]) -> None:
    pid_dir = worker.parent / "pids"
    run = Run(
        fab_run("--accelerator", "cpu", "--devices", "2", str(worker), "hang", str(pid_dir)),
        pid_dir,
    )
    runs.append(run)
    run.wait_until_ready(ranks=2)
    killed_at = time.monotonic()
    os.kill(run.rank_pids()[1], signal.SIGKILL)
    code, _out, err = run.wait(timeout=FAILURE_BUDGET_SECONDS)
    assert time.monotonic() - killed_at < FAILURE_BUDGET_SECONDS
    assert code == 1
    assert "fab run: rank 1" in err
    assert "killed by signal 9" in err
    assert_all_gone(run)


def test_fab_run_killed_outright_takes_its_workers_along(worker: Path, runs: list[Run]) -> None:
    pid_dir = worker.parent / "pids"
    run = Run(
        fab_run("--accelerator", "cpu", "--devices", "2", str(worker), "hang", str(pid_dir)),
        pid_dir,
    )
    runs.append(run)
    run.wait_until_ready(ranks=2)
    os.kill(run.process.pid, signal.SIGKILL)  # torchrun's agent alone; its workers are not told
    run.wait(timeout=10)
    assert_all_gone(run, within=10)


def test_fab_run_busy_port_is_a_clear_error(worker: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            fab_run("--main-port", str(port), "--devices", "2", str(worker), "ok", "x"),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "--main-port" in result.stderr


# -- two nodes on one machine ---------------------------------------------------------------------

NODE_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import torch
    from fab.core import Fabric

    kwargs = {} if os.environ.get("FAB_CLI_DEVICES") else {
        "accelerator": "cpu", "devices": 1, "num_nodes": 2, "strategy": "ddp"
    }
    fabric = Fabric(**kwargs)
    fabric.launch()
    total = fabric.all_reduce(torch.tensor([10.0 ** fabric.global_rank]), reduce_op="sum")
    sys.stdout.write(
        f"node {fabric.node_rank} rank {fabric.global_rank} of {fabric.world_size} "
        f"sum {total.item():.0f}\\n"
    )
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("launcher", ["ddp", "fab run"])
def test_two_nodes_meet_at_the_main_address(tmp_path: Path, runs: list[Run], launcher: str) -> None:
    """Two "nodes" (two commands on this machine) with one process each: node ranks, global ranks
    and the world size come from NODE_RANK / --node-rank, the rendezvous from the main address."""
    script = tmp_path / "node.py"
    script.write_text(NODE_SCRIPT)
    port = str(_free_port())
    started = []
    for node in (0, 1):
        if launcher == "ddp":
            command = python(str(script))
            env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "NODE_RANK": str(node)}
        else:
            command = fab_run(
                "--accelerator", "cpu", "--devices", "1", "--num-nodes", "2",
                "--node-rank", str(node), "--main-address", "127.0.0.1", "--main-port", port,
                str(script),
            )  # fmt: skip
            env = {}
        run = Run(command, tmp_path, env=env)
        runs.append(run)
        started.append(run)
    outputs = [run.wait(timeout=90) for run in started]
    for node, (code, out, err) in enumerate(outputs):
        assert code == 0, err
        assert f"node {node} rank {node} of 2 sum 11" in out
