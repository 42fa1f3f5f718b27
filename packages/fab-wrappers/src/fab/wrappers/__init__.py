"""The objects users get back from ``fabric.setup``: thin, transparent wrappers.

fab-wrappers depends on torch only; the strategy and precision it talks to are described by the
protocols in ``fab.wrappers.protocols``.
"""

from fab.wrappers.backward_guard import fabric_backward, in_fabric_backward
from fab.wrappers.compiled import CompileSettings, is_compiled, rewrap_compiled, unwrap_compiled
from fab.wrappers.dataloader import FabricDataLoader
from fab.wrappers.module import FabricModule
from fab.wrappers.optimizer import FabricOptimizer
from fab.wrappers.protocols import PrecisionLike, StrategyLike
from fab.wrappers.unwrap import is_wrapped, unwrap

__all__ = [
    "CompileSettings",
    "FabricDataLoader",
    "FabricModule",
    "FabricOptimizer",
    "PrecisionLike",
    "StrategyLike",
    "fabric_backward",
    "in_fabric_backward",
    "is_compiled",
    "is_wrapped",
    "rewrap_compiled",
    "unwrap",
    "unwrap_compiled",
]
