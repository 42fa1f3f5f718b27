"""CSVLogger, read back with csv.DictReader (and PyYAML for hparams.yaml)."""

from __future__ import annotations

import csv
import pickle
import threading
from argparse import Namespace
from pathlib import Path

import pytest
import torch
import yaml

from fab.core import Fabric
from fab.loggers import CSVLogger


def read_rows(path: Path | str) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_layout_is_root_name_version_and_versions_count_up(tmp_path: Path) -> None:
    first = CSVLogger(tmp_path, name="exp")
    first.log_metrics({"loss": 1.0})
    first.finalize("success")
    second = CSVLogger(tmp_path, name="exp")
    assert first.version == 0
    assert second.version == 1
    assert first.root_dir == str(tmp_path)  # the root as given, as in Lightning
    assert first.log_dir == str(tmp_path / "exp" / "version_0")
    assert first.metrics_file == tmp_path / "exp" / "version_0" / "metrics.csv"
    assert CSVLogger(tmp_path, name="exp", version="run-a").log_dir == str(tmp_path / "exp/run-a")
    assert CSVLogger(tmp_path, name=None, version=3).log_dir == str(tmp_path / "version_3")


def test_next_version_is_one_past_the_highest_existing(tmp_path: Path) -> None:
    (tmp_path / "exp" / "version_4").mkdir(parents=True)
    (tmp_path / "exp" / "version_x").mkdir()
    (tmp_path / "exp" / "version_9").write_text("a file, not a version")
    assert CSVLogger(tmp_path, name="exp").version == 5


@pytest.mark.parametrize(
    ("version", "error"),
    [(-1, ValueError), ("", ValueError), ("a/b", ValueError), ("..", ValueError), (1.5, TypeError)],
)
def test_bad_versions_are_refused(tmp_path: Path, version: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="version"):
        CSVLogger(tmp_path, version=version)  # type: ignore[arg-type]


def test_bad_flush_interval_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="flush_logs_every_n_steps must be >= 1"):
        CSVLogger(tmp_path, flush_logs_every_n_steps=0)


def test_fabric_log_writes_numbers_and_counted_steps(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path)
    fabric = Fabric(loggers=logger)
    fabric.log("loss", torch.tensor(0.5, requires_grad=True) * 2)
    fabric.log_dict({"loss": torch.tensor(0.25), "lr": 0.1})
    fabric.log("loss", 0.125, step=10)
    fabric.log("loss", 0.0625)
    logger.save()
    assert read_rows(logger.metrics_file) == [
        {"step": "0", "loss": "1.0", "lr": ""},
        {"step": "1", "loss": "0.25", "lr": "0.1"},
        {"step": "10", "loss": "0.125", "lr": ""},
        {"step": "11", "loss": "0.0625", "lr": ""},
    ]


def test_a_new_metric_mid_run_widens_the_header_and_keeps_every_row(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path, flush_logs_every_n_steps=1)
    logger.log_metrics({"loss": 3.0}, step=0)
    logger.log_metrics({"loss": 2.0}, step=1)
    assert read_rows(logger.metrics_file) == [
        {"step": "0", "loss": "3.0"},
        {"step": "1", "loss": "2.0"},
    ]
    logger.log_metrics({"val_acc": 0.5}, step=2)
    logger.log_metrics({"loss": 1.0, "val_acc": 0.75}, step=3)
    with open(logger.metrics_file, newline="") as handle:
        assert next(csv.reader(handle)) == ["step", "loss", "val_acc"]
    assert read_rows(logger.metrics_file) == [
        {"step": "0", "loss": "3.0", "val_acc": ""},
        {"step": "1", "loss": "2.0", "val_acc": ""},
        {"step": "2", "loss": "", "val_acc": "0.5"},
        {"step": "3", "loss": "1.0", "val_acc": "0.75"},
    ]
    assert [p.name for p in Path(logger.log_dir).iterdir()] == ["metrics.csv"]  # no temp files


