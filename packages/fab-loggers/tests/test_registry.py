"""The loggers are found by name through the ``fab.loggers`` entry points; a logger whose library
is missing says what to install, and only when it is asked for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fab.core import Fabric, registry
from fab.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger


@pytest.mark.parametrize(
    ("name", "cls"),
    [("csv", CSVLogger), ("tensorboard", TensorBoardLogger), ("mlflow", MLFlowLogger)],
)
def test_each_logger_is_registered_by_name(name: str, cls: type) -> None:
    entry = registry.LOGGERS.entry(name)
    assert entry.distribution == "fab-loggers"
    assert registry.LOGGERS.load(name) is cls


def test_fabric_takes_logger_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    fabric = Fabric(loggers=["csv", "tensorboard", "mlflow"])
    assert [type(lg) for lg in fabric.loggers] == [CSVLogger, TensorBoardLogger, MLFlowLogger]
    fabric.log("loss", 1.0)
    for logger in fabric.loggers:
        logger.finalize("success")
    # Each file logger claimed a version of its own, as Lightning's two loggers end up.
    assert (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").exists()
    assert list((tmp_path / "lightning_logs" / "version_1").glob("events.out.tfevents.*"))
    assert (tmp_path / "mlruns").is_dir()


@pytest.mark.parametrize(
    ("module", "cls", "extra"),
    [("tensorboard", TensorBoardLogger, "tensorboard"), ("mlflow", MLFlowLogger, "mlflow")],
)
def test_a_missing_library_says_what_to_install(
    module: str, cls: type, extra: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.chdir(tmp_path)  # where Fabric(loggers=["csv"]) claims its version
    with pytest.raises(ModuleNotFoundError, match=f"pip install 'fab-loggers\\[{extra}\\]'"):
        cls(save_dir=tmp_path) if cls is MLFlowLogger else cls(tmp_path)
    Fabric(loggers=["csv"])  # the others still work


def test_importing_the_package_imports_neither_tensorboard_nor_mlflow(tmp_path: Path) -> None:
    code = (
        "import sys, fab.loggers; from fab.core import Fabric; Fabric(loggers=['csv'])\n"
        "print(sorted(m for m in ('tensorboard', 'mlflow', 'matplotlib', 'torch.utils.tensorboard')"
        " if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=tmp_path,
    )
    assert out.stdout.strip() == "[]"
