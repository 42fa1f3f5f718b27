"""The ``acme_env`` cluster environment: ACME's scheduler, which says where a process is through
``ACME_RANK`` and ``ACME_WORLD_SIZE``.

Registered as ``acme_env`` in the ``fab.environments`` entry-point group.
"""

from __future__ import annotations

import os

from fab.core.environments import ClusterEnvironment

RANK_ENV = "ACME_RANK"
WORLD_SIZE_ENV = "ACME_WORLD_SIZE"
LOCAL_RANK_ENV = "ACME_LOCAL_RANK"
NODE_RANK_ENV = "ACME_NODE_RANK"
MAIN_ADDRESS_ENV = "ACME_MAIN_ADDRESS"
MAIN_PORT_ENV = "ACME_MAIN_PORT"


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None


class AcmeEnvironment(ClusterEnvironment):
    """ACME's scheduler starts every process and sets ``ACME_RANK``/``ACME_WORLD_SIZE`` in each."""

    detect_priority = 5

    def __init__(self) -> None:
        self._world_size: int | None = None
        self._global_rank: int | None = None

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        return os.environ.get(MAIN_ADDRESS_ENV, "127.0.0.1")

    @property
    def main_port(self) -> int:
        return _int_env(MAIN_PORT_ENV, 29500)

    @staticmethod
    def detect() -> bool:
        return RANK_ENV in os.environ

    def world_size(self) -> int:
        return self._world_size if self._world_size is not None else _int_env(WORLD_SIZE_ENV, 1)

    def set_world_size(self, size: int) -> None:
        self._world_size = size

    def global_rank(self) -> int:
        return self._global_rank if self._global_rank is not None else _int_env(RANK_ENV, 0)

    def set_global_rank(self, rank: int) -> None:
        self._global_rank = rank

    def local_rank(self) -> int:
        return _int_env(LOCAL_RANK_ENV, self.global_rank())

    def node_rank(self) -> int:
        return _int_env(NODE_RANK_ENV, 0)
