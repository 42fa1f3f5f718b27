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
    accelerators = ["auto", *registry.ACCELERATORS.names()]
    strategies = ["auto", *registry.STRATEGIES.names()]
    precisions = sorted(
        {*registry.PRECISION.names(), *(str(a) for a in _precision_aliases())}, key=str
    )
    parser.add_argument("--accelerator", choices=accelerators, help="the hardware to run on")
    parser.add_argument("--strategy", choices=strategies, help="how the processes work together")
    parser.add_argument(
        "--devices",
        help="devices per node: a count, 'auto', -1 (all) or indices like '0,1' (default: 1)",
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
    parser.add_argument("--precision", choices=precisions, help="the numeric precision")
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
    try:
        num_processes = processes_per_node(args.accelerator or "auto", args.devices or "1")
    except (ValueError, TypeError, RuntimeError) as err:
        print(f"fab run: {err}", file=sys.stderr)
        return 2
    if args.node_rank >= num_nodes:
        print(
            f"fab run: --node-rank {args.node_rank} is not below --num-nodes {num_nodes}",
            file=sys.stderr,
        )
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
    return _torchrun(torchrun_args)


def processes_per_node(accelerator: str, devices: str) -> int:
    """How many processes ``devices`` means on ``accelerator`` (1 for one device)."""
    from fab.core.connector import resolve_accelerator

    instance = resolve_accelerator(accelerator)
    value: Any = cli_settings.parse_value("devices", devices)
    if value == "auto":
        value = instance.auto_device_count()
    return len(instance.get_parallel_devices(instance.parse_devices(value)))


def _torchrun(torchrun_args: list[str]) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun_main

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
    except KeyboardInterrupt:
        return 130
    return 0


def _precision_aliases() -> list[str | int]:
    from fab.core.connector import PRECISION_ALIASES

    return list(PRECISION_ALIASES)


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
