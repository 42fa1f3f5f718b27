"""Run the 2-process example many times, and runs in which a worker fails, and check that every
run ends as it must and leaves nothing.

    python tools/dev.py stress           # 100 runs of each case, then docs/reliability.md
    python tools/dev.py stress -- --runs 20 --case ddp --case ddp-worker-raises --no-write

The cases: the example under each launcher (``ddp``, ``fab-run``, ``ddp_spawn`` on request) must
exit 0; a run of ``strategy="ddp"`` whose rank 1 raises (``ddp-worker-raises``) or is killed with
SIGKILL (``ddp-worker-killed``) while rank 0 waits for it in a collective must exit 1 with
fab's line naming rank 1. Each run is started in a session of its own; after it ends, no process
of that session may be alive (a worker left behind would be). The result, with a fingerprint of
the launch code, is written into docs/reliability.md between markers;
tools/tests/test_stress_record.py fails when the launch code changes and the record was not
re-measured.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import platform
import re
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
FAULT = ROOT / "tools" / "stress_fault.py"
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
    "tools/stress_fault.py",
)


@dataclass(frozen=True)
class Case:
    """How a case is started and how it must end."""

    args: list[str]
    #: The exit code every run must end with.
    code: int = 0
    #: A pattern the run's output must hold (fab naming the failed rank).
    says: str | None = None

    @property
    def expected(self) -> str:
        return f"exit {self.code}" + (", rank 1 named" if self.says else "")


def _worker_fails(fault: str, how: str) -> Case:
    return Case(
        [str(FAULT), fault],
        code=1,
        says=rf"fab: the run failed: rank 1 \(pid \d+\) {how}; stopping the other ranks",
    )


#: Every case, by name.
CASES: dict[str, Case] = {
    "ddp": Case([str(EXAMPLE)]),
    "ddp_spawn": Case([str(EXAMPLE), "--strategy", "ddp_spawn"]),
    "fab-run": Case(
        [*("-m", "fab.core.cli", "run", "--accelerator", "cpu", "--devices", "2"), str(EXAMPLE)]
    ),
    "ddp-worker-raises": _worker_fails("raise", "exited with code 1"),
    "ddp-worker-killed": _worker_fails("sigkill", "was killed by SIGKILL"),
}
#: What ``stress`` runs without ``--case``.
DEFAULT_CASES = ("ddp", "fab-run", "ddp-worker-raises", "ddp-worker-killed")
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
    #: Whether the output holds what the case must say (True when it must say nothing).
    said: bool = True

    def as_expected(self, case: Case) -> bool:
        return self.code == case.code and self.said and not self.left_behind

    def describe(self) -> str:
        return f"exit {self.code}" + ("" if self.said else " without naming the rank")


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


def run_once(python: str, args: list[str], says: str | None = None) -> Outcome:
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
    said = says is None or re.search(says, out) is not None
    return Outcome(process.returncode, seconds, len(left), out[-2000:], said)


def stress(
    names: list[str], runs: int, python: str, minutes: float | None = None
) -> dict[str, list[Outcome]]:
    """``runs`` runs of each case, taken in turns (one of each, then again), so that every case
    meets the same conditions of the machine; with ``minutes``, no new round starts after that
    time, and each case has as many runs as the rounds that were done."""
    results: dict[str, list[Outcome]] = {name: [] for name in names}
    deadline = None if minutes is None else time.monotonic() + 60 * minutes
    for index in range(runs):
        if deadline is not None and time.monotonic() > deadline:
            print(f"time is up after {index} rounds of {runs}", flush=True)
            break
        for name in names:
            case = CASES[name]
            outcome = run_once(python, case.args, case.says)
            results[name].append(outcome)
            status = "ok" if outcome.as_expected(case) else "FAILED"
            print(
                f"{name} {index + 1}/{runs}: {outcome.describe()}, {outcome.seconds:.1f} s, "
                f"{outcome.left_behind} left behind  {status}",
                flush=True,
            )
            if status == "FAILED":
                print(outcome.tail, flush=True)
    return results


def table(results: dict[str, list[Outcome]]) -> str:
    lines = [
        "| case | expected | runs | as expected | other outcomes | processes left | median s "
        "| max s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, outcomes in results.items():
        case = CASES[name]
        seconds = sorted(o.seconds for o in outcomes)
        others = Counter(o.describe() for o in outcomes if not o.as_expected(case))
        lines.append(
            f"| `{name}` | {case.expected} | {len(outcomes)} | "
            f"{sum(o.as_expected(case) for o in outcomes)} | "
            f"{', '.join(f'{what}: {n}' for what, n in sorted(others.items())) or 'none'} | "
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
        "--case",
        "--launcher",
        dest="cases",
        action="append",
        choices=sorted(CASES),
        help=f"repeatable; default: {', '.join(DEFAULT_CASES)}",
    )
    parser.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="start no new round of runs after this many minutes (the record says how many ran)",
    )
    parser.add_argument("--no-write", action="store_true", help="do not update the record")
    args = parser.parse_args()
    cases = args.cases or list(DEFAULT_CASES)
    results = stress(cases, args.runs, sys.executable, args.minutes)
    if not any(results.values()):
        print("no run was done", flush=True)
        return 1
    print(table(results))
    clean = all(o.as_expected(CASES[name]) for name, r in results.items() for o in r)
    if not args.no_write:
        flags = " ".join(f"--case {name}" for name in cases)
        budget = "" if args.minutes is None else f" --minutes {args.minutes:g}"
        write_record(results, f"python tools/dev.py stress -- --runs {args.runs}{budget} {flags}")
        print(f"wrote {RECORD.relative_to(ROOT)}")
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
