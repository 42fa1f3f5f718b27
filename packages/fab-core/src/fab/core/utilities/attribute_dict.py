"""A dict whose keys are also attributes (hyperparameters, configs)."""

from __future__ import annotations

from typing import Any


class _MissingKeyError(AttributeError, KeyError):
    """Deleting a missing attribute: an AttributeError (``delattr``), and a KeyError as in
    Lightning."""


class AttributeDict(dict[str, Any]):
    """A ``dict`` whose items can also be read, set and deleted as attributes.

    ``hparams.lr`` is ``hparams["lr"]``; a missing key raises ``AttributeError`` through attribute
    access and ``KeyError`` through indexing. Keys that are dict methods (``items``, ``keys``, ...)
    stay reachable only by indexing. The repr lists one aligned ``"key": value`` row per item,
    sorted by key.

    Example::

        >>> hparams = AttributeDict(lr=0.1, batch_size=32)
        >>> hparams.lr
        0.1
        >>> hparams.epochs = 3
        >>> hparams
        "batch_size": 32
        "epochs":     3
        "lr":         0.1
    """

    __slots__ = ()

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(
                f"{type(self).__name__} has no key {key!r}; it has {sorted(map(str, self))}"
            ) from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def __delattr__(self, key: str) -> None:
        try:
            del self[key]
        except KeyError:
            raise _MissingKeyError(f"{type(self).__name__} has no key {key!r}") from None

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *(k for k in self if isinstance(k, str))})

    def __repr__(self) -> str:
        if not self:
            return f"{type(self).__name__}()"
        names = {key: f'"{key}":' for key in self}
        width = max(len(name) for name in names.values())
        rows = sorted(names.items(), key=lambda item: str(item[0]))
        return "\n".join(f"{name:<{width}} {self[key]!r}" for key, name in rows)
