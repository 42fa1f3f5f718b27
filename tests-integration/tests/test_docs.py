"""Every documented example runs: python blocks of README.md and docs/*.md, and docs/examples/."""

from __future__ import annotations

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


def test_main_job_example_learns_the_spirals(tmp_path: Path) -> None:
    example = str(ROOT / "docs/examples/train_cpu.py")
    result = subprocess.run(
        [sys.executable, example, "--epochs", "8", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    match = re.search(r"test accuracy ([\d.]+)%", result.stdout)
    assert match is not None, result.stdout
    assert float(match.group(1)) > 90.0
