"""FSDP against DDP on 2 CPU processes with a model of >= 500 MB, side by side in one run:
per-rank peak memory, parameter + optimizer memory and step time; and the sharded checkpoint
(torch.distributed.checkpoint directory) against torch.save/torch.load of the full state.

    .venv/bin/python tools/bench/sharded.py [--layers 8] [--width 4096] [--steps 4]

Each strategy runs in its own 2-process launch (spawn); a rank's peak is its resident memory's
high-water mark (VmHWM, reset before the model is created) minus its resident memory then.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fab.core import Fabric


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def _model(layers: int, width: int) -> nn.Module:
    return nn.Sequential(*[nn.Linear(width, width, bias=False) for _ in range(layers)])


def _work(fabric: Fabric, layers: int, width: int, steps: int, folder: str) -> dict[str, Any]:
    from torch.distributed.tensor import DTensor

    Path("/proc/self/clear_refs").write_text("5")
    base = _status("VmRSS")
    sharded = type(fabric.strategy).__name__ != "DDPStrategy"
    torch.manual_seed(0)
    with fabric.init_module(empty_init=sharded):
        module = _model(layers, width)
    model, optimizer = fabric.setup(module, torch.optim.AdamW(module.parameters(), lr=1e-4))
    x = torch.randn(8, width)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        optimizer.zero_grad()
        fabric.backward(model(x).pow(2).mean())
        optimizer.step()
        fabric.barrier()
        times.append(time.perf_counter() - start)
    held = 0
    for p in model.parameters():
        local = p.to_local() if isinstance(p, DTensor) else p
        held += local.numel() * local.element_size()
        for value in optimizer.state[p].values():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                v = value.to_local() if isinstance(value, DTensor) else value
                held += v.numel() * v.element_size()
    out: dict[str, Any] = {
        "step_s": statistics.median(times[1:]) if len(times) > 1 else times[0],
        "peak_mb": (_status("VmHWM") - base) / 2**20,
        "param_optimizer_mb": held / 2**20,
    }
    if sharded:
        state = {"model": model, "optimizer": optimizer}
        fabric.barrier()
        start = time.perf_counter()
        fabric.save(Path(folder, "sharded"), state)
        out["sharded_save_s"] = time.perf_counter() - start
        fabric.barrier()
        start = time.perf_counter()
        fabric.load(Path(folder, "sharded"), state)
        out["sharded_load_s"] = time.perf_counter() - start
    else:
        full = {"model": module.state_dict(), "optimizer": optimizer.state_dict()}
        if fabric.is_global_zero:
            start = time.perf_counter()
            torch.save(full, Path(folder, "full.pt"))
            out["torch_save_s"] = time.perf_counter() - start
            start = time.perf_counter()
            loaded = torch.load(Path(folder, "full.pt"), weights_only=True)
            module.load_state_dict(loaded["model"])
            optimizer.load_state_dict(loaded["optimizer"])
            out["torch_load_s"] = time.perf_counter() - start
    gathered: list[Any] = [None] * fabric.world_size
    import torch.distributed as dist

    dist.all_gather_object(gathered, out)
    return {"ranks": gathered}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    from fab.strategies import DDPStrategy, FSDPStrategy

    size_mb = args.layers * args.width * args.width * 4 / 2**20
    results: dict[str, Any] = {"model_mb": size_mb}
    with tempfile.TemporaryDirectory() as folder:
        for name, strategy in (
            ("ddp", DDPStrategy(start_method="spawn")),
            ("fsdp", FSDPStrategy(start_method="spawn", auto_wrap_policy={nn.Linear})),
        ):
            fabric = Fabric(accelerator="cpu", devices=2, strategy=strategy)
            results[name] = fabric.launch(_work, args.layers, args.width, args.steps, folder)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
