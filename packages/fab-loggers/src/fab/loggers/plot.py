"""A PNG of the curves in a CSVLogger's ``metrics.csv``, drawn with matplotlib where it is
installed (it is not a dependency of fab-loggers)."""

from __future__ import annotations

import csv
import importlib.util
import math
import os
from collections.abc import Sequence
from pathlib import Path

from fab.loggers.csv import STEP_COLUMN


def plot_csv(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    metrics: Sequence[str] | None = None,
    title: str | None = None,
) -> Path | None:
    """Plot ``metrics`` (default: every column whose name holds "loss") of the CSV file ``path``
    against its ``step`` column, one line each, into the PNG ``out`` (default: ``loss.png`` beside
    the CSV file). Returns the PNG's path, or None when matplotlib is not installed.

    Raises ``ValueError`` if the file has no ``step`` column or none of the metrics.
    """
    if importlib.util.find_spec("matplotlib") is None:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    source = Path(path)
    with source.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    if STEP_COLUMN not in columns:
        raise ValueError(f"{source} has no '{STEP_COLUMN}' column (columns: {columns})")
    wanted = list(metrics) if metrics is not None else [c for c in columns if "loss" in c.lower()]
    missing = [m for m in wanted if m not in columns]
    if missing or not wanted:
        raise ValueError(f"{source} has no column {missing or 'with loss in its name'}: {columns}")

    # No pyplot: a Figure with its own Agg canvas changes no global matplotlib state.
    figure = Figure(figsize=(6.4, 4.0), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for metric in wanted:
        points = [
            (float(row[STEP_COLUMN]), float(row[metric]))
            for row in rows
            if row.get(metric) not in (None, "") and row.get(STEP_COLUMN) not in (None, "")
        ]
        points = [(x, y) for x, y in points if math.isfinite(y)]
        axes.plot([x for x, _ in points], [y for _, y in points], label=metric)
    axes.set_xlabel(STEP_COLUMN)
    axes.set_ylabel(wanted[0] if len(wanted) == 1 else "value")
    axes.set_title(title or str(source.parent.name))
    axes.grid(True, alpha=0.3)
    if len(wanted) > 1:
        axes.legend()
    target = Path(out) if out is not None else source.parent / "loss.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, format="png")
    return target
