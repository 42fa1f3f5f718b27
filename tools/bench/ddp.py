"""fab's multi-process benchmark: 2-process DDP on CPU (gloo) beside raw PyTorch and Lightning.

Part of tools/bench/run.py (`python3 tools/dev.py bench -- --only ddp` runs just this part).

A. Training throughput. tools/bench/ddp_scripts/train.py FRAMEWORK, started for every framework
   the same way: `python -m torch.distributed.run --nproc-per-node 2 --master-port P train.py`.
   raw is torch.distributed + DistributedDataParallel; fab and lightning build
   `Fabric(accelerator="cpu", devices=2, strategy="ddp")` in the torchrun'd processes. Same MLP,
   seeded weights, data, batch, AdamW; only the steady-state loop is timed: warm-up steps, then
   windows of steps, each between two barriers (the clock starts after the first and stops after
   the second); rank 0 reports every window's samples/s. A launch counts its best window (the one
   least disturbed by the rest of this shared machine). The order of the frameworks rotates every
   round (ABC, BCA, CAB, ...); the headline is the median over rounds.
B. Launch wall time of a trivial script (import, set up the process group, one all_reduce, exit)
   with two processes: `fab run`, `torchrun` (as `python -m torch.distributed.run`) and Lightning's
   `fabric run`, interleaved the same way, after one warm-up launch each that is dropped.

Every launch runs in a session of its own with a timeout. torchrun starts its workers in sessions
of their own too, so a process group is not enough to stop them: on a timeout (or an error or ^C)
the whole process tree is signalled, SIGTERM then SIGKILL, and this process makes itself a child
subreaper (Linux) so that whatever a launch leaves behind stays findable and is killed after it.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "ddp_scripts"
TRAIN_SCRIPT = SCRIPTS / "train.py"
LAUNCH_SCRIPTS = {
    "fab": SCRIPTS / "launch_fab.py",
    "torchrun": SCRIPTS / "launch_raw.py",
    "lightning": SCRIPTS / "launch_lightning.py",
}
START, END = "<!-- bench-ddp:start -->", "<!-- bench-ddp:end -->"

TRAIN_FRAMEWORKS = ("raw", "fab", "lightning")
LAUNCHERS = ("torchrun", "fab", "lightning")
TRAIN_LABELS = {"raw": "raw PyTorch (DDP)", "fab": "fab", "lightning": "Lightning Fabric"}
LAUNCH_LABELS = {"torchrun": "torchrun", "fab": "fab run", "lightning": "Lightning `fabric run`"}
NPROC = 2
GOAL_RATIO = 0.98

# Seconds allowed for one training launch and one trivial launch, start to exit.
T_TRAIN = 300.0
T_LAUNCH = 120.0
T_GRACE = 3.0  # between SIGTERM and SIGKILL (tools/dev.py allows run.py 10 s after a SIGTERM)
#: How long what a launch left behind may take to exit by itself (multiprocessing's resource
#: tracker exits when its parent has) before it counts as an orphan and is killed.
T_SETTLE = 2.0
NA = "n/a"
SIGNALS = {int(s) for s in signal.Signals}


@dataclass(frozen=True)
class Settings:
    rounds: int = 5
    steps: int = 30  # per window
    windows: int = 5
    warmup: int = 10
    launch_runs: int = 6
    batch: int = 64
    width: int = 768
    depth: int = 3
    features: int = 256
    threads: int = 1
    env: dict[str, str] = field(default_factory=dict)

    @property
    def model(self) -> str:
        return (
            f"MLP {self.features} → {' → '.join([str(self.width)] * self.depth)} → 10 "
            f"({self.depth} hidden Linear + ReLU, a Linear head)"
        )


# --- processes ------------------------------------------------------------------------------


@dataclass
class Outcome:
    seconds: float
    returncode: int | None  # None: timed out and killed
    stdout: str
    stderr: str
    orphans: int = 0

    def why(self) -> str:
        if self.returncode is None:
            return "timed out (killed)"
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        # torchrun's summary of a failed worker: "exitcode  : -6 (pid: 123)"
        codes = sorted({int(m) for m in re.findall(r"exitcode\s*:\s*(-?\d+)", self.stderr)})
        if any(code < 0 for code in codes):
            names = ", ".join(signal.Signals(-c).name for c in codes if c < 0 and -c in SIGNALS)
            return f"exit {self.returncode}: a worker died of {names or codes}"
        errors = [line for line in lines if "Error" in line or "error:" in line]
        last = (errors or lines or [f"exit {self.returncode}"])[-1]
        return f"exit {self.returncode}: {last[:200]}"


def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


LIBC = _libc()
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36


def become_subreaper() -> bool:
    """Orphaned descendants are re-parented to this process instead of init (Linux only)."""
    try:
        return LIBC is not None and int(LIBC.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except AttributeError:
        return False


def die_with_parent() -> None:
    """In a launcher, between fork and exec: SIGTERM when this process dies, even by SIGKILL
    (torchrun, and the CLIs built on it, stop their workers on a SIGTERM)."""
    if LIBC is not None:
        LIBC.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """A SIGTERM to this process (tools/dev.py's timeout or ^C) unwinds it, so that the
    `finally`s kill the launches, which run in sessions of their own and do not get it."""

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def parents() -> dict[int, int]:
    """pid -> ppid for every process that /proc shows."""
    table: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1:
            table[int(entry.name)] = int(fields[1])
    return table


def descendants(pid: int) -> list[int]:
    table = parents()
    children: dict[int, list[int]] = {}
    for child, parent in table.items():
        children.setdefault(parent, []).append(child)
    found: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def signal_all(pids: Sequence[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[:1] != ["Z"]


def reap(pids: Sequence[int]) -> None:
    """Collect the exit status of those of pids that are (now) this process's children."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


def kill_tree(root: int | None, extra: Sequence[int] = ()) -> int:
    """SIGTERM root's whole tree (and extra), SIGKILL what is left after T_GRACE; the count."""
    pids = ([root] if root is not None else []) + list(extra)
    if root is not None:
        pids += descendants(root)
    pids = sorted(set(pids))
    if not pids:
        return 0
    signal_all(pids, signal.SIGTERM)
    deadline = time.monotonic() + T_GRACE
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        reap(pids)
        time.sleep(0.05)
    left = [p for p in pids if alive(p)]
    signal_all(left, signal.SIGKILL)
    for _ in range(100):
        reap(pids)
        if not any(alive(p) for p in pids):
            break
        time.sleep(0.05)
    return len(pids)


def run_tree(cmd: Sequence[str], env: dict[str, str], timeout: float) -> Outcome:
    """Run cmd in a session of its own; wall time from start to exit; its tree is killed on a
    timeout or an exception, and what it left behind (re-parented to us) after it exits."""
    before = set(descendants(os.getpid()))
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            list(cmd),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
            preexec_fn=die_with_parent,  # this process runs no threads
        )
        returncode: int | None = None
        try:
            returncode = proc.wait(timeout=timeout)
            seconds = time.perf_counter() - started
        except subprocess.TimeoutExpired:
            seconds = time.perf_counter() - started
        finally:
            if returncode is None:
                kill_tree(proc.pid)
                proc.wait()
        left = [p for p in descendants(os.getpid()) if p not in before and alive(p)]
        settle = time.monotonic() + T_SETTLE
        while left and time.monotonic() < settle:  # e.g. multiprocessing's resource tracker
            time.sleep(0.05)
            reap(left)
            left = [p for p in left if alive(p)]
        orphans = kill_tree(None, left) if left else 0
        # What exited by itself after being re-parented to this subreaper (the launch's helper
        # processes) is a zombie until collected.
        reap([p for p in descendants(os.getpid()) if p not in before])
        out.seek(0)
        err.seek(0)
        return Outcome(
            seconds,
            returncode,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
            orphans,
        )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rotations(names: Sequence[str], rounds: int) -> Iterator[tuple[int, list[str]]]:
    """(round, order): ABC, BCA, CAB, ABC, ..."""
    for round_ in range(rounds):
        shift = round_ % max(len(names), 1)
        yield round_, list(names[shift:]) + list(names[:shift])


