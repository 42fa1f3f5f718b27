"""is_shared_filesystem: rank 0 writes a random file, the other processes look for it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from fab.core import Fabric
from fab.core.strategies.strategy import ReduceOp, Strategy
from fab.core.utilities import is_shared_filesystem


class OtherRanksAgree(Strategy):
    """This process as ``rank`` of 2; the other process's side of each collective is scripted:
    it broadcasts ``rank_zero_sends`` (when it is rank 0) and holds True for every flag."""

    def __init__(self, rank: int, rank_zero_sends: list[Any] | None = None) -> None:
        super().__init__()
        self.rank = rank
        self.sent = list(rank_zero_sends or [])
        self.broadcasts: list[Any] = []

    @property
    def root_device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def world_size(self) -> int:
        return 2

    @property
    def global_rank(self) -> int:
        return self.rank

    def all_gather(
        self, tensor: Tensor, group: Any | None = None, sync_grads: bool = False
    ) -> Tensor:
        raise NotImplementedError

    def all_reduce(
        self, tensor: Tensor, group: Any | None = None, reduce_op: ReduceOp = "mean"
    ) -> Tensor:
        assert reduce_op == "sum"
        return tensor + 1

    def barrier(self, name: str | None = None) -> None:
        pass

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        self.broadcasts.append(obj)
        return obj if self.rank == src else self.sent.pop(0)


# -- one process, remote paths ----------------------------------------------------------------


def test_one_process_always_shares_its_filesystem(tmp_path: Path) -> None:
    strategy = Fabric(accelerator="cpu").strategy
    assert is_shared_filesystem(strategy)
    assert is_shared_filesystem(strategy, tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing was written


@pytest.mark.parametrize("url", ["s3://bucket/run", "gs://bucket", "hdfs://namenode/x"])
def test_a_remote_url_counts_as_shared_without_communicating(url: str) -> None:
    strategy = OtherRanksAgree(rank=1)
    assert is_shared_filesystem(strategy, url)
    assert strategy.broadcasts == []


# -- one side of two processes ----------------------------------------------------------------


def test_rank_zero_writes_a_random_file_and_removes_it_after(tmp_path: Path) -> None:
    strategy = OtherRanksAgree(rank=0)
    assert is_shared_filesystem(strategy, tmp_path)
    path, (name, token, error) = strategy.broadcasts
    assert path == str(tmp_path.resolve())
    assert name.startswith(".fab_shared_fs_check_")
    assert len(token) == 32
    assert error == ""
    assert list(tmp_path.iterdir()) == []


def test_a_rank_that_sees_rank_zeros_file_reports_shared(tmp_path: Path) -> None:
    (tmp_path / ".fab_shared_fs_check_x").write_text("token")
    strategy = OtherRanksAgree(
        rank=1, rank_zero_sends=[str(tmp_path), (".fab_shared_fs_check_x", "token", "")]
    )
    assert is_shared_filesystem(strategy, tmp_path)
    assert (tmp_path / ".fab_shared_fs_check_x").exists()  # only rank 0 removes it


def test_a_rank_that_never_sees_rank_zeros_file_reports_not_shared_after_the_timeout(
    tmp_path: Path,
) -> None:
    strategy = OtherRanksAgree(rank=1, rank_zero_sends=[str(tmp_path), (".fab_x", "token", "")])
    start = time.monotonic()
    assert not is_shared_filesystem(strategy, tmp_path, timeout=0.3)
    assert time.monotonic() - start >= 0.3


def test_a_file_with_other_content_is_not_rank_zeros(tmp_path: Path) -> None:
    (tmp_path / ".fab_x").write_text("stale")
    strategy = OtherRanksAgree(rank=1, rank_zero_sends=[str(tmp_path), (".fab_x", "token", "")])
    assert not is_shared_filesystem(strategy, tmp_path, timeout=0.1)


def test_a_file_path_is_checked_in_its_directory(tmp_path: Path) -> None:
    checkpoint = tmp_path / "last.ckpt"
    checkpoint.write_text("")
    strategy = OtherRanksAgree(rank=0)
    assert is_shared_filesystem(strategy, checkpoint)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_rank_zero_failing_to_write_raises_os_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: Path, *args: Any, **kwargs: Any) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "write_text", refuse)
    with pytest.raises(OSError, match=r"rank 0 cannot write there.*Permission denied"):
        is_shared_filesystem(OtherRanksAgree(rank=0), tmp_path)


def test_other_ranks_raise_too_when_rank_zero_cannot_write(tmp_path: Path) -> None:
    strategy = OtherRanksAgree(rank=1, rank_zero_sends=[str(tmp_path), ("", "", "PermissionError")])
    with pytest.raises(OSError, match="rank 0 cannot write there"):
        is_shared_filesystem(strategy, tmp_path)


# -- two real processes (gloo) ----------------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import json, os, sys
    from typing import Any

    import torch
    import torch.distributed as dist

    from fab.core.strategies.strategy import Strategy
    from fab.core.utilities import is_shared_filesystem


    class GlooStrategy(Strategy):
        @property
        def root_device(self):
            return torch.device("cpu")

        @property
        def world_size(self):
            return dist.get_world_size()

        @property
        def global_rank(self):
            return dist.get_rank()

        def all_gather(self, tensor, group=None, sync_grads=False):
            out = [torch.empty_like(tensor) for _ in range(self.world_size)]
            dist.all_gather(out, tensor)
            return torch.stack(out)

        def all_reduce(self, tensor, group=None, reduce_op="mean"):
            op = {"sum": dist.ReduceOp.SUM, "mean": dist.ReduceOp.SUM,
                  "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[reduce_op]
            dist.all_reduce(tensor, op=op)
            return tensor / self.world_size if reduce_op == "mean" else tensor

        def barrier(self, name=None):
            dist.barrier()

        def broadcast(self, obj, src=0):
            box = [obj]
            dist.broadcast_object_list(box, src=src)
            return box[0]


    rank, store, scenarios = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    results = {}
    try:
        for name, path_of_rank in scenarios.items():
            try:
                results[name] = is_shared_filesystem(GlooStrategy(), path_of_rank[rank], timeout=2)
            except OSError as err:
                results[name] = type(err).__name__
    finally:
        dist.destroy_process_group()
    print(json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two gloo processes call is_shared_filesystem in each scenario (started once: ~5 s);
    returns each scenario's outcome per rank, and the directories used."""
    root = tmp_path_factory.mktemp("two_ranks")
    for name in ("shared", "a", "b", "exists"):
        (root / name).mkdir()
    scenarios = {
        "same directory": [str(root / "shared")] * 2,
        "different directories": [str(root / "a"), str(root / "b")],
        "missing on rank 1": [str(root / "exists"), str(root / "missing")],
    }
    script = root / "worker.py"
    script.write_text(WORKER)
    processes = [
        subprocess.Popen(
            [sys.executable, str(script), str(rank), str(root / "store"), json.dumps(scenarios)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    per_rank = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        per_rank.append(json.loads(out.strip().splitlines()[-1]))
    outcomes = {name: [results[name] for results in per_rank] for name in scenarios}
    return {"outcomes": outcomes, "root": root}


def test_two_processes_on_one_machine_share_a_directory(two_ranks: dict[str, Any]) -> None:
    assert two_ranks["outcomes"]["same directory"] == [True, True]
    assert list((two_ranks["root"] / "shared").iterdir()) == []  # the check file is gone


def test_two_processes_given_different_directories_do_not_share(
    two_ranks: dict[str, Any],
) -> None:
    assert two_ranks["outcomes"]["different directories"] == [False, False]


def test_a_path_missing_on_one_process_raises_on_every_process(
    two_ranks: dict[str, Any],
) -> None:
    assert two_ranks["outcomes"]["missing on rank 1"] == ["FileNotFoundError"] * 2
