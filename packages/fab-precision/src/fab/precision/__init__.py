"""Precisions for fab, under the names users know from Lightning Fabric.

``Precision`` (which is ``32-true``) comes from fab-core. The others are found by fab-core through
the ``fab.precision`` entry points of this distribution, by their user-facing names:

==============================  ===============================================================
``64-true``                     ``DoublePrecision``
``16-mixed``, ``bf16-mixed``    ``MixedPrecision("16-mixed")``, ``MixedPrecision("bf16-mixed")``
``16-true``, ``bf16-true``      ``HalfPrecision("16-true")``, ``HalfPrecision("bf16-true")``
``transformer-engine``          ``TransformerEnginePrecision()`` (bfloat16 weights; needs
                                ``transformer_engine``), ``...-float16``: float16 weights
``bitsandbytes``                ``BitsandbytesPrecision()`` (NF4; needs ``bitsandbytes``)
==============================  ===============================================================
"""

from fab.core.precision import Precision
from fab.precision.amp import MixedPrecision
from fab.precision.bitsandbytes import BitsandbytesPrecision
from fab.precision.double import DoublePrecision
from fab.precision.half import HalfPrecision
from fab.precision.transformer_engine import TransformerEnginePrecision

__all__ = [
    "BitsandbytesPrecision",
    "DoublePrecision",
    "HalfPrecision",
    "MixedPrecision",
    "Precision",
    "TransformerEnginePrecision",
]
