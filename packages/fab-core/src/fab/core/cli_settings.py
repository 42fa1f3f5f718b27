"""The settings ``fab run`` hands to the processes it starts, and how ``Fabric(...)`` merges them.

``fab run --devices 2 train.py`` sets ``FAB_CLI_DEVICES=2`` (and the other ``FAB_CLI_*``
variables it was given) in every process. ``Fabric(...)`` takes a setting from there when the code
leaves the argument at its default; when the code gives another value, the two disagree about the
run and ``Fabric(...)`` raises :class:`CLIConflictError` instead of silently picking one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from fab.core.precision_names import normalize_precision

#: ``Fabric`` argument -> (variable, ``fab run`` option).
CLI_VARIABLES: dict[str, tuple[str, str]] = {
    "accelerator": ("FAB_CLI_ACCELERATOR", "--accelerator"),
    "strategy": ("FAB_CLI_STRATEGY", "--strategy"),
    "devices": ("FAB_CLI_DEVICES", "--devices"),
    "num_nodes": ("FAB_CLI_NUM_NODES", "--num-nodes"),
    "precision": ("FAB_CLI_PRECISION", "--precision"),
}
#: The values of ``Fabric(...)``'s arguments that mean "not given".
DEFAULTS: dict[str, Any] = {
    "accelerator": "auto",
    "strategy": "auto",
    "devices": "auto",
    "num_nodes": 1,
    "precision": None,
}


#: Set by ``fab run`` in every process it starts.
STARTED_BY_FAB_RUN = "FAB_CLI_USED"


def started_by_fab_run() -> bool:
    """True in a process that ``fab run`` started (its process group can be set up at once)."""
    return os.environ.get(STARTED_BY_FAB_RUN) == "1"


class CLIConflictError(ValueError):
    """``Fabric(...)`` was given a value that ``fab run`` was given differently."""


def cli_variables(settings: Mapping[str, str]) -> dict[str, str]:
    """The variables ``fab run`` sets for ``settings`` (Fabric argument name -> value)."""
    return {CLI_VARIABLES[name][0]: value for name, value in settings.items()}


def from_environment() -> dict[str, str]:
    """The settings of the ``fab run`` that started this process (empty outside one)."""
    found: dict[str, str] = {}
    for name, (variable, _) in CLI_VARIABLES.items():
        value = os.environ.get(variable, "").strip()
        if value:
            found[name] = value
    return found


def merge(name: str, in_code: Any, from_cli: str | None) -> Any:
    """The value of argument ``name`` for this run: the command line's where the code left the
    default, the code's where the command line said nothing; both when they agree."""
    if from_cli is None:
        return in_code
    cli_value = parse_value(name, from_cli)
    default = DEFAULTS[name]
    if _is_default(in_code, default) or cli_value == "auto":
        return cli_value if not _is_default(cli_value, default) else in_code
    if _same(name, in_code, cli_value):
        return in_code
    option = CLI_VARIABLES[name][1]
    raise CLIConflictError(
        f"Fabric({name}={in_code!r}) conflicts with `fab run {option} {from_cli}`: the command "
        f"line and the code must agree. Remove {name}= from Fabric(...) to take the command "
        f"line's value, or change {option}"
    )


def _is_default(value: Any, default: Any) -> bool:
    """Equal to the default and of its type (``1`` is num_nodes' default, ``True`` is not)."""
    return value is default or (type(value) is type(default) and value == default)


def parse_value(name: str, raw: str) -> Any:
    """A command-line string as the value ``Fabric`` accepts for that argument."""
    if name == "num_nodes":
        return int(raw)
    if name in ("devices", "precision") and raw.lstrip("-").isdigit():
        return int(raw)
    return raw


def _same(name: str, in_code: Any, cli_value: Any) -> bool:
    if name == "precision":
        try:
            return bool(normalize_precision(in_code) == normalize_precision(cli_value))
        except ValueError:  # a Precision instance, or a value Fabric refuses itself
            return False
    if name == "devices":
        return _devices_text(in_code) == _devices_text(cli_value)
    return bool(in_code == cli_value)


def _devices_text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value).replace(" ", "").rstrip(",")
