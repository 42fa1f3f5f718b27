"""ClusterEnvironment base class. The environments themselves live in fab-strategies."""

from fab.core.environments.environment import ClusterEnvironment

__all__ = ["ClusterEnvironment"]
