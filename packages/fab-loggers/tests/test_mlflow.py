"""MLFlowLogger against MLflow's local file store, read back with MlflowClient."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from fab.core import Fabric
from fab.loggers import MLFlowLogger


@pytest.fixture(autouse=True)
def _no_tracking_uri_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)


def history(logger: MLFlowLogger, key: str) -> list[tuple[int, float]]:
    client = MlflowClient(tracking_uri=logger.tracking_uri)
    assert logger.run_id is not None
    return [(m.step, m.value) for m in client.get_metric_history(logger.run_id, key)]


def test_metrics_params_and_status_reach_the_file_store(tmp_path: Path) -> None:
    logger = MLFlowLogger("exp", run_name="first", save_dir=tmp_path / "mlruns", tags={"team": 1})
    fabric = Fabric(loggers=logger)
    fabric.log("loss", torch.tensor(1.0))
    fabric.log("loss", torch.tensor(0.5))
    fabric.log_dict({"acc": 0.75}, step=10)
    logger.log_hyperparams({"lr": 0.1, "optimizer": {"name": "sgd"}})
    logger.finalize("success")

    assert logger.tracking_uri == f"file:{tmp_path / 'mlruns'}"
    client = MlflowClient(tracking_uri=logger.tracking_uri)
    experiment = client.get_experiment_by_name("exp")
    assert experiment is not None
    assert logger.name == experiment.experiment_id
    run = client.get_run(logger.version or "")
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "first"
    assert run.data.tags["team"] == "1"
    assert run.data.params == {"lr": "0.1", "optimizer/name": "sgd"}
    assert history(logger, "loss") == [(0, 1.0), (1, 0.5)]
    assert history(logger, "acc") == [(10, 0.75)]
    assert logger.log_dir == str(tmp_path / "mlruns" / logger.name / logger.version)
    assert Path(logger.log_dir).is_dir()


def test_failed_status_and_a_second_run_in_the_same_experiment(tmp_path: Path) -> None:
    first = MLFlowLogger("exp", save_dir=tmp_path)
    first.log_metrics({"loss": 1.0})
    first.finalize("failed")
    second = MLFlowLogger("exp", save_dir=tmp_path)
    second.log_metrics({"loss": 2.0})
    second.finalize("success")
    client = MlflowClient(tracking_uri=first.tracking_uri)
    assert first.name == second.name
    assert first.version != second.version
    assert client.get_run(first.version or "").info.status == "FAILED"
    assert client.get_run(second.version or "").info.status == "FINISHED"


def test_logging_into_an_existing_run_by_id(tmp_path: Path) -> None:
    first = MLFlowLogger("exp", save_dir=tmp_path)
    first.log_metrics({"loss": 1.0}, step=0)
    again = MLFlowLogger(save_dir=tmp_path, run_id=first.run_id)
    again.log_metrics({"loss": 0.5}, step=1)
    assert again.name == first.name
    assert history(first, "loss") == [(0, 1.0), (1, 0.5)]


def test_keys_mlflow_refuses_are_made_valid_and_prefix_applies(tmp_path: Path) -> None:
    logger = MLFlowLogger(save_dir=tmp_path, prefix="train")
    logger.log_metrics({"loss(avg)": 1.0}, step=0)
    assert history(logger, "train-loss_avg_") == [(0, 1.0)]


def test_tracking_uri_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file:{tmp_path / 'elsewhere'}")
    logger = MLFlowLogger(save_dir=tmp_path / "unused")
    logger.log_metrics({"loss": 1.0})
    assert logger.root_dir == str(tmp_path / "elsewhere")
    assert not (tmp_path / "unused").exists()


def test_other_ranks_create_no_run(tmp_path: Path, as_rank_one: None) -> None:
    logger = MLFlowLogger(save_dir=tmp_path / "mlruns")
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.log_hyperparams({"lr": 0.1})
    logger.finalize("success")
    assert logger.run_id is None
    assert logger.log_dir is None
    assert not (tmp_path / "mlruns").exists()


def test_a_pickled_logger_logs_into_the_same_run(tmp_path: Path) -> None:
    logger = MLFlowLogger(save_dir=tmp_path)
    logger.log_metrics({"loss": 1.0}, step=0)
    copy = pickle.loads(pickle.dumps(logger))
    copy.log_metrics({"loss": 0.5}, step=1)
    assert history(logger, "loss") == [(0, 1.0), (1, 0.5)]
