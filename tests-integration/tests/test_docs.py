"""Every documented example runs: python blocks of README.md and docs/*.md, and docs/examples/."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC_FILES = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted(ROOT.glob("packages/*/README.md")),
]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks() -> list[tuple[str, str]]:
    blocks = []
    for path in DOC_FILES:
        for index, match in enumerate(BLOCK.finditer(path.read_text())):
            blocks.append((f"{path.relative_to(ROOT)}#{index}", match.group(1)))
    return blocks


@pytest.mark.parametrize(("where", "code"), python_blocks(), ids=[w for w, _ in python_blocks()])
def test_documented_python_block_runs(where: str, code: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"{where} failed:\n{result.stderr}"


def test_there_are_documented_blocks_to_run() -> None:
    assert len(python_blocks()) >= 3


#: What the main job's documentation promises (README.md, docs/examples/train_digits.py): 97.75%
#: measured with the defaults; asserted with a little room for other CPUs' arithmetic.
MAIN_JOB_ACCURACY = 97.0
MAIN_JOB_EPOCHS = 15  # the example's default


@pytest.mark.distributed
@pytest.mark.timeout(150)
def test_main_job_trains_the_digits_on_two_processes(tmp_path: Path) -> None:
    """The README's main job with its defaults (two processes, strategy "ddp"): it reaches the
    stated accuracy, and only rank 0 prints: one line per epoch, and no progress bar redrawn with
    carriage returns, since stdout is not a terminal."""
    example = str(ROOT / "docs/examples/train_digits.py")
    result = subprocess.run(
        [sys.executable, example, "--out", str(tmp_path)], capture_output=True, timeout=120
    )
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, out + err
    assert "\r" not in out, out
    epochs = re.findall(r"^epoch +(\d+)/(\d+) +loss .* test accuracy [\d.]+%", out, re.MULTILINE)
    expected = [(str(e), str(MAIN_JOB_EPOCHS)) for e in range(1, MAIN_JOB_EPOCHS + 1)]
    assert epochs == expected, out  # each epoch once: rank 1 printed nothing
    finals = re.findall(
        r"^test accuracy ([\d.]+)% after \d+ epochs on 2 process", out, re.MULTILINE
    )
    assert len(finals) == 1, out
    assert float(finals[0]) >= MAIN_JOB_ACCURACY, out
    assert (tmp_path / "last.pt").is_file()
    # where the metrics are, and how to look at them: a CSV file, its plot, TensorBoard
    run_dir = tmp_path / "logs" / "version_0"
    assert f"metrics: {run_dir / 'metrics.csv'}" in out.splitlines(), out
    with open(run_dir / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["step"] for row in rows] == [str(e) for e in range(1, MAIN_JOB_EPOCHS + 1)]
    assert float(rows[-1]["test_accuracy"]) * 100 == pytest.approx(float(finals[0]), abs=0.01)
    assert f"view: tensorboard --logdir {tmp_path / 'logs'}" in out.splitlines(), out
    assert list(run_dir.glob("events.out.tfevents.*")), "no TensorBoard event file"
    assert f"plot: {run_dir / 'loss.png'}" in out.splitlines(), out
    assert (run_dir / "loss.png").read_bytes().startswith(b"\x89PNG")
    assert not (tmp_path / "logs" / "version_1").exists(), "rank 1 wrote a run of its own"
