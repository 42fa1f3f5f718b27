"""The ``acme_memory`` logger: keeps every metric in memory, and writes JSON lines to the file
named by ``ACME_LOG_FILE`` when that variable is set.

Registered as ``acme_memory`` in the ``fab.loggers`` entry-point group.
"""

from __future__ import annotations

import json
import os
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fab.core.loggers import Logger

#: The environment variable naming a file that every record is appended to, as one JSON line.
LOG_FILE_ENV = "ACME_LOG_FILE"

#: Every record of every ``MemoryLogger`` in this process, in order:
#: ``{"kind": "metrics", "step": 0, "metrics": {...}}`` or ``{"kind": "hyperparams", ...}``.
RECORDS: list[dict[str, Any]] = []


class MemoryLogger(Logger):
    """Keeps metrics in memory (``self.records`` and the module's ``RECORDS``)."""

    def __init__(self, name: str = "acme", version: int | str = 0) -> None:
        self._name = name
        self._version = version
        self.records: list[dict[str, Any]] = []
        self.finalized_with: str | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> int | str:
        return self._version

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self._add({"kind": "metrics", "step": step, "metrics": dict(metrics)})

    def log_hyperparams(
        self, params: Mapping[str, Any] | Namespace, *args: Any, **kwargs: Any
    ) -> None:
        values = vars(params) if isinstance(params, Namespace) else dict(params)
        self._add({"kind": "hyperparams", "params": values})

    def finalize(self, status: str) -> None:
        self.finalized_with = status
        super().finalize(status)

    def _add(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        RECORDS.append(record)
        path = os.environ.get(LOG_FILE_ENV)
        if path:
            with Path(path).open("a", encoding="utf-8") as sink:
                sink.write(json.dumps(record, default=repr) + "\n")
