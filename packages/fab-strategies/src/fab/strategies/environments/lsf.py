"""LSFEnvironment: processes started by ``jsrun`` inside an IBM Spectrum LSF job (Summit,
Sierra and similar machines)."""

from __future__ import annotations

import os
import socket
from typing import ClassVar

from fab.core.environments import ClusterEnvironment
from fab.strategies.environments._env import check_world_size, env_int, main_port_from

_RANKS = ("JSM_NAMESPACE_RANK", "JSM_NAMESPACE_LOCAL_RANK", "JSM_NAMESPACE_SIZE")


def _hosts() -> list[str]:
    """The job's hosts, one entry per slot: the lines of ``LSB_DJOB_RANKFILE``, else the words of
    ``LSB_HOSTS``. The first entry is the launch (batch) host, which runs no rank."""
    rankfile = os.environ.get("LSB_DJOB_RANKFILE", "").strip()
    if rankfile:
        try:
            with open(rankfile, encoding="utf-8") as f:
                return [line.strip() for line in f if line.strip()]
        except OSError as err:
            raise RuntimeError(
                f"cannot read the LSF rank file LSB_DJOB_RANKFILE={rankfile!r}: {err}"
            ) from err
    return os.environ.get("LSB_HOSTS", "").split()


def compute_nodes() -> list[str]:
    """The distinct hosts that run ranks, in order (the launch host left out)."""
    hosts = _hosts()
    if not hosts:
        raise RuntimeError("the LSF job lists no hosts: LSB_DJOB_RANKFILE and LSB_HOSTS are empty")
    if len(hosts) > 1:
        hosts = hosts[1:]
    return list(dict.fromkeys(hosts))


class LSFEnvironment(ClusterEnvironment):
    """Reads what LSF and ``jsrun`` set.

    - detected by ``LSB_JOBID``, a host list (``LSB_DJOB_RANKFILE`` or ``LSB_HOSTS``) and the
      ``JSM_NAMESPACE_*`` ranks;
    - ranks: ``JSM_NAMESPACE_RANK`` (global), ``JSM_NAMESPACE_LOCAL_RANK``; world size
      ``JSM_NAMESPACE_SIZE``; node rank: this host's index among the compute hosts;
    - main address: ``MASTER_ADDR`` when set, else the first compute host of the rank file (its
      first line, the launch host, runs no rank);
    - main port: ``MASTER_PORT`` when set, else ``10000 + LSB_JOBID % 10000``.
    """

    detect_priority: ClassVar[int] = 30

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        explicit = os.environ.get("MASTER_ADDR", "").strip()
        return explicit or compute_nodes()[0]

    @property
    def main_port(self) -> int:
        return main_port_from(("LSB_JOBID",))

    @staticmethod
    def detect() -> bool:
        env = os.environ
        has_hosts = bool(env.get("LSB_DJOB_RANKFILE", "").strip() or env.get("LSB_HOSTS", ""))
        return (
            bool(env.get("LSB_JOBID", "").strip())
            and has_hosts
            and all(env.get(name, "").strip() for name in _RANKS)
        )

    def world_size(self) -> int:
        return env_int("JSM_NAMESPACE_SIZE")

    def set_world_size(self, size: int) -> None:
        """Ignored: the world size is LSF's (``JSM_NAMESPACE_SIZE``)."""

    def global_rank(self) -> int:
        return env_int("JSM_NAMESPACE_RANK")

    def set_global_rank(self, rank: int) -> None:
        """Ignored: the rank is LSF's (``JSM_NAMESPACE_RANK``)."""

    def local_rank(self) -> int:
        return env_int("JSM_NAMESPACE_LOCAL_RANK")

    def node_rank(self) -> int:
        nodes = compute_nodes()
        hostname = socket.gethostname()
        for candidate in (hostname, hostname.split(".")[0]):
            for index, node in enumerate(nodes):
                if node == candidate or node.split(".")[0] == candidate:
                    return index
        raise RuntimeError(
            f"this host ({hostname}) is not among the LSF job's compute hosts {nodes} "
            "(from LSB_DJOB_RANKFILE or LSB_HOSTS)"
        )

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        check_world_size("JSM_NAMESPACE_SIZE", self.world_size(), num_devices, num_nodes)
