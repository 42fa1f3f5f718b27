"""Model surgery: look into and edit a running model by module name, the same on one process and
under data parallel, and put it back untouched.

The native API is :class:`Surgery`; :class:`FlexModel` and :class:`HookFunction` are a facade
with FlexModel 0.1.0's API. How activations are split over processes is the
:class:`SurgeryLayout` protocol's answer (:class:`LocalLayout`, :class:`DataParallelLayout`, or a
strategy's ``surgery_layout``).
"""

from fab.wrappers.surgery.captures import Captures, DiskSink, Sink
from fab.wrappers.surgery.flexmodel import FlexModel, HookFunction
from fab.wrappers.surgery.hooks import POINTS, EditFunction, Hook, HookContext, Point
from fab.wrappers.surgery.layout import (
    DataParallelLayout,
    LayoutError,
    LocalLayout,
    SurgeryLayout,
    resolve_layout,
)
from fab.wrappers.surgery.names import PROBES_ATTRIBUTE, original_module
from fab.wrappers.surgery.structure import Part
from fab.wrappers.surgery.surgery import ALL, Surgery, hook_state

__all__ = [
    "ALL",
    "POINTS",
    "PROBES_ATTRIBUTE",
    "Captures",
    "DataParallelLayout",
    "DiskSink",
    "EditFunction",
    "FlexModel",
    "Hook",
    "HookContext",
    "HookFunction",
    "LayoutError",
    "LocalLayout",
    "Part",
    "Point",
    "Sink",
    "Surgery",
    "SurgeryLayout",
    "hook_state",
    "original_module",
    "resolve_layout",
]
