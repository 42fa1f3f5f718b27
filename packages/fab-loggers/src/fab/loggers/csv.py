"""CSVLogger: one ``metrics.csv`` per run version, readable by any CSV reader while the run goes on.

Layout: ``<root_dir>/<name>/version_<N>/metrics.csv`` and ``hparams.yaml`` beside it.

- Columns are ``step`` and then every metric name, in the order they first appeared. A row leaves
  empty the metrics it did not log. ``step`` always holds the step; a metric that is itself named
  ``step`` goes to the column ``step_metric``.
- Rows are buffered and written every ``flush_logs_every_n_steps`` calls of ``log_metrics``, on
  ``save()``, on ``finalize()``, and when the process exits.
- The file on disk is always a whole CSV file: appended rows go in one write, and when a new metric
  name widens the header, the file is rewritten with every earlier row into a temporary file that
  replaces it in one rename.
- A resumed run continues its version's file when given ``purge_step``: the rows logged before
  that step stay, later ones (logged after the checkpoint it resumes from) go.
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
#: Where a metric named ``step`` goes, since the ``step`` column holds the step.
STEP_METRIC_COLUMN = "step_metric"


class MetricsWriter:
    """Keeps the rows of one ``metrics.csv`` until they are flushed, and the file's header."""

    def __init__(
        self, log_dir: Path, overwrite_warning: bool, purge_step: int | None = None
    ) -> None:
        self.log_dir = log_dir
        self.metrics_file = log_dir / METRICS_FILE
        self.hparams_file = log_dir / HPARAMS_FILE
        self.columns: list[str] = []  # the header on disk (empty: no file written yet)
        self.rows: list[dict[str, Any]] = []  # logged, not yet written
        self.hparams: dict[str, Any] = {}
        self._checked_existing = not overwrite_warning
        if purge_step is not None:
            self._checked_existing = True
            self._continue(purge_step)

    def _continue(self, purge_step: int) -> None:
        """Take over the existing file, without its rows at ``purge_step`` or later."""
        if not self.metrics_file.exists():
            return
        with self.metrics_file.open(encoding="utf-8", newline="") as existing:
            reader = csv.DictReader(existing)
            columns = list(reader.fieldnames or [])
            rows = list(reader)
        kept = [row for row in rows if _step_of(row) < purge_step]
        if STEP_COLUMN not in columns:
            columns.insert(0, STEP_COLUMN)
        if kept != rows or columns != list(reader.fieldnames or []):
            write_text_atomically(self.metrics_file, _csv_text(columns, kept, header=True))
        self.columns = columns

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


def _step_of(row: Mapping[str, Any]) -> float:
    """A row's step as a number; a row without one counts as logged first."""
    try:
        return float(row.get(STEP_COLUMN) or "-inf")
    except ValueError:
        return float("-inf")


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
        purge_step: continue the version's existing ``metrics.csv`` (when resuming a run), without
            the rows at this step or later, as ``SummaryWriter(purge_step=...)`` does for
            TensorBoard. Not in Lightning, whose CSVLogger starts the file again.
    """

    LOGGER_JOIN_CHAR = "-"

    def __init__(
        self,
        root_dir: str | os.PathLike[str] = ".",
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        prefix: str = "",
        flush_logs_every_n_steps: int = 100,
        *,
        purge_step: int | None = None,
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
        self._purge_step = purge_step
        self._warned_step_metric = False

    @property
    def log_dir(self) -> str:
        """``<root_dir>/<name>/version_<N>``: this run's folder (see ``version`` on ranks other
        than 0)."""
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
        if STEP_COLUMN in metrics:
            metrics = self._step_metric_moved(metrics)
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

    def _step_metric_moved(self, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """``metrics`` with the one named ``step`` renamed: the ``step`` column holds the step."""
        column = STEP_METRIC_COLUMN
        while column in metrics:
            column += "_"
        if not self._warned_step_metric:
            self._warned_step_metric = True
            rank_zero_warn(
                f"CSVLogger writes the metric 'step' to the column '{column}': the column 'step' "
                "holds the step given to log_metrics (or counted). Give the metric another name "
                "to choose its column"
            )
        return {(column if key == STEP_COLUMN else key): value for key, value in metrics.items()}

    def _open(self) -> MetricsWriter:
        if self._writer is None:
            writer = MetricsWriter(Path(self.log_dir), self._overwrite_warning, self._purge_step)
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
