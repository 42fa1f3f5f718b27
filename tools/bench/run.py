#!/usr/bin/env python3
"""fab's benchmarks, side by side with raw PyTorch, Lightning Fabric and HF Accelerate.

    python3 tools/dev.py bench [-- ARGS]      builds .venvs/bench, then runs this script in it
    python3 tools/bench/run.py [ARGS]         the same (it hands over to tools/dev.py bench when
                                              this interpreter lacks torch, fab, lightning-fabric
                                              or accelerate; --here runs it where it is)

Four measurements, each framework in fresh processes of its own so that imports do not interfere:

1. import time: the wall time of `import fab.core` (`import lightning_fabric`, `import accelerate`)
   after `import torch`, in a new interpreter each repetition;
2. forward overhead: per-call time of a wrapped nn.Linear(16, 16) on a batch of one (timeit);
3. a whole training step of a small MLP (zero_grad, forward, loss, backward, AdamW step);
   and `--only step`: the fixed cost per step, on a tiny MLP (32 -> 64 -> 8, batch 32, SGD) in
   thread CPU time, each framework against a bare twin interleaved in its own process;
4. ddp: two processes on CPU over gloo (tools/bench/ddp.py), beside raw PyTorch DDP and Lightning
   Fabric (HF Accelerate is not in it): training throughput, each framework under torchrun, and
   the wall time of launching a trivial script with `fab run`, torchrun and `fabric run`.
5. memory: peak resident memory to create a 2 GiB model and to load a 2 GiB checkpoint into it
   (tools/bench/memory.py), beside raw PyTorch and Lightning Fabric, each in a fresh process.
6. sharded: FSDP against DDP on two CPU processes over gloo with a 512 MiB model
   (tools/bench/sharded.py): per-rank parameter + optimizer memory, peak memory and step time,
   and fab's sharded checkpoint against torch.save/torch.load of the full state. Lightning
   Fabric refuses FSDP on a CPU; the run records its refusal.
7. surgery: what capturing activations costs a forward (tools/bench/surgery.py, run in a
   subprocess with `--json`), beside plain torch hooks and, where installed, FlexModel and nnsight.

For 2 and 3 one worker process per framework stays alive (tools/bench/worker.py) and the
repetitions go round-robin over the frameworks, so that machine noise falls on all of them alike;
each worker also times a bare twin of its model in its own process, a paired reference. The
headline is the minimum over repetitions (the least disturbed); medians are shown beside it.

A run prints a markdown report. A full run writes it into docs/benchmarks.md: 1-3 between the
`<!-- bench:start -->` and `<!-- bench:end -->` markers, 4 between `<!-- bench-ddp:start -->` and
`<!-- bench-ddp:end -->`, 5 between `<!-- bench-memory:start -->` and `<!-- bench-memory:end -->`,
6 between `<!-- bench-sharded:start -->` and `<!-- bench-sharded:end -->`, 7 between
`<!-- bench-surgery:start -->` and `<!-- bench-surgery:end -->`. `--only ddp` (`--only memory`,
`--only step`, `--only sharded`, `--only surgery`) writes that section alone (each stands on its
own; the step section sits between `<!-- bench-step:start -->` and `<!-- bench-step:end -->`);
other --only runs, --quick runs and --no-docs runs only print.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import select
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # mypy runs from the repository root, where this folder is tools.bench
    from tools.bench import ddp, memory, sharded
    from tools.bench.machine import cpu_model
else:  # run as a script, this folder is on sys.path
    import ddp
    import memory
    import sharded
    from machine import cpu_model

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
WORKER = HERE / "worker.py"
BENCH_VENV = ROOT / ".venvs" / "bench"
DOC = ROOT / "docs" / "benchmarks.md"
RESULTS_JSON = ROOT / ".cache" / "bench" / "results.json"
DDP_JSON = ROOT / ".cache" / "bench" / "ddp.json"
MEMORY_JSON = ROOT / ".cache" / "bench" / "memory.json"
STEP_JSON = ROOT / ".cache" / "bench" / "step.json"
SHARDED_JSON = ROOT / ".cache" / "bench" / "sharded.json"
SURGERY_JSON = ROOT / ".cache" / "bench" / "surgery.json"
SURGERY = HERE / "surgery.py"
SURGERY_START, SURGERY_END = "<!-- bench-surgery:start -->", "<!-- bench-surgery:end -->"
STEP_START, STEP_END = "<!-- bench-step:start -->", "<!-- bench-step:end -->"
STEP_DESCRIPTION = "MLP 32 → 64 → 8 (Linear, ReLU, Linear), batch 32, SGD"  # worker.py
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
COMMAND = "python3 tools/dev.py bench"

FRAMEWORKS = ("raw", "fab", "lightning", "accelerate")
PRECISIONS = ("32-true", "bf16-mixed")
LABELS = {
    "torch": "torch alone",
    "raw": "raw PyTorch",
    "fab": "fab",
    "lightning": "Lightning Fabric",
    "accelerate": "HF Accelerate",
}
LIGHTNING_MODULES = ("lightning_fabric", "lightning.fabric")
MLP_DESCRIPTION = "512 → 512 → 512 → 512 → 10 (three hidden Linear(512, 512) + ReLU)"  # worker.py
DISTRIBUTIONS = (
    "torch",
    "fab-core",
    "fab-wrappers",
    "fab-precision",
    "fab-strategies",
    "lightning-fabric",
    "lightning",
    "accelerate",
)

# Goals (docs/benchmarks.md says where they come from).
GOAL_IMPORT_S = 0.050
GOAL_FORWARD_OVERHEAD_S = 1e-6
GOAL_TRAIN_RATIO = 0.98
#: The fixed per-step cost: fab's step at most 2% over the same step in plain torch (issue 10).
GOAL_STEP_RATIO = 1.02

#: glibc's malloc serves blocks over 128 KiB (a 64 x 512 float32 activation is exactly that) with
#: mmap and gives them back with munmap, so a training step on the CPU can take ~2,000 fresh page
#: faults and 40% longer, depending on each process's allocation history: noise between processes
#: far larger than what is measured. The workers keep such blocks on the heap (the same for every
#: framework); --default-malloc turns this off.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}

# Seconds allowed for a worker to set up and calibrate, and for one repetition.
T_SETUP = 300.0
T_REPEAT = 120.0
T_IMPORT = 120.0
T_SURGERY = 1800.0

IMPORT_SNIPPET = """\
import sys, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
{statement}
t2 = time.perf_counter()
heavy = [m for m in ("torch._dynamo", "sympy") if m in sys.modules]
print("BENCH", t1 - t0, t2 - t1, ",".join(heavy) or "-")
"""


class BenchError(Exception):
    """A worker that failed, hung or broke the protocol."""


# --- where it runs ---------------------------------------------------------------------------


def find_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def lightning_module() -> str | None:
    """The module the installed Lightning Fabric is imported as (without importing it)."""
    for name in LIGHTNING_MODULES:
        if find_module(name.split(".")[0]) and (name == LIGHTNING_MODULES[0] or find_module(name)):
            return name
    return None


def missing_here() -> list[str]:
    missing = [m for m in ("torch", "fab.core", "accelerate") if not find_module(m)]
    return missing + ([] if lightning_module() else ["lightning_fabric"])


def hand_over(argv: Sequence[str]) -> int:
    """Run this benchmark through tools/dev.py bench, which builds .venvs/bench first."""
    cmd = [sys.executable, str(ROOT / "tools" / "dev.py"), "bench", "--", *argv]
    print(f"$ {shlex.join(cmd)}", flush=True)
    return subprocess.call(cmd, cwd=ROOT)


# --- the environment of a run ----------------------------------------------------------------


def load_average() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def versions() -> dict[str, str]:
    found: dict[str, str] = {}
    for name in DISTRIBUTIONS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def git_revision() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "?"
    return f"{head} (with uncommitted changes)" if dirty else head or "?"


# --- 1. import time --------------------------------------------------------------------------


@dataclass
class ImportSeries:
    statement: str
    torch: list[float] = field(default_factory=list)
    extra: list[float] = field(default_factory=list)
    heavy: str = ""
    error: str | None = None


def import_candidates() -> dict[str, str]:
    lightning = lightning_module() or LIGHTNING_MODULES[0]
    return {
        "torch": "pass",
        "fab": "import fab.core",
        "lightning": f"import {lightning}",
        "accelerate": "import accelerate",
    }


def time_import(statement: str) -> tuple[float, float, str]:
    """(seconds for import torch, seconds for the statement after it, heavy modules loaded)."""
    code = IMPORT_SNIPPET.format(statement=statement)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=T_IMPORT,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("BENCH ")]
    if proc.returncode != 0 or not lines:
        reason = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        raise BenchError(reason)
    _, torch_s, extra_s, heavy = lines[-1].split()
    return float(torch_s), float(extra_s), heavy


def bench_imports(repetitions: int) -> dict[str, ImportSeries]:
    """Fresh interpreters, round-robin over the candidates; the first round warms caches (.pyc,
    the page cache) and is dropped."""
    candidates = import_candidates()
    series = {name: ImportSeries(statement) for name, statement in candidates.items()}
    names = list(candidates)
    for round_ in range(repetitions + 1):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            entry = series[name]
            if entry.error is not None:
                continue
            try:
                torch_s, extra_s, heavy = time_import(entry.statement)
            except (BenchError, subprocess.TimeoutExpired) as exc:
                entry.error = f"{type(exc).__name__}: {exc}"
                continue
            entry.heavy = heavy
            if round_ > 0:
                entry.torch.append(torch_s)
                entry.extra.append(extra_s)
        progress(f"import: round {round_}/{repetitions}")
    progress("")
    failed = [LABELS[n] for n, entry in series.items() if entry.error is not None]
    print(f"    import: done; n/a: {', '.join(failed) or 'none'}", flush=True)
    return series


# --- 2 and 3. workers ------------------------------------------------------------------------


@dataclass
class Series:
    """One framework's repetitions in one benchmark: the wrapped model and its bare twin."""

    values: list[float] = field(default_factory=list)
    bare: list[float] = field(default_factory=list)
    info: dict[str, str] = field(default_factory=dict)
    error: str | None = None


