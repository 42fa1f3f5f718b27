"""Run the 2-process example many times and check that every run exits 0 and leaves nothing.

    python tools/dev.py stress           # 100 runs of each launcher, then docs/reliability.md
    python tools/dev.py stress -- --runs 20 --launcher ddp --no-write

Each run is started in a session of its own; after it ends, no process of that session may be
alive (a worker left behind would be). The result, with a fingerprint of the launch code, is
written into docs/reliability.md between markers; tools/tests/test_stress_record.py fails when
the launch code changes and the record was not re-measured.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import platform
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "ddp_minimal.py"
RECORD = ROOT / "docs" / "reliability.md"
BEGIN = "<!-- stress:begin -->"
END = "<!-- stress:end -->"
#: The code whose change calls for a new measurement: every launcher and what it starts.
LAUNCH_CODE = (
    "packages/fab-strategies/src/fab/strategies/launchers",
    "packages/fab-strategies/src/fab/strategies/ddp.py",
    "packages/fab-strategies/src/fab/strategies/environments/fab.py",
    "packages/fab-core/src/fab/core/run_command.py",
    "docs/examples/ddp_minimal.py",
)
#: How each launcher starts the example.
LAUNCHERS: dict[str, list[str]] = {
    "ddp": [str(EXAMPLE)],
    "ddp_spawn": [str(EXAMPLE), "--strategy", "ddp_spawn"],
    "fab-run": [
        *("-m", "fab.core.cli", "run", "--accelerator", "cpu", "--devices", "2"),
        str(EXAMPLE),
    ],
}
RUN_TIMEOUT = 120.0


def launch_code_fingerprint(root: Path = ROOT) -> str:
    """A short hash of every file of :data:`LAUNCH_CODE` (paths and contents)."""
    digest = hashlib.sha256()
    for entry in LAUNCH_CODE:
        path = root / entry
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            digest.update(file.relative_to(root).as_posix().encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


@dataclass
class Outcome:
    code: int
    seconds: float
    left_behind: int
    tail: str


def session_processes(session_id: int) -> list[int]:
    """Living processes of a session (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields: state, ppid, pgrp, session, ...
        if int(fields[3]) == session_id and fields[0] not in ("Z", "X"):
            found.append(int(entry))
    return found


def run_once(python: str, args: list[str]) -> Outcome:
    start = time.monotonic()
    process = subprocess.Popen(
        [python, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        out, _ = process.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, _ = process.communicate()
    seconds = time.monotonic() - start
    deadline = time.monotonic() + 2.0  # children reaped by init may need a moment
    left = session_processes(process.pid)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = session_processes(process.pid)
    for pid in left:  # never leave them, even when reporting them
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return Outcome(process.returncode, seconds, len(left), out[-2000:])


def stress(launcher: str, runs: int, python: str) -> list[Outcome]:
    outcomes = []
    for index in range(runs):
        outcome = run_once(python, LAUNCHERS[launcher])
        outcomes.append(outcome)
        status = "ok" if outcome.code == 0 and not outcome.left_behind else "FAILED"
        print(
            f"{launcher} {index + 1}/{runs}: exit {outcome.code}, {outcome.seconds:.1f} s, "
            f"{outcome.left_behind} left behind  {status}",
            flush=True,
        )
        if status == "FAILED":
            print(outcome.tail, flush=True)
    return outcomes


def table(results: dict[str, list[Outcome]]) -> str:
    lines = [
        "| launcher | runs | exit 0 | other exits | processes left | median s | max s |",
        "|---|---|---|---|---|---|---|",
    ]
    for launcher, outcomes in results.items():
        seconds = sorted(o.seconds for o in outcomes)
        others = Counter(o.code for o in outcomes if o.code != 0)
        lines.append(
            f"| `{launcher}` | {len(outcomes)} | {sum(o.code == 0 for o in outcomes)} | "
            f"{', '.join(f'{c}: {n}' for c, n in sorted(others.items())) or 'none'} | "
            f"{sum(o.left_behind for o in outcomes)} | {seconds[len(seconds) // 2]:.1f} | "
            f"{seconds[-1]:.1f} |"
        )
    return "\n".join(lines)


def write_record(results: dict[str, list[Outcome]], command: str) -> None:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = "\n".join(
        [
            BEGIN,
            f"Measured {when} on {platform.machine()} Linux, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, with `{command}`.",
            "",
            table(results),
            "",
            f"Launch code fingerprint: `{launch_code_fingerprint()}`",
            END,
        ]
    )
    text = RECORD.read_text(encoding="utf-8")
    start, end = text.index(BEGIN), text.index(END) + len(END)
    RECORD.write_text(text[:start] + body + text[end:], encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument(
        "--launcher",
        action="append",
        choices=sorted(LAUNCHERS),
        help="repeatable; default: ddp and fab-run",
    )
    parser.add_argument("--no-write", action="store_true", help="do not update the record")
    args = parser.parse_args()
    launchers = args.launcher or ["ddp", "fab-run"]
    results = {name: stress(name, args.runs, sys.executable) for name in launchers}
    print(table(results))
    clean = all(o.code == 0 and not o.left_behind for r in results.values() for o in r)
    if not args.no_write:
        flags = " ".join(f"--launcher {name}" for name in launchers)
        write_record(results, f"python tools/dev.py stress -- --runs {args.runs} {flags}")
        print(f"wrote {RECORD.relative_to(ROOT)}")
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