def torchrun() -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run"]


def console_script(name: str) -> Path:
    return Path(sys.executable).parent / name


# --- A. training throughput -------------------------------------------------------------------


@dataclass
class TrainSeries:
    samples: list[float] = field(default_factory=list)  # per round: the best window's samples/s
    loop: list[float] = field(default_factory=list)  # per round: the whole loop's samples/s
    windows: list[list[float]] = field(default_factory=list)  # per round: every window's
    rounds: list[int] = field(default_factory=list)  # the round of each value
    step_ms: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    exits: list[int | None] = field(default_factory=list)  # every launch's status
    orphans: int = 0
    errors: list[str] = field(default_factory=list)


def train_command(framework: str, port: int, s: Settings) -> list[str]:
    return [
        *torchrun(),
        f"--nproc-per-node={NPROC}",
        f"--master-port={port}",
        str(TRAIN_SCRIPT),
        framework,
        f"--steps={s.steps}",
        f"--windows={s.windows}",
        f"--warmup={s.warmup}",
        f"--batch={s.batch}",
        f"--features={s.features}",
        f"--width={s.width}",
        f"--depth={s.depth}",
        f"--threads={s.threads}",
    ]


def parse_result(stdout: str) -> dict[str, Any] | None:
    lines = [line for line in stdout.splitlines() if line.startswith("BENCH ")]
    if not lines:
        return None
    result: dict[str, Any] = json.loads(lines[-1][len("BENCH ") :])
    return result


