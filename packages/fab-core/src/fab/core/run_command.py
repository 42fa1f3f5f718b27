"""``fab run SCRIPT [ARGS]``: start a script on every device of this machine (and on every node of
a multi-node run) through torch's launcher, ``torch.distributed.run`` (torchrun).

The options a user gives (``--accelerator``, ``--strategy``, ``--devices``, ``--num-nodes``,
``--precision``) reach ``Fabric(...)`` in every process through the ``FAB_CLI_*`` variables
(:mod:`fab.core.cli_settings`); their choices come from the plugin registry, so a third-party
accelerator, strategy or precision is selectable here too. torchrun stops every process when one
fails and exits non-zero.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

from fab.core import cli_settings, registry
from fab.core.launchers import LAUNCHER_PID_ENV
from fab.core.utilities.network import PortInUseError, ensure_port_free, find_free_port

#: torchrun's and Lightning's rendezvous port for a run of several nodes.
MULTI_NODE_PORT = 29400


def add_parser(commands: Any) -> None:
    """Add ``run`` to the subcommands of the ``fab`` parser."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "run",
        help="run a script on several devices or nodes (torchrun underneath)",
        description=(
            "Start SCRIPT once per device (torch.distributed.run underneath). The options reach "
            "Fabric(...) in every process; a value the script gives Fabric differently is an "
            "error."
        ),
    )
    # The choices are what is installed; they are checked in run() rather than by argparse, so
    # that a name whose package is missing gets the registry's "pip install" hint.
    parser.add_argument(
        "--accelerator",
        metavar=_choices(["auto", *registry.ACCELERATORS.names()]),
        help="the hardware to run on",
    )
    parser.add_argument(
        "--strategy",
        metavar=_choices(["auto", *registry.STRATEGIES.names()]),
        help="how the processes work together",
    )
    parser.add_argument(
        "--devices",
        help=(
            "devices per node: a count, 'auto', or, on a GPU, -1 (all) or indices like '0,1' "
            "(default: 1)"
        ),
    )
    parser.add_argument("--num-nodes", type=_positive_int, help="machines of the run (default: 1)")
    parser.add_argument(
        "--node-rank", type=_non_negative_int, default=0, help="this machine's index (default: 0)"
    )
    parser.add_argument(
        "--main-address",
        default="127.0.0.1",
        help="address of node 0, where the processes meet (default: 127.0.0.1)",
    )
    parser.add_argument(
        "--main-port",
        type=_port,
        help=(
            "port on node 0 where the processes meet (default: a free port on one machine, "
            f"{MULTI_NODE_PORT} on several)"
        ),
    )
    parser.add_argument(
        "--precision", metavar=_choices(installed_precisions()), help="the numeric precision"
    )
    parser.add_argument("script", help="the Python script to run")
    parser.add_argument("script_args", nargs=argparse.REMAINDER, help="the script's arguments")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """The ``fab run`` command: check what can be checked here, then hand over to torchrun."""
    script = Path(args.script)
    if not script.is_file():
        print(f"fab run: the script {args.script!r} does not exist", file=sys.stderr)
        return 2
    settings = {
        name: str(value)
        for name, value in (
            ("accelerator", args.accelerator),
            ("strategy", args.strategy),
            ("devices", args.devices),
            ("num_nodes", args.num_nodes),
            ("precision", args.precision),
        )
        if value is not None
    }
    num_nodes = args.num_nodes or 1
    if args.node_rank >= num_nodes:
        print(
            f"fab run: --node-rank {args.node_rank} is not below --num-nodes {num_nodes}",
            file=sys.stderr,
        )
        return 2
    try:
        _require_installed(args.accelerator, args.strategy, args.precision)
        num_processes = processes_per_node(args.accelerator or "auto", args.devices or "1")
        if args.strategy in (None, "auto") and num_processes * num_nodes > 1:
            _require_multi_process_strategy(num_processes, num_nodes)
    except (ValueError, TypeError, RuntimeError) as err:
        print(f"fab run: {err}", file=sys.stderr)
        return 2
    port = args.main_port
    if port is None:
        port = find_free_port() if num_nodes == 1 else MULTI_NODE_PORT
    if args.node_rank == 0:
        try:
            ensure_port_free(
                args.main_address,
                port,
                hint="Pass another --main-port (on one machine, leave it out and fab picks a "
                "free one).",
            )
        except PortInUseError as err:
            print(f"fab run: {err}", file=sys.stderr)
            return 2
    os.environ.update(cli_settings.cli_variables(settings))
    os.environ[cli_settings.STARTED_BY_FAB_RUN] = "1"
    # The workers are this process's children: they end with it, even if it is killed outright.
    os.environ[LAUNCHER_PID_ENV] = str(os.getpid())
    torchrun_args = [
        f"--nproc-per-node={num_processes}",
        f"--nnodes={num_nodes}",
        f"--node-rank={args.node_rank}",
        f"--master-addr={args.main_address}",
        f"--master-port={port}",
        str(script),
        *args.script_args,
    ]
    return _torchrun(torchrun_args, num_processes)


