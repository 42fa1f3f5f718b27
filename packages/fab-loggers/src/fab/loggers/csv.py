"""CSVLogger: one ``metrics.csv`` per run version, readable by any CSV reader while the run goes on.

Layout: ``<root_dir>/<name>/version_<N>/metrics.csv`` and ``hparams.yaml`` beside it.

- Columns are ``step`` and then every metric name, in the order they first appeared. A row leaves
  empty the metrics it did not log.
- Rows are buffered and written every ``flush_logs_every_n_steps`` calls of ``log_metrics``, on
  ``save()``, on ``finalize()``, and when the process exits.
- The file on disk is always a whole CSV file: appended rows go in one write, and when a new metric
  name widens the header, the file is rewritten with every earlier row into a temporary file that
  replaces it in one rename.
"""

from __future__ import annotations

import csv
import io
import os
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fab.core.loggers import Logger
from fab.core.utilities.rank_zero import rank_zero_warn
from fab.loggers._hparams import params_to_dict, to_yaml, write_text_atomically
from fab.loggers._runtime import NoOpExperiment, close_at_exit, is_global_zero
from fab.loggers._versions import VersionedFolders

METRICS_FILE = "metrics.csv"
HPARAMS_FILE = "hparams.yaml"
STEP_COLUMN = "step"


class MetricsWriter:
    """Keeps the rows of one ``metrics.csv`` until they are flushed, and the file's header."""

    def __init__(self, log_dir: Path, overwrite_warning: bool) -> None:
        self.log_dir = log_dir
        self.metrics_file = log_dir / METRICS_FILE
        self.hparams_file = log_dir / HPARAMS_FILE
        self.columns: list[str] = []  # the header on disk (empty: no file written yet)
        self.rows: list[dict[str, Any]] = []  # logged, not yet written
        self.hparams: dict[str, Any] = {}
        self._checked_existing = not overwrite_warning

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        self.rows.append({STEP_COLUMN: step, **metrics})

    def log_hparams(self, params: Mapping[str, Any]) -> None:
        self.hparams.update(params)
        write_text_atomically(self.hparams_file, to_yaml(self.hparams))

    def flush(self) -> None:
        if not self.rows:
            return
        self._warn_if_overwriting()
        columns = list(self.columns or [STEP_COLUMN])
        for row in self.rows:
            columns.extend(key for key in row if key not in columns)
        if columns != self.columns:
            self._rewrite(columns)
        else:
            self._append()
        self.rows = []

    def _warn_if_overwriting(self) -> None:
        if not self._checked_existing:
            self._checked_existing = True
            if self.metrics_file.exists():
                rank_zero_warn(
                    f"{self.metrics_file} exists and will be overwritten: give CSVLogger a new "
                    "version (or none, for the next free one) to keep it"
                )

    def _append(self) -> None:
        text = _csv_text(self.columns, self.rows, header=False)
        with self.metrics_file.open("a", encoding="utf-8", newline="") as out:
            out.write(text)  # one write: a reader sees whole rows

    def _rewrite(self, columns: list[str]) -> None:
        earlier: list[dict[str, Any]] = []
        if self.columns and self.metrics_file.exists():
            with self.metrics_file.open(encoding="utf-8", newline="") as existing:
                earlier = list(csv.DictReader(existing))
        text = _csv_text(columns, [*earlier, *self.rows], header=True)
        write_text_atomically(self.metrics_file, text)
        self.columns = columns


def _csv_text(columns: list[str], rows: list[dict[str, Any]], header: bool) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


class CSVLogger(VersionedFolders, Logger):
    """Log metrics and hyperparameters to CSV and YAML files on the local file system.

    Args:
        root_dir: the folder that holds the experiment's folder (default: the working directory).
        name: the experiment's folder under ``root_dir``; None or "" writes versions straight
            into ``root_dir``.
        version: an int (folder ``version_<N>``), a folder name, or None for the next free
            ``version_<N>``.
        prefix: put in front of every metric name (``prefix-loss``).
        flush_logs_every_n_steps: write the buffered rows every this many ``log_metrics`` calls.
    """

    LOGGER_JOIN_CHAR = "-"

    def __init__(
        self,
        root_dir: str | os.PathLike[str] = ".",
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        prefix: str = "",
        flush_logs_every_n_steps: int = 100,
    ) -> None:
        if flush_logs_every_n_steps < 1:
            raise ValueError(
                f"flush_logs_every_n_steps must be >= 1, got {flush_logs_every_n_steps}"
            )
        given = self._init_folders(root_dir, name, version)
        self._prefix = prefix
        self._flush_every = flush_logs_every_n_steps
        self._unflushed = 0
        self._writer: MetricsWriter | None = None
        self._overwrite_warning = given

    @property
    def log_dir(self) -> str:
        """``<root_dir>/<name>/version_<N>``: this run's folder."""
        return self._version_dir()

    @property
    def metrics_file(self) -> Path:
        return Path(self.log_dir) / METRICS_FILE

    @property
    def experiment(self) -> MetricsWriter | NoOpExperiment:
        """The writer of this run's files (on global rank 0; a stand-in elsewhere)."""
        if not is_global_zero():
            return NoOpExperiment()
        return self._open()

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        assert step is not None, "Logger gives log_metrics a step"
        if self._prefix:
            metrics = {f"{self._prefix}{self.LOGGER_JOIN_CHAR}{k}": v for k, v in metrics.items()}
        self._open().log_metrics(metrics, step)
        self._unflushed += 1
        if self._unflushed >= self._flush_every:
            self.save()

    def log_hyperparams(
        self, params: Mapping[str, Any] | Namespace, *args: Any, **kwargs: Any
    ) -> None:
        self._open().log_hparams(params_to_dict(params))

    def save(self) -> None:
        self._unflushed = 0
        if self._writer is not None:
            self._writer.flush()

    def finalize(self, status: str) -> None:
        self.save()

    def _open(self) -> MetricsWriter:
        if self._writer is None:
            writer = MetricsWriter(Path(self.log_dir), self._overwrite_warning)
            writer.log_dir.mkdir(parents=True, exist_ok=True)
            close_at_exit(self, writer.flush)
            self._writer = writer
        return self._writer

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (for ``ddp_spawn``) without the writer: each process opens its own."""
        state = self.__dict__.copy()
        state["_writer"] = None
        state["_unflushed"] = 0
        return state
