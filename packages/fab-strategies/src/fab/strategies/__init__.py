"""Strategies for fab: the base class and single_device fallback (from fab-core) under the names
users know, and the cluster environments. Multi-process and sharded strategies, launchers and
cluster environments are registered here through the ``fab.strategies`` and ``fab.environments``
entry points."""

from fab.core.environments import ClusterEnvironment
from fab.core.launchers import Launcher
from fab.core.strategies import SingleDeviceStrategy, Strategy
from fab.strategies.ddp import DDPStrategy
from fab.strategies.environments import (
    FabEnvironment,
    KubeflowEnvironment,
    LSFEnvironment,
    MPIEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
    detect_environment,
)
from fab.strategies.fsdp import FSDPStrategy
from fab.strategies.launchers import MultiProcessingLauncher
from fab.strategies.model_parallel import ModelParallelStrategy
from fab.strategies.parallel import ParallelStrategy

__all__ = [
    "ClusterEnvironment",
    "DDPStrategy",
    "FSDPStrategy",
    "FabEnvironment",
    "KubeflowEnvironment",
    "LSFEnvironment",
    "Launcher",
    "MPIEnvironment",
    "ModelParallelStrategy",
    "MultiProcessingLauncher",
    "ParallelStrategy",
    "SLURMEnvironment",
    "SingleDeviceStrategy",
    "Strategy",
    "TorchElasticEnvironment",
    "detect_environment",
]
