"""fab's sharded-training benchmark: FSDP against DDP on two CPU processes over gloo, with a model
of at least 500 MB, side by side in one run.

Part of tools/bench/run.py (`python3 tools/dev.py bench -- --only sharded` runs just this part).

The model is a stack of `nn.Linear(WIDTH, WIDTH, bias=False)` layers (8 x 4096 x 4096 float32 by
default: 512 MiB, 537 MB), trained with AdamW on a batch of 8 per rank. DDP and FSDP
(`FSDPStrategy(auto_wrap_policy={nn.Linear})`, FULL_SHARD, the model created under
`init_module(empty_init=True)` so that each rank allocates only its shards) each run in a fresh
launch: `sharded.py --child STRATEGY` in a session of its own, under a timeout, which starts its two
ranks with fab's spawn launcher. Per rank:

A. Training: the bytes of parameters + optimizer state the rank holds (counted from its tensors:
   the local shard of each DTensor), its gradients, its peak resident memory above the start while
   it creates, sets up and trains the model (the kernel's `VmHWM`, reset after the imports), and
   the median wall time of a step (zero_grad, forward, backward, AdamW step, then a barrier) over
   the steps after the first (the first allocates the gradients and the optimizer state), and the
   median CPU time of the rank's process (all its threads, gloo's included) over the same steps,
   which depends less on what else the machine runs.
B. Checkpoint, after training: fab's sharded save (`fabric.save(dir, state)` under
   `state_dict_type="sharded"`: a torch.distributed.checkpoint directory that every rank writes its
   shards into) and sharded load (`fabric.load(dir, state)`), against `torch.save` of the full
   state (`{"model": state_dict, "optimizer": state_dict}`) and `torch.load(weights_only=True)` +
   `load_state_dict` on rank 0 of the DDP launch. Every load is checked: after the save the
   parameters and the optimizer state are zeroed, and after the load they must sum, rank by rank,
   to exactly what they summed to when saved. The files were just written, so loads read them
   from the page cache: they time deserialization and copies, not the disk.

Lightning Fabric is not measured: it refuses FSDP on a CPU. When it is installed, the run records
its refusal (the error it raises for `Fabric(accelerator="cpu", devices=2, strategy="fsdp")`).

Nothing outlives the benchmark: each launch's whole process tree is killed on a timeout, an error,
^C or a SIGTERM (tools/bench/ddp.py's `run_tree`), and the temporary directory holding the
checkpoints is deleted after each launch and at the end.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # mypy runs from the repository root, where this folder is tools.bench
    from tools.bench import ddp
else:  # run as a script (or imported by run.py), this folder is on sys.path
    import ddp

ROOT = Path(__file__).resolve().parents[2]
START, END = "<!-- bench-sharded:start -->", "<!-- bench-sharded:end -->"
STRATEGIES = ("ddp", "fsdp")
LABELS = {"ddp": "DDP", "fsdp": "FSDP"}
NPROC = 2
#: Per-rank parameter + optimizer memory of FSDP at most this fraction of DDP's (issue 12).
GOAL_RATIO = 0.55
#: The model must be at least this large (issue 12), unless the settings say otherwise (--quick).
MIN_MODEL_BYTES = 500 * 10**6
#: Resident memory a launch may need, in model sizes, over both ranks: DDP holds per rank the
#: model, its gradients, DDP's gradient buckets and AdamW's two moments (about 5x), and rank 0
#: loads a full copy of the state (3x) for the torch.load case. A run with less memory available
#: is not started.
MEMORY_FACTOR = 14
RESULT_PREFIX = "SHARDED "
LIGHTNING_PROBE = """\
import lightning_fabric
try:
    lightning_fabric.Fabric(accelerator="cpu", devices=2, strategy="fsdp")
