"""Checkpoints as single files written with ``torch.save``, atomically."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Any

import torch

from fab.core.io.checkpoint_io import CheckpointIO, PathLike
from fab.core.io.temporary_files import create_temporary, remove_abandoned
from fab.lazy.errors import UnsafeCheckpointError

__all__ = ["TorchCheckpointIO", "UnsafeCheckpointError", "atomic_torch_save"]


class TorchCheckpointIO(CheckpointIO):
    """``torch.save``/``torch.load`` on one file.

    Saving writes a temporary file beside the target, flushes it to disk and renames it over the
    target, so a crash or an error while saving leaves the previous checkpoint intact. Loading is
    weights-only unless asked otherwise.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: PathLike, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(
                f"{type(self).__name__} takes no storage_options (got {storage_options!r}); "
                "pass a CheckpointIO plugin that understands them"
            )
        atomic_torch_save(checkpoint, Path(path))

    def load_checkpoint(
        self,
        path: PathLike,
        map_location: str | torch.device | None = None,
        weights_only: bool = True,
    ) -> dict[str, Any]:
        """The checkpoint's contents, its tensors memory-mapped from the file and read when used
        (``fab.lazy.lazy_load``; safetensors files too). A pickle that would run code raises
        ``UnsafeCheckpointError`` unless ``weights_only=False``."""
        from fab.lazy.loading import lazy_load  # on first use: keeps `import fab.core` cheap

        return lazy_load(path, map_location=map_location, weights_only=weights_only)

    def remove_checkpoint(self, path: PathLike) -> None:
        path = Path(path)
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def atomic_torch_save(obj: object, path: Path) -> None:
    """``torch.save`` to a temporary file in ``path``'s directory, fsync, then rename over
    ``path``. On any error the temporary file is removed and ``path`` is untouched.

    The file gets the mode ``torch.save`` would give it: that of the file it replaces, or, for a
    new file, what the user's umask gives any new file. Temporary files that an earlier save to
    ``path`` left behind when its process was killed (``kill -9``, out of memory) are removed
    first; see :mod:`fab.core.io.temporary_files`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        raise IsADirectoryError(f"cannot save a checkpoint to {path}: it is a directory")
    remove_abandoned(path)
    fd, tmp = create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            _keep_mode_of(path, f.fileno())
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _keep_mode_of(path: Path, fd: int) -> None:
    """Give the new file the permission bits of the file it replaces, as ``torch.save`` (which
    truncates the file in place) keeps them."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return  # a new file: created with the umask's mode already
    os.fchmod(fd, mode)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not supported on every platform
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
