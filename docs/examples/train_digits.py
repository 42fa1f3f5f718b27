"""Train a handwritten-digit classifier with data-parallel fab on two CPU processes.

The data set is scikit-learn's bundled digits (1797 8x8 grey images of the digits 0-9, shipped
inside the scikit-learn wheel: nothing to download), split once with a fixed seed into 1397
training and 400 test images, pixels scaled to [0, 1]. The model is a small CNN (two 3x3
convolutions, max-pooling, two linear layers; 38k parameters), trained with Adam and a cosine
learning-rate schedule. Each process trains on its half of every epoch (fab's
``setup_dataloaders`` shards the loader) and DDP averages the gradients; after every epoch the
script evaluates on the whole test set (each process counts its share, the counts are summed
across processes), saves a checkpoint and prints one line, on rank 0 only (with a progress bar
during the epoch when stdout is a terminal). ``--resume`` continues from the last checkpoint and
ends with exactly the weights of an uninterrupted run.

Measured on the 2-core CPU development machine with the defaults (2 processes, ``ddp``, 15 epochs
of 16 images per process and step): 97.75% test accuracy (at least 97.5% from epoch 7 on); about
4 s of training and 10 s for the whole command, most of it starting Python, torch and
scikit-learn in each process.

It is the README's main job:

    python tools/dev.py train               # sets up .venv, then runs this file
    python docs/examples/train_digits.py --epochs 5
    python docs/examples/train_digits.py --stop-after 3
    python docs/examples/train_digits.py --resume
    python docs/examples/train_digits.py --devices 1 --strategy auto    # one process

``strategy="ddp"`` runs this file again for every other process (like ``torchrun``), so all of its
work happens in ``train``, which ``fabric.launch`` calls in every process; ``ddp_spawn`` and
``ddp_fork`` start the processes from ``launch`` instead, and one device starts none.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

import torch
from sklearn.datasets import load_digits  # type: ignore[import-untyped]
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

from fab.core import Fabric
from fab.core.loggers import Logger
from fab.loggers import CSVLogger, TensorBoardLogger, plot_csv

TRAIN_SIZE = 1397  # the other 400 images are the test set
BAR_WIDTH = 30


def digits(seed: int) -> tuple[TensorDataset, TensorDataset]:
    """The digits split into a training and a test set by a permutation drawn from ``seed``."""
    data = load_digits()
    images = torch.tensor(data.data, dtype=torch.float32) / 16.0  # pixels are 0..16
    labels = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    train, test = order[:TRAIN_SIZE], order[TRAIN_SIZE:]
    return TensorDataset(images[train], labels[train]), TensorDataset(images[test], labels[test])


def make_model() -> nn.Module:
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


class Progress:
    """What rank 0 shows: a bar redrawn in place during an epoch when stdout is a terminal, and one
    line per epoch (the only output when stdout is a file or a pipe, so logs stay clean)."""

    def __init__(self, enabled: bool, epochs: int, batches: int) -> None:
        self.enabled = enabled
        self.live = enabled and sys.stdout.isatty()
        self.epochs = epochs
        self.batches = batches
        self.start = time.perf_counter()

    def step(self, epoch: int, batch: int, loss: float) -> None:
        if not self.live:
            return
        done = BAR_WIDTH * batch // self.batches
        bar = "#" * done + "." * (BAR_WIDTH - done)
        print(
            f"\repoch {epoch:>3}/{self.epochs} [{bar}] {batch}/{self.batches}  loss {loss:.4f}",
            end="",
            flush=True,
        )

    def epoch(self, epoch: int, loss: float, samples_per_s: float, accuracy: float) -> None:
        if not self.enabled:
            return
        clear = "\r\033[K" if self.live else ""
        print(
            f"{clear}epoch {epoch:>3}/{self.epochs}  loss {loss:.4f}  "
            f"train {samples_per_s:,.0f} samples/s  test accuracy {accuracy:.2%}  "
            f"elapsed {time.perf_counter() - self.start:.1f} s",
            flush=True,
        )


@torch.no_grad()
def evaluate(fabric: Fabric, model: nn.Module, loader: Any) -> float:
    """Accuracy over the whole test set: each process counts its share, the counts are summed."""
    model.eval()
    counts = torch.zeros(2, dtype=torch.long, device=fabric.device)  # correct, seen
    for x, y in loader:
        counts[0] += (model(x).argmax(dim=1) == y).sum()
        counts[1] += len(y)
    model.train()
    correct, seen = fabric.all_reduce(counts, reduce_op="sum").tolist()
    return float(correct / seen)


def train(fabric: Fabric, args: argparse.Namespace) -> float:
    """The whole run, in every process."""
    fabric.seed_everything(args.seed, verbose=False)
    train_set, test_set = digits(args.seed)

    # Training: fab's setup_dataloaders gives each process its share of every epoch's shuffle (a
    # DistributedSampler). Testing: each process takes its own share of the test set, with no
    # sample repeated, so the summed counts are exactly those of the whole set.
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True)
    test_share = Subset(test_set, range(fabric.global_rank, len(test_set), fabric.world_size))
    train_loader = fabric.setup_dataloaders(train_loader)
    test_loader = fabric.setup_dataloaders(
        DataLoader(test_share, batch_size=256), use_distributed_sampler=False
    )

    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    model, optimizer = fabric.setup(model, optimizer)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    loss_fn = nn.CrossEntropyLoss()

    state: dict[str, Any] = {
        "model": model,
        "optimizer": optimizer,
        "schedule": schedule,
        "epoch": 0,
    }
    last = args.out / "last.pt"
    if args.resume and last.exists():
        fabric.load(last, state)  # restores the model and the optimizer in place, and the epoch
        fabric.print(f"resumed from {last} after epoch {state['epoch']}", flush=True)

    progress = Progress(fabric.is_global_zero, args.epochs, len(train_loader))
    accuracy = evaluate(fabric, model, test_loader)
    for epoch in range(state["epoch"], args.epochs):
        train_loader.set_epoch(epoch)  # a resumed run shuffles epoch N as the first run did
        started, loss_sum, batches, samples = time.perf_counter(), 0.0, 0, 0
        for x, y in train_loader:
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            fabric.backward(loss)
            optimizer.step()
            batches += 1
            samples += len(y)
            loss_sum += loss.item()
            progress.step(epoch + 1, batches, loss_sum / batches)
        seconds = time.perf_counter() - started
        schedule.step()
        # loss: the mean over the batches of every process; throughput: of all processes together.
        totals = fabric.all_reduce(
            torch.tensor([loss_sum / batches, float(samples)], dtype=torch.float64), reduce_op="sum"
        )
        accuracy = evaluate(fabric, model, test_loader)
        progress.epoch(
            epoch + 1, float(totals[0]) / fabric.world_size, float(totals[1]) / seconds, accuracy
        )
        fabric.log_dict(
            {
                "train_loss": float(totals[0]) / fabric.world_size,
                "test_accuracy": accuracy,
                "samples_per_s": float(totals[1]) / seconds,
                "lr": schedule.get_last_lr()[0],
            },
            step=epoch + 1,
        )
        state["epoch"] = epoch + 1
        fabric.save(last, state)
        if args.stop_after is not None and epoch + 1 >= args.stop_after:
            fabric.print(f"stopping after epoch {epoch + 1}; run again with --resume to continue")
            report_metrics(fabric)
            return accuracy
    fabric.print(
        f"test accuracy {accuracy:.2%} after {args.epochs} epochs on {fabric.world_size} "
        f"process(es) ({args.strategy}, {args.precision}, "
        f"{time.perf_counter() - progress.start:.1f} s); checkpoint: {last}",
        flush=True,
    )
    report_metrics(fabric)
    return accuracy


def make_loggers(out: Path) -> list[Logger]:
    """A CSV file of the metrics, and TensorBoard event files when tensorboard is installed."""
    loggers: list[Logger] = [CSVLogger(out, name="logs")]
    if importlib.util.find_spec("tensorboard") is not None:
        loggers.append(TensorBoardLogger(out, name="logs"))
    return loggers


def report_metrics(fabric: Fabric) -> None:
    """Close the loggers and say, on rank 0, where the metrics are and how to look at them."""
    for logger in fabric.loggers:
        logger.finalize("success")
    if not fabric.is_global_zero:
        return
    csv_logger = next(lg for lg in fabric.loggers if isinstance(lg, CSVLogger))
    print(f"metrics: {csv_logger.metrics_file}")
    plot = plot_csv(csv_logger.metrics_file, metrics=["train_loss"], title="digits: train loss")
    if plot is not None:
        print(f"plot: {plot}")
    board = next((lg for lg in fabric.loggers if isinstance(lg, TensorBoardLogger)), None)
    if board is not None:
        print(f"view: tensorboard --logdir {board.root_dir}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=16, help="per process")
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--devices", type=int, default=2, help="processes (one per device)")
    parser.add_argument("--strategy", default="ddp", help="ddp, ddp_spawn, ddp_fork, auto, ...")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--out", type=Path, default=Path("runs/digits"), help="checkpoints go here")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument("--stop-after", type=int, help="stop after this epoch (to try --resume)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> float:
    args = parse_args(argv)
    fabric = Fabric(
        loggers=make_loggers(args.out),
        accelerator=args.accelerator,
        devices=args.devices,
        strategy=args.strategy,
        precision=args.precision,
    )
    result: float = fabric.launch(train, args)
    return result


if __name__ == "__main__":
    main()
