"""``fab consolidate DIR``: turn a sharded checkpoint directory into one full file.

As Lightning's ``fabric consolidate``: the directory is what ``fabric.save`` writes under a
sharded strategy (torch.distributed.checkpoint); the file holds the same entries with whole
tensors and reads with ``torch.load(path, weights_only=True)`` or ``fabric.load`` on one device.
The conversion runs in this one process and needs the memory of the whole checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_parser(commands: Any) -> None:
    """Add ``consolidate`` to the subcommands of the ``fab`` parser."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "consolidate",
        help="turn a sharded checkpoint directory into one full checkpoint file",
        description=(
            "Read the checkpoint directory that a sharded strategy (fsdp, model_parallel) saved "
            "and write one file with whole tensors, readable by torch.load(weights_only=True)."
        ),
    )
    parser.add_argument("checkpoint_folder", type=Path, help="the sharded checkpoint directory")
    parser.add_argument(
        "--output_file",
        type=Path,
        default=None,
        help="where to write the file (must not exist); default: CHECKPOINT_FOLDER.consolidated",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from fab.core.distributed_checkpoint import consolidate, is_distributed_checkpoint

    folder: Path = args.checkpoint_folder
    output: Path = args.output_file or folder.with_name(folder.name + ".consolidated")
    if not is_distributed_checkpoint(folder):
        what = "does not exist" if not folder.exists() else "is not a sharded checkpoint directory"
        print(
            f"fab consolidate: {folder} {what} (it needs the .metadata file that "
            "torch.distributed.checkpoint writes); give the directory fabric.save wrote under "
            "strategy 'fsdp' or 'model_parallel'",
            file=sys.stderr,
        )
        return 2
    if output.exists():
        print(
            f"fab consolidate: {output} exists already; remove it or pass another --output_file",
            file=sys.stderr,
        )
        return 2
    consolidate(folder, output)
    print(f"wrote {output}")
    return 0
