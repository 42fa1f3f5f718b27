"""TensorBoardLogger, read back with tensorboard's own event reader."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from fab.core import Fabric
from fab.loggers import TensorBoardLogger


def events(log_dir: str | Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(log_dir))
    accumulator.Reload()
    return accumulator


def scalars(log_dir: str | Path, tag: str) -> list[tuple[int, float]]:
    return [(e.step, pytest.approx(e.value)) for e in events(log_dir).Scalars(tag)]


def test_fabric_log_writes_scalars_to_event_files(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path, name="exp")
    fabric = Fabric(loggers=[logger])
    for step in range(3):
        fabric.log("train/loss", torch.tensor(1.0 / (step + 1)))
    fabric.log_dict({"val/acc": 0.9}, step=7)
    logger.finalize("success")
    assert logger.log_dir == str(tmp_path / "exp" / "version_0")
    assert list(Path(logger.log_dir).glob("events.out.tfevents.*"))
    assert scalars(logger.log_dir, "train/loss") == [(0, 1.0), (1, 0.5), (2, 1 / 3)]
    assert scalars(logger.log_dir, "val/acc") == [(7, 0.9)]


def test_versions_and_sub_dir_are_named_as_lightning_names_them(tmp_path: Path) -> None:
    first = TensorBoardLogger(tmp_path)
    first.log_metrics({"x": 1.0})
    first.finalize("success")
    second = TensorBoardLogger(tmp_path, sub_dir="train")
    assert second.version == 1
    assert second.root_dir == str(tmp_path)  # the root as given, as in Lightning
    assert second.log_dir == str(tmp_path / "lightning_logs" / "version_1" / "train")
    second.log_metrics({"x": 2.0}, step=5)
    second.finalize("success")
    assert scalars(second.log_dir, "x") == [(5, 2.0)]
    named = TensorBoardLogger(tmp_path, name="", version="baseline")
    assert named.log_dir == str(tmp_path / "baseline")


def test_hyperparams_reach_the_hparams_tab_and_hparams_yaml(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path)
    logger.log_hyperparams({"lr": 0.01, "optimizer": {"name": "sgd"}, "layers": [4, 2]})
    logger.finalize("success")
    accumulator = events(logger.log_dir)
    content = accumulator.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert start.hparams["lr"].number_value == pytest.approx(0.01)
    assert start.hparams["optimizer/name"].string_value == "sgd"
    assert start.hparams["layers"].string_value == "[4, 2]"
    assert scalars(logger.log_dir, "hp_metric") == [(0, -1.0)]
    saved = yaml.safe_load((Path(logger.log_dir) / "hparams.yaml").read_text())
    assert saved == {"lr": 0.01, "optimizer": {"name": "sgd"}, "layers": [4, 2]}


def test_hyperparams_with_metrics_and_without_the_default_hp_metric(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path, default_hp_metric=False)
    logger.log_hyperparams({"lr": 0.1})
    logger.log_hyperparams({"lr": 0.1}, metrics={"best_acc": 0.8})
    logger.finalize("success")
    tags = events(logger.log_dir).Tags()["scalars"]
    assert tags == ["best_acc"]


def test_prefix_and_dict_values(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path, prefix="p")
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.finalize("success")
    assert scalars(logger.log_dir, "p-loss") == [(0, 1.0)]


def test_logging_after_finalize_reopens_the_run(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path)
    logger.log_metrics({"loss": 1.0})
    logger.finalize("success")
    logger.log_metrics({"loss": 0.5})
    logger.finalize("success")
    assert scalars(logger.log_dir, "loss") == [(0, 1.0), (1, 0.5)]


@pytest.mark.filterwarnings("ignore:`torch.jit.trace:DeprecationWarning")
def test_log_graph_without_an_input_warns_and_records_nothing(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path)
    with pytest.warns(UserWarning, match="recorded no graph: it needs an input"):
        logger.log_graph(torch.nn.Linear(2, 1))
    with pytest.warns(UserWarning, match="its input is a list"):
        logger.log_graph(torch.nn.Linear(2, 1), [torch.zeros(1, 2)])
    logger.log_metrics({"x": 1.0})
    logger.finalize("success")
    assert not events(logger.log_dir).Tags()["graph"]


@pytest.mark.filterwarnings("ignore:`torch.jit.trace:DeprecationWarning")
def test_log_graph_traces_the_users_model_under_fabrics_wrapper(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path)
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU())
    model.example_input_array = torch.zeros(1, 2)  # type: ignore[assignment]
    wrapped = Fabric(accelerator="cpu", devices=1).setup_module(model)
    logger.log_graph(wrapped)
    logger.finalize("success")
    graph = events(logger.log_dir).Graph()
    names = [node.name for node in graph.node]
    assert any("Sequential/Linear[0]" in name for name in names), names
    assert not any("FabricModule" in name for name in names), names


def test_other_ranks_write_nothing(tmp_path: Path, as_rank_one: None) -> None:
    logger = TensorBoardLogger(tmp_path)
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.log_hyperparams({"lr": 0.1})
    logger.experiment.add_scalar("x", 1.0, 0)
    logger.finalize("success")
    assert list(tmp_path.iterdir()) == []


def test_a_pickled_logger_writes_into_the_same_version(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path)
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.save()
    copy = pickle.loads(pickle.dumps(logger))
    copy.log_metrics({"loss": 0.5}, step=1)
    copy.finalize("success")
    logger.finalize("success")
    assert copy.log_dir == logger.log_dir
    assert scalars(logger.log_dir, "loss") == [(0, 1.0), (1, 0.5)]


def test_hyperparams_take_tensors_and_numpy_values(tmp_path: Path) -> None:
    import numpy as np

    logger = TensorBoardLogger(tmp_path)
    params = {
        "lr": torch.tensor(0.5),
        "betas": torch.tensor([0.9]),
        "weights": torch.ones(2, 2),
        "scale": np.float32(0.25),
        "layers": np.int64(3),
        "amp": np.bool_(True),
        "shape": np.array([4, 2]),
        "opt": {"momentum": torch.tensor(0.75)},
    }
    logger.log_hyperparams(params, metrics=torch.tensor(0.125))
    logger.finalize("success")
    content = events(logger.log_dir).PluginTagToContent("hparams")["_hparams_/session_start_info"]
    shown = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert shown["lr"].number_value == 0.5
    assert shown["betas"].number_value == pytest.approx(0.9)
    assert shown["weights"].string_value == str(torch.ones(2, 2))
    assert shown["scale"].number_value == 0.25
    assert shown["layers"].number_value == 3
    assert shown["amp"].number_value == 1  # as TensorBoard shows a Python bool
    assert shown["shape"].string_value == "[4 2]"
    assert shown["opt/momentum"].number_value == 0.75
    assert scalars(logger.log_dir, "hp_metric") == [(0, 0.125)]
    saved = yaml.safe_load((Path(logger.log_dir) / "hparams.yaml").read_text())
    assert saved["lr"] == 0.5
    assert saved["layers"] == 3
    assert saved["amp"] is True
    assert saved["opt"] == {"momentum": 0.75}


def test_the_version_is_claimed_when_the_logger_is_made(tmp_path: Path) -> None:
    first = TensorBoardLogger(tmp_path, name="exp")
    assert (tmp_path / "exp" / "version_0").is_dir()
    second = TensorBoardLogger(tmp_path, name="exp")  # nothing logged by the first yet
    assert (first.version, second.version) == (0, 1)


def test_other_ranks_have_no_version_of_their_own(tmp_path: Path, as_rank_one: None) -> None:
    logger = TensorBoardLogger(tmp_path)
    assert logger.version is None
    with pytest.raises(RuntimeError, match=r"no version on global rank 1: .* claimed by rank 0"):
        _ = logger.log_dir
    assert TensorBoardLogger(tmp_path, version=3).log_dir == str(
        tmp_path / "lightning_logs" / "version_3"
    )
    assert list(tmp_path.iterdir()) == []
