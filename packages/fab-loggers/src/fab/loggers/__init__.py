"""Loggers for fab, registered in the ``fab.loggers`` entry-point group: ``csv``, ``tensorboard``
and ``mlflow``. Importing this package imports neither tensorboard nor mlflow: a logger imports its
library when it first writes."""

from fab.core.loggers import Logger
from fab.loggers.csv import CSVLogger
from fab.loggers.mlflow import MLFlowLogger
from fab.loggers.plot import plot_csv
from fab.loggers.tensorboard import TensorBoardLogger

__all__ = ["CSVLogger", "Logger", "MLFlowLogger", "TensorBoardLogger", "plot_csv"]
