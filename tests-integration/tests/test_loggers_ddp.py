"""Loggers under two real processes (gloo on CPU, ``ddp_spawn``, and ``ddp``, which runs the script
again for rank 1): rank 0 writes, rank 1 writes nothing but names the same folders, and what was
logged reads back with the real libraries: csv.DictReader, tensorboard's EventAccumulator, MLflow's
MlflowClient, and the third-party ``acme_memory`` logger by name.

Every function given to ``launch`` is at module level (spawn pickles it)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from fab.core import Fabric
from fab.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(180)]

STEPS = 5


def _children() -> set[int]:
    me = str(os.getpid())
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline") as fh:
                cmdline = fh.read()
        except (OSError, IndexError):
            continue
        if fields[1] == me and fields[0] != "Z" and "resource_tracker" not in cmdline:
            found.add(int(entry))
    return found


@pytest.fixture(autouse=True)
def _no_orphans() -> Iterator[None]:
    """No process a test started is alive 5 s after it ends."""
    import multiprocessing

    before = _children()
    yield
    deadline = time.monotonic() + 5
    while (left := _children() - before) and time.monotonic() < deadline:
        multiprocessing.active_children()
        time.sleep(0.05)
    assert not left, f"processes left behind: {sorted(left)}"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)


# -- run in each spawned process -------------------------------------------------------------------


def _train_and_log(fabric: Fabric) -> dict[str, Any]:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    for logger in fabric.loggers:
        logger.log_hyperparams({"lr": 0.1, "world_size": fabric.world_size})
    for _ in range(STEPS):
        x = torch.randn(8, 3) + fabric.global_rank
        loss = (model(x) - 1).pow(2).mean()
        fabric.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        fabric.log("loss", loss)
    for logger in fabric.loggers:
        # Called on every rank: only rank 0's call may reach the files.
        logger.log_metrics({"from_rank": fabric.global_rank}, step=100)
        logger.finalize("success")
    mlflow = next((lg for lg in fabric.loggers if isinstance(lg, MLFlowLogger)), None)
    return {"rank": fabric.global_rank, "run_id": mlflow.run_id if mlflow else None}


def _log_without_finalize(fabric: Fabric) -> None:
    fabric.log("loss", float(fabric.global_rank))


# -- tests ---------------------------------------------------------------------------------------


def test_rank_zero_writes_csv_tensorboard_and_mlflow_and_rank_one_nothing(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    csv_logger = CSVLogger(tmp_path / "logs", name="ddp")
    tb_logger = TensorBoardLogger(tmp_path / "logs", name="ddp")
    mlflow_logger = MLFlowLogger("ddp", save_dir=tmp_path / "mlruns")
    fabric = Fabric(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        loggers=[csv_logger, tb_logger, mlflow_logger],
    )
    result = fabric.launch(_train_and_log)
    assert result["rank"] == 0

    # CSV: one row per step, written once, and only rank 0's direct call.
    with open(csv_logger.metrics_file, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["step"] for row in rows] == ["0", "1", "2", "3", "4", "100"]
    assert all(float(row["loss"]) >= 0 for row in rows[:STEPS])
    assert rows[-1]["from_rank"] == "0"
    assert (Path(csv_logger.log_dir) / "hparams.yaml").read_text() == "lr: 0.1\nworld_size: 2\n"
    # Each logger claimed a version of its own when it was made (as Lightning's two loggers in one
    # folder end up); rank 1 claimed none.
    assert (csv_logger.version, tb_logger.version) == (0, 1)
    assert sorted(p.name for p in (tmp_path / "logs" / "ddp").iterdir()) == [
        "version_0",
        "version_1",
    ]

    # TensorBoard: one event file (rank 1 opened no writer), every step once.
    event_files = list(Path(tb_logger.log_dir).glob("events.out.tfevents.*"))
    assert len(event_files) == 1
    events = EventAccumulator(tb_logger.log_dir)
    events.Reload()
    assert [e.step for e in events.Scalars("loss")] == list(range(STEPS))
    assert [(e.step, e.value) for e in events.Scalars("from_rank")] == [(100, 0.0)]
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")
    tb_losses = [pytest.approx(e.value) for e in events.Scalars("loss")]
    assert [float(row["loss"]) for row in rows[:STEPS]] == tb_losses

    # MLflow: one run in the experiment, finished, with rank 0's values.
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    client = MlflowClient(tracking_uri=f"file:{tmp_path / 'mlruns'}")
    experiment = client.get_experiment_by_name("ddp")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert [run.info.run_id for run in runs] == [result["run_id"]]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.1", "world_size": "2"}
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [(m.step, pytest.approx(m.value)) for m in history] == list(
        zip(range(STEPS), tb_losses, strict=True)
    )
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "from_rank")] == [
        (100, 0.0)
    ]


def test_third_party_logger_by_name_records_rank_zero_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``acme_memory`` (tests-integration/plugins/acme-fab-plugins) named in Fabric(loggers=...):
    under two processes its file holds rank 0's records only, each once."""
    log_file = tmp_path / "acme.jsonl"
    monkeypatch.setenv("ACME_LOG_FILE", str(log_file))  # inherited by the spawned processes
    fabric = Fabric(accelerator="cpu", devices=2, strategy="ddp_spawn", loggers=["acme_memory"])
    assert type(fabric.logger).__name__ == "MemoryLogger"
    fabric.launch(_train_and_log)
    records = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert records[0] == {"kind": "hyperparams", "params": {"lr": 0.1, "world_size": 2}}
    assert [r["step"] for r in records[1:]] == [0, 1, 2, 3, 4, 100]
    assert records[-1]["metrics"] == {"from_rank": 0}


