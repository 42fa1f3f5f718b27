"""Versions claimed atomically: runs started together never share one, and the ranks that rank 0
starts after its claim take the same version. (A rank that an outside launcher started has none:
test_csv.py and test_tensorboard.py.)"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fab.loggers import CSVLogger

RUNS = 3

# Each run: make the loggers as soon as the start file appears, wait until every run has made
# its own (so that no run has written anything yet when the others choose), then log its id.
RACER = """
import json, os, sys, time
from pathlib import Path
from fab.loggers import CSVLogger, TensorBoardLogger

root, me, runs = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
while not (root / "start").exists():
    time.sleep(0.001)
loggers = [CSVLogger(root, name="race", flush_logs_every_n_steps=1)]
loggers.append(TensorBoardLogger(root, name="race-tb"))
(root / f"made-{me}").touch()
while len(list(root.glob("made-*"))) < runs:
    time.sleep(0.001)
for logger in loggers:
    logger.log_metrics({"run": float(me)}, step=0)
    logger.finalize("success")
print(json.dumps([logger.version for logger in loggers]))
"""


def _read_rows(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.timeout(300)
def test_runs_started_together_claim_different_versions(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK")}
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(tmp_path), str(i), str(RUNS)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(RUNS)
    ]
    time.sleep(0.5)  # let every interpreter start, so that they race for the versions
    (tmp_path / "start").touch()
    outputs = [racer.communicate(timeout=240)[0] for racer in racers]
    assert [racer.returncode for racer in racers] == [0] * RUNS, outputs
    versions = [json.loads(output) for output in outputs]

    csv_versions = sorted(v[0] for v in versions)
    assert csv_versions == list(range(RUNS))
    for run, (csv_version, tb_version) in enumerate(versions):
        rows = _read_rows(tmp_path / "race" / f"version_{csv_version}" / "metrics.csv")
        assert rows == [{"step": "0", "run": f"{run}.0"}]
        events = EventAccumulator(str(tmp_path / "race-tb" / f"version_{tb_version}"))
        events.Reload()
        assert [e.value for e in events.Scalars("run")] == [float(run)]
    assert sorted(v[1] for v in versions) == list(range(RUNS))


# What strategy "ddp" does: rank 0 makes its loggers, then starts the script again for rank 1
# with its own environment and RANK=1.
RANK_ONE = """
import json, sys
from fab.loggers import CSVLogger, TensorBoardLogger
loggers = [CSVLogger(sys.argv[1]), TensorBoardLogger(sys.argv[1]), CSVLogger(sys.argv[1])]
print(json.dumps([logger.version for logger in loggers]))
print(json.dumps([logger.log_dir for logger in loggers]))
"""


def test_a_rank_started_after_the_claim_takes_rank_zeros_versions(tmp_path: Path) -> None:
    from fab.loggers import TensorBoardLogger

    (tmp_path / "lightning_logs" / "version_0").mkdir(parents=True)  # an earlier run
    loggers = [CSVLogger(tmp_path), TensorBoardLogger(tmp_path), CSVLogger(tmp_path)]
    assert [logger.version for logger in loggers] == [1, 2, 3]
    env = {**os.environ, "RANK": "1", "LOCAL_RANK": "1"}
    result = subprocess.run(
        [sys.executable, "-c", RANK_ONE, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    versions, log_dirs = (json.loads(line) for line in result.stdout.splitlines())
    assert versions == [1, 2, 3]
    assert log_dirs == [logger.log_dir for logger in loggers]
    assert sorted(p.name for p in (tmp_path / "lightning_logs").iterdir()) == [
        "version_0",
        "version_1",
        "version_2",
        "version_3",
    ]
