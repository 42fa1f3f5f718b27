"""TensorBoardLogger: real TensorBoard event files, written with torch's ``SummaryWriter``.

Layout: ``<root_dir>/<name>/version_<N>[/<sub_dir>]`` holds the event files and ``hparams.yaml``.
Needs the ``tensorboard`` package (``pip install 'fab-loggers[tensorboard]'``); it is imported
when the first event is written, not when this module is.
"""

from __future__ import annotations

import os
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor
from torch.nn import Module

from fab.core import is_wrapped
from fab.core.loggers import Logger, metrics_to_numbers
from fab.core.utilities.rank_zero import rank_zero_warn
from fab.loggers._hparams import flatten, params_to_dict, to_yaml, write_text_atomically
from fab.loggers._runtime import NoOpExperiment, close_at_exit, is_global_zero, require
from fab.loggers._versions import VersionedFolders

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

HPARAMS_FILE = "hparams.yaml"


class TensorBoardLogger(VersionedFolders, Logger):
    """Log to TensorBoard event files; open them with ``tensorboard --logdir <root_dir>``.

    Args:
        root_dir: the folder that holds the experiment's folder (default: the working directory).
        name: the experiment's folder under ``root_dir``; None or "" writes versions straight
            into ``root_dir``.
        version: an int (folder ``version_<N>``), a folder name, or None for the next free
            ``version_<N>``.
        default_hp_metric: with ``log_hyperparams`` and no metrics, log ``hp_metric`` = -1 so that
            TensorBoard's HPARAMS tab shows the run.
        prefix: put in front of every metric name (``prefix-loss``).
        sub_dir: a folder under the version's folder to write into (``version_0/train``).
        **kwargs: passed to ``torch.utils.tensorboard.SummaryWriter`` (``flush_secs``,
            ``max_queue``, ``filename_suffix``, ...).
    """

    LOGGER_JOIN_CHAR = "-"
    _expand_paths = True

    def __init__(
        self,
        root_dir: str | os.PathLike[str] = ".",
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        default_hp_metric: bool = True,
        prefix: str = "",
        sub_dir: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> None:
        require("tensorboard", "TensorBoardLogger", "tensorboard")
        self._init_folders(root_dir, name, version)
        self._default_hp_metric = default_hp_metric
        self._prefix = prefix
        self._sub_dir = None if sub_dir is None else os.fspath(sub_dir)
        self._kwargs = kwargs
        self._writer: SummaryWriter | None = None
        self.hparams: dict[str, Any] = {}

    @property
    def log_dir(self) -> str:
        """``<root_dir>/<name>/version_<N>[/<sub_dir>]``: where this run's event files go."""
        log_dir = self._version_dir()
        if self._sub_dir is not None:
            log_dir = os.path.join(log_dir, self._sub_dir)
        return os.path.expandvars(os.path.expanduser(log_dir))

    @property
    def sub_dir(self) -> str | None:
        return self._sub_dir

    @property
    def experiment(self) -> SummaryWriter | NoOpExperiment:
        """The ``SummaryWriter`` (on global rank 0; a stand-in elsewhere), for images,
        histograms and the rest of its API."""
        if not is_global_zero():
            return NoOpExperiment()
        return self._open()

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        writer = self._open()
        for key, value in metrics.items():
            if self._prefix:
                key = f"{self._prefix}{self.LOGGER_JOIN_CHAR}{key}"
            if isinstance(value, Mapping):
                writer.add_scalars(key, dict(value), step)
            else:
                writer.add_scalar(key, value, step)

    def log_hyperparams(
        self,
        params: Mapping[str, Any] | Namespace,
        metrics: Mapping[str, float] | float | Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        """Record ``params`` in ``hparams.yaml`` and TensorBoard's HPARAMS tab, with ``metrics``
        (or ``hp_metric`` = -1 with ``default_hp_metric``) as the run's result metrics; a single
        number is ``hp_metric``. Values may be tensors or NumPy values: one element is its number,
        more are written as text."""
        from torch.utils.tensorboard.summary import hparams

        values = params_to_dict(params)
        self.hparams.update(values)
        write_text_atomically(Path(self.log_dir) / HPARAMS_FILE, to_yaml(self.hparams))
        results: Mapping[str, Any]
        if metrics is None:
            results = {"hp_metric": -1} if self._default_hp_metric else {}
        elif not isinstance(metrics, Mapping):
            results = {"hp_metric": metrics}
        else:
            results = metrics
        if not results:
            return
        results = metrics_to_numbers(results)
        self.log_metrics(results, 0)
        flat = {k: _tensorboard_value(v) for k, v in flatten(values).items()}
        writer = self._open()
        file_writer = writer._get_file_writer()  # type: ignore[no-untyped-call]
        for summary in hparams(flat, dict(results)):  # type: ignore[no-untyped-call]
            file_writer.add_summary(summary)

    def log_graph(self, model: Module, input_array: Any | None = None) -> None:
        """Record ``model``'s graph, traced with ``input_array`` (a tensor, or a tuple of the
        forward's positional arguments; default: ``model.example_input_array``). Without an input
        that can be traced it warns and records nothing, as Lightning does."""
        if input_array is None:
            input_array = getattr(model, "example_input_array", None)
        if input_array is None:
            rank_zero_warn(
                "TensorBoardLogger.log_graph recorded no graph: it needs an input to trace the "
                "model with. Pass input_array=, or set model.example_input_array"
            )
            return
        if not isinstance(input_array, Tensor | tuple):
            rank_zero_warn(
                "TensorBoardLogger.log_graph recorded no graph: its input is a "
                f"{type(input_array).__name__}, and TensorBoard traces a tensor or a tuple of the "
                "forward's positional arguments. Pass one of those"
            )
            return
        original = getattr(model, "module", None)
        if is_wrapped(model) and isinstance(original, Module):
            model = original  # the user's model, not Fabric's wrapper
        self._open().add_graph(model, input_array)

    def save(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def finalize(self, status: str) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None

    def _open(self) -> SummaryWriter:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(log_dir=self.log_dir, **self._kwargs)
            close_at_exit(self, writer.close)
            self._writer = writer
        return self._writer

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (for ``ddp_spawn``) without the writer: each process opens its own."""
        state = self.__dict__.copy()
        state["_writer"] = None
        return state


def _tensorboard_value(value: Any) -> bool | int | float | str:
    """What TensorBoard's hparams show: bool, int, float or str. A tensor or NumPy value of one
    element is its number; anything else is written as text."""
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.detach().cpu().item()
    elif _is_numpy(value) and getattr(value, "size", None) == 1:
        value = value.item()
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _is_numpy(value: Any) -> bool:
    return type(value).__module__ == "numpy" and callable(getattr(value, "item", None))
