"""Strategy base class and the single_device fallback. Others live in fab-strategies."""

from fab.core.registry import STRATEGY_REGISTRY
from fab.core.strategies.single_device import SingleDeviceStrategy
from fab.core.strategies.strategy import ModelSetup, ReduceOp, Strategy, StrategyContext

__all__ = [
    "STRATEGY_REGISTRY",
    "ModelSetup",
    "ReduceOp",
    "SingleDeviceStrategy",
    "Strategy",
    "StrategyContext",
]
