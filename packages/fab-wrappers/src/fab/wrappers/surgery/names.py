"""Naming modules and parameters by the user's own names.

Hooks always go on the user's original model, never on a wrapper a strategy put around it
(``FabricModule``, ``DistributedDataParallel``, ``torch.compile``), so the names are the ones the
user's model has: ``layers.0.mlp``, not ``module._orig_mod.layers.0.mlp``.
"""

from __future__ import annotations

import fnmatch

from torch import Tensor
from torch.nn import Module

from fab.wrappers.compiled import unwrap_compiled
from fab.wrappers.module import FabricModule

#: The attribute under which probe modules join the user's model.
PROBES_ATTRIBUTE = "surgery_probes"


def original_module(model: Module) -> Module:
    """The user's model under any of Fabric's, torch.compile's or DistributedDataParallel's
    wrappers."""
    from torch.nn.parallel import DistributedDataParallel

    current, _ = unwrap_compiled(model)
    while True:
        if isinstance(current, (FabricModule, DistributedDataParallel)):
            current = current.module
        else:
            return unwrap_compiled(current)[0]


def is_pattern(name: str) -> bool:
    return any(c in name for c in "*?[")


def match_modules(root: Module, pattern: str) -> list[tuple[str, Module]]:
    """The modules of ``root`` that ``pattern`` names: an exact name (``""`` is the root) or a glob
    in which ``*`` matches one name component (``layers.*.mlp``) and ``**`` any number.

    Probe modules are not hooked by patterns. Raises ``LookupError`` with close names when nothing
    matches.
    """
    modules = [
        (name, module)
        for name, module in root.named_modules()
        if not (name == PROBES_ATTRIBUTE or name.startswith(PROBES_ATTRIBUTE + "."))
    ]
    if not is_pattern(pattern):
        for name, module in modules:
            if name == pattern:
                return [(name, module)]
        raise LookupError(_no_match("module", pattern, [n for n, _ in modules]))
    found = [(n, m) for n, m in modules if _glob_match(n, pattern)]
    if not found:
        raise LookupError(_no_match("module", pattern, [n for n, _ in modules]))
    return found


def match_parameters(root: Module, pattern: str) -> list[tuple[str, Tensor]]:
    """The parameters of ``root`` that ``pattern`` names (an exact name or a glob)."""
    parameters: list[tuple[str, Tensor]] = list(root.named_parameters())
    found = [
        (n, p)
        for n, p in parameters
        if (n == pattern if not is_pattern(pattern) else _glob_match(n, pattern))
    ]
    if not found:
        raise LookupError(_no_match("parameter", pattern, [n for n, _ in parameters]))
    return found


def _glob_match(name: str, pattern: str) -> bool:
    parts, wanted = name.split(".") if name else [], pattern.split(".")
    return _match_parts(parts, wanted)


def _match_parts(parts: list[str], wanted: list[str]) -> bool:
    if not wanted:
        return not parts
    head, rest = wanted[0], wanted[1:]
    if head == "**":
        return any(_match_parts(parts[i:], rest) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], head) and _match_parts(parts[1:], rest)


def _no_match(kind: str, pattern: str, names: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(pattern, names, n=5, cutoff=0.5)
    hint = f"; close names: {close}" if close else ""
    shown = names[:12] + (["..."] if len(names) > 12 else [])
    return (
        f"no {kind} of the model is named {pattern!r}{hint}. Names are the model's own "
        f"(model.named_{kind}s()), e.g. {shown}; globs take * for one name component "
        "(layers.*.mlp) and ** for any number"
    )