except Exception as exc:
    print("REFUSED", type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
else:
    print("ACCEPTED")
"""
NA = "n/a"


@dataclass(frozen=True)
class Settings:
    layers: int = 8
    width: int = 4096
    batch: int = 8
    steps: int = 4
    threads: int = 1
    timeout: float = 1800.0  # seconds per launch, start to exit
    env: dict[str, str] = field(default_factory=dict)

    @property
    def model_bytes(self) -> int:
        return self.layers * self.width * self.width * 4

    @property
    def model(self) -> str:
        mib, mb = self.model_bytes / 2**20, self.model_bytes / 10**6
        return (
            f"{self.layers} x `nn.Linear({self.width}, {self.width}, bias=False)`, float32, "
            f"{mib:,.0f} MiB ({mb:,.0f} MB)"
        )


@dataclass
class Launch:
    """One strategy's 2-process launch: every rank's figures, or why there are none."""

    ranks: list[dict[str, Any]] = field(default_factory=list)
    seconds: float | None = None
    exit: int | None = None
    orphans: int = 0
    error: str | None = None


@dataclass
class ShardedRun:
    settings: Settings
    launches: dict[str, Launch] = field(default_factory=dict)
    lightning: str = ""
    memory_available: int | None = None
    subreaper: bool = False
    seconds: float = 0.0


# --- in each rank ------------------------------------------------------------------------------


def _status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def _local(tensor: Any) -> Any:
    """The rank's own part of a tensor (a DTensor's local shard)."""
    to_local = getattr(tensor, "to_local", None)
    return to_local() if callable(to_local) else tensor


def _state_tensors(model: Any, optimizer: Any) -> tuple[list[Any], list[Any]]:
    """(the rank's parameters, its optimizer-state tensors), local parts."""
    import torch

    params = [_local(p) for p in model.parameters()]
    states = [
        _local(value)
        for p in model.parameters()
        for value in optimizer.state[p].values()
        if isinstance(value, torch.Tensor)
    ]
    return params, states


def _nbytes(tensors: Sequence[Any]) -> int:
    return sum(int(t.numel()) * int(t.element_size()) for t in tensors)


def _checksum(model: Any, optimizer: Any) -> float:
    params, states = _state_tensors(model, optimizer)
    return float(sum(float(t.detach().double().sum()) for t in [*params, *states]))


def _zero(model: Any, optimizer: Any) -> None:
    """Overwrite what a load must restore, so that a load that restores nothing is caught."""
    import torch

    with torch.no_grad():
        params, states = _state_tensors(model, optimizer)
        for tensor in [*params, *states]:
            tensor.zero_()


def _disk_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _work(fabric: Any, strategy: str, s: dict[str, int], folder: str) -> dict[str, Any]:
    import torch
    import torch.distributed as dist
    from torch import nn

    torch.set_num_threads(s["threads"])
    sharded = strategy == "fsdp"
    try:
        Path("/proc/self/clear_refs").write_text("5", encoding="utf-8")
        peak_method = "VmHWM reset after the imports"
    except OSError:
        peak_method = "VmHWM since start-up"
    base = _status_bytes("VmRSS")
    torch.manual_seed(0)
    with fabric.init_module(empty_init=sharded):
        module = nn.Sequential(
            *(nn.Linear(s["width"], s["width"], bias=False) for _ in range(s["layers"]))
        )
    model, optimizer = fabric.setup(module, torch.optim.AdamW(module.parameters(), lr=1e-4))
    generator = torch.Generator().manual_seed(fabric.global_rank)
    x = torch.randn(s["batch"], s["width"], generator=generator)
    times: list[float] = []
    cpu_times: list[float] = []
    for _ in range(s["steps"]):
        fabric.barrier()
        start, cpu_start = time.perf_counter(), time.process_time()
        optimizer.zero_grad()
        fabric.backward(model(x).pow(2).mean())
        optimizer.step()
        fabric.barrier()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    params, states = _state_tensors(model, optimizer)
    grads = [_local(p.grad) for p in model.parameters() if p.grad is not None]
    out: dict[str, Any] = {
        "rank": fabric.global_rank,
        "steps_s": times,
        "step_s": statistics.median(times[1:] if len(times) > 1 else times),
        "step_cpu_s": statistics.median(cpu_times[1:] if len(cpu_times) > 1 else cpu_times),
        "peak_bytes": _status_bytes("VmHWM") - base,
        "peak_method": peak_method,
        "params_bytes": _nbytes(params),
        "optimizer_bytes": _nbytes(states),
        "grads_bytes": _nbytes(grads),
    }
    expected = _checksum(model, optimizer)
    if sharded:
        path = Path(folder, "sharded")
        state = {"model": model, "optimizer": optimizer, "step": s["steps"]}
        fabric.barrier()
        start = time.perf_counter()
        fabric.save(path, state)
        out["save_s"] = time.perf_counter() - start
        _zero(model, optimizer)
        fabric.barrier()
        start = time.perf_counter()
        fabric.load(path, state)
        out["load_s"] = time.perf_counter() - start
        out["restored"] = _checksum(model, optimizer) == expected
        fabric.barrier()
        if fabric.is_global_zero:
            out["disk_bytes"] = _disk_bytes(path)
    elif fabric.is_global_zero:
        path = Path(folder, "full.pt")
        start = time.perf_counter()
        torch.save({"model": module.state_dict(), "optimizer": optimizer.state_dict()}, path)
        out["save_s"] = time.perf_counter() - start
        out["disk_bytes"] = _disk_bytes(path)
        _zero(model, optimizer)
        start = time.perf_counter()
        loaded = torch.load(path, weights_only=True)
        module.load_state_dict(loaded["model"])
        optimizer.load_state_dict(loaded["optimizer"])
        out["load_s"] = time.perf_counter() - start
        del loaded
        out["restored"] = _checksum(model, optimizer) == expected
    gathered: list[Any] = [None] * fabric.world_size
    dist.all_gather_object(gathered, out)
    return {"ranks": gathered}


def child(strategy: str, s: Settings, folder: str) -> dict[str, Any]:
    """In the launch's first process: start the two ranks, return what they measured."""
    from torch import nn

    from fab.core import Fabric
    from fab.strategies import DDPStrategy, FSDPStrategy

    chosen: Any
    if strategy == "ddp":
        chosen = DDPStrategy(start_method="spawn")
    else:
        chosen = FSDPStrategy(
            start_method="spawn", auto_wrap_policy={nn.Linear}, state_dict_type="sharded"
        )
    fabric = Fabric(accelerator="cpu", devices=NPROC, strategy=chosen)
    sizes = {
        "layers": s.layers,
        "width": s.width,
        "batch": s.batch,
        "steps": s.steps,
        "threads": s.threads,
    }
    result: dict[str, Any] = fabric.launch(_work, strategy, sizes, folder)
    return result


# --- in the benchmark process -------------------------------------------------------------------


def memory_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def child_command(strategy: str, s: Settings, folder: Path) -> list[str]:
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        strategy,
        f"--folder={folder}",
        f"--layers={s.layers}",
        f"--width={s.width}",
        f"--batch={s.batch}",
        f"--steps={s.steps}",
        f"--threads={s.threads}",
    ]


