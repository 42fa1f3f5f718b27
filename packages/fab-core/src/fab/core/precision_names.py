"""Precision names: the aliases Lightning Fabric accepts and their canonical names.

Shared by the connector (``Fabric(precision=...)``) and ``fab run``'s command-line settings, so
neither imports the other.
"""

from __future__ import annotations

from fab.core import registry

#: Aliases Lightning Fabric accepts for ``precision``, mapped to the canonical names.
PRECISION_ALIASES: dict[str | int, str] = {
    64: "64-true",
    "64": "64-true",
    32: "32-true",
    "32": "32-true",
    16: "16-mixed",
    "16": "16-mixed",
    "bf16": "bf16-mixed",
}
#: Every precision name Fabric accepts, whether or not the package providing it is installed.
CANONICAL_PRECISION = (
    "64-true",
    "32-true",
    "16-mixed",
    "bf16-mixed",
    "16-true",
    "bf16-true",
    "transformer-engine",
    "transformer-engine-float16",
)


def normalize_precision(precision: object) -> str:
    """The canonical name of a precision value (``16`` is ``"16-mixed"``, None ``"32-true"``).

    A string is returned as it is (the registry decides whether a plugin has that name); any
    other value that is not an alias (``17``, ``True``, ``16.0``) raises ``ValueError``, as
    Lightning Fabric does, naming the accepted values.
    """
    if precision is None:
        return "32-true"
    if isinstance(precision, str | int) and not isinstance(precision, bool):
        if precision in PRECISION_ALIASES:
            return PRECISION_ALIASES[precision]
        if isinstance(precision, str):
            return precision
    raise ValueError(invalid_precision_message(precision))


def invalid_precision_message(precision: object) -> str:
    """What ``Fabric(precision=...)`` says about a value it does not accept: the value, the
    accepted names and aliases, and the names that installed third-party plugins add."""
    accepted = ", ".join(repr(p) for p in CANONICAL_PRECISION)
    aliases = ", ".join(repr(a) for a in PRECISION_ALIASES)
    extra = sorted(set(registry.PRECISION.names()) - set(CANONICAL_PRECISION))
    plugins = f", the installed plugins' {', '.join(map(repr, extra))}" if extra else ""
    return (
        f"precision={precision!r} is not supported; accepted: {accepted} (aliases {aliases})"
        f"{plugins}, or a Precision instance"
    )


__all__ = [
    "CANONICAL_PRECISION",
    "PRECISION_ALIASES",
    "invalid_precision_message",
    "normalize_precision",
]
