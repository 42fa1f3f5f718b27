"""Lightning's ``lightning.fabric.plugins`` paths, for programs written against them.

fab keeps its plugin base classes by kind (``fab.core.precision``, ``fab.core.io``,
``fab.core.environments``); this package re-exports them, and the cluster environments of
fab-strategies, where Lightning programs import them.
"""

from fab.core.environments import ClusterEnvironment
from fab.core.io import CheckpointIO, TorchCheckpointIO
from fab.core.precision import Precision

__all__ = ["CheckpointIO", "ClusterEnvironment", "Precision", "TorchCheckpointIO"]