def run_launch(strategy: str, s: Settings, folder: Path, env: dict[str, str]) -> Launch:
    outcome = ddp.run_tree(child_command(strategy, s, folder), env, s.timeout)
    launch = Launch(seconds=outcome.seconds, exit=outcome.returncode, orphans=outcome.orphans)
    lines = [line for line in outcome.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if not lines:
        launch.error = outcome.why()
        return launch
    data = json.loads(lines[-1][len(RESULT_PREFIX) :])
    launch.ranks = sorted(data["ranks"], key=lambda r: int(r["rank"]))
    if outcome.returncode != 0:
        launch.error = f"measured, then {outcome.why()}"
    return launch


def lightning_refusal(env: dict[str, str]) -> str:
    """What Lightning Fabric says to FSDP on a CPU, asked in a fresh interpreter."""
    try:
        installed = importlib.util.find_spec("lightning_fabric") is not None
    except (ImportError, ValueError):
        installed = False
    if not installed:
        return "lightning-fabric is not installed here"
    try:
        proc = subprocess.run(
            [sys.executable, "-c", LIGHTNING_PROBE],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
        )
    except subprocess.TimeoutExpired:
        return "asking it timed out"
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("REFUSED", "ACCEPTED"))]
    if not lines:
        tail = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        return f"asking it failed: {tail[:200]}"
    if lines[-1] == "ACCEPTED":
        return "it accepted the strategy (not measured here)"
    name, _, message = lines[-1][len("REFUSED ") :].partition(" ")
    return f'`Fabric(accelerator="cpu", devices=2, strategy="fsdp")` raises {name}: "{message}"'


