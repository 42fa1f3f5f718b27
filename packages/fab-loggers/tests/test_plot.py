"""plot_csv: a PNG of the loss curve from a CSVLogger's file, or None without matplotlib."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fab.loggers import CSVLogger, plot_csv


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
