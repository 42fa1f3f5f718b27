#!/usr/bin/env python3
"""One framework's side of a benchmark, in a process of its own (started by tools/bench/run.py).

    python tools/bench/worker.py {forward,train,step} {raw,fab,lightning,accelerate} PRECISION

The worker imports torch and its framework only, builds the model, wraps it the way the
framework's users do, builds a bare twin of it (raw PyTorch, the paired reference measured in the
same process), warms up and calibrates, and then answers requests on stdin, one JSON line each on
stdout:

    (start)  -> {"ready": true, "info": {...}}  or  {"error": "..."} and exit 0
    run      -> {"value": SECONDS, "bare": SECONDS}  (per forward call, or per training step)
    quit     -> exit

The orchestrator keeps one worker per framework alive and sends ``run`` to each in turn, so that
the frameworks' repetitions interleave and machine noise falls on all of them alike. Whatever the
libraries print goes to stderr; stdout carries the protocol alone.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, TextIO

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FRAMEWORKS = ("raw", "fab", "lightning", "accelerate")
PRECISIONS = ("32-true", "bf16-mixed")
#: The modules a Lightning Fabric install may provide, in the order they are tried.
LIGHTNING_MODULES = ("lightning_fabric", "lightning.fabric")

# The models: a tiny layer for the per-call overhead, a small MLP for a whole training step.
FORWARD_FEATURES = 16
MLP_WIDTH = 512
MLP_LAYERS = 3
MLP_CLASSES = 10
BATCH = 64
# The per-step cost (issue 10 item 19): a model so small that the framework's fixed cost per step
# shows. MLP 32 -> 64 -> 8, batch 32, SGD; timed in thread CPU time (see step_bench).
STEP_SIZES = (32, 64, 8)
STEP_BATCH = 32
#: A repetition of the step benchmark alternates the framework and its bare twin this many times.
STEP_CHUNKS = 20


@dataclass
class Prepared:
    """A model (and optimizer) as a framework's user holds them after setting them up."""

    model: Callable[..., Any]
    optimizer: Any
    backward: Callable[[Tensor], None]
    #: Raw PyTorch in bf16-mixed: the loop itself enters autocast around the forward.
    raw_autocast: bool = False
    info: dict[str, str] = field(default_factory=dict)


def import_lightning() -> ModuleType:
    for name in LIGHTNING_MODULES:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError("lightning-fabric is not installed (neither lightning_fabric nor lightning)")


def tensor_backward(loss: Tensor) -> None:
    loss.backward()  # type: ignore[no-untyped-call]


def prepare(
    framework: str, precision: str, module: nn.Module, optimizer: torch.optim.Optimizer | None
) -> Prepared:
    """Set the model (and optimizer) up on one CPU, as the framework's documentation shows."""
    if framework == "raw":
        return Prepared(module, optimizer, tensor_backward, raw_autocast=precision != "32-true")
    if framework == "fab":
        from fab.core import Fabric

        fabric = Fabric(accelerator="cpu", devices=1, precision=precision)
        if optimizer is None:
            return Prepared(fabric.setup_module(module), None, fabric.backward)
        model, opt = fabric.setup(module, optimizer)
        return Prepared(model, opt, fabric.backward)
    if framework == "lightning":
        lightning = import_lightning()
        lfabric: Any = lightning.Fabric(accelerator="cpu", devices=1, precision=precision)
        info = {"module": lightning.__name__}
        if optimizer is None:
            return Prepared(lfabric.setup_module(module), None, lfabric.backward, info=info)
        model, opt = lfabric.setup(module, optimizer)
        return Prepared(model, opt, lfabric.backward, info=info)
    if framework == "accelerate":
        accelerate = importlib.import_module("accelerate")
        mixed = {"32-true": "no", "bf16-mixed": "bf16"}[precision]
        accelerator: Any = accelerate.Accelerator(cpu=True, mixed_precision=mixed)
        if optimizer is None:
            return Prepared(accelerator.prepare_model(module), None, accelerator.backward)
        model, opt = accelerator.prepare(module, optimizer)
        return Prepared(model, opt, accelerator.backward)
    raise ValueError(f"unknown framework {framework!r}")