def bench(s: Settings, say: Callable[[str], None]) -> ShardedRun:
    """DDP then FSDP, each in a fresh 2-process launch; the checkpoints in a temporary directory
    that is emptied after each launch and deleted at the end."""
    started = time.monotonic()
    env = {**os.environ, "OMP_NUM_THREADS": str(s.threads), **s.env}
    run = ShardedRun(s, subreaper=ddp.become_subreaper(), memory_available=memory_available())
    needed = MEMORY_FACTOR * s.model_bytes
    before = set(ddp.descendants(os.getpid()))
    try:
        with (
            ddp.sigterm_raises(),
            tempfile.TemporaryDirectory(prefix="fab-bench-sharded-") as tmp,
        ):
            run.lightning = lightning_refusal(env)
            for strategy in STRATEGIES:
                available = memory_available()
                if available is not None and available < needed:
                    run.launches[strategy] = Launch(
                        error=f"not started: it may need about {needed / 2**30:.1f} GiB and "
                        f"{available / 2**30:.1f} GiB is available (fewer --sharded-layers "
                        "makes a smaller model)"
                    )
                    continue
                say(f"sharded: {LABELS[strategy]} (2 processes)")
                folder = Path(tmp, strategy)
                folder.mkdir()
                try:
                    run.launches[strategy] = run_launch(strategy, s, folder, env)
                finally:
                    shutil.rmtree(folder, ignore_errors=True)
    finally:
        left = [p for p in ddp.descendants(os.getpid()) if p not in before and ddp.alive(p)]
        if left:
            ddp.kill_tree(None, left)
    run.seconds = time.monotonic() - started
    failed = [LABELS[n] for n in STRATEGIES if not run.launches.get(n, Launch()).ranks]
    print(f"    sharded: done; n/a: {', '.join(failed) or 'none'}", flush=True)
    return run


# --- the report --------------------------------------------------------------------------------


def _mib(value: float | None) -> str:
    return NA if value is None else f"{value / 2**20:,.0f} MiB"


def _seconds(value: float | None) -> str:
    return NA if value is None else f"{value:.2f} s"


def _per_rank(launch: Launch | None, key: str, show: Callable[[float | None], str]) -> str:
    if launch is None or not launch.ranks:
        return NA
    return " / ".join(show(rank.get(key)) for rank in launch.ranks)


def _largest(launch: Launch | None, *keys: str) -> float | None:
    """The largest over ranks of the sum of keys (None if a rank lacks one)."""
    if launch is None or not launch.ranks:
        return None
    totals = []
    for rank in launch.ranks:
        if any(rank.get(k) is None for k in keys):
            return None
        totals.append(sum(float(rank[k]) for k in keys))
    return max(totals)


def _ratio(a: float | None, b: float | None) -> str:
    return NA if a is None or b is None or not b else f"{a / b:.3f}"


def memory_ratio(run: ShardedRun) -> float | None:
    """FSDP's per-rank parameter + optimizer bytes over DDP's (the largest rank of each)."""
    keys = ("params_bytes", "optimizer_bytes")
    fsdp, ddp_ = _largest(run.launches.get("fsdp"), *keys), _largest(run.launches.get("ddp"), *keys)
    return None if fsdp is None or ddp_ is None or not ddp_ else fsdp / ddp_


