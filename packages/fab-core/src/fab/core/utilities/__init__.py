"""Utilities that Fabric programs import."""

from fab.core.utilities.apply_func import apply_to_tensors, move_data_to_device
from fab.core.utilities.rank_zero import (
    rank_zero_debug,
    rank_zero_info,
    rank_zero_only,
    rank_zero_warn,
)
from fab.core.utilities.seed import seed_everything

__all__ = [
    "apply_to_tensors",
    "move_data_to_device",
    "rank_zero_debug",
    "rank_zero_info",
    "rank_zero_only",
    "rank_zero_warn",
    "seed_everything",
]
