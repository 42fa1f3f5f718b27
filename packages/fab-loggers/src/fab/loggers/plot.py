"""A PNG of the curves in a CSVLogger's ``metrics.csv``, drawn with matplotlib where it is
installed (it is not a dependency of fab-loggers)."""

from __future__ import annotations

import csv
import importlib.util
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fab.loggers.csv import STEP_COLUMN

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def plot_csv(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    metrics: Sequence[str] | None = None,
    title: str | None = None,
    *,
    beside: Sequence[str] = (),
    x_label: str = STEP_COLUMN,
    log_scale: bool | None = None,
) -> Path | None:
    """Plot ``metrics`` (default: every column whose name holds "loss") of the CSV file ``path``
    against its ``step`` column, one line each, into the PNG ``out`` (default: ``loss.png`` beside
    the CSV file). Returns the PNG's path, or None when matplotlib is not installed.

    Args:
        beside: columns drawn in a second panel to the right (``["test_accuracy"]``), on a
            linear axis.
        x_label: what the ``step`` column holds, for the x axis (``"epoch"`` when a run logs once
            an epoch with ``step=epoch``).
        log_scale: a logarithmic axis for ``metrics``. By default it is logarithmic when every
            one of them names a loss and every value is above 0.

    Raises ``ValueError`` if the file has no ``step`` column or lacks a requested column, or when
    ``log_scale=True`` meets a value that is not above 0.
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
    missing = [m for m in [*wanted, *beside] if m not in columns]
    if missing or not wanted:
        raise ValueError(f"{source} has no column {missing or 'with loss in its name'}: {columns}")

    curves = {metric: _points(rows, metric) for metric in wanted}
    positive = all(y > 0 for points in curves.values() for _, y in points)
    if log_scale is None:
        log_scale = positive and all("loss" in metric.lower() for metric in wanted)
    elif log_scale and not positive:
        raise ValueError(
            f"log_scale=True needs every value of {wanted} above 0 in {source}: "
            "pass log_scale=False"
        )

    # No pyplot: a Figure with its own Agg canvas changes no global matplotlib state.
    figure = Figure(figsize=(11.0 if beside else 6.4, 4.0), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    panels = figure.subplots(1, 2 if beside else 1, squeeze=False)[0]
    _draw(panels[0], curves, x_label, "log" if log_scale else "linear")
    if beside:
        _draw(panels[1], {m: _points(rows, m) for m in beside}, x_label, "linear")
    figure.suptitle(title or str(source.parent.name))
    target = Path(out) if out is not None else source.parent / "loss.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, format="png")
    return target


def _points(rows: list[dict[str, str]], metric: str) -> list[tuple[float, float]]:
    """The finite ``(step, value)`` pairs of ``metric``, rows without it left out."""
    points = [
        (float(row[STEP_COLUMN]), float(row[metric]))
        for row in rows
        if row.get(metric) not in (None, "") and row.get(STEP_COLUMN) not in (None, "")
    ]
    return [(x, y) for x, y in points if math.isfinite(y)]


def _draw(
    axes: Axes, curves: dict[str, list[tuple[float, float]]], x_label: str, scale: str
) -> None:
    from matplotlib.ticker import MaxNLocator

    for metric, points in curves.items():
        axes.plot([x for x, _ in points], [y for _, y in points], label=metric, marker=".")
    steps = [x for points in curves.values() for x, _ in points]
    axes.xaxis.set_major_locator(MaxNLocator(integer=all(x.is_integer() for x in steps)))
    axes.set_xlabel(x_label)
    names = list(curves)
    axes.set_ylabel(names[0] if len(names) == 1 else "value")
    axes.set_yscale(scale)
    axes.grid(True, which="both" if scale == "log" else "major", alpha=0.3)
    if len(names) > 1:
        axes.legend()