def bench_train(
    s: Settings, env: dict[str, str], say: Callable[[str], None]
) -> dict[str, TrainSeries]:
    series = {name: TrainSeries() for name in TRAIN_FRAMEWORKS}
    for round_, order in rotations(TRAIN_FRAMEWORKS, s.rounds):
        for name in order:
            outcome = run_tree(train_command(name, free_port(), s), env, T_TRAIN)
            entry = series[name]
            entry.exits.append(outcome.returncode)
            entry.orphans += outcome.orphans
            result = parse_result(outcome.stdout)
            if result is None:
                entry.errors.append(outcome.why())
                continue
            # A result counts even if the processes then exited badly (the exits column says so).
            entry.samples.append(float(result["best"]))
            entry.loop.append(float(result["loop"]))
            entry.windows.append([float(x) for x in result["windows"]])
            entry.rounds.append(round_)
            entry.step_ms.append(float(result["step_ms"]))
            entry.losses.append(float(result["loss"]))
        say(f"ddp train: round {round_ + 1}/{s.rounds} ({' '.join(order)})")
    return series


# --- B. launch time --------------------------------------------------------------------------


@dataclass
class LaunchSeries:
    seconds: list[float] = field(default_factory=list)
    exits: list[int | None] = field(default_factory=list)
    orphans: int = 0
    errors: list[str] = field(default_factory=list)
    unavailable: str | None = None
    command: str = ""


def launch_command(name: str, port: int) -> list[str]:
    script = str(LAUNCH_SCRIPTS[name])
    if name == "torchrun":
        return [*torchrun(), f"--nproc-per-node={NPROC}", f"--master-port={port}", script]
    tool = "fab" if name == "fab" else "fabric"
    return [
        str(console_script(tool)),
        "run",
        "--accelerator=cpu",
        f"--devices={NPROC}",
        f"--main-port={port}",
        script,
    ]


def shown_command(name: str) -> str:
    script = f"tools/bench/ddp_scripts/{LAUNCH_SCRIPTS[name].name}"
    if name == "torchrun":
        return f"python -m torch.distributed.run --nproc-per-node {NPROC} {script}"
    tool = "fab" if name == "fab" else "fabric"
    return f"{tool} run --accelerator cpu --devices {NPROC} {script}"


def fab_run_available(env: dict[str, str]) -> str | None:
    """None if `fab run` exists, else why not."""
    tool = console_script("fab")
    if not tool.exists():
        return f"{tool} does not exist"
    outcome = run_tree([str(tool), "run", "--help"], env, T_LAUNCH)
    if outcome.returncode == 0:
        return None
    return f"`fab run` is not available yet ({outcome.why()})"


def bench_launch(
    s: Settings, env: dict[str, str], say: Callable[[str], None]
) -> dict[str, LaunchSeries]:
    series = {name: LaunchSeries(command=shown_command(name)) for name in LAUNCHERS}
    series["fab"].unavailable = fab_run_available(env)
    names = [n for n in LAUNCHERS if series[n].unavailable is None]
    for round_, order in rotations(names, s.launch_runs + 1):  # round 0 warms caches: dropped
        for name in order:
            outcome = run_tree(launch_command(name, free_port()), env, T_LAUNCH)
            if round_ == 0:
                if outcome.returncode != 0:
                    series[name].errors.append(f"warm-up: {outcome.why()}")
                continue
            entry = series[name]
            entry.exits.append(outcome.returncode)
            entry.orphans += outcome.orphans
            if outcome.returncode == 0:
                entry.seconds.append(outcome.seconds)
            else:
                entry.errors.append(outcome.why())
        say(f"ddp launch: round {round_}/{s.launch_runs} ({' '.join(order)})")
    return series