def test_rows_are_buffered_until_the_flush_interval(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path, flush_logs_every_n_steps=3)
    logger.log_metrics({"loss": 1.0})
    logger.log_metrics({"loss": 0.5})
    assert not logger.metrics_file.exists()
    logger.log_metrics({"loss": 0.25})
    assert len(read_rows(logger.metrics_file)) == 3
    logger.log_metrics({"loss": 0.125})
    assert len(read_rows(logger.metrics_file)) == 3
    logger.finalize("success")
    assert [r["loss"] for r in read_rows(logger.metrics_file)] == ["1.0", "0.5", "0.25", "0.125"]


def test_file_is_a_whole_csv_whenever_a_reader_looks(tmp_path: Path) -> None:
    """A reader polling the file while metrics keep appearing (and widening the header) always
    parses whole rows under a header that names every value."""
    logger = CSVLogger(tmp_path, flush_logs_every_n_steps=1)
    logger.log_metrics({"m0": 0.0}, step=0)
    problems: list[str] = []
    done = threading.Event()

    def read_while_writing() -> None:
        while not done.is_set():
            with open(logger.metrics_file, newline="") as handle:
                reader = csv.reader(handle)
                header = next(reader)
                for row in reader:
                    if len(row) != len(header):
                        problems.append(f"{header} / {row}")

    reader = threading.Thread(target=read_while_writing)
    reader.start()
    try:
        for step in range(1, 300):
            logger.log_metrics({f"m{step % 40}": float(step)}, step=step)
    finally:
        done.set()
        reader.join(timeout=30)
    assert problems == []
    assert len(read_rows(logger.metrics_file)) == 300


def test_hyperparams_are_saved_beside_the_metrics_as_yaml(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path)
    params = {"lr": 1e-5, "layers": [32, 16], "optimizer": {"name": "adam", "betas": (0.9, 0.99)}}
    logger.log_hyperparams(params)
    logger.log_hyperparams(Namespace(seed=7, note="yes", tag="1.5", empty=None))
    saved = yaml.safe_load((Path(logger.log_dir) / "hparams.yaml").read_text())
    assert saved == {
        "lr": 1e-5,
        "layers": [32, 16],
        "optimizer": {"name": "adam", "betas": [0.9, 0.99]},
        "seed": 7,
        "note": "yes",
        "tag": "1.5",
        "empty": None,
    }


def test_prefix_is_put_in_front_of_metric_names(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path, prefix="train")
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.save()
    assert read_rows(logger.metrics_file) == [{"step": "0", "train-loss": "1.0"}]


def test_a_multi_element_tensor_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="one element, got shape \\(2,\\)"):
        CSVLogger(tmp_path).log_metrics({"loss": torch.ones(2)})


def test_other_ranks_write_nothing(tmp_path: Path, as_rank_one: None) -> None:
    logger = CSVLogger(tmp_path, flush_logs_every_n_steps=1)
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.log_hyperparams({"lr": 0.1})
    logger.save()
    logger.finalize("success")
    assert not logger.experiment
    assert list(tmp_path.iterdir()) == []


def test_logging_after_finalize_goes_on_in_the_same_file(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path)
    logger.log_metrics({"loss": 1.0})
    logger.finalize("success")
    logger.log_metrics({"test_loss": 2.0})
    logger.finalize("success")
    assert read_rows(logger.metrics_file) == [
        {"step": "0", "loss": "1.0", "test_loss": ""},
        {"step": "1", "loss": "", "test_loss": "2.0"},
    ]


def test_an_explicit_existing_version_is_overwritten_with_a_warning(tmp_path: Path) -> None:
    first = CSVLogger(tmp_path, version=0)
    first.log_metrics({"loss": 1.0})
    first.finalize("success")
    second = CSVLogger(tmp_path, version=0)
    second.log_metrics({"acc": 1.0})
    with pytest.warns(UserWarning, match="exists and will be overwritten"):
        second.finalize("success")
    assert read_rows(second.metrics_file) == [{"step": "0", "acc": "1.0"}]


