"""FLOPs: counting a model's, and the peak a device offers (for model FLOPs utilization)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.nn import Module

from fab.core.utilities.rank_zero import rank_zero_warn


def measure_flops(
    model: Module,
    forward_fn: Callable[[], Tensor],
    loss_fn: Callable[[Tensor], Tensor] | None = None,
) -> int:
    """The FLOPs of one ``forward_fn()`` call, plus ``loss_fn`` and the backward pass if given.

    Counted by ``torch.utils.flop_counter.FlopCounterMode`` (matrix multiplications,
    convolutions and attention; element-wise operations count 0). Build the model and its inputs
    on the meta device to count without allocating or computing anything::

        with torch.device("meta"):
            model = GPT(config)
            x = torch.randint(0, 50304, (1, 1024))
        flops_per_batch = measure_flops(model, lambda: model(x), lambda y: y.sum())
    """
    if not isinstance(model, Module):
        raise TypeError(f"measure_flops takes a torch.nn.Module, got {type(model).__name__}")
    from torch.utils.flop_counter import FlopCounterMode  # imports sympy: only when used

    counter = FlopCounterMode(display=False)
    with counter:
        output = forward_fn()
        if loss_fn is not None:
            loss_fn(output).backward()  # type: ignore[no-untyped-call]
    return int(counter.get_total_flops())


# Dense (no sparsity) peak FLOP/s per GPU, from NVIDIA's data sheets. Keys: fp64 (tensor cores
# where the chip has them for fp64), fp32 (CUDA cores), tf32, bf16, fp16, fp8 and int8 (tensor
# cores).
# fmt: off
_CUDA_FLOPS: dict[str, dict[str, float]] = {
    # Blackwell
    "b200": {
        "fp64": 37e12, "tf32": 1.125e15, "bf16": 2.25e15, "fp16": 2.25e15, "fp8": 4.5e15,
        "int8": 4.5e15,
    },
    # Hopper (GH200 has the H200 SXM's compute; the H200 has the H100's, with more memory)
    "h200 sxm": {
        "fp64": 67e12, "fp32": 66.9e12, "tf32": 494.7e12, "bf16": 989.4e12, "fp16": 989.4e12,
        "fp8": 1978.9e12, "int8": 1978.9e12,
    },
    "h200 nvl": {
        "fp64": 60e12, "fp32": 60e12, "tf32": 417.5e12, "bf16": 835.5e12, "fp16": 835.5e12,
        "fp8": 1670.5e12, "int8": 1670.5e12,
    },
    "h100 sxm": {
        "fp64": 67e12, "fp32": 66.9e12, "tf32": 494.7e12, "bf16": 989.4e12, "fp16": 989.4e12,
        "fp8": 1978.9e12, "int8": 1978.9e12,
    },
    "h100 nvl": {
        "fp64": 60e12, "fp32": 60e12, "tf32": 417.5e12, "bf16": 835.5e12, "fp16": 835.5e12,
        "fp8": 1670.5e12, "int8": 1670.5e12,
    },
    "h100 pcie": {
        "fp64": 51.2e12, "fp32": 51.2e12, "tf32": 378e12, "bf16": 756e12, "fp16": 756e12,
        "fp8": 1513e12, "int8": 1513e12,
    },
    # Ada
    "l40s": {
        "fp32": 91.6e12, "tf32": 183e12, "bf16": 362.05e12, "fp16": 362.05e12, "fp8": 733e12,
        "int8": 733e12,
    },
    "l40": {
        "fp32": 90.5e12, "tf32": 90.5e12, "bf16": 181e12, "fp16": 181e12, "fp8": 362e12,
        "int8": 362e12,
    },
    "l4": {
        "fp32": 30.3e12, "tf32": 60e12, "bf16": 121e12, "fp16": 121e12, "fp8": 242.5e12,
        "int8": 242.5e12,
    },
    # Ampere (A100 SXM and PCIe have the same peaks)
    "a100": {
        "fp64": 19.5e12, "fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12, "fp16": 312e12,
        "int8": 624e12,
    },
    "a10": {"fp32": 31.2e12, "tf32": 62.5e12, "bf16": 125e12, "fp16": 125e12, "int8": 250e12},
    # Volta and Turing (no bf16, no tf32)
    "v100 sxm": {"fp64": 7.8e12, "fp32": 15.7e12, "fp16": 125e12},
    "v100 pcie": {"fp64": 7e12, "fp32": 14e12, "fp16": 112e12},
    "v100s pcie": {"fp64": 8.2e12, "fp32": 16.4e12, "fp16": 130e12},
    "t4": {"fp32": 8.1e12, "fp16": 65e12, "int8": 130e12},
}
# fmt: on

_DTYPE_KEYS: dict[torch.dtype, str] = {
    torch.float64: "fp64",
    torch.float32: "fp32",
    torch.bfloat16: "bf16",
    torch.float16: "fp16",
    torch.int8: "int8",
    **{
        dtype: "fp8"
        for name in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz")
        if isinstance(dtype := getattr(torch, name, None), torch.dtype)
    },
}
_STRING_KEYS = {"tfloat32": "tf32", "float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def _chip(device_name: str) -> str | None:
    """The ``_CUDA_FLOPS`` key of a CUDA device name ("NVIDIA H100 80GB HBM3" -> "h100 sxm")."""
    words = set(re.split(r"[^a-z0-9]+", device_name.lower()))
    if "gh200" in words or "h200" in words:
        return "h200 nvl" if "nvl" in words else "h200 sxm"
    if "h100" in words:
        if "nvl" in words:
            return "h100 nvl"
        return "h100 pcie" if {"pcie", "hbm2e"} & words else "h100 sxm"
    if "v100" in words:
        return "v100 pcie" if "pcie" in words else "v100 sxm"
    if "v100s" in words:
        return "v100s pcie"
    for chip in ("b200", "l40s", "l40", "l4", "a100", "a10", "t4"):
        if chip in words:
            return chip
    return None


def _dtype_key(dtype: torch.dtype | str) -> str | None:
    if isinstance(dtype, torch.dtype):
        return _DTYPE_KEYS.get(dtype)
    key = dtype.lower()
    return _STRING_KEYS.get(key, key)


def get_available_flops(device: torch.device | str, dtype: torch.dtype | str) -> int | None:
    """The peak dense FLOP/s of ``device`` computing in ``dtype``: an upper bound that only large
    matrix multiplications approach. None, with a warning on rank 0, when it is not known (CPU,
    a GPU not in the table, a dtype the GPU has no peak for).

    ``dtype`` is a torch dtype or one of "tf32" ("tfloat32"), "fp8", "int8". ``torch.float32`` on
    an Ampere or later GPU counts as tf32 unless ``torch.get_float32_matmul_precision()`` is
    "highest". Known GPUs: B200, H200 (SXM, NVL), GH200, H100 (SXM, PCIe, NVL), L40S, L40, L4,
    A100, A10, V100, V100S, T4.
    """
    device = torch.device(device)
    key = _dtype_key(dtype)
    if device.type != "cuda":
        rank_zero_warn(
            f"peak FLOPs are unknown for {device.type!r} devices; MFU is not computed", stacklevel=4
        )
        return None
    name = torch.cuda.get_device_name(device)
    chip = _chip(name)
    if chip is None:
        rank_zero_warn(
            f"peak FLOPs are unknown for the GPU {name!r}; MFU is not computed", stacklevel=4
        )
        return None
    if (
        key == "fp32"
        and torch.get_float32_matmul_precision() != "highest"
        and torch.cuda.get_device_capability(device) >= (8, 0)  # Ampere and later have tf32
    ):
        key = "tf32"
    table = _CUDA_FLOPS[chip]
    if key not in table:
        rank_zero_warn(
            f"peak FLOPs of {name!r} are unknown for {dtype}; known: {', '.join(table)}; "
            "MFU is not computed",
            stacklevel=4,
        )
        return None
    return int(table[key])


def compute_dtype(precision: Any) -> torch.dtype:
    """The dtype a precision plugin computes matrix multiplications in (for peak FLOPs).

    A plugin can say it with a ``compute_dtype`` (or ``dtype``) attribute; otherwise its
    ``precision`` name decides: "bf16-*" -> bfloat16, "16-*" -> float16, "64-*" -> float64,
    "transformer-engine*" -> float8, anything else -> float32.
    """
    for attribute in ("compute_dtype", "dtype"):
        value = getattr(precision, attribute, None)
        if isinstance(value, torch.dtype):
            return value
    name = str(getattr(precision, "precision", "32-true"))
    if name.startswith("transformer-engine"):
        fp8: torch.dtype = getattr(torch, "float8_e4m3fn", torch.int8)
        return fp8
    if "bf16" in name:
        return torch.bfloat16
    if name.startswith("16"):
        return torch.float16
    if name.startswith("64"):
        return torch.float64
    return torch.float32
