"""Whether every process of a run sees the same files at a path."""

from __future__ import annotations

import contextlib
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from fab.core.strategies.strategy import Strategy

_CHECK_FILE_PREFIX = ".fab_shared_fs_check_"
_POLL_SECONDS = 0.02


def is_shared_filesystem(
    strategy: Strategy, path: str | Path | None = None, timeout: float = 3
) -> bool:
    """Whether ``path`` (default: the working directory) is on a filesystem that every process
    of ``strategy`` shares, so that a file rank 0 writes there is seen by all.

    One process: True. A URL of another protocol than ``file://`` (``s3://...``): True. Otherwise
    every process must call this (it communicates): rank 0 writes a file with a random name and
    content into the directory, and each other process looks for it for up to ``timeout``
    seconds. True only if every process saw it; False as well when the processes were given
    different paths. Raises FileNotFoundError on every process if the path is missing on any, and
    OSError on every process if rank 0 cannot write there.
    """
    if path is not None and _is_remote(path):
        return True
    if strategy.world_size == 1:
        return True
    local = _local_path(path)
    rank_zero_path = strategy.broadcast(str(local), src=0)
    same_path, exists = _count_true(strategy, rank_zero_path == str(local), local.exists())
    if exists < strategy.world_size:
        raise FileNotFoundError(
            f"cannot tell whether {local} is shared: it does not exist on "
            f"{strategy.world_size - exists} of {strategy.world_size} processes"
        )
    if same_path < strategy.world_size:
        return False
    directory = local if local.is_dir() else local.parent

    name, token, error = "", "", ""
    if strategy.is_global_zero:
        name, token = f"{_CHECK_FILE_PREFIX}{secrets.token_hex(8)}", secrets.token_hex(16)
        try:
            (directory / name).write_text(token)
        except OSError as err:
            error = f"{type(err).__name__}: {err}"
    # The broadcast also makes every process wait until rank 0 has written the file.
    name, token, error = strategy.broadcast((name, token, error), src=0)
    if error:
        raise OSError(
            f"cannot tell whether {directory} is shared: rank 0 cannot write there ({error})"
        )

    check_file = directory / name
    found = strategy.is_global_zero or _appears(check_file, token, timeout)
    (all_found,) = _count_true(strategy, found)  # no process reads the file after this
    if strategy.is_global_zero:
        with contextlib.suppress(OSError):
            check_file.unlink()
    return all_found == strategy.world_size


def _is_remote(path: str | Path) -> bool:
    if isinstance(path, Path):
        return False
    scheme, separator, _ = path.partition("://")
    return bool(separator) and scheme.lower() not in ("", "file")


def _local_path(path: str | Path | None) -> Path:
    if path is None:
        return Path.cwd().resolve()
    if isinstance(path, str) and path.lower().startswith("file://"):
        path = path[len("file://") :]
    return Path(path).expanduser().resolve()


def _appears(check_file: Path, token: str, timeout: float) -> bool:
    """Whether ``check_file`` holds ``token`` within ``timeout`` seconds (network filesystems
    may show a new file late)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError):
            if check_file.read_text() == token:
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_SECONDS)


def _count_true(strategy: Strategy, *flags: bool) -> tuple[int, ...]:
    """For each flag, on how many processes it is True (one all-reduce for all of them)."""
    counts = torch.tensor([float(f) for f in flags], device=strategy.root_device)
    counts = strategy.all_reduce(counts, reduce_op="sum")
    return tuple(round(c) for c in counts.tolist())
