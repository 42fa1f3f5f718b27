"""Utilities that Fabric programs import (``lightning.fabric.utilities``' names).

Importing this package stays cheap: what needs a heavy module (``torch.utils.flop_counter``
and its sympy, ``torch.distributed``) imports it when called.
"""

import importlib
from typing import TYPE_CHECKING, Any

from fab.core.utilities.apply_func import (
    apply_to_tensors,
    convert_tensors_to_scalars,
    move_data_to_device,
)
from fab.core.utilities.attribute_dict import AttributeDict
from fab.core.utilities.data import has_iterable_dataset, has_len, suggested_max_num_workers
from fab.core.utilities.exceptions import MisconfigurationException
from fab.core.utilities.rank_zero import (
    FabDeprecationWarning,
    rank_prefixed_message,
    rank_zero_debug,
    rank_zero_deprecation,
    rank_zero_info,
    rank_zero_only,
    rank_zero_warn,
)
from fab.core.utilities.seed import (
    add_worker_init_fn,
    global_seed,
    reset_seed,
    seed_everything,
    seed_worker,
)
from fab.core.utilities.warnings import PossibleUserWarning, disable_possible_user_warnings

if TYPE_CHECKING:
    from fab.core.utilities.flops import get_available_flops, measure_flops
    from fab.core.utilities.shared_filesystem import is_shared_filesystem
    from fab.core.utilities.throughput import Throughput, ThroughputMonitor

#: Imported on first use, so that ``import fab.core`` does not pay for them.
_LAZY = {
    "get_available_flops": "fab.core.utilities.flops",
    "measure_flops": "fab.core.utilities.flops",
    "is_shared_filesystem": "fab.core.utilities.shared_filesystem",
    "Throughput": "fab.core.utilities.throughput",
    "ThroughputMonitor": "fab.core.utilities.throughput",
}

__all__ = [
    "AttributeDict",
    "FabDeprecationWarning",
    "MisconfigurationException",
    "PossibleUserWarning",
    "Throughput",
    "ThroughputMonitor",
    "add_worker_init_fn",
    "apply_to_tensors",
    "convert_tensors_to_scalars",
    "disable_possible_user_warnings",
    "get_available_flops",
    "global_seed",
    "has_iterable_dataset",
    "has_len",
    "is_shared_filesystem",
    "measure_flops",
    "move_data_to_device",
    "rank_prefixed_message",
    "rank_zero_debug",
    "rank_zero_deprecation",
    "rank_zero_info",
    "rank_zero_only",
    "rank_zero_warn",
    "reset_seed",
    "seed_everything",
    "seed_worker",
    "suggested_max_num_workers",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fab.core.utilities' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
