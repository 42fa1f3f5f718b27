"""The errors of fab-lazy's loader, in a module of their own so that importing them is cheap."""

from __future__ import annotations

import pickle


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds objects that only a full (code-running) unpickle could restore."""


class CheckpointFormatError(ValueError):
    """A file that is not a checkpoint this loader can read (a damaged or foreign file)."""
