"""Train a handwritten-digit classifier with data-parallel fab on two CPU processes.

The data set is scikit-learn's bundled digits (1797 8x8 grey images of the digits 0-9, shipped
inside the scikit-learn wheel: nothing to download), split once with a fixed seed into 1397
training and 400 test images, pixels scaled to [0, 1]. The model is a small CNN (two 3x3
convolutions, max-pooling, two linear layers; 38k parameters), trained with Adam and a cosine
learning-rate schedule. Each process trains on its half of every epoch (fab's
``setup_dataloaders`` shards the loader) and DDP averages the gradients; after every epoch the
script evaluates on the whole test set (each process counts its share, the counts are summed
across processes), saves a checkpoint and prints one line, on rank 0 only (with a progress bar
during the epoch when stdout is a terminal). The loss it reports, in the bar and in the line, is
the mean batch loss of the epoch so far over every process's batches. ``--resume`` continues from
the last checkpoint and ends with exactly the weights of an uninterrupted run; its metrics go on in
the same log version, so the CSV file, the TensorBoard curves and the plot cover the whole run.

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
    """What rank 0 shows: a bar redrawn in place during an epoch when ``live`` (rank 0's stdout is
    a terminal), and one line per epoch (the only output when stdout is a file or a pipe, so logs
    stay clean)."""

    def __init__(self, enabled: bool, live: bool, epochs: int, batches: int) -> None:
        self.enabled = enabled
        self.live = enabled and live
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
        "log_version": fabric.logger.version,  # where a resumed run goes on logging
    }
    last = args.out / "last.pt"
    if args.resume and last.exists():
        fabric.load(last, state)  # restores the model and the optimizer in place, and the epoch
        fabric.print(f"resumed from {last} after epoch {state['epoch']}", flush=True)

    # The bar is redrawn only where rank 0 writes to a terminal; every process must know, since
    # the bar's loss is summed over the processes at every step.
    live = bool(fabric.broadcast(fabric.is_global_zero and sys.stdout.isatty()))
    progress = Progress(fabric.is_global_zero, live, args.epochs, len(train_loader))
    accuracy = evaluate(fabric, model, test_loader)
    for epoch in range(state["epoch"], args.epochs):
        train_loader.set_epoch(epoch)  # a resumed run shuffles epoch N as the first run did
        started, samples = time.perf_counter(), 0
        losses = torch.zeros(2, dtype=torch.float64)  # this process's sum of batch losses, batches
        for x, y in train_loader:
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            fabric.backward(loss)
            optimizer.step()
            samples += len(y)
            losses += torch.tensor([loss.item(), 1.0], dtype=torch.float64)
            if live:
                so_far = fabric.all_reduce(losses.clone(), reduce_op="sum")
                progress.step(epoch + 1, int(losses[1]), float(so_far[0] / so_far[1]))
        seconds = time.perf_counter() - started
        schedule.step()
        # loss: the mean batch loss over every process's batches, the quantity the bar shows;
        # throughput: of all processes together.
        totals = fabric.all_reduce(
            torch.cat([losses, torch.tensor([float(samples)], dtype=torch.float64)]),
            reduce_op="sum",
        )
        train_loss = float(totals[0] / totals[1])
        accuracy = evaluate(fabric, model, test_loader)
        progress.epoch(epoch + 1, train_loss, float(totals[2]) / seconds, accuracy)
        fabric.log_dict(
            {
                "train_loss": train_loss,
                "test_accuracy": accuracy,
                "samples_per_s": float(totals[2]) / seconds,
                "lr": schedule.get_last_lr()[0],
            },
            step=epoch + 1,
        )
        state["epoch"] = epoch + 1
        fabric.save(last, state)
        if args.stop_after is not None and epoch + 1 >= args.stop_after:
            fabric.print(f"stopping after epoch {epoch + 1}; run again with --resume to continue")
            report_metrics(fabric, last)
            return accuracy
    fabric.print(
        f"test accuracy {accuracy:.2%} after {state['epoch']} epochs on {fabric.world_size} "
        f"process(es) ({args.strategy}, {args.precision}, "
        f"{time.perf_counter() - progress.start:.1f} s)",
        flush=True,
    )
    report_metrics(fabric, last)
    return accuracy


def make_loggers(out: Path, resume: bool) -> list[Logger]:
    """A CSV file of the metrics, and TensorBoard event files when tensorboard is installed, both
    in ``OUT/logs/version_<N>``: a new version, or with ``resume`` the version of the run that
    wrote ``OUT/last.pt``, which goes on from the epoch after the checkpoint's."""
    version, first_step = None, None
    last = out / "last.pt"
    if resume and last.exists():
        saved = torch.load(last, map_location="cpu", weights_only=True, mmap=True)
        version, first_step = saved.get("log_version"), saved["epoch"] + 1
    csv_logger = CSVLogger(out, name="logs", version=version, purge_step=first_step)
    loggers: list[Logger] = [csv_logger]
    if importlib.util.find_spec("tensorboard") is not None:
        # The CSV logger's version (claimed when it was made): both write into one folder.
        tensorboard = TensorBoardLogger(
            out, name="logs", version=csv_logger.version, purge_step=first_step
        )
        loggers.append(tensorboard)
    return loggers


def report_metrics(fabric: Fabric, checkpoint: Path) -> None:
    """Close the loggers and say, on rank 0, where the checkpoint and the metrics are and how to
    look at them; only what exists."""
    for logger in fabric.loggers:
        logger.finalize("success")
    if not fabric.is_global_zero:
        return
    print(f"checkpoint: {checkpoint}" if checkpoint.exists() else "checkpoint: none (no epoch ran)")
    csv_logger = next(lg for lg in fabric.loggers if isinstance(lg, CSVLogger))
    if not csv_logger.metrics_file.exists():
        print("metrics: none (no epoch ran)", flush=True)
        return
    print(f"metrics: {csv_logger.metrics_file}")
    plot = plot_csv(
        csv_logger.metrics_file,
        metrics=["train_loss"],
        beside=["test_accuracy"],
        x_label="epoch",
        title="digits: train loss and test accuracy",
    )
    if plot is not None:
        print(f"plot: {plot}")
    board = next((lg for lg in fabric.loggers if isinstance(lg, TensorBoardLogger)), None)
    if board is not None:
        print(f"view: tensorboard --logdir {Path(board.log_dir).parent}", flush=True)


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
    parser.add_argument(
        "--out", type=Path, default=Path("runs/digits"), help="checkpoints and logs go here"
    )
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument("--stop-after", type=int, help="stop after this epoch (to try --resume)")
    args = parser.parse_args(argv)
    args.out = args.out.resolve()  # the paths it prints are right wherever they are read
    return args


def main(argv: list[str] | None = None) -> float:
    args = parse_args(argv)
    fabric = Fabric(
        loggers=make_loggers(args.out, args.resume),
        accelerator=args.accelerator,
        devices=args.devices,
        strategy=args.strategy,
        precision=args.precision,
    )
    result: float = fabric.launch(train, args)
    return result


if __name__ == "__main__":
    main()