def installed_precisions() -> list[str]:
    """The precision values ``fab run`` accepts: the installed names and the aliases of them."""
    names = set(registry.PRECISION.names())
    aliases = {str(alias) for alias, name in _precision_aliases().items() if name in names}
    return sorted(names | aliases)


def _require_installed(
    accelerator: str | None, strategy: str | None, precision: str | None
) -> None:
    """Raise the registry's error (installed names, and the package to install where one is
    known), prefixed with the option, for a name that no installed plugin provides."""
    checks = (
        ("--accelerator", accelerator, registry.ACCELERATORS),
        ("--strategy", strategy, registry.STRATEGIES),
        ("--precision", _precision_aliases().get(precision or "", precision), registry.PRECISION),
    )
    given = {"--accelerator": accelerator, "--strategy": strategy, "--precision": precision}
    for option, name, plugins in checks:
        if name in (None, "auto") or name in plugins:
            continue
        try:
            plugins.entry(name)
        except registry.PluginError as err:
            raise ValueError(f"{option} {given[option]}: {err}") from None


def _require_multi_process_strategy(num_processes: int, num_nodes: int) -> None:
    """Fabric(strategy="auto") takes 'ddp' for several processes: check it is there, so that a
    missing fab-strategies fails once, here, and not in every process."""
    try:
        registry.STRATEGIES.entry("ddp")
    except registry.PluginError as err:
        raise ValueError(
            f"{num_processes} process(es) per node on {num_nodes} node(s) need a multi-process "
            f"strategy, and strategy='auto' takes 'ddp': {err}"
        ) from None


def _choices(names: list[str]) -> str:
    return "{" + ",".join(names) + "}"


def processes_per_node(accelerator: str, devices: str) -> int:
    """How many processes ``devices`` means on ``accelerator`` (1 for one device)."""
    from fab.core.connector import resolve_accelerator

    instance = resolve_accelerator(accelerator)
    value: Any = cli_settings.parse_value("devices", devices)
    if value == "auto":
        value = instance.auto_device_count()
    return len(instance.get_parallel_devices(instance.parse_devices(value)))


def _torchrun(torchrun_args: list[str], num_processes: int) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun_main

    if num_processes > 1 and "OMP_NUM_THREADS" not in os.environ:
        # torchrun's own default, set here so that it does not print its banner about it.
        os.environ["OMP_NUM_THREADS"] = "1"
    try:
        torchrun_main(torchrun_args)
    except ChildFailedError as err:
        # Each rank printed its own traceback above; say which failed, once, at the end.
        for rank, failure in sorted(err.failures.items()):
            code = failure.exitcode
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            print(
                f"fab run: rank {rank} (pid {failure.pid}) {how}; every process was stopped",
                file=sys.stderr,
            )
        return 1
    except SignalException as err:
        # Ctrl-C (SIGINT) or a kill (SIGTERM, SIGHUP): torchrun has stopped every process.
        print(f"fab run: stopped by {err.sigval.name}; every process was stopped", file=sys.stderr)
        return 128 + int(err.sigval)
    except KeyboardInterrupt:
        print("fab run: interrupted; every process was stopped", file=sys.stderr)
        return 128 + signal.SIGINT
    return 0


def _precision_aliases() -> dict[str, str]:
    """Lightning's precision aliases, as a command line spells them (``"16"``: 16-mixed)."""
    from fab.core.precision_names import PRECISION_ALIASES

    return {str(alias): name for alias, name in PRECISION_ALIASES.items()}


def _positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def _non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def _port(text: str) -> int:
    value = _int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1-65535)")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
