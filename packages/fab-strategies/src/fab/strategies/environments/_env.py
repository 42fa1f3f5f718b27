"""Small helpers shared by the cluster environments: reading integers from the environment and
deriving a rendezvous port from a job id."""

from __future__ import annotations

import os
import zlib

from fab.core.utilities.network import find_free_port

__all__ = ["find_free_port"]

#: Ports derived from a job id fall in ``PORT_BASE .. PORT_BASE + PORT_SPAN - 1``.
PORT_BASE = 10000
PORT_SPAN = 10000
#: The port used when neither ``MASTER_PORT`` nor a job id is available (Lightning's default too).
DEFAULT_PORT = 12910


def env_int(name: str, default: int | None = None) -> int:
    """The integer in the environment variable ``name``; ``default`` when unset.

    Raises a ``RuntimeError`` naming the variable when it is unset without a default, and a
    ``ValueError`` naming it when it is not an integer.
    """
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        if default is None:
            raise RuntimeError(f"the environment variable {name} is not set")
        return default
    try:
        return int(raw.strip())
    except ValueError:
        raise ValueError(f"the environment variable {name}={raw!r} is not an integer") from None


def env_str(name: str) -> str:
    """The value of ``name``; a ``RuntimeError`` naming it when unset or empty."""
    value = os.environ.get(name, "").strip()
    if not value:
        raise RuntimeError(f"the environment variable {name} is not set")
    return value


def port_from_job_id(job_id: str) -> int:
    """A port in 10000..19999 that every process of one job derives alike from the job's id.

    A numeric id maps to ``10000 + id % 10000`` (consecutive jobs get different ports); any other
    id to ``10000 + crc32(id) % 10000``.
    """
    text = job_id.strip()
    value = int(text) if text.isdigit() else zlib.crc32(text.encode())
    return PORT_BASE + value % PORT_SPAN


def main_port_from(job_id_vars: tuple[str, ...]) -> int:
    """``MASTER_PORT`` when set, else a port derived from the first job-id variable that is set,
    else :data:`DEFAULT_PORT`."""
    if os.environ.get("MASTER_PORT", "").strip():
        return env_int("MASTER_PORT")
    for name in job_id_vars:
        value = os.environ.get(name, "").strip()
        if value:
            return port_from_job_id(value)
    return DEFAULT_PORT


def check_world_size(source: str, world_size: int, num_devices: int, num_nodes: int) -> None:
    """Raise when ``devices * num_nodes`` disagrees with the world size the cluster reports."""
    if num_devices * num_nodes != world_size:
        raise ValueError(
            f"the cluster environment says {source}={world_size} processes, but devices="
            f"{num_devices} x num_nodes={num_nodes} = {num_devices * num_nodes}. Set devices and "
            f"num_nodes of Fabric to match the job (or the job to match them)"
        )
