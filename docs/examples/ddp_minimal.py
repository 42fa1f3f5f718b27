"""The smallest complete data-parallel run: 2 processes on the CPU over gloo.

It trains a small model for a few steps with DistributedDataParallel, reduces a metric across the
ranks, saves a checkpoint from rank 0 and exits. It is what ``python tools/stress.py`` runs many
times to check that every run exits 0 and leaves no process behind:

    python docs/examples/ddp_minimal.py                      # strategy "ddp": this script re-run
    python docs/examples/ddp_minimal.py --strategy ddp_spawn
    fab run --accelerator cpu --devices 2 docs/examples/ddp_minimal.py
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fab.core import Fabric


def train(fabric: Fabric, steps: int, out: Path) -> float:
    fabric.seed_everything(7)
    x = torch.randn(256, 16)
    y = (x[:, :8].sum(dim=1) > 0).long()
    loader = fabric.setup_dataloaders(DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True))
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = fabric.setup(model, optimizer)
    loss = torch.zeros(())
    for step, (inputs, targets) in enumerate(loader):
        if step == steps:
            break
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(inputs), targets)
        fabric.backward(loss)
        optimizer.step()
    mean_loss = float(fabric.all_reduce(loss.detach(), reduce_op="mean"))
    fabric.save(out / "ddp_minimal.pt", {"model": model, "optimizer": optimizer})
    fabric.print(f"{fabric.world_size} processes, {steps} steps, mean loss {mean_loss:.4f}")
    return mean_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strategy", default="ddp")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    under_fab_run = bool(os.environ.get("FAB_CLI_DEVICES"))
    fabric = (
        Fabric()  # `fab run --accelerator cpu --devices 2` decides
        if under_fab_run
        else Fabric(accelerator="cpu", devices=2, strategy=args.strategy)
    )
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch)
        fabric.launch(train, args.steps, out)


if __name__ == "__main__":
    main()