class Worker:
    """A tools/bench/worker.py process, spoken to one JSON line at a time."""

    def __init__(self, args: Sequence[str], env: dict[str, str]) -> None:
        self.stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close)
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), *args],
            cwd=ROOT,
            env={**os.environ, **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
        )
        self.buffer = b""

    def receive(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"no answer in {timeout:.0f} s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise BenchError(f"worker exited ({self.proc.wait()}): {self.stderr_tail()}")
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message

    def request(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(b"run\n")
            self.proc.stdin.flush()
        except BrokenPipeError as exc:
            raise BenchError(f"worker exited: {self.stderr_tail()}") from exc
        return self.receive(timeout)

    def stderr_tail(self) -> str:
        self.stderr.seek(0)
        lines = self.stderr.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else "(nothing on stderr)"

    def close(self) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.write(b"quit\n")
                self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.stderr.close()


def bench_workers(
    bench: str, precision: str, rounds: int, target: float, threads: int, env: dict[str, str]
) -> dict[str, Series]:
    """One worker per framework; repetitions round-robin over them, the first one rotating."""
    series = {name: Series() for name in FRAMEWORKS}
    workers: dict[str, Worker] = {}
    try:
        for name in FRAMEWORKS:  # one at a time, so that set-up and calibration run alone
            args = [bench, name, precision, f"--threads={threads}", f"--target={target}"]
            worker = Worker(args, env)
            try:
                message = worker.receive(T_SETUP)
            except BenchError as exc:
                message = {"error": str(exc)}
            if "error" in message:
                series[name].error = str(message["error"])
                worker.close()
                continue
            series[name].info = dict(message.get("info", {}))
            workers[name] = worker
        for round_ in range(rounds):
            names = list(workers)
            shift = round_ % max(len(names), 1)
            for name in names[shift:] + names[:shift]:
                try:
                    message = workers[name].request(T_REPEAT)
                except BenchError as exc:
                    series[name].error = str(exc)
                    workers.pop(name).close()
                    continue
                series[name].values.append(float(message["value"]))
                series[name].bare.append(float(message["bare"]))
            progress(f"{bench} {precision}: round {round_ + 1}/{rounds}")
        progress("")
        failed = [LABELS[n] for n, entry in series.items() if entry.error is not None]
        print(f"    {bench} {precision}: done; n/a: {', '.join(failed) or 'none'}", flush=True)
    finally:
        for worker in workers.values():
            worker.close()
    return series


# --- 7. surgery ------------------------------------------------------------------------------


@dataclass
class SurgeryRun:
    """tools/bench/surgery.py's JSON (its shape: that script's --json), or why there is none."""

    data: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    @property
    def markdown(self) -> str:
        text = self.data.get("markdown")
        return text if isinstance(text, str) else ""


def bench_surgery(quick: bool, timeout: float = T_SURGERY) -> SurgeryRun:
    """Run tools/bench/surgery.py in a session of its own under a timeout (its whole process tree
    killed on a timeout or an error), read what it wrote with --json."""
    with tempfile.TemporaryDirectory(prefix="fab-bench-surgery-") as tmp:
        path = Path(tmp) / "surgery.json"
        cmd = [sys.executable, str(SURGERY), "--json", str(path), *(["--quick"] if quick else [])]
        outcome = ddp.run_tree(cmd, dict(os.environ), timeout)
        run = SurgeryRun(seconds=outcome.seconds)
        if outcome.returncode != 0:
            run.error = f"{SURGERY.name}: {outcome.why()}"
            return run
        try:
            run.data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            run.error = f"{SURGERY.name} exited 0 but wrote no JSON to --json: {exc}"
            return run
    if not run.markdown.strip():
        run.error = f'{SURGERY.name}\'s JSON has no "markdown" text to write'
    return run


def progress(text: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\r{text:<60}\r" if text else f"\r{'':<60}\r")
        sys.stderr.flush()


# --- the report ------------------------------------------------------------------------------


@dataclass
class Run:
    argv: list[str]
    settings: dict[str, Any]
    started: datetime
    load_start: str
    load_end: str = "?"
    imports: dict[str, ImportSeries] | None = None
    forward: dict[str, dict[str, Series]] | None = None
    train: dict[str, dict[str, Series]] | None = None
    step: dict[str, Series] | None = None
    ddp: ddp.DDPRun | None = None
    memory: memory.MemoryRun | None = None
    sharded: sharded.ShardedRun | None = None
    surgery: SurgeryRun | None = None


NA = "n/a"


def fmt(value: float | None, scale: float, digits: int, sign: bool = False) -> str:
    if value is None:
        return NA
    return f"{value * scale:{'+' if sign else ''}.{digits}f}"


def minimum(values: Sequence[float]) -> float | None:
    return min(values) if values else None


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def paired_median(entry: Series) -> float | None:
    return median([v - b for v, b in zip(entry.values, entry.bare, strict=False)])


def import_table(series: dict[str, ImportSeries]) -> list[str]:
    rows = [
        "| framework | statement after `import torch` | extra: min | extra: median "
        "| `import torch` (median) | loads torch._dynamo / sympy |",
        "|---|---|--:|--:|--:|---|",
    ]
    for name, entry in series.items():
        statement = "(nothing)" if entry.statement == "pass" else f"`{entry.statement}`"
        if entry.error is not None or not entry.extra:
            rows.append(f"| {LABELS[name]} | {statement} | {NA} | {NA} | {NA} | {NA} |")
            continue
        rows.append(
            f"| {LABELS[name]} | {statement} | {fmt(minimum(entry.extra), 1e3, 1)} ms "
            f"| {fmt(median(entry.extra), 1e3, 1)} ms | {fmt(median(entry.torch), 1e3, 0)} ms "
            f"| {'no' if entry.heavy == '-' else entry.heavy.replace(',', ', ')} |"
        )
    return rows


def checks(info: dict[str, str]) -> str:
    if not info:
        return NA
    return f"autocast {info.get('autocast', '?')}; {info.get('computes_in', '?')} → " + info.get(
        "returns", "?"
    )


def forward_table(groups: dict[str, dict[str, Series]]) -> list[str]:
    rows = [
        "| precision | framework | per call: min | median | overhead vs raw: min / median "
        "| paired overhead: min / median | autocast; computes in → returns |",
        "|---|---|--:|--:|--:|--:|---|",
    ]
    for precision, group in groups.items():
        raw = group["raw"]
        for name, entry in group.items():
            if entry.error is not None or not entry.values:
                rows.append(f"| {precision} | {LABELS[name]} | {NA} | {NA} | {NA} | {NA} | {NA} |")
                continue
            vs_raw_min = diff(minimum(entry.values), minimum(raw.values))
            vs_raw_med = diff(median(entry.values), median(raw.values))
            paired_min = diff(minimum(entry.values), minimum(entry.bare))
            rows.append(
                f"| {precision} | {LABELS[name]} | {fmt(minimum(entry.values), 1e6, 2)} µs "
                f"| {fmt(median(entry.values), 1e6, 2)} µs "
                f"| {fmt(vs_raw_min, 1e6, 2, True)} / {fmt(vs_raw_med, 1e6, 2, True)} µs "
                f"| {fmt(paired_min, 1e6, 2, True)} / {fmt(paired_median(entry), 1e6, 2, True)} µs "
                f"| {checks(entry.info)} |"
            )
    return rows


def rate(seconds: float | None) -> float | None:
    return None if not seconds else 1.0 / seconds


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or not b else a / b


def percent(r: float | None) -> str:
    return NA if r is None else f"{(r - 1) * 100:+.1f}%"


def train_table(groups: dict[str, dict[str, Series]]) -> list[str]:
    rows = [
        "| precision | framework | steps/s: best | median | vs raw: best / median "
        "| paired vs bare twin: best / median | autocast; computes in → returns |",
        "|---|---|--:|--:|--:|--:|---|",
    ]
    for precision, group in groups.items():
        raw = group["raw"]
        for name, entry in group.items():
            if entry.error is not None or not entry.values:
                rows.append(f"| {precision} | {LABELS[name]} | {NA} | {NA} | {NA} | {NA} | {NA} |")
                continue
            best, typical = rate(minimum(entry.values)), rate(median(entry.values))
            vs_raw = (
                ratio(best, rate(minimum(raw.values))),
                ratio(typical, rate(median(raw.values))),
            )
            paired = (
                ratio(minimum(entry.bare), minimum(entry.values)),
                ratio(median(entry.bare), median(entry.values)),
            )
            rows.append(
                f"| {precision} | {LABELS[name]} | {fmt(best, 1, 1)} | {fmt(typical, 1, 1)} "
                f"| {percent(vs_raw[0])} / {percent(vs_raw[1])} "
                f"| {percent(paired[0])} / {percent(paired[1])} | {checks(entry.info)} |"
            )
    return rows


def verdict(ok: bool | None) -> str:
    return NA if ok is None else ("yes" if ok else "**no**")


def goals_table(run: Run) -> list[str]:
    rows = ["| goal | measured (headline: min) | met |", "|---|---|---|"]
    if run.imports is not None:
        extra = minimum(run.imports["fab"].extra)
        rows.append(
            f"| `import fab.core` costs ≤ {GOAL_IMPORT_S * 1e3:.0f} ms over `import torch` "
            f"| {fmt(extra, 1e3, 1)} ms (median {fmt(median(run.imports['fab'].extra), 1e3, 1)})"
            f" | {verdict(None if extra is None else extra <= GOAL_IMPORT_S)} |"
        )
    if run.forward is not None:
        group = run.forward.get("32-true")
        if group is not None:
            fab, raw = group["fab"], group["raw"]
            over = diff(minimum(fab.values), minimum(raw.values))
            paired = diff(minimum(fab.values), minimum(fab.bare))
            ok = None if paired is None else paired <= GOAL_FORWARD_OVERHEAD_S
            rows.append(
                f"| fab forward overhead (32-true) ≤ {GOAL_FORWARD_OVERHEAD_S * 1e6:.0f} µs "
                f"| {fmt(over, 1e6, 2, True)} µs vs raw, {fmt(paired, 1e6, 2, True)} µs paired "
                f"| {verdict(ok)} |"
            )
        group = run.forward.get("bf16-mixed")
        if group is not None:
            fab_s, acc_s = minimum(group["fab"].values), minimum(group["accelerate"].values)
            ok = None if fab_s is None or acc_s is None else fab_s <= acc_s
            rows.append(
                f"| fab forward (bf16-mixed) no slower than Accelerate's "
                f"| fab {fmt(fab_s, 1e6, 2)} µs, Accelerate {fmt(acc_s, 1e6, 2)} µs "
                f"| {verdict(ok)} |"
            )
    if run.train is not None:
        group = run.train.get("32-true")
        if group is not None:
            fab, raw = group["fab"], group["raw"]
            vs_raw = ratio(minimum(raw.values), minimum(fab.values))
            paired = ratio(minimum(fab.bare), minimum(fab.values))
            ok = None if vs_raw is None else vs_raw >= GOAL_TRAIN_RATIO
            rows.append(
                f"| fab training step (32-true) within {(1 - GOAL_TRAIN_RATIO) * 100:.0f}% of raw "
                f"| {percent(vs_raw)} steps/s vs raw, {percent(paired)} paired | {verdict(ok)} |"
            )
    return rows


def step_table(series: dict[str, Series]) -> list[str]:
    """The per-step cost: CPU time per step, the ratio to the raw-PyTorch worker (across
    processes) and to plain torch on the same model in the same process (paired, the one to
    trust)."""
    rows = [
        "| framework | CPU µs per step: median | min | vs raw PyTorch: median "
        "| paired vs plain torch, same model: median | paired: min / max "
        "| within 1.02x (paired median) |",
        "|---|--:|--:|--:|--:|--:|---|",
    ]
    raw = series["raw"]
    for name, entry in series.items():
        if entry.error is not None or not entry.values:
            rows.append(f"| {LABELS[name]} | {NA} | {NA} | {NA} | {NA} | {NA} | {NA} |")
            continue
        pairs = [v / b for v, b in zip(entry.values, entry.bare, strict=True) if b > 0]
        paired = median(pairs)
        vs_raw = ratio(median(entry.values), median(raw.values))
        rows.append(
            f"| {LABELS[name]} | {fmt(median(entry.values), 1e6, 2)} "
            f"| {fmt(minimum(entry.values), 1e6, 2)} | {fmt(vs_raw, 1, 3)}x "
            f"| {fmt(paired, 1, 3)}x | {fmt(minimum(pairs), 1, 3)}x / "
            f"{fmt(max(pairs) if pairs else None, 1, 3)}x "
            f"| {verdict(None if paired is None else paired <= GOAL_STEP_RATIO)} |"
        )
    return rows


def step_report(run: Run, series: dict[str, Series]) -> str:
    s = run.settings
    lines = [
        *header(run),
        f"- settings: torch.set_num_threads({s['threads']}); {s['step_rounds']} rounds of about "
        f"{s['step_target']} s of CPU time per framework, each round 20 short runs of the "
        "framework's step and of plain torch's on the same model taking turns; workers' malloc: "
        f"{s['malloc']}",
        "",
        f"**Per-step cost, 32-true**, {STEP_DESCRIPTION} (zero_grad, forward, cross-entropy, "
        "backward, step), thread CPU time",
        "",
        *step_table(series),
    ]
    notes = [
        f"- {LABELS[name]}: n/a — {entry.error}"
        for name, entry in series.items()
        if entry.error is not None
    ]
    if notes:
        lines += ["", "Not measured:", "", *notes]
    return "\n".join(lines) + "\n"


def errors(run: Run) -> list[str]:
    notes: list[str] = []
    if run.imports is not None:
        for name, entry in run.imports.items():
            if entry.error is not None:
                notes.append(f"- import, {LABELS[name]}: n/a — {entry.error}")
    for title, groups in (("forward", run.forward), ("training step", run.train)):
        for precision, group in (groups or {}).items():
            for name, series in group.items():
                if series.error is not None:
                    notes.append(f"- {title} {precision}, {LABELS[name]}: n/a — {series.error}")
    return notes


def header(run: Run) -> list[str]:
    vers = versions()
    args = f" -- {shlex.join(run.argv)}" if run.argv else ""
    return [
        "```bash",
        f"{COMMAND}{args}",
        "```",
        "",
        f"- date: {run.started.strftime('%Y-%m-%d %H:%M UTC')}; fab at {git_revision()}",
        f"- machine: {cpu_model()}, {os.cpu_count()} cores; {platform.system()} "
        f"{platform.release()}; load average (1/5/15 min) {run.load_start} at the start, "
        f"{run.load_end} at the end",
        f"- Python {platform.python_version()}; "
        + ", ".join(f"{name} {version}" for name, version in vers.items()),
    ]


def report(run: Run) -> str:
    s = run.settings
    lines = [
        *header(run),
        f"- settings: torch.set_num_threads({s['threads']}); import: {s['import_reps']} fresh "
        f"interpreters per framework; forward: {s['forward_rounds']} rounds of about "
        f"{s['forward_target']} s per framework; training step: {s['train_rounds']} rounds of "
        f"about {s['train_target']} s per framework; workers' malloc: {s['malloc']}",
    ]
    if run.imports is not None:
        lines += ["", "**Import time** (extra wall time over `import torch`)", ""]
        lines += import_table(run.imports)
    if run.forward is not None:
        lines += ["", "**Forward of a wrapped `nn.Linear(16, 16)`**, batch 1, grad enabled", ""]
        lines += forward_table(run.forward)
    if run.train is not None:
        lines += [
            "",
            f"**Training step**, MLP {MLP_DESCRIPTION}, batch 64, AdamW "
            "(zero_grad, forward, cross-entropy, backward, step)",
            "",
        ]
        lines += train_table(run.train)
    lines += ["", "**Goals**", "", *goals_table(run)]
    notes = errors(run)
    if notes:
        lines += ["", "Not measured:", "", *notes]
    return "\n".join(lines) + "\n"


def ddp_report(run: Run, result: ddp.DDPRun) -> str:
    return "\n".join([*header(run), *ddp.report(result)]) + "\n"


def write_doc(text: str, start_marker: str = START, end_marker: str = END) -> None:
    doc = DOC.read_text(encoding="utf-8")
    start, end = doc.find(start_marker), doc.find(end_marker)
    if start < 0 or end < start:
        raise SystemExit(
            f"{DOC}: no {start_marker} ... {end_marker} markers to write the results between"
        )
    new = doc[: start + len(start_marker)] + "\n" + text + doc[end:]
    DOC.write_text(new, encoding="utf-8")


def save_json(run: Run) -> None:
    def plain(groups: dict[str, dict[str, Series]] | None) -> Any:
        return {p: {n: vars(e) for n, e in g.items()} for p, g in (groups or {}).items()}

    data = {
        "argv": run.argv,
        "settings": run.settings,
        "started": run.started.isoformat(),
        "versions": versions(),
        "imports": {n: vars(e) for n, e in (run.imports or {}).items()},
        "forward": plain(run.forward),
        "train": plain(run.train),
    }
    RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_JSON.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


# --- the command -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="tools/bench/run.py", description=__doc__, formatter_class=raw
    )
    parser.add_argument(
        "--only",
        metavar="WHAT[,WHAT]",
        help="import, forward, train, step, ddp, memory, sharded, surgery",
    )
    parser.add_argument("--quick", action="store_true", help="few short repetitions (a smoke run)")
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    parser.add_argument("--here", action="store_true", help="run in this interpreter as it is")
    parser.add_argument(
        "--default-malloc", action="store_true", help="leave glibc's malloc thresholds as they are"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--import-reps", type=int, default=20, help="interpreters per framework")
    parser.add_argument("--forward-rounds", type=int, default=30, help="forward repetitions")
    parser.add_argument("--train-rounds", type=int, default=60, help="training repetitions")
    parser.add_argument("--step-rounds", type=int, default=40, help="per-step cost repetitions")
    parser.add_argument(
        "--ddp-rounds", type=int, default=5, help="ddp training launches per framework"
    )
    parser.add_argument(
        "--ddp-steps", type=int, default=30, help="steps per timed window (5 per ddp launch)"
    )
    parser.add_argument(
        "--launch-runs", type=int, default=6, help="trivial 2-process launches per launcher"
    )
    parser.add_argument(
        "--sharded-layers",
        type=int,
        default=sharded.Settings.layers,
        help="sharded: Linear(width, width) layers (default 8: 512 MiB at width 4096)",
    )
    parser.add_argument(
        "--sharded-width", type=int, default=sharded.Settings.width, help="sharded: layer width"
    )
    parser.add_argument(
        "--sharded-steps",
        type=int,
        default=sharded.Settings.steps,
        help="sharded: training steps per strategy (the first is not timed)",
    )
    parser.add_argument(
        "--sharded-timeout",
        type=float,
        default=sharded.Settings.timeout,
        help="sharded: seconds allowed for each 2-process launch",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    opts = build_parser().parse_args(args)
    missing = missing_here()
    in_bench_venv = Path(sys.prefix).resolve() == BENCH_VENV.resolve()
    if missing and not opts.here and not in_bench_venv:
        print(f"this interpreter lacks {', '.join(missing)}: handing over to tools/dev.py bench")
        return hand_over(args)
    parts = ("import", "forward", "train", "step", "ddp", "memory", "sharded", "surgery")
    wanted = {w.strip() for w in (opts.only or ",".join(parts)).split(",") if w.strip()}
    unknown = wanted - set(parts)
    if unknown:
        raise SystemExit(f"unknown --only {', '.join(sorted(unknown))}: {', '.join(parts)}")
    quick = opts.quick
    settings: dict[str, Any] = {
        "threads": opts.threads,
        "import_reps": 3 if quick else opts.import_reps,
        "forward_rounds": 3 if quick else opts.forward_rounds,
        "forward_target": 0.02 if quick else 0.1,
        "train_rounds": 3 if quick else opts.train_rounds,
        "train_target": 0.05 if quick else 0.2,
        "step_rounds": 3 if quick else opts.step_rounds,
        "step_target": 0.02 if quick else 0.1,
    }
    env = {} if opts.default_malloc else MALLOC_ENV
    settings["malloc"] = " ".join(f"{k}={v}" for k, v in env.items()) or "glibc defaults"
    run = Run(args, settings, datetime.now(timezone.utc), load_average())
    print(f"fab bench: {sys.executable}; load average {run.load_start}", flush=True)
    stages: list[tuple[str, Callable[[], None]]] = []
    if "import" in wanted:

        def stage_import() -> None:
            run.imports = bench_imports(settings["import_reps"])

        stages.append(("import time", stage_import))
    for bench in ("forward", "train"):
        if bench not in wanted:
            continue

        def stage(bench: str = bench) -> None:
            rounds, target = settings[f"{bench}_rounds"], settings[f"{bench}_target"]
            groups = {
                p: bench_workers(bench, p, rounds, target, opts.threads, env) for p in PRECISIONS
            }
            setattr(run, bench, groups)

        stages.append((bench, stage))
    if "step" in wanted:

        def stage_step() -> None:
            run.step = bench_workers(
                "step",
                "32-true",
                settings["step_rounds"],
                settings["step_target"],
                opts.threads,
                env,
            )

        stages.append(("per-step cost (32-true)", stage_step))
    if "ddp" in wanted:
        ddp_settings = ddp.Settings(
            rounds=1 if quick else opts.ddp_rounds,
            steps=10 if quick else opts.ddp_steps,
            windows=2 if quick else ddp.Settings.windows,
            warmup=3 if quick else ddp.Settings.warmup,
            launch_runs=1 if quick else opts.launch_runs,
            threads=opts.threads,
            env=env,
        )

        def stage_ddp() -> None:
            run.ddp = ddp.bench(ddp_settings, progress)
            progress("")
            DDP_JSON.parent.mkdir(parents=True, exist_ok=True)
            DDP_JSON.write_text(json.dumps(ddp.as_json(run.ddp), indent=1) + "\n", encoding="utf-8")

        stages.append(("ddp (2 processes, gloo)", stage_ddp))
    if "memory" in wanted:
        memory_settings = (
            memory.Settings(layers=4, width=1024, env=env) if quick else memory.Settings(env=env)
        )

        def stage_memory() -> None:
            run.memory = memory.bench(memory_settings, progress)

        stages.append(("memory (peak RSS, fresh processes)", stage_memory))
    if "sharded" in wanted:
        sharded_settings = sharded.Settings(
            layers=2 if quick else opts.sharded_layers,
            width=512 if quick else opts.sharded_width,
            steps=2 if quick else opts.sharded_steps,
            threads=opts.threads,
            timeout=opts.sharded_timeout,
            env=env,
        )

        def stage_sharded() -> None:
            run.sharded = sharded.bench(sharded_settings, progress)
            progress("")

        stages.append(("sharded (FSDP against DDP, 2 processes, gloo)", stage_sharded))
    if "surgery" in wanted:

        def stage_surgery() -> None:
            run.surgery = bench_surgery(quick)
            print(f"    surgery: {run.surgery.error or 'done'}", flush=True)

        stages.append(("surgery (tools/bench/surgery.py)", stage_surgery))
    for title, body in stages:
        started = time.monotonic()
        print(f"==> {title}", flush=True)
        body()
        print(f"<== {title} ({time.monotonic() - started:.0f} s)", flush=True)
    run.load_end = load_average()
    single = wanted & {"import", "forward", "train"}
    write = not (quick or opts.no_docs)
    if single:
        text = report(run)
        print("\n" + text)
        save_json(run)
        if write and not opts.only:
            write_doc(text)
            print(f"written to {DOC.relative_to(ROOT)} and {RESULTS_JSON.relative_to(ROOT)}")
        else:
            print(f"(not written to {DOC.relative_to(ROOT)}: only a full run is)")
    if run.step is not None:
        text = step_report(run, run.step)
        print("\n" + text)
        STEP_JSON.parent.mkdir(parents=True, exist_ok=True)
        STEP_JSON.write_text(
            json.dumps({n: vars(e) for n, e in run.step.items()}, indent=1) + "\n",
            encoding="utf-8",
        )
        if write and (not opts.only or wanted == {"step"}):
            write_doc(text, STEP_START, STEP_END)
            print(
                f"step section written to {DOC.relative_to(ROOT)} and {STEP_JSON.relative_to(ROOT)}"
            )
        else:
            print(f"(step section not written to {DOC.relative_to(ROOT)})")
    if run.ddp is not None:
        text = ddp_report(run, run.ddp)
        print("\n" + text)
        if write and (not opts.only or wanted == {"ddp"}):
            write_doc(text, ddp.START, ddp.END)
            print(
                f"ddp section written to {DOC.relative_to(ROOT)} and {DDP_JSON.relative_to(ROOT)}"
            )
        else:
            print(f"(ddp section not written to {DOC.relative_to(ROOT)})")
    if run.memory is not None:
        text = "\n".join([*header(run), *memory.report(run.memory)]) + "\n"
        print("\n" + text)
        MEMORY_JSON.parent.mkdir(parents=True, exist_ok=True)
        MEMORY_JSON.write_text(json.dumps(memory.as_json(run.memory), indent=1) + "\n")
        if write and (not opts.only or wanted == {"memory"}):
            write_doc(text, memory.START, memory.END)
            print(f"memory section written to {DOC.relative_to(ROOT)}")
        else:
            print(f"(memory section not written to {DOC.relative_to(ROOT)})")
    if run.sharded is not None:
        text = "\n".join([*header(run), *sharded.report(run.sharded)]) + "\n"
        print("\n" + text)
        SHARDED_JSON.parent.mkdir(parents=True, exist_ok=True)
        SHARDED_JSON.write_text(
            json.dumps(sharded.as_json(run.sharded), indent=1) + "\n", encoding="utf-8"
        )
        if write and (not opts.only or wanted == {"sharded"}):
            write_doc(text, sharded.START, sharded.END)
            print(f"sharded section written to {DOC.relative_to(ROOT)}")
        else:
            print(f"(sharded section not written to {DOC.relative_to(ROOT)})")
    if run.surgery is not None:
        if run.surgery.error is not None:
            print(f"\nsurgery: not measured: {run.surgery.error}")
        else:
            print("\n" + run.surgery.markdown)
            SURGERY_JSON.parent.mkdir(parents=True, exist_ok=True)
            SURGERY_JSON.write_text(json.dumps(run.surgery.data, indent=1) + "\n", "utf-8")
        if run.surgery.error is None and write and (not opts.only or wanted == {"surgery"}):
            write_doc(run.surgery.markdown.rstrip("\n") + "\n", SURGERY_START, SURGERY_END)
            print(f"surgery section written to {DOC.relative_to(ROOT)}")
        else:
            print(f"(surgery section not written to {DOC.relative_to(ROOT)})")
    failed = run.surgery is not None and run.surgery.error is not None
    if run.sharded is not None:
        failed = failed or any(not launch.ranks for launch in run.sharded.launches.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