def test_a_pickled_logger_keeps_its_version_and_writes_after_unpickling(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path)
    logger.log_metrics({"loss": 1.0})
    copy = pickle.loads(pickle.dumps(logger))
    assert copy.version == logger.version
    assert copy.log_dir == logger.log_dir
    copy.log_metrics({"loss": 0.5}, step=1)
    copy.save()
    assert read_rows(copy.metrics_file) == [{"step": "1", "loss": "0.5"}]


def test_buffered_rows_are_written_when_the_process_exits(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys; from fab.loggers import CSVLogger\n"
        "logger = CSVLogger(sys.argv[1])\n"
        "logger.log_metrics({'loss': 1.0})\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=120)
    assert read_rows(tmp_path / "lightning_logs/version_0/metrics.csv") == [
        {"step": "0", "loss": "1.0"}
    ]


def test_a_metric_named_step_keeps_its_own_column_beside_the_step(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path)
    fabric = Fabric(loggers=logger)
    with pytest.warns(UserWarning, match="writes the metric 'step' to the column 'step_metric'"):
        fabric.log_dict({"step": 7, "loss": 1.0}, step=3)
    fabric.log_dict({"step": 8, "loss": 0.5})
    logger.log_metrics({"step": 9, "step_metric": 0.0}, step=10)
    logger.finalize("success")
    assert read_rows(logger.metrics_file) == [
        {"step": "3", "step_metric": "7", "loss": "1.0", "step_metric_": ""},
        {"step": "4", "step_metric": "8", "loss": "0.5", "step_metric_": ""},
        {"step": "10", "step_metric": "0.0", "loss": "", "step_metric_": "9"},
    ]


def test_the_version_is_claimed_when_the_logger_is_made(tmp_path: Path) -> None:
    first = CSVLogger(tmp_path, name="exp")
    assert (tmp_path / "exp" / "version_0").is_dir()
    second = CSVLogger(tmp_path, name="exp")  # nothing logged by the first yet
    assert (first.version, second.version) == (0, 1)
    assert not (tmp_path / "exp" / "version_0" / "metrics.csv").exists()


def test_other_ranks_have_no_version_of_their_own(tmp_path: Path, as_rank_one: None) -> None:
    logger = CSVLogger(tmp_path)
    assert logger.version is None
    with pytest.raises(RuntimeError, match=r"no version on global rank 1: .* claimed by rank 0"):
        _ = logger.log_dir
    assert CSVLogger(tmp_path, version=2).log_dir == str(tmp_path / "lightning_logs/version_2")
    assert list(tmp_path.iterdir()) == []


def test_purge_step_continues_the_versions_file_without_later_rows(tmp_path: Path) -> None:
    first = CSVLogger(tmp_path, flush_logs_every_n_steps=1)
    for step in range(1, 5):  # a run that checkpointed after step 2 and crashed after step 4
        first.log_metrics({"loss": 1.0 / step}, step=step)
    first.log_hyperparams({"lr": 0.1})
    first.finalize("success")

    resumed = CSVLogger(tmp_path, version=first.version, purge_step=3)
    assert read_rows(resumed.metrics_file)[-1]["step"] == "4"  # nothing happens before it writes
    resumed.log_metrics({"loss": 0.3, "acc": 0.9}, step=3)
    resumed.log_metrics({"loss": 0.2}, step=4)
    resumed.finalize("success")
    assert read_rows(resumed.metrics_file) == [
        {"step": "1", "loss": "1.0", "acc": ""},
        {"step": "2", "loss": "0.5", "acc": ""},
        {"step": "3", "loss": "0.3", "acc": "0.9"},
        {"step": "4", "loss": "0.2", "acc": ""},
    ]
    files = sorted(p.name for p in Path(resumed.log_dir).iterdir())
    assert files == ["hparams.yaml", "metrics.csv"]


def test_purge_step_without_an_earlier_file_starts_one(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path, version="fresh", purge_step=5)
    logger.log_metrics({"loss": 1.0}, step=5)
    logger.finalize("success")
    assert read_rows(logger.metrics_file) == [{"step": "5", "loss": "1.0"}]