# --- the whole part --------------------------------------------------------------------------


@dataclass
class DDPRun:
    settings: Settings
    train: dict[str, TrainSeries] | None = None
    launch: dict[str, LaunchSeries] | None = None
    subreaper: bool = False
    seconds: float = 0.0


def bench(
    s: Settings, say: Callable[[str], None], parts: Sequence[str] = ("train", "launch")
) -> DDPRun:
    started = time.monotonic()
    env = {**os.environ, "OMP_NUM_THREADS": str(s.threads), **s.env}
    run = DDPRun(s, subreaper=become_subreaper())
    before = set(descendants(os.getpid()))
    try:
        with sigterm_raises():
            if "train" in parts:
                run.train = bench_train(s, env, say)
                failed = [TRAIN_LABELS[n] for n, e in run.train.items() if not e.samples]
                print(f"    ddp train: done; n/a: {', '.join(failed) or 'none'}", flush=True)
            if "launch" in parts:
                run.launch = bench_launch(s, env, say)
                failed = [LAUNCH_LABELS[n] for n, e in run.launch.items() if not e.seconds]
                print(f"    ddp launch: done; n/a: {', '.join(failed) or 'none'}", flush=True)
    finally:
        # Nothing a launch started may outlive the benchmark.
        left = [p for p in descendants(os.getpid()) if p not in before and alive(p)]
        if left:
            kill_tree(None, left)
    run.seconds = time.monotonic() - started
    return run


# --- the report ------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def spread(values: Sequence[float]) -> str:
    """(max - min) / median, in percent of the median."""
    if len(values) < 2:
        return NA
    return f"{(max(values) - min(values)) / statistics.median(values) * 100:.0f}%"


def exits(codes: Sequence[int | None]) -> str:
    clean = sum(1 for c in codes if c == 0)
    bad = sorted({"timeout" if c is None else str(c) for c in codes if c != 0})
    return f"{clean}/{len(codes)}" + (f" (others: exit {', '.join(bad)})" if bad else "")


def paired_ratio(entry: TrainSeries, raw: TrainSeries) -> float | None:
    """The median over rounds of this framework's samples/s over raw's in the same round."""
    by_round = dict(zip(raw.rounds, raw.samples, strict=True))
    ratios = [
        v / by_round[r] for r, v in zip(entry.rounds, entry.samples, strict=True) if r in by_round
    ]
    return median(ratios)


def ratio_text(value: float | None) -> str:
    return NA if value is None else f"{value:.3f}"