def autocast_check(prepared: Prepared, example: Tensor) -> dict[str, str]:
    """Whether autocast is on when the first nn.Linear computes, the dtype it computes in, and the
    dtype the caller gets back: shows that a mixed precision really runs, however the framework
    applies it (a wrapper module, or a patched ``forward`` as Accelerate does)."""
    seen: list[tuple[bool, torch.dtype]] = []
    linear = F.linear

    def recording_linear(*args: Any, **kwargs: Any) -> Tensor:
        out = linear(*args, **kwargs)
        seen.append((torch.is_autocast_enabled("cpu"), out.dtype))
        return out

    F.linear = recording_linear  # nn.Linear.forward looks F.linear up on every call
    try:
        if prepared.raw_autocast:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = prepared.model(example)
        else:
            out = prepared.model(example)
    finally:
        F.linear = linear
    autocast, dtype = seen[0] if seen else (False, None)
    return {
        "autocast": "on" if autocast else "off",
        "computes_in": str(dtype).removeprefix("torch."),
        "returns": str(out.dtype).removeprefix("torch."),
    }


# --- the measurements ------------------------------------------------------------------------


Measure = Callable[[], dict[str, float]]


def forward_bench(framework: str, precision: str, target: float) -> tuple[Measure, dict[str, str]]:
    """Per-call time of a wrapped nn.Linear(16, 16) on a batch of one, grad enabled, and of the
    same call on a bare twin module in the same process (the paired reference)."""
    twin = nn.Linear(FORWARD_FEATURES, FORWARD_FEATURES)
    module = nn.Linear(FORWARD_FEATURES, FORWARD_FEATURES)
    x = torch.randn(1, FORWARD_FEATURES)
    bare = prepare("raw", precision, twin, None)
    prepared = prepare(framework, precision, module, None)
    info = {**prepared.info, **autocast_check(prepared, x)}

    def timer(candidate: Prepared) -> timeit.Timer:
        # The statement is compiled into timeit's loop: no Python call around the one measured.
        stmt = "with autocast('cpu', dtype=bf16):\n    m(x)" if candidate.raw_autocast else "m(x)"
        names = {"m": candidate.model, "x": x, "autocast": torch.autocast, "bf16": torch.bfloat16}
        return timeit.Timer(stmt, globals=names)

    wrapped_timer, bare_timer = timer(prepared), timer(bare)
    for warm in (wrapped_timer, bare_timer):
        warm.timeit(2000)
    number = calibrate(wrapped_timer.timeit, target)
    info["loops"] = str(number)
    measure = paired(
        lambda: wrapped_timer.timeit(number), lambda: bare_timer.timeit(number), number
    )
    return measure, info


def train_bench(framework: str, precision: str, target: float) -> tuple[Measure, dict[str, str]]:
    """Seconds per training step of a small MLP (zero_grad, forward, loss, backward, step), and of
    the same step on a bare twin model and optimizer in the same process (the paired reference)."""
    x = torch.randn(BATCH, MLP_WIDTH)
    y = torch.randint(0, MLP_CLASSES, (BATCH,))
    twin = prepare("raw", precision, *mlp_and_optimizer())
    prepared = prepare(framework, precision, *mlp_and_optimizer())
    info = {**prepared.info, **autocast_check(prepared, x)}
    wrapped_steps, bare_steps = step_loop(prepared, x, y), step_loop(twin, x, y)
    for warm in (wrapped_steps, bare_steps):
        warm(10)  # AdamW creates its state on the first step
    steps = calibrate(wrapped_steps, target, start=2)
    info["steps"] = str(steps)
    return paired(lambda: wrapped_steps(steps), lambda: bare_steps(steps), steps), info


