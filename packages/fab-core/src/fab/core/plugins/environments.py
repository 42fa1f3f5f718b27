"""Lightning's ``lightning.fabric.plugins.environments``: the cluster environments by their class
names (``LightningEnvironment`` is fab's own, ``FabEnvironment``).

The environments live in fab-strategies, which fab-core never imports: each name is looked up in
the ``fab.environments`` entry points when it is first imported from here, so a missing
fab-strategies gives an ``ImportError`` that says what to install.
"""

from __future__ import annotations

from typing import Any

from fab.core import registry
from fab.core.environments import ClusterEnvironment

#: Class name (Lightning's, and fab's) -> the entry-point name in ``fab.environments``.
ENTRY_POINT_NAMES = {
    "LightningEnvironment": "fab",
    "FabEnvironment": "fab",
    "TorchElasticEnvironment": "torchelastic",
    "SLURMEnvironment": "slurm",
    "LSFEnvironment": "lsf",
    "MPIEnvironment": "mpi",
    "KubeflowEnvironment": "kubeflow",
}

__all__ = ["ClusterEnvironment", *ENTRY_POINT_NAMES]


def __getattr__(name: str) -> Any:
    entry_point = ENTRY_POINT_NAMES.get(name)
    if entry_point is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        cls = registry.ENVIRONMENTS.load(entry_point)
    except registry.PluginError as err:
        raise ImportError(f"cannot import {name} from {__name__}: {err}", name=__name__) from err
    globals()[name] = cls
    return cls
