"""How many data-loader workers a process can use."""

from __future__ import annotations

import os

# AttributeDict lives in attribute_dict.py; importable from here too, as from Lightning's
# ``lightning.fabric.utilities.data``.
from fab.core.utilities.attribute_dict import AttributeDict

__all__ = ["AttributeDict", "suggested_max_num_workers"]


def _available_cpus() -> int:
    """The CPUs this process may run on: its affinity mask where the OS has one (Linux, so
    ``taskset`` and cgroup cpusets count), else every CPU of the machine."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def suggested_max_num_workers(local_world_size: int) -> int:
    """The ``num_workers`` to give each data loader: this machine's CPUs split among its
    ``local_world_size`` processes, minus one for the process itself, and at least 1.

    Example::

        DataLoader(dataset, num_workers=suggested_max_num_workers(fabric.world_size // num_nodes))
    """
    if isinstance(local_world_size, bool) or not isinstance(local_world_size, int):
        raise TypeError(
            f"local_world_size must be an int (processes on this machine), got {local_world_size!r}"
        )
    if local_world_size < 1:
        raise ValueError(
            "local_world_size must be at least 1 (processes on this machine), "
            f"got {local_world_size}"
        )
    return max(1, _available_cpus() // local_world_size - 1)
