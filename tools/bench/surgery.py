#!/usr/bin/env python3
"""What surgery costs a forward: one capture and every layer captured, against the bare forward
and plain torch hooks doing the same copies, on a 12-layer MLP of width 512 at batch 1 (issue
13's shape).

    .venv/bin/python tools/bench/surgery.py [--calls 2000] [--repeats 9]

Repetitions go round-robin over the variants, so that machine noise falls on all of them alike;
the headline is the minimum per-call time over repetitions (the least disturbed), the median
beside it. FlexModel and nnsight are not measured here (not installed in fab's environments).
"""

from __future__ import annotations

import argparse
import statistics
import timeit
from collections.abc import Callable

import torch
from torch import Tensor, nn

from fab.wrappers.surgery import Surgery

LAYERS = 12
WIDTH = 512


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(WIDTH, WIDTH)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.linear(x))


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Block() for _ in range(LAYERS))

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def _plain_hooks(model: MLP, indices: list[int]) -> dict[str, Tensor]:
    store: dict[str, Tensor] = {}
    for i in indices:

        def hook(module: nn.Module, args: object, out: Tensor, key: str = f"layers.{i}") -> None:
            store[key] = out.detach().to("cpu", copy=True)

        model.layers[i].register_forward_hook(hook)
    return store


def variants() -> dict[str, Callable[[], object]]:
    torch.manual_seed(0)
    x = torch.randn(1, WIDTH)
    made: dict[str, Callable[[], object]] = {}

    bare = MLP()
    made["bare forward"] = lambda: bare(x)

    one_torch = MLP()
    _plain_hooks(one_torch, [LAYERS // 2])
    made["torch hook, one layer"] = lambda: one_torch(x)

    one_surgery = MLP()
    surgery_one = Surgery(one_surgery)
    surgery_one.capture(f"layers.{LAYERS // 2}")

    def run_one() -> object:
        surgery_one.captures.clear()
        return one_surgery(x)

    made["surgery, one capture"] = run_one

    all_torch = MLP()
    _plain_hooks(all_torch, list(range(LAYERS)))
    made["torch hooks, every layer"] = lambda: all_torch(x)

    all_surgery = MLP()
    surgery_all = Surgery(all_surgery)
    surgery_all.capture("layers.*")

    def run_all() -> object:
        surgery_all.captures.clear()
        return all_surgery(x)

    made["surgery, every layer"] = run_all
    return made


def measure(calls: int, repeats: int) -> dict[str, list[float]]:
    runs = variants()
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.no_grad():
        for run in runs.values():
            run()  # warm up
        for _ in range(repeats):
            for name, run in runs.items():
                times[name].append(timeit.timeit(run, number=calls) / calls * 1e6)
    return times


def report(times: dict[str, list[float]]) -> str:
    bare = min(times["bare forward"])
    lines = [
        f"12-layer MLP, width {WIDTH}, batch 1, no_grad, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "",
        "| variant | µs per forward (min) | median | x bare |",
        "|---|---:|---:|---:|",
    ]
    for name, values in times.items():
        best = min(values)
        lines.append(
            f"| {name} | {best:.1f} | {statistics.median(values):.1f} | {best / bare:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    print(report(measure(args.calls, args.repeats)))


if __name__ == "__main__":
    main()
