"""Warnings that may be false positives, and the switch that silences them (Lightning's
``lightning.fabric.utilities.warnings``)."""

from __future__ import annotations

import os
import warnings

__all__ = ["PossibleUserWarning", "disable_possible_user_warnings"]


class PossibleUserWarning(UserWarning):
    """A warning about a possible mistake that may be a false positive (a setting that is
    usually wrong but can be intended)."""


def disable_possible_user_warnings(module: str = "") -> None:
    """Ignore ``PossibleUserWarning``s, from every module or only from ``module`` (a regular
    expression matched against the start of the warning's module name, as in
    :func:`warnings.filterwarnings`)."""
    warnings.filterwarnings("ignore", category=PossibleUserWarning, module=module)


#: Lightning's switch: ``POSSIBLE_USER_WARNINGS=off`` (or ``0``) silences them for the process.
if os.environ.get("POSSIBLE_USER_WARNINGS", "").strip().lower() in ("0", "off"):
    disable_possible_user_warnings()
