"""plot_csv: a PNG of the loss curve from a CSVLogger's file, or None without matplotlib."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from fab.loggers import CSVLogger, plot_csv

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def logged_csv(tmp_path: Path) -> Path:
    logger = CSVLogger(tmp_path)
    for step in range(20):
        logger.log_metrics({"train_loss": 1.0 / (step + 1)})
        if step % 5 == 4:
            logger.log_metrics({"val_loss": 1.5 / (step + 1)}, step=step)
    logger.finalize("success")
    return logger.metrics_file


def test_writes_a_png_of_the_loss_columns_beside_the_csv(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    png = plot_csv(logged_csv(tmp_path))
    assert png == tmp_path / "lightning_logs" / "version_0" / "loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 5_000


def test_chosen_metrics_and_output_path(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = plot_csv(logged_csv(tmp_path), out=tmp_path / "plots" / "val.png", metrics=["val_loss"])
    assert out == tmp_path / "plots" / "val.png"
    assert out.exists()


def test_missing_columns_are_an_error(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    with pytest.raises(ValueError, match="no column \\['accuracy'\\]"):
        plot_csv(logged_csv(tmp_path), metrics=["accuracy"])
    (tmp_path / "other.csv").write_text("epoch,loss\n0,1.0\n")
    with pytest.raises(ValueError, match="no 'step' column"):
        plot_csv(tmp_path / "other.csv")


def test_without_matplotlib_it_returns_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = logged_csv(tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert plot_csv(path) is None
    assert not (path.parent / "loss.png").exists()


def saved_figures(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    """The figures plot_csv saves, to look at their axes (each PNG is still written)."""
    from matplotlib.figure import Figure

    figures: list[Figure] = []
    save = Figure.savefig

    def keep(figure: Figure, *args: Any, **kwargs: Any) -> None:
        figures.append(figure)
        save(figure, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return figures


def test_loss_is_on_a_log_axis_with_accuracy_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("matplotlib")
    import numpy as np

    figures = saved_figures(monkeypatch)
    logger = CSVLogger(tmp_path)
    for epoch in range(1, 6):
        logger.log_metrics({"train_loss": 2.0 / epoch**2, "test_accuracy": 1 - 0.5 / epoch}, epoch)
    logger.finalize("success")
    png = plot_csv(logger.metrics_file, beside=["test_accuracy"], x_label="epoch")
    assert png is not None
    assert png.exists()
    loss_axes, accuracy_axes = figures[0].axes
    assert loss_axes.get_yscale() == "log"
    assert loss_axes.get_xlabel() == accuracy_axes.get_xlabel() == "epoch"
    assert loss_axes.get_ylabel() == "train_loss"
    assert accuracy_axes.get_ylabel() == "test_accuracy"
    assert accuracy_axes.get_yscale() == "linear"
    line = accuracy_axes.lines[0]
    assert np.asarray(line.get_xdata()).tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert np.asarray(line.get_ydata()).tolist() == pytest.approx([0.5, 0.75, 5 / 6, 0.875, 0.9])


def test_a_linear_axis_for_values_a_log_axis_cannot_show(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("matplotlib")
    figures = saved_figures(monkeypatch)
    path = tmp_path / "m.csv"
    path.write_text("step,loss,score\n0,1.0,-1.0\n1,0.0,2.0\n")
    plot_csv(path)
    plot_csv(path, metrics=["score"])
    assert [figure.axes[0].get_yscale() for figure in figures] == ["linear", "linear"]
    assert figures[0].axes[0].get_xlabel() == "step"
    with pytest.raises(ValueError, match=r"log_scale=True needs every value of \['loss'\] above"):
        plot_csv(path, log_scale=True)
    with pytest.raises(ValueError, match="no column \\['acc'\\]"):
        plot_csv(path, beside=["acc"])
