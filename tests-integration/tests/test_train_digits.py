"""The README's main job, docs/examples/train_digits.py, as a user sees it: what it prints exists,
and in a terminal its progress bar shows the loss that the epoch's line reports. (Training to the
documented accuracy: test_docs.py; resuming: test_resume.py.)"""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "train_digits.py"


@pytest.mark.timeout(200)
def test_zero_epochs_exits_0_and_prints_no_path_it_did_not_write(tmp_path: Path) -> None:
    command = [sys.executable, str(EXAMPLE), "--epochs", "0", "--out", str(tmp_path / "run")]
    command += ["--devices", "1", "--strategy", "auto"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=150)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "test accuracy" in result.stdout
    assert "checkpoint: none (no epoch ran)" in result.stdout.splitlines(), result.stdout
    assert "metrics: none (no epoch ran)" in result.stdout.splitlines(), result.stdout
    assert not re.search(r"^(plot|view):", result.stdout, re.MULTILINE), result.stdout
    assert not (tmp_path / "run" / "last.pt").exists()


def run_in_a_terminal(command: list[str], timeout: float) -> tuple[int, str]:
    """Run ``command`` with a pseudo-terminal as its stdout; its exit code and what it wrote."""
    leader, follower = os.openpty()
    process = subprocess.Popen(command, stdout=follower, stderr=subprocess.STDOUT)
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1.0)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # every writer closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(leader)
    return code, b"".join(chunks).decode(errors="replace")


@pytest.mark.distributed
@pytest.mark.timeout(200)
def test_in_a_terminal_the_bar_ends_each_epoch_on_the_loss_its_line_reports(
    tmp_path: Path,
) -> None:
    epochs = 2
    command = [sys.executable, str(EXAMPLE), "--epochs", str(epochs), "--out", str(tmp_path)]
    code, shown = run_in_a_terminal(command, timeout=150)
    assert code == 0, shown
    bars = re.findall(r"epoch +(\d+)/\d+ \[[#.]+\] (\d+)/(\d+)  loss ([\d.]+)", shown)
    lines = re.findall(r"epoch +(\d+)/\d+  loss ([\d.]+)  train", shown)
    assert [epoch for epoch, _ in lines] == [str(e) for e in range(1, epochs + 1)], shown
    for epoch, loss in lines:
        last_bar = [bar for bar in bars if bar[0] == epoch][-1]
        assert last_bar[1] == last_bar[2], shown  # the bar reached the epoch's last batch
        assert last_bar[3] == loss, shown
