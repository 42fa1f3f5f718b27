"""Train a small classifier on the CPU with fab's Fabric API.

The data set is two interleaved spirals made here from a fixed seed (nothing to download); the
model is a three-layer MLP. The script trains, saves a checkpoint after every epoch, evaluates on a
held-out split and prints the accuracy; ``--resume`` continues from the last checkpoint and ends
with exactly the weights of an uninterrupted run. It is the README's main job:

    python tools/dev.py train            # sets up .venv, then runs this file
    python docs/examples/train_cpu.py --epochs 5
    python docs/examples/train_cpu.py --stop-after 3 && python docs/examples/train_cpu.py --resume
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fab.core import Fabric


def two_spirals(n: int, noise: float = 0.15, seed: int = 0) -> TensorDataset:
    """``n`` points on each of two interleaved spirals, labelled 0 and 1."""
    g = torch.Generator().manual_seed(seed)
    t = torch.sqrt(torch.rand(n, generator=g)) * 3 * math.pi
    arm = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1) / (3 * math.pi)
    x = torch.cat([arm, -arm]) + noise * torch.randn(2 * n, 2, generator=g) / 3
    y = torch.cat([torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.long)])
    return TensorDataset(x, y)


def make_model(hidden: int = 64) -> nn.Module:
    return nn.Sequential(
        nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 2)
    )


@torch.no_grad()
def accuracy(model: nn.Module, loader: DataLoader[tuple[torch.Tensor, ...]]) -> float:
    model.eval()
    correct = total = 0
    for x, y in loader:
        correct += int((model(x).argmax(dim=1) == y).sum())
        total += len(y)
    model.train()
    return correct / total


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument(
        "--out", type=Path, default=Path("runs/spirals"), help="checkpoints go here"
    )
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument("--stop-after", type=int, help="stop after this epoch (to try --resume)")
    args = parser.parse_args(argv)

    fabric = Fabric(accelerator=args.accelerator, devices=1, precision=args.precision)
    fabric.launch()
    fabric.seed_everything(args.seed)

    train_set, test_set = two_spirals(2000, seed=args.seed), two_spirals(500, seed=args.seed + 1)
    shuffle = torch.Generator()
    train_loader = DataLoader(
        train_set, batch_size=args.batch_size, shuffle=True, generator=shuffle
    )
    test_loader = DataLoader(test_set, batch_size=256)
    train_loader, test_loader = fabric.setup_dataloaders(train_loader, test_loader)

    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    model, optimizer = fabric.setup(model, optimizer)
    loss_fn = nn.CrossEntropyLoss()

    state = {"model": model, "optimizer": optimizer, "epoch": 0}
    last = args.out / "last.pt"
    if args.resume and last.exists():
        fabric.load(last, state)  # restores model and optimizer in place, and the epoch
        fabric.print(f"resumed from {last} after epoch {state['epoch']}")

    start = time.perf_counter()
    for epoch in range(state["epoch"], args.epochs):
        shuffle.manual_seed(args.seed + epoch)  # the order of an epoch does not depend on resuming
        total = 0.0
        for x, y in train_loader:
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            fabric.backward(loss)
            optimizer.step()
            total += loss.item()
        state["epoch"] = epoch + 1
        fabric.save(last, state)
        if epoch % 5 == 4 or epoch == args.epochs - 1:
            fabric.print(f"epoch {epoch + 1:3d}  loss {total / len(train_loader):.4f}")
        if args.stop_after is not None and epoch + 1 >= args.stop_after:
            fabric.print(f"stopping after epoch {epoch + 1}; run again with --resume to continue")
            return float("nan")
    result = accuracy(model, test_loader)
    fabric.print(
        f"test accuracy {result:.1%} after {args.epochs} epochs "
        f"({time.perf_counter() - start:.1f} s on {fabric.device}, precision {args.precision}); "
        f"checkpoint: {last}"
    )
    return result


if __name__ == "__main__":
    main()
