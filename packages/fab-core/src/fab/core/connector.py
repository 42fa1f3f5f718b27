"""The connector: turns ``Fabric(...)``'s arguments into a connected Strategy.

Every name is looked up in the plugin registry; nothing here knows which plugins exist.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import torch

from fab.core import cli_settings, registry
from fab.core.accelerators.accelerator import Accelerator
from fab.core.environments.environment import ClusterEnvironment
from fab.core.io.checkpoint_io import CheckpointIO
from fab.core.launchers import check_interactive_compatible
from fab.core.precision.precision import Precision
from fab.core.precision_names import (
    CANONICAL_PRECISION,
    invalid_precision_message,
    normalize_precision,
)
from fab.core.strategies.strategy import Strategy, StrategyContext

AcceleratorArg = str | Accelerator
StrategyArg = str | Strategy
PrecisionArg = str | int | Precision | None
PluginArg = Precision | CheckpointIO | ClusterEnvironment | str


def connect(
    accelerator: AcceleratorArg = "auto",
    strategy: StrategyArg = "auto",
    devices: Any = "auto",
    num_nodes: int = 1,
    precision: PrecisionArg = None,
    plugins: PluginArg | Iterable[PluginArg] | None = None,
) -> Strategy:
    """Resolve every argument and return the strategy, connected to its accelerator, precision,
    devices and checkpoint I/O.

    In a process started by ``fab run``, the command line's settings fill in the arguments left
    at their defaults; a value that disagrees with the command line raises
    :class:`~fab.core.cli_settings.CLIConflictError`.
    """
    cli = cli_settings.from_environment()
    accelerator = cli_settings.merge("accelerator", accelerator, cli.get("accelerator"))
    strategy = cli_settings.merge("strategy", strategy, cli.get("strategy"))
    devices = cli_settings.merge("devices", devices, cli.get("devices"))
    num_nodes = cli_settings.merge("num_nodes", num_nodes, cli.get("num_nodes"))
    precision = cli_settings.merge("precision", precision, cli.get("precision"))
    precision_plugin, checkpoint_io, environment = _split_plugins(plugins)
    precision_plugin = _resolve_precision(precision, precision_plugin)
    accel = resolve_accelerator(accelerator)
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 1:
        raise ValueError(f"num_nodes={num_nodes!r}; expected a positive int")
    devices = accel.auto_device_count() if devices == "auto" else devices
    parallel_devices = tuple(accel.get_parallel_devices(accel.parse_devices(devices)))
    if not parallel_devices:
        raise ValueError(f"devices={devices!r} selects no device")
    strat = _resolve_strategy(strategy, len(parallel_devices), num_nodes)
    strat.connect(
        StrategyContext(
            accelerator=accel,
            precision=precision_plugin,
            parallel_devices=parallel_devices,
            num_nodes=num_nodes,
            checkpoint_io=checkpoint_io,
            cluster_environment=environment,
        )
    )
    strat.configure_launcher()
    check_interactive_compatible(strat.launcher, strategy)
    return strat


def _split_plugins(
    plugins: PluginArg | Iterable[PluginArg] | None,
) -> tuple[Precision | None, CheckpointIO | None, ClusterEnvironment | None]:
    if plugins is None:
        return None, None, None
    items = [plugins] if isinstance(plugins, PluginArg) else list(plugins)
    found: dict[type, Any] = {}
    for item in items:
        if isinstance(item, str):
            item = _precision_by_name(item)
        for kind in (Precision, CheckpointIO, ClusterEnvironment):
            if isinstance(item, kind):
                if kind in found:
                    raise ValueError(
                        f"plugins holds two {kind.__name__}s ({found[kind]!r} and {item!r}); "
                        "give one"
                    )
                found[kind] = item
                break
        else:
            raise TypeError(
                f"plugins got {item!r}; accepted: Precision, CheckpointIO and ClusterEnvironment "
                "instances, or a precision name"
            )
    return found.get(Precision), found.get(CheckpointIO), found.get(ClusterEnvironment)


def _resolve_precision(precision: PrecisionArg, from_plugins: Precision | None) -> Precision:
    if isinstance(precision, Precision):
        if from_plugins is not None:
            raise ValueError(
                "precision was given twice: as `precision=` and in `plugins=`; give one"
            )
        return precision
    if from_plugins is not None:
        if precision is not None:
            raise ValueError(
                f"precision={precision!r} conflicts with the precision plugin {from_plugins!r}; "
                "give one"
            )
        return from_plugins
    return _precision_by_name(precision)


def _precision_by_name(precision: object) -> Precision:
    """The registry's precision for a name or alias (``"bf16"``, ``16``, None for 32-true)."""
    name = normalize_precision(precision)
    try:
        instance: Precision = registry.PRECISION.create(name)
    except registry.PluginNotFoundError as err:
        if name in CANONICAL_PRECISION or name in registry.KNOWN_PROVIDERS["fab.precision"]:
            raise  # it says which package provides the name
        raise ValueError(invalid_precision_message(precision)) from err
    return instance


