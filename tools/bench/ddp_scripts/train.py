"""One 2-process DDP training run on CPU (gloo), timed in its steady state.

    python -m torch.distributed.run --nproc-per-node 2 train.py FRAMEWORK [options]

FRAMEWORK is raw (torch.distributed + DistributedDataParallel), fab (fab.core.Fabric) or
lightning (lightning.fabric.Fabric), each with accelerator="cpu", devices=2, strategy="ddp".
Everything else is shared: the model (an MLP), its seeded weights, the data (a fixed set of
batches, each rank its own shard), the batch size, the optimizer (AdamW), the step (zero_grad,
forward, cross-entropy, backward, step) and the clock: WARMUP steps, then WINDOWS times: a
barrier, the clock starts, STEPS steps, a barrier, the clock stops. Rank 0 prints one line
`BENCH {json}` with every window's samples/s (over both processes), the best window's and the
whole loop's.

Only the framework under test is imported (the others' imports would change the process).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

N_BATCHES = 8  # distinct batches per rank, cycled through


def build_model(features: int, width: int, depth: int, classes: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    size = features
    for _ in range(depth):
        layers += [nn.Linear(size, width), nn.ReLU()]
        size = width
    layers.append(nn.Linear(size, classes))
    return nn.Sequential(*layers)


def make_data(
    rank: int, world: int, batch: int, features: int, classes: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The same global data set for every framework; rank r takes every world-th batch from r."""
    generator = torch.Generator().manual_seed(1234)
    total = N_BATCHES * world
    xs = torch.randn(total, batch, features, generator=generator)
    ys = torch.randint(0, classes, (total, batch), generator=generator)
    return [(xs[i], ys[i]) for i in range(rank, total, world)]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="train.py")
    parser.add_argument("framework", choices=("raw", "fab", "lightning"))
    parser.add_argument("--steps", type=int, default=30, help="per window")
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64, help="per process")
    parser.add_argument("--features", type=int, default=256)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    opts = parse(argv)
    torch.set_num_threads(opts.threads)
    cleanup: Callable[[], None] = lambda: None  # noqa: E731
    backward: Callable[[torch.Tensor], None]
    barrier: Callable[[], None]
    if opts.framework == "raw":
        dist.init_process_group("gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        torch.manual_seed(42)
        model: nn.Module = nn.parallel.DistributedDataParallel(
            build_model(opts.features, opts.width, opts.depth, opts.classes)
        )
        optimizer: Any = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def raw_backward(loss: torch.Tensor) -> None:
            loss.backward()  # type: ignore[no-untyped-call, unused-ignore]

        backward, barrier, cleanup = raw_backward, dist.barrier, dist.destroy_process_group
    else:
        if opts.framework == "fab":
            from fab.core import Fabric
        else:
            try:
                from lightning_fabric import Fabric  # type: ignore[no-redef, import-not-found, unused-ignore]
            except ImportError:  # the `lightning` distribution ships it as lightning.fabric
                from lightning.fabric import Fabric  # type: ignore[no-redef, import-not-found, unused-ignore]
        fabric = Fabric(accelerator="cpu", devices=2, strategy="ddp")
        fabric.launch()
        rank, world = fabric.global_rank, fabric.world_size
        torch.manual_seed(42)
        bare = build_model(opts.features, opts.width, opts.depth, opts.classes)
        model, optimizer = fabric.setup(bare, torch.optim.AdamW(bare.parameters(), lr=1e-4))
        backward, barrier = fabric.backward, fabric.barrier
    data = make_data(rank, world, opts.batch, opts.features, opts.classes)
    loss_fn = nn.CrossEntropyLoss()

    def step(i: int) -> torch.Tensor:
        x, y = data[i % len(data)]
        optimizer.zero_grad(set_to_none=True)
        loss: torch.Tensor = loss_fn(model(x), y)
        backward(loss)
        optimizer.step()
        return loss

    loss, done = torch.zeros(()), 0
    for _ in range(opts.warmup):
        loss, done = step(done), done + 1
    windows: list[float] = []
    for _ in range(opts.windows):
        barrier()
        started = time.perf_counter()
        for _ in range(opts.steps):
            loss, done = step(done), done + 1
        barrier()
        windows.append(time.perf_counter() - started)
    samples = opts.steps * opts.batch * world
    if rank == 0:
        result = {
            "framework": opts.framework,
            "world_size": world,
            "steps": opts.steps,
            "windows": [samples / seconds for seconds in windows],
            "best": samples / min(windows),
            "loop": samples * len(windows) / sum(windows),
            "step_ms": min(windows) / opts.steps * 1e3,
            "loss": float(loss.detach()),
            "threads": torch.get_num_threads(),
        }
        print("BENCH " + json.dumps(result), flush=True)
    cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
