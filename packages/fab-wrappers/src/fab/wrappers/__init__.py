"""The objects users get back from ``fabric.setup``: thin, transparent wrappers.

fab-wrappers depends on torch only; the strategy and precision it talks to are described by the
protocols in ``fab.wrappers.protocols``.
"""

from fab.wrappers.dataloader import FabricDataLoader
from fab.wrappers.module import FabricModule
from fab.wrappers.optimizer import FabricOptimizer
from fab.wrappers.protocols import PrecisionLike, StrategyLike
from fab.wrappers.unwrap import is_wrapped, unwrap

__all__ = [
    "FabricDataLoader",
    "FabricModule",
    "FabricOptimizer",
    "PrecisionLike",
    "StrategyLike",
    "is_wrapped",
    "unwrap",
]