def _rank_value(launch: Launch | None, key: str, rank: int = 0) -> Any:
    if launch is None or len(launch.ranks) <= rank:
        return None
    return launch.ranks[rank].get(key)


def _slowest(launch: Launch | None, key: str) -> float | None:
    if launch is None or not launch.ranks:
        return None
    values = [float(r[key]) for r in launch.ranks if r.get(key) is not None]
    return max(values) if values else None


def _restored(value: Any) -> str:
    return NA if value is None else ("yes" if value else "**no**")


def training_table(run: ShardedRun) -> list[str]:
    ddp_, fsdp = run.launches.get("ddp"), run.launches.get("fsdp")
    rows = [
        "| per rank (rank 0 / rank 1) | DDP | FSDP | FSDP / DDP (largest rank) |",
        "|---|--:|--:|--:|",
    ]
    for label, keys in (
        ("parameters + optimizer state (AdamW)", ("params_bytes", "optimizer_bytes")),
        ("parameters", ("params_bytes",)),
        ("optimizer state", ("optimizer_bytes",)),
        ("gradients", ("grads_bytes",)),
        ("peak resident memory above the start", ("peak_bytes",)),
    ):

        def both(launch: Launch | None, keys: tuple[str, ...] = keys) -> str:
            if launch is None or not launch.ranks:
                return NA
            return " / ".join(
                _mib(sum(float(r[k]) for k in keys) if all(k in r for k in keys) else None)
                for r in launch.ranks
            )

        rows.append(
            f"| {label} | {both(ddp_)} | {both(fsdp)} "
            f"| {_ratio(_largest(fsdp, *keys), _largest(ddp_, *keys))} |"
        )
    step = "step time (median of the steps after the first)"
    rows.append(
        f"| {step} | {_per_rank(ddp_, 'step_s', _seconds)} "
        f"| {_per_rank(fsdp, 'step_s', _seconds)} "
        f"| {_ratio(_slowest(fsdp, 'step_s'), _slowest(ddp_, 'step_s'))} |"
    )
    cpu = "CPU time of a step (the process's, all its threads; median)"
    rows.append(
        f"| {cpu} | {_per_rank(ddp_, 'step_cpu_s', _seconds)} "
        f"| {_per_rank(fsdp, 'step_cpu_s', _seconds)} "
        f"| {_ratio(_slowest(fsdp, 'step_cpu_s'), _slowest(ddp_, 'step_cpu_s'))} |"
    )
    return rows


def checkpoint_table(run: ShardedRun) -> list[str]:
    ddp_, fsdp = run.launches.get("ddp"), run.launches.get("fsdp")
    size_full, size_sharded = _rank_value(ddp_, "disk_bytes"), _rank_value(fsdp, "disk_bytes")
    return [
        "| the same model + AdamW state | who | time | on disk | restored exactly |",
        "|---|---|--:|--:|---|",
        f"| `torch.save({{'model': sd, 'optimizer': sd}}, file)` (full state) | rank 0 of DDP "
        f"| {_seconds(_rank_value(ddp_, 'save_s'))} | {_mib(size_full)} | |",
        "| `torch.load(file, weights_only=True)` + `load_state_dict` (model, optimizer) "
        f"| rank 0 of DDP | {_seconds(_rank_value(ddp_, 'load_s'))} | "
        f"| {_restored(_rank_value(ddp_, 'restored'))} |",
        '| fab sharded save: `fabric.save(dir, state)`, FSDP `state_dict_type="sharded"` '
        "(torch.distributed.checkpoint) | both ranks (slowest) "
        f"| {_seconds(_slowest(fsdp, 'save_s'))} | {_mib(size_sharded)} | |",
        "| fab sharded load: `fabric.load(dir, state)` | both ranks (slowest) "
        f"| {_seconds(_slowest(fsdp, 'load_s'))} | "
        f"| {' / '.join(_restored(r.get('restored')) for r in fsdp.ranks) if fsdp else NA} |",
    ]