def test_buffered_rows_reach_the_file_when_rank_zero_exits_without_finalize(
    tmp_path: Path,
) -> None:
    logger = CSVLogger(tmp_path, flush_logs_every_n_steps=1000)
    fabric = Fabric(accelerator="cpu", devices=2, strategy="ddp_spawn", loggers=logger)
    fabric.launch(_log_without_finalize)
    with open(logger.metrics_file, newline="") as handle:
        assert list(csv.DictReader(handle)) == [{"step": "0", "loss": "0.0"}]


# Strategy "ddp" runs this script again for rank 1, which makes its own loggers. Rank 0 logs
# before launch, so that its version folder holds a file when rank 1 looks.
DDP_SCRIPT = """
import json, sys
from pathlib import Path
from fab.core import Fabric
from fab.loggers import CSVLogger, TensorBoardLogger

root = Path(sys.argv[1])
loggers = [CSVLogger(root, name="ddp"), TensorBoardLogger(root, name="ddp")]
loggers[0].log_metrics({"before_launch": 1.0}, step=0)
loggers[0].save()
fabric = Fabric(accelerator="cpu", devices=2, strategy="ddp", loggers=loggers)

def run(fabric):
    fabric.log("loss", 1.0 + fabric.global_rank)
    for logger in fabric.loggers:
        logger.finalize("success")
    seen = [[logger.version, logger.log_dir] for logger in fabric.loggers]
    (root / f"rank{fabric.global_rank}.json").write_text(json.dumps(seen))

fabric.launch(run)
"""


def test_under_ddp_rank_one_names_rank_zeros_versions_and_claims_none(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(DDP_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=150
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rank0 = json.loads((tmp_path / "rank0.json").read_text())
    rank1 = json.loads((tmp_path / "rank1.json").read_text())
    assert rank0 == [
        [0, str(tmp_path / "ddp" / "version_0")],
        [1, str(tmp_path / "ddp" / "version_1")],
    ]
    assert rank1 == rank0
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == ["version_0", "version_1"]
    with open(tmp_path / "ddp" / "version_0" / "metrics.csv", newline="") as handle:
        assert list(csv.DictReader(handle)) == [
            {"step": "0", "before_launch": "1.0", "loss": ""},
            {"step": "1", "before_launch": "", "loss": "1.0"},
        ]