def resolve_accelerator(accelerator: AcceleratorArg) -> Accelerator:
    """The Accelerator for a name (``'auto'``: the best available) or an instance."""
    if isinstance(accelerator, Accelerator):
        return accelerator
    if not isinstance(accelerator, str):
        raise TypeError(
            f"accelerator={accelerator!r}: expected a name "
            f"({', '.join(registry.ACCELERATORS.names())}, "
            "or 'auto') or an Accelerator instance"
        )
    if accelerator == "auto":
        return _auto_accelerator()
    instance: Accelerator = registry.ACCELERATORS.create(accelerator)
    if not instance.is_available():
        raise RuntimeError(
            f"accelerator '{accelerator}' is installed but not available on this machine"
        )
    return instance


def _auto_accelerator() -> Accelerator:
    """The available accelerator with the highest ``auto_priority``.

    A plugin that fails to load is skipped with a warning, so a broken third-party accelerator
    never stops a run that does not ask for it.
    """
    candidates = registry.ACCELERATORS.classes_by_priority(
        "auto_priority", "choosing accelerator='auto'"
    )
    for name, cls in candidates:
        if cls.is_available():
            chosen: Accelerator = registry.ACCELERATORS.create(name)
            if chosen.auto_priority <= 0:
                _hint_missing_gpu_package()
            return chosen
    raise RuntimeError(
        "accelerator='auto' found no available accelerator; installed: "
        f"{', '.join(registry.ACCELERATORS.names()) or 'none'}"
    )


_gpu_hint_given = False


def _hint_missing_gpu_package() -> None:
    """Say once per process that a GPU is here but no installed accelerator can use it."""
    global _gpu_hint_given
    if _gpu_hint_given:
        return
    gpu = None
    if torch.cuda.device_count() > 0:  # NVML-based where it can be: does not initialize CUDA
        gpu = "a CUDA GPU"
    elif torch.backends.mps.is_available():
        gpu = "an Apple GPU (MPS)"
    if gpu is not None:
        _gpu_hint_given = True
        warnings.warn(
            f"{gpu} is available but no installed accelerator uses it, so fab runs on the CPU. "
            'To use it: pip install fab-accelerators  (or pip install "fab-core[accelerators]")',
            registry.PluginWarning,
            stacklevel=5,
        )


def _resolve_strategy(strategy: StrategyArg, num_devices: int, num_nodes: int) -> Strategy:
    if isinstance(strategy, Strategy):
        return strategy
    if not isinstance(strategy, str):
        raise TypeError(
            f"strategy={strategy!r}: expected a name ({', '.join(registry.STRATEGIES.names())}, "
            "or 'auto') or a Strategy instance"
        )
    if strategy == "auto":
        strategy = "single_device" if num_devices == 1 and num_nodes == 1 else "ddp"
        if strategy not in registry.STRATEGIES:
            raise ValueError(
                f"{num_devices} device(s) on {num_nodes} node(s) need a multi-process strategy, "
                "and "
                "the default one, 'ddp', is provided by fab-strategies, which is not installed: "
                'pip install fab-strategies  (or pip install "fab-core[strategies]")'
            )
    instance: Strategy = registry.STRATEGIES.create(strategy)
    return instance
