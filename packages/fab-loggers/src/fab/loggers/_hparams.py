"""Hyperparameters as plain data: from a Namespace or mapping, flattened for the loggers that
want flat keys, and written as YAML without needing PyYAML."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import tempfile
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fab.core.loggers import to_number


def params_to_dict(params: Mapping[str, Any] | Namespace | Any) -> dict[str, Any]:
    """A plain dict of ``params``: a mapping, an ``argparse.Namespace`` or a dataclass."""
    if isinstance(params, Namespace):
        return dict(vars(params))
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        return dataclasses.asdict(params)
    if isinstance(params, Mapping):
        return {str(k): v for k, v in params.items()}
    raise TypeError(
        f"hyperparameters must be a mapping, a Namespace or a dataclass, got {type(params)}"
    )


def flatten(params: Mapping[str, Any], separator: str = "/") -> dict[str, Any]:
    """Nested mappings and Namespaces as one level: ``{"opt": {"lr": 1}}`` -> ``{"opt/lr": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Namespace):
            value = vars(value)
        if isinstance(value, Mapping) and value:
            for sub_key, sub_value in flatten(value, separator).items():
                flat[f"{key}{separator}{sub_key}"] = sub_value
        else:
            flat[str(key)] = value
    return flat


def to_yaml(value: Any, indent: int = 0) -> str:
    """``value`` as block-style YAML that YAML 1.1 and 1.2 readers parse to the same data.

    Mappings, lists and tuples nest; str, int, float, bool and None are scalars; a one-element
    tensor is its number; anything else is written as its ``str``.
    """
    pad = "  " * indent
    value = _plain(value)
    if isinstance(value, Mapping):
        if not value:
            return "{}\n" if indent == 0 else " {}\n"
        lines = []
        for key, item in value.items():
            item = _plain(item)
            head = f"{pad}{_string(str(key))}:"
            if isinstance(item, Mapping | list | tuple) and item:
                lines.append(f"{head}\n{to_yaml(item, indent + 1)}")
            else:
                lines.append(f"{head} {_scalar(item)}\n")
        return "".join(lines)
    if isinstance(value, list | tuple):
        if not value:
            return "[]\n" if indent == 0 else " []\n"
        lines = []
        for item in value:
            item = _plain(item)
            if isinstance(item, Mapping | list | tuple) and item:
                lines.append(f"{pad}-\n{to_yaml(item, indent + 1)}")
            else:
                lines.append(f"{pad}- {_scalar(item)}\n")
        return "".join(lines)
    return _scalar(value) + "\n"


def _plain(value: Any) -> Any:
    if isinstance(value, Namespace):
        return vars(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    try:
        return to_number(value)
    except ValueError:  # a tensor of several elements
        return str(value)


def _scalar(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, list | tuple):
        return "[]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value)
        if "e" in text and "." not in text:  # YAML 1.1 needs a dot: 1e-05 -> 1.0e-05
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent}"
        return text
    return _string(str(value))


#: Words that YAML 1.1 readers take for booleans or null when they are not quoted.
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-/]*$")


def _string(text: str) -> str:
    """``text`` plain where no reader could take it for something else, else double-quoted (a
    JSON string is a valid YAML double-quoted scalar)."""
    if _PLAIN.match(text) and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text)


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``path`` through a temporary file in the same folder and a rename, so that a reader
    sees the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