def launches_line(run: ShardedRun) -> str:
    parts = []
    for name in STRATEGIES:
        launch = run.launches.get(name)
        if launch is None or launch.seconds is None:
            parts.append(f"{LABELS[name]} not run")
            continue
        exit_text = "timed out (killed)" if launch.exit is None else f"exit {launch.exit}"
        parts.append(f"{LABELS[name]} {launch.seconds:.0f} s, {exit_text}")
    return "; ".join(parts)


def notes(run: ShardedRun) -> list[str]:
    found: list[str] = []
    for name in STRATEGIES:
        launch = run.launches.get(name)
        if launch is None:
            continue
        if launch.error is not None:
            found.append(f"- {LABELS[name]}: {launch.error}")
        if launch.orphans:
            found.append(
                f"- {LABELS[name]}: {launch.orphans} processes outlived the launch and were killed"
            )
    return found


def report(run: ShardedRun) -> list[str]:
    s = run.settings
    method = next((r["peak_method"] for launch in run.launches.values() for r in launch.ranks), NA)
    ratio = memory_ratio(run)
    met = NA if ratio is None else ("yes" if ratio <= GOAL_RATIO else "**no**")
    available = NA if run.memory_available is None else f"{run.memory_available / 2**30:.1f} GiB"
    lines = [
        f"- sharded settings: model {s.model}; AdamW; batch {s.batch} per rank; {NPROC} processes "
        f"on CPU over gloo (fab's spawn launcher), torch.set_num_threads({s.threads}) and "
        f"OMP_NUM_THREADS={s.threads} in each; each strategy in a fresh launch, DDP first; "
        f"{s.steps} steps; peak memory: {method}; memory available at the start: {available}; "
        f"launches: {launches_line(run)}; this part took {run.seconds:.0f} s",
        f"- Lightning Fabric: not measured, it refuses FSDP on a CPU; asked in this run, "
        f"{run.lightning or NA}",
        "",
        "**Training**, per rank",
        "",
        *training_table(run),
        "",
        "**Checkpoint** after training (loads read the files from the page cache)",
        "",
        *checkpoint_table(run),
        "",
        "**Goal**",
        "",
        "| goal | measured | met |",
        "|---|---|---|",
        f"| FSDP's per-rank parameter + optimizer memory at most {GOAL_RATIO} of DDP's "
        f"| {NA if ratio is None else f'{ratio:.3f}'} | {met} |",
        f"| a model of at least {MIN_MODEL_BYTES / 10**6:.0f} MB | {s.model_bytes / 10**6:,.0f} MB "
        f"| {'yes' if s.model_bytes >= MIN_MODEL_BYTES else '**no** (a smoke run)'} |",
    ]
    found = notes(run)
    if found:
        lines += ["", "Not measured, or not cleanly:", "", *found]
    return lines


def as_json(run: ShardedRun) -> dict[str, Any]:
    s = run.settings
    return {
        "settings": {k: v for k, v in vars(s).items() if k != "env"},
        "model_bytes": s.model_bytes,
        "lightning": run.lightning,
        "memory_available": run.memory_available,
        "seconds": run.seconds,
        "launches": {name: vars(launch) for name, launch in run.launches.items()},
        "memory_ratio": memory_ratio(run),
    }


# --- the child's command line ------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one launch of tools/bench/sharded.py")
    parser.add_argument("--child", required=True, choices=STRATEGIES)
    parser.add_argument("--folder", required=True, help="where the checkpoints go")
    parser.add_argument("--layers", type=int, default=Settings.layers)
    parser.add_argument("--width", type=int, default=Settings.width)
    parser.add_argument("--batch", type=int, default=Settings.batch)
    parser.add_argument("--steps", type=int, default=Settings.steps)
    parser.add_argument("--threads", type=int, default=Settings.threads)
    opts = parser.parse_args(argv)
    s = Settings(opts.layers, opts.width, opts.batch, opts.steps, opts.threads)
    result = child(opts.child, s, opts.folder)
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
