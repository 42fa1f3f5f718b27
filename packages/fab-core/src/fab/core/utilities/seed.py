"""Seeding of python, numpy and torch."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from fab.core.utilities.rank_zero import rank_zero_warn

_MAX_SEED = np.iinfo(np.uint32).max
_MIN_SEED = np.iinfo(np.uint32).min


def seed_everything(seed: int | None = None, workers: bool = False) -> int:
    """Seed python's ``random``, numpy and torch (every device) with ``seed``, and return it.

    Without a seed, ``FAB_GLOBAL_SEED`` (set by an earlier call, so subprocesses agree) is used, or
    0. ``workers=True`` makes data-loader workers derive their own seeds from it reproducibly.
    """
    if seed is None:
        env_seed = os.environ.get("FAB_GLOBAL_SEED")
        if env_seed is None:
            seed = 0
            rank_zero_warn(f"no seed given and FAB_GLOBAL_SEED is not set; using seed {seed}")
        else:
            try:
                seed = int(env_seed)
            except ValueError as err:
                raise ValueError(f"FAB_GLOBAL_SEED={env_seed!r} is not an integer") from err
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not _MIN_SEED <= seed <= _MAX_SEED:
        raise ValueError(f"seed {seed} is out of range; accepted: {_MIN_SEED}..{_MAX_SEED}")
    os.environ["FAB_GLOBAL_SEED"] = str(seed)
    os.environ["FAB_SEED_WORKERS"] = "1" if workers else "0"
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds every device's generator too
    return seed
