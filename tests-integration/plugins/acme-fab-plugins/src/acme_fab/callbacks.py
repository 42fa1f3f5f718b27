"""The ``acme_counter`` callback factory.

Registered as ``acme_counter`` in the ``fab.callbacks`` entry-point group, so fab calls
``make_counter()`` once for every ``Fabric`` in a process where this distribution is installed.
That is why the callback is harmless: it only counts the ``on_acme_count`` hook, which nothing but
ACME's own code calls.
"""

from __future__ import annotations

from typing import ClassVar


class AcmeCounter:
    """Counts ``fabric.call("on_acme_count", n=...)``, per instance and for the whole process."""

    #: How many counters ``make_counter`` created in this process (one per Fabric).
    created: ClassVar[int] = 0
    #: The sum of every counter's count in this process.
    total: ClassVar[int] = 0

    def __init__(self) -> None:
        self.count = 0

    def on_acme_count(self, n: int = 1) -> None:
        self.count += n
        AcmeCounter.total += n


def make_counter() -> AcmeCounter:
    """The zero-argument factory fab calls for every Fabric."""
    AcmeCounter.created += 1
    return AcmeCounter()
