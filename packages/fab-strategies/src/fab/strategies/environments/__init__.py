"""fab's cluster environments (the ``fab.environments`` entry points) and their detection."""

from fab.core.environments import ClusterEnvironment
from fab.strategies.environments._env import find_free_port
from fab.strategies.environments.detect import detect_environment
from fab.strategies.environments.fab import FAB_LAUNCHED_ENV, FabEnvironment
from fab.strategies.environments.hostlist import expand_hostlist
from fab.strategies.environments.kubeflow import KubeflowEnvironment
from fab.strategies.environments.lsf import LSFEnvironment
from fab.strategies.environments.mpi import MPIEnvironment
from fab.strategies.environments.slurm import SLURMEnvironment
from fab.strategies.environments.torchelastic import TorchElasticEnvironment

#: Lightning's name of fab's own environment (``lightning.fabric.plugins.environments``); an
#: alias, so not in ``__all__``.
LightningEnvironment = FabEnvironment

__all__ = [
    "FAB_LAUNCHED_ENV",
    "ClusterEnvironment",
    "FabEnvironment",
    "KubeflowEnvironment",
    "LSFEnvironment",
    "MPIEnvironment",
    "SLURMEnvironment",
    "TorchElasticEnvironment",
    "detect_environment",
    "expand_hostlist",
    "find_free_port",
]
