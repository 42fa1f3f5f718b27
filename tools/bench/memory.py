"""fab's memory benchmark: peak resident memory to create a large model and to load a checkpoint
into it, beside raw PyTorch and Lightning Fabric.

Part of tools/bench/run.py (`python3 tools/dev.py bench -- --only memory` runs just this part).

The model is a stack of `nn.Linear(WIDTH, WIDTH)` layers, 2 GiB of float32 by default. Every
measurement runs in a fresh interpreter (`memory.py --child CASE`): it imports what it needs,
resets the kernel's peak-RSS counter (`/proc/self/clear_refs`; without it, the peak since
start-up is used and the baseline subtracted), does the one thing measured, then reads the peak
(`VmHWM`) and reports it above the resident size it started from. Memory that a process has
allocated but never written is not resident and does not count; pages of a memory-mapped file
that it reads count (they are the weights it holds).

A. Creating the model: plain construction (initialized: every page written), under
   `torch.device("meta")`, under fab's `init_module(empty_init=True)` (meta device) and under
   Lightning's (allocates, skips initialization).
B. Creating the model and loading a checkpoint into it (a Fabric checkpoint, `{"model": state
   dict, "step": 1}`, written once to a temporary directory and deleted afterwards), then reading
   every weight once (a sum), so that every case ends holding the whole model, loaded:
   fab's `Fabric.load` into an `init_module(empty_init=True)` model and into an initialized one;
   `torch.load` then `load_state_dict` into an initialized one, and the mmap + `assign=True`
   recipe into a meta one; Lightning Fabric's `Fabric.load` into its `init_module(empty_init=True)`
   model, and its `_lazy_load` then `load_state_dict` into an initialized one.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
START, END = "<!-- bench-memory:start -->", "<!-- bench-memory:end -->"
GOAL_CREATE = 0.05  # of the model's size, before materialization
GOAL_LOAD = 1.10  # times the model's size, above the starting point
T_CHILD = 600.0

CREATE_CASES: dict[str, str] = {
    "create-torch": "raw PyTorch: `Model()` (initialized)",
    "create-torch-meta": 'raw PyTorch: `with torch.device("meta"): Model()`',
    "create-fab": "fab: `with fabric.init_module(empty_init=True): Model()`",
    "create-lightning": "Lightning Fabric: `with fabric.init_module(empty_init=True): Model()`",
}
LOAD_CASES: dict[str, str] = {
    "load-fab-empty": "fab: `fabric.load(path, {'model': model})`, model from "
    "`init_module(empty_init=True)`",
    "load-fab-real": "fab: `fabric.load(path, {'model': model})`, initialized model",
    "load-torch": "raw PyTorch: `torch.load(path)` then `model.load_state_dict(sd)`, "
    "initialized model",
    "load-torch-mmap": "raw PyTorch: `torch.load(path, mmap=True)` then "
    "`load_state_dict(sd, assign=True)`, meta model",
    "load-lightning-empty": "Lightning Fabric: `fabric.load(path, {'model': model})`, model from "
    "`init_module(empty_init=True)`",
    "load-lightning-lazy": "Lightning Fabric: `_lazy_load(path)` then "
    "`model.load_state_dict(sd)`, initialized model",
}
GOAL_LABELS = {
    "load-fab-empty": "model from `init_module(empty_init=True)`",
    "load-fab-real": "initialized model",
}


@dataclass
class Settings:
    layers: int = 32
    width: int = 4096
    env: dict[str, str] = field(default_factory=dict)

    @property
    def model_bytes(self) -> int:
        return self.layers * (self.width * self.width + self.width) * 4


@dataclass
class Measurement:
    case: str
    above_start: int | None = None  # bytes of peak RSS above the starting RSS
    seconds: float | None = None
    method: str = ""
    error: str | None = None


@dataclass
class MemoryRun:
    settings: Settings
    results: list[Measurement] = field(default_factory=list)


# --- in the fresh child process ---------------------------------------------------------------


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/self/status")


def _reset_peak() -> str:
    """Make VmHWM the current RSS; the method used, for the report."""
    try:
        Path("/proc/self/clear_refs").write_text("5", encoding="utf-8")
    except OSError:
        return "VmHWM since start-up, minus the RSS at the start"
    return "VmHWM reset after imports"


def _model(layers: int, width: int) -> Any:
    import torch

    return torch.nn.Sequential(*(torch.nn.Linear(width, width) for _ in range(layers)))


def _read_all(model: Any) -> None:
    """Touch every weight once (what any use of the model does)."""
    import torch

    with torch.no_grad():
        total = sum(float(p.sum()) for p in model.parameters())
    if total != total:  # NaN: a sign of garbage memory, which would be a bug
        raise RuntimeError("the loaded weights hold NaN")


def _fab_fabric() -> Any:
    from fab.core import Fabric

    return Fabric(accelerator="cpu", devices=1)


def _lightning_fabric() -> Any:
    return importlib.import_module("lightning_fabric").Fabric(accelerator="cpu", devices=1)


def _lightning_lazy_load() -> Callable[[str], Any]:
    function: Callable[[str], Any] = importlib.import_module(
        "lightning_fabric.utilities.load"
    )._lazy_load
    return function


def child(case: str, path: str, layers: int, width: int) -> dict[str, Any]:
    import torch

    fabric: Any = None
    if case in ("create-fab", "load-fab-empty", "load-fab-real"):
        fabric = _fab_fabric()
    elif case in ("create-lightning", "load-lightning-empty", "load-lightning-lazy"):
        fabric = _lightning_fabric()
        lightning_lazy_load = _lightning_lazy_load()  # imported before the start
    start = _status_kib("VmRSS")
    method = _reset_peak()
    began = time.perf_counter()
    if case == "create-torch":
        model = _model(layers, width)
    elif case == "create-torch-meta":
        with torch.device("meta"):
            model = _model(layers, width)
    elif case in ("create-fab", "create-lightning"):
        with fabric.init_module(empty_init=True):
            model = _model(layers, width)
    elif case in ("load-fab-empty", "load-lightning-empty"):
        with fabric.init_module(empty_init=True):
            model = _model(layers, width)
        fabric.load(path, {"model": model})
    elif case == "load-fab-real":
        model = _model(layers, width)
        fabric.load(path, {"model": model})
    elif case == "load-torch":
        model = _model(layers, width)
        model.load_state_dict(torch.load(path, weights_only=True)["model"])
    elif case == "load-torch-mmap":
        with torch.device("meta"):
            model = _model(layers, width)
        checkpoint = torch.load(path, mmap=True, weights_only=True)
        model.load_state_dict(checkpoint["model"], assign=True)
    elif case == "load-lightning-lazy":
        model = _model(layers, width)
        model.load_state_dict(lightning_lazy_load(path)["model"])
    else:
        raise SystemExit(f"unknown case {case!r}")
    if case.startswith("load-"):
        _read_all(model)
    seconds = time.perf_counter() - began
    peak = _status_kib("VmHWM")
    return {"above_start": (peak - start) * 1024, "seconds": seconds, "method": method}


# --- in the benchmark process -----------------------------------------------------------------


def _run_child(case: str, path: Path, settings: Settings) -> Measurement:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        case,
        "--path",
        str(path),
        "--layers",
        str(settings.layers),
        "--width",
        str(settings.width),
    ]
    try:
        proc = subprocess.run(
            cmd,
            cwd=ROOT,
            env={**os.environ, **settings.env},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=T_CHILD,
        )
    except subprocess.TimeoutExpired:
        return Measurement(case, error=f"no result in {T_CHILD:.0f} s")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("MEMORY ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        return Measurement(case, error=tail)
    data = json.loads(lines[-1][len("MEMORY ") :])
    return Measurement(case, int(data["above_start"]), float(data["seconds"]), data["method"])


def _write_checkpoint(path: Path, settings: Settings) -> None:
    code = (
        "import sys, torch\n"
        f"model = torch.nn.Sequential(*(torch.nn.Linear({settings.width}, {settings.width}) "
        f"for _ in range({settings.layers})))\n"
        "torch.save({'model': model.state_dict(), 'step': 1}, sys.argv[1])\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=T_CHILD)


def bench(settings: Settings, progress: Callable[[str], None]) -> MemoryRun:
    """Every case in a fresh process; the checkpoint is written once and deleted after."""
    run = MemoryRun(settings)
    for case in CREATE_CASES:
        progress(f"memory: {case}")
        run.results.append(_run_child(case, Path(os.devnull), settings))
    with tempfile.TemporaryDirectory(prefix="fab-bench-memory-") as tmp:
        path = Path(tmp) / "model.pt"
        progress(f"memory: writing a {settings.model_bytes / 2**30:.1f} GiB checkpoint")
        _write_checkpoint(path, settings)
        for case in LOAD_CASES:
            progress(f"memory: {case}")
            run.results.append(_run_child(case, path, settings))
    progress("")
    failed = [m.case for m in run.results if m.error is not None]
    print(f"    memory: done; n/a: {', '.join(failed) or 'none'}", flush=True)
    return run


def _fmt_bytes(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:,.0f} MiB"


def _fmt_ratio(value: int | None, model: int) -> str:
    return "n/a" if value is None else f"{value / model:.3f}x"


def report(run: MemoryRun) -> list[str]:
    s = run.settings
    model = s.model_bytes
    by_case = {m.case: m for m in run.results}
    lines = [
        f"- model: {s.layers} x `nn.Linear({s.width}, {s.width})`, float32, "
        f"{model / 2**20:,.0f} MiB; checkpoint: `{{'model': state_dict, 'step': 1}}`; "
        f"peak RSS: {next((m.method for m in run.results if m.method), 'n/a')}",
        "",
        "**A. Creating the model** (peak resident memory above the start)",
        "",
        "| how | peak above start | of the model's size | s |",
        "|---|--:|--:|--:|",
    ]
    for case, label in CREATE_CASES.items():
        m = by_case.get(case, Measurement(case, error="not run"))
        lines.append(
            f"| {label} | {_fmt_bytes(m.above_start)} | {_fmt_ratio(m.above_start, model)} "
            f"| {'n/a' if m.seconds is None else f'{m.seconds:.2f}'} |"
        )
    lines += [
        "",
        "**B. Creating the model, loading the checkpoint into it, reading every weight once** "
        "(peak resident memory above the start; 1.0x is the model itself)",
        "",
        "| how | peak above start | of the model's size | s |",
        "|---|--:|--:|--:|",
    ]
    for case, label in LOAD_CASES.items():
        m = by_case.get(case, Measurement(case, error="not run"))
        lines.append(
            f"| {label} | {_fmt_bytes(m.above_start)} | {_fmt_ratio(m.above_start, model)} "
            f"| {'n/a' if m.seconds is None else f'{m.seconds:.2f}'} |"
        )
    lines += ["", "**Goals**", "", "| goal | measured | met |", "|---|---|---|"]
    create = by_case.get("create-fab")
    if create is not None and create.above_start is not None:
        ratio = create.above_start / model
        lines.append(
            f"| `init_module(empty_init=True)` under {GOAL_CREATE:.0%} of the model's size "
            f"| {ratio:.1%} | {'yes' if ratio < GOAL_CREATE else '**no**'} |"
        )
    for case in ("load-fab-empty", "load-fab-real"):
        loaded = by_case.get(case)
        if loaded is not None and loaded.above_start is not None:
            ratio = loaded.above_start / model
            lines.append(
                f"| fab, {GOAL_LABELS[case]}: load ≤ {GOAL_LOAD}x the model's size "
                f"| {ratio:.3f}x | {'yes' if ratio <= GOAL_LOAD else '**no**'} |"
            )
    notes = [f"- {m.case}: n/a — {m.error}" for m in run.results if m.error is not None]
    if notes:
        lines += ["", "Not measured:", "", *notes]
    return lines


def as_json(run: MemoryRun) -> dict[str, Any]:
    return {
        "layers": run.settings.layers,
        "width": run.settings.width,
        "model_bytes": run.settings.model_bytes,
        "results": [vars(m) for m in run.results],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one measurement of tools/bench/memory.py")
    parser.add_argument("--child", required=True, choices=[*CREATE_CASES, *LOAD_CASES])
    parser.add_argument("--path", required=True)
    parser.add_argument("--layers", type=int, default=Settings.layers)
    parser.add_argument("--width", type=int, default=Settings.width)
    opts = parser.parse_args(argv)
    result = child(opts.child, opts.path, opts.layers, opts.width)
    print("MEMORY " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