def step_bench(framework: str, precision: str, target: float) -> tuple[Measure, dict[str, str]]:
    """Per-step cost of a training step of a tiny MLP (zero_grad, forward, cross-entropy,
    backward, SGD step) through the framework, against the same step in plain torch on the very
    same model and optimizer (the framework's wrappers unwrapped: ``.module``, ``.optimizer``),
    the two interleaved. One model for both cancels what two models' memory layouts add (a few
    percent between twins here), so the difference is the framework's own calls. Timed in this
    thread's CPU time (``time.thread_time``), not wall time: on a shared machine the time the
    process waits for a core is noise far larger than the microseconds a framework adds."""
    width_in, _, classes = STEP_SIZES
    x = torch.randn(STEP_BATCH, width_in)
    y = torch.randint(0, classes, (STEP_BATCH,))
    prepared = prepare(framework, precision, *tiny_mlp_and_sgd())
    twin = Prepared(
        getattr(prepared.model, "module", prepared.model),
        getattr(prepared.optimizer, "optimizer", prepared.optimizer),
        tensor_backward,
    )
    info = {**prepared.info, **autocast_check(prepared, x)}
    wrapped_steps = step_loop(prepared, x, y, clock=time.thread_time)
    bare_steps = step_loop(twin, x, y, clock=time.thread_time)
    for warm in (wrapped_steps, bare_steps):
        warm(50)
    chunk = max(1, calibrate(wrapped_steps, target, start=20) // STEP_CHUNKS)
    info["steps"] = f"{STEP_CHUNKS} x {chunk}, each"
    return interleaved(wrapped_steps, bare_steps, chunk), info


def interleaved(
    wrapped: Callable[[int], float], bare: Callable[[int], float], chunk: int
) -> Measure:
    """One repetition: ``STEP_CHUNKS`` short runs of ``chunk`` steps of each, taking turns
    (ABBAABBA...), so that a change of the machine's load within a repetition falls on both."""

    def measure() -> dict[str, float]:
        value = reference = 0.0
        for i in range(STEP_CHUNKS):
            if i % 2:
                value += wrapped(chunk)
                reference += bare(chunk)
            else:
                reference += bare(chunk)
                value += wrapped(chunk)
        steps = chunk * STEP_CHUNKS
        return {"value": value / steps, "bare": reference / steps}

    return measure


def tiny_mlp_and_sgd() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)  # the same weights in every process and for both twins
    width_in, hidden, classes = STEP_SIZES
    module = nn.Sequential(nn.Linear(width_in, hidden), nn.ReLU(), nn.Linear(hidden, classes))
    return module, torch.optim.SGD(module.parameters(), lr=0.01)


def mlp_and_optimizer() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)  # the same weights in every process and for both twins
    layers: list[nn.Module] = []
    for _ in range(MLP_LAYERS):
        layers += [nn.Linear(MLP_WIDTH, MLP_WIDTH), nn.ReLU()]
    module = nn.Sequential(*layers, nn.Linear(MLP_WIDTH, MLP_CLASSES))
    return module, torch.optim.AdamW(module.parameters(), lr=1e-4)


def step_loop(
    prepared: Prepared, x: Tensor, y: Tensor, clock: Callable[[], float] = time.perf_counter
) -> Callable[[int], float]:
    """A function that runs n training steps and returns the seconds they took on ``clock``."""
    model, opt, backward = prepared.model, prepared.optimizer, prepared.backward

    if prepared.raw_autocast:

        def step() -> None:
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(x)
            loss = F.cross_entropy(out.float(), y)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()

    else:

        def step() -> None:
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            backward(loss)
            opt.step()

    def run_steps(n: int) -> float:
        start = clock()
        for _ in range(n):
            step()
        return clock() - start

    return run_steps


def paired(wrapped: Callable[[], float], bare: Callable[[], float], n: int) -> Measure:
    """One repetition: the wrapped candidate and its bare twin, alternating which goes first."""
    turn = [0]

    def measure() -> dict[str, float]:
        turn[0] += 1
        if turn[0] % 2:
            value, reference = wrapped(), bare()
        else:
            reference, value = bare(), wrapped()
        return {"value": value / n, "bare": reference / n}

    return measure


def calibrate(measure: Callable[[int], float], target: float, start: int = 100) -> int:
    """How many iterations take about ``target`` seconds."""
    n = start
    while True:
        elapsed = measure(n)
        if elapsed >= target / 4 or n >= 10**8:
            return max(1, round(n * target / max(elapsed, 1e-9)))
        n *= 4


# --- the protocol ----------------------------------------------------------------------------


def protocol_stream() -> TextIO:
    """stdout for the protocol alone: fd 1 is pointed at stderr for everything else."""
    sys.stdout.flush()
    stream = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    return stream


def send(stream: TextIO, message: dict[str, Any]) -> None:
    stream.write(json.dumps(message) + "\n")
    stream.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("bench", choices=("forward", "train", "step"))
    parser.add_argument("framework", choices=FRAMEWORKS)
    parser.add_argument("precision", choices=PRECISIONS)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--target", type=float, default=0.2, help="seconds per repetition")
    opts = parser.parse_args(argv)
    out = protocol_stream()
    torch.set_num_threads(opts.threads)
    torch.manual_seed(0)
    bench = {"forward": forward_bench, "train": train_bench, "step": step_bench}[opts.bench]
    try:
        measure, info = bench(opts.framework, opts.precision, opts.target)
    except Exception as exc:  # reported as n/a with the reason: a missing plugin, a bad version
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        send(out, {"error": f"{type(exc).__name__}: {reason}"})
        return 0
    info["threads"] = str(torch.get_num_threads())  # a framework could have changed it
    send(out, {"ready": True, "info": info})
    for line in sys.stdin:
        request = line.strip()
        if request == "run":
            send(out, measure())
        elif request == "quit":
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
