"""MLFlowLogger: metrics, parameters and run status in MLflow, by default in its local file store
(``file:./mlruns``; no tracking server).

Needs ``mlflow-skinny`` (or ``mlflow``): ``pip install 'fab-loggers[mlflow]'``. MLflow 3 keeps
the file store in maintenance mode and refuses it unless ``MLFLOW_ALLOW_FILE_STORE`` is true; for a
``file:`` tracking URI this logger sets that variable to true, unless it is set already.
"""

from __future__ import annotations

import os
import re
import time
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fab.core.loggers import Logger
from fab.core.utilities.rank_zero import rank_zero_warn
from fab.loggers._hparams import flatten, params_to_dict
from fab.loggers._runtime import NoOpExperiment, is_global_zero, require

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

ALLOW_FILE_STORE_ENV = "MLFLOW_ALLOW_FILE_STORE"
#: MLflow's limits: the longest parameter value, and the most entries in one log_batch call.
MAX_PARAM_LENGTH = 6000
MAX_BATCH = 100
#: What ``finalize(status)`` sets the run's status to.
RUN_STATUS = {"success": "FINISHED", "finished": "FINISHED", "failed": "FAILED"}
_INVALID_KEY = re.compile(r"[^\w\-. :/]")


class MLFlowLogger(Logger):
    """Log to MLflow Tracking.

    Args:
        experiment_name: the MLflow experiment; created when it does not exist.
        run_name: the run's name in the MLflow UI.
        tracking_uri: where MLflow keeps runs: ``file:<folder>``, ``sqlite:///...``, an
            ``http(s)://`` server. Default: ``$MLFLOW_TRACKING_URI``, else ``file:<save_dir>``.
        tags: tags set on the run when it is created.
        save_dir: the local folder of the file store when no ``tracking_uri`` is given.
        prefix: put in front of every metric name (``prefix-loss``).
        artifact_location: where the experiment keeps artifacts, when it is created here.
        run_id: go on logging into this existing run instead of creating one.
    """

    LOGGER_JOIN_CHAR = "-"

    def __init__(
        self,
        experiment_name: str = "lightning_logs",
        run_name: str | None = None,
        tracking_uri: str | None = None,
        tags: Mapping[str, Any] | None = None,
        save_dir: str | os.PathLike[str] | None = "./mlruns",
        prefix: str = "",
        artifact_location: str | None = None,
        run_id: str | None = None,
    ) -> None:
        require("mlflow", "MLFlowLogger", "mlflow")
        tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not tracking_uri:
            if save_dir is None:
                raise ValueError("MLFlowLogger needs a tracking_uri or a save_dir")
            tracking_uri = f"file:{os.path.abspath(os.fspath(save_dir))}"
        self._experiment_name = experiment_name
        self._run_name = run_name
        self._tracking_uri = tracking_uri
        self._tags = dict(tags or {})
        self._prefix = prefix
        self._artifact_location = artifact_location
        self._run_id = run_id
        self._experiment_id: str | None = None
        self._client: MlflowClient | None = None

    @property
    def experiment(self) -> MlflowClient | NoOpExperiment:
        """The ``MlflowClient`` (on global rank 0; a stand-in elsewhere); the run is created the
        first time this is used."""
        if not is_global_zero():
            return NoOpExperiment()
        return self._open()

    @property
    def run_id(self) -> str | None:
        """The MLflow run's id (the run is created on first use)."""
        if is_global_zero():
            self._open()
        return self._run_id

    @property
    def experiment_id(self) -> str | None:
        if is_global_zero():
            self._open()
        return self._experiment_id

    @property
    def name(self) -> str | None:
        """The experiment's id, as in Lightning."""
        return self.experiment_id

    @property
    def version(self) -> str | None:
        """The run's id, as in Lightning."""
        return self.run_id

    @property
    def tracking_uri(self) -> str:
        return self._tracking_uri

    @property
    def root_dir(self) -> str | None:
        """The file store's folder, for a ``file:`` tracking URI."""
        return _file_store_dir(self._tracking_uri)

    @property
    def log_dir(self) -> str | None:
        """The run's folder in the file store, for a ``file:`` tracking URI."""
        root = self.root_dir
        if root is None or self.experiment_id is None or self.run_id is None:
            return None
        return os.path.join(root, self.experiment_id, self.run_id)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        client = self._open()
        assert self._run_id is not None
        now = int(time.time() * 1000)
        entries = []
        for key, value in metrics.items():
            if isinstance(value, str):
                rank_zero_warn(f"MLFlowLogger skips the metric {key!r}: {value!r} is not a number")
                continue
            if self._prefix:
                key = f"{self._prefix}{self.LOGGER_JOIN_CHAR}{key}"
            entries.append(
                Metric(key=_valid_key(key), value=float(value), timestamp=now, step=step or 0)
            )
        for start in range(0, len(entries), MAX_BATCH):
            client.log_batch(self._run_id, metrics=entries[start : start + MAX_BATCH])

    def log_hyperparams(
        self, params: Mapping[str, Any] | Namespace, *args: Any, **kwargs: Any
    ) -> None:
        from mlflow.entities import Param

        client = self._open()
        assert self._run_id is not None
        flat = flatten(params_to_dict(params))
        entries = [Param(_valid_key(k), str(v)[:MAX_PARAM_LENGTH]) for k, v in flat.items()]
        for start in range(0, len(entries), MAX_BATCH):
            client.log_batch(self._run_id, params=entries[start : start + MAX_BATCH])

    def finalize(self, status: str = "success") -> None:
        """End the run: ``success``/``finished`` -> FINISHED, ``failed`` -> FAILED, anything else
        -> KILLED. Logging afterwards is allowed (the run keeps its status)."""
        if self._client is None:
            return
        assert self._run_id is not None
        self._client.set_terminated(self._run_id, RUN_STATUS.get(status, "KILLED"))

    def _open(self) -> MlflowClient:
        if self._client is not None:
            return self._client
        if self._tracking_uri.startswith("file:"):
            os.environ.setdefault(ALLOW_FILE_STORE_ENV, "true")
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self._tracking_uri)
        if self._run_id is not None:
            run = client.get_run(self._run_id)
            self._experiment_id = run.info.experiment_id
        else:
            experiment = client.get_experiment_by_name(self._experiment_name)
            if experiment is not None:
                self._experiment_id = experiment.experiment_id
            else:
                self._experiment_id = client.create_experiment(
                    self._experiment_name, artifact_location=self._artifact_location
                )
            tags = {k: str(v) for k, v in self._tags.items()}
            if self._run_name is not None:
                tags["mlflow.runName"] = self._run_name
            run = client.create_run(self._experiment_id, tags=tags, run_name=self._run_name)
            self._run_id = run.info.run_id
        self._client = client
        return client

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (for ``ddp_spawn``) without the client: rank 0 makes its own."""
        state = self.__dict__.copy()
        state["_client"] = None
        return state


def _valid_key(key: str) -> str:
    """``key`` with the characters MLflow refuses replaced by ``_``."""
    return _INVALID_KEY.sub("_", key)


def _file_store_dir(uri: str) -> str | None:
    if not uri.startswith("file:"):
        return None
    path = uri.removeprefix("file:")
    if path.startswith("//"):  # file:///abs/path
        path = path[2:]
    return str(Path(path))