def train_table(series: dict[str, TrainSeries]) -> list[str]:
    rows = [
        "| framework | samples/s, best window: median | min | max | spread "
        "| whole loop: median | step (best window, median) | vs raw: medians "
        "| vs raw: paired by round | whole loop vs raw | final loss | clean exits |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    raw = series["raw"]
    raw_median, raw_loop = median(raw.samples), median(raw.loop)
    for name, entry in series.items():
        mid, loop = median(entry.samples), median(entry.loop)
        if mid is None or loop is None:
            rows.append(f"| {TRAIN_LABELS[name]} |{f' {NA} |' * 10} {exits(entry.exits)} |")
            continue
        vs = None if not raw_median else mid / raw_median
        vs_loop = None if not raw_loop else loop / raw_loop
        losses = sorted({f"{x:.6f}" for x in entry.losses})
        rows.append(
            f"| {TRAIN_LABELS[name]} | {mid:.0f} | {min(entry.samples):.0f} "
            f"| {max(entry.samples):.0f} | {spread(entry.samples)} | {loop:.0f} "
            f"| {median(entry.step_ms):.1f} ms | {ratio_text(vs)} "
            f"| {ratio_text(paired_ratio(entry, raw))} | {ratio_text(vs_loop)} "
            f"| {', '.join(losses)} | {exits(entry.exits)} |"
        )
    return rows


def launch_table(series: dict[str, LaunchSeries]) -> list[str]:
    rows = [
        "| launcher | command | wall: median | min | max | spread | vs torchrun (median) "
        "| clean exits |",
        "|---|---|--:|--:|--:|--:|--:|---|",
    ]
    base = median(series["torchrun"].seconds)
    for name, entry in series.items():
        label, command = LAUNCH_LABELS[name], f"`{entry.command}`"
        if entry.unavailable is not None:
            rows.append(f"| {label} | {command} | not available | | | | | |")
            continue
        mid = median(entry.seconds)
        if mid is None:
            rows.append(
                f"| {label} | {command} | {NA} | {NA} | {NA} | {NA} | {NA} | {exits(entry.exits)} |"
            )
            continue
        delta = NA if base is None else f"{mid - base:+.2f} s"
        rows.append(
            f"| {label} | {command} | {mid:.2f} s | {min(entry.seconds):.2f} s | "
            f"{max(entry.seconds):.2f} s | {spread(entry.seconds)} | {delta} "
            f"| {exits(entry.exits)} |"
        )
    return rows


def goal_row(series: dict[str, TrainSeries]) -> str:
    raw, fab = median(series["raw"].samples), median(series["fab"].samples)
    if raw is None or fab is None or not raw:
        return f"| fab DDP throughput ≥ {GOAL_RATIO} of raw | {NA} | {NA} |"
    ratio = fab / raw
    paired = paired_ratio(series["fab"], series["raw"])
    met = "yes" if ratio >= GOAL_RATIO else "**no**"
    return (
        f"| fab 2-process DDP throughput ≥ {GOAL_RATIO} of raw PyTorch DDP's "
        f"| {ratio:.3f} (paired by round: {NA if paired is None else f'{paired:.3f}'}) | {met} |"
    )


def notes(run: DDPRun) -> list[str]:
    found: list[str] = []
    kept = "processes outlived their launch and were killed"
    for name, train in (run.train or {}).items():
        label = f"- training, {TRAIN_LABELS[name]}"
        found += [f"{label}: {error}" for error in sorted(set(train.errors))]
        found += [f"{label}: {train.orphans} {kept}"] if train.orphans else []
    for name, launch in (run.launch or {}).items():
        label = f"- launch, {LAUNCH_LABELS[name]}"
        if launch.unavailable is not None:
            found.append(f"{label}: not available: {launch.unavailable}")
        found += [f"{label}: {error}" for error in sorted(set(launch.errors))]
        found += [f"{label}: {launch.orphans} {kept}"] if launch.orphans else []
    return found


def report(run: DDPRun) -> list[str]:
    s = run.settings
    lines = [
        f"- DDP settings: {NPROC} processes on CPU over gloo, torch.set_num_threads({s.threads}) "
        f"and OMP_NUM_THREADS={s.threads} in each; training: {s.rounds} rounds, each framework "
        f"once per round in rotating order; per launch {s.warmup} warm-up steps, then "
        f"{s.windows} timed windows of {s.steps} steps (a barrier before starting and before "
        f"stopping the clock of each); launch: {s.launch_runs} runs per launcher "
        f"(interleaved, after one dropped warm-up run each); this part took {run.seconds:.0f} s",
    ]
    if run.train is not None:
        lines += [
            "",
            f"**2-process DDP training** (CPU, gloo), {s.model}, batch {s.batch} per process, "
            f"AdamW; every framework under `python -m torch.distributed.run --nproc-per-node "
            f"{NPROC}`; samples/s over both processes; headline: each launch's best window, "
            "median over rounds",
            "",
            *train_table(run.train),
        ]
    if run.launch is not None:
        lines += [
            "",
            "**Launching a trivial 2-process script** (import, set up the process group, one "
            "all_reduce, exit): wall time from start to exit",
            "",
            *launch_table(run.launch),
        ]
    if run.train is not None:
        lines += ["", "| goal | measured (medians) | met |", "|---|---|---|", goal_row(run.train)]
    found = notes(run)
    if found:
        lines += ["", "Notes:", "", *found]
    return lines


def as_json(run: DDPRun) -> dict[str, Any]:
    return {
        "settings": {k: v for k, v in vars(run.settings).items()},
        "train": {n: vars(e) for n, e in (run.train or {}).items()},
        "launch": {n: vars(e) for n, e in (run.launch or {}).items()},
        "subreaper": run.subreaper,
        "seconds": run.seconds,
    }
