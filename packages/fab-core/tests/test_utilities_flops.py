"""measure_flops, get_available_flops and the compute dtype of a precision."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import torch

from fab.core.precision.precision import Precision
from fab.core.utilities import get_available_flops, measure_flops, rank_zero_only
from fab.core.utilities.flops import compute_dtype

CUDA = torch.device("cuda", 0)


@pytest.fixture(autouse=True)
def _rank_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rank_zero_only, "rank", 0)


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    """Pretend cuda:0 is the GPU named ``gpu.name`` with compute capability ``gpu.capability``."""
    fake = SimpleNamespace(name="NVIDIA H100 80GB HBM3", capability=(9, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: fake.name)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: fake.capability)
    previous = torch.get_float32_matmul_precision()
    yield fake
    torch.set_float32_matmul_precision(previous)


# -- measure_flops ----------------------------------------------------------------------------


def test_measure_flops_counts_a_linear_forward_on_the_meta_device() -> None:
    with torch.device("meta"):
        model = torch.nn.Linear(32, 16)
        x = torch.randn(4, 32)
    assert measure_flops(model, lambda: model(x)) == 2 * 4 * 32 * 16


def test_measure_flops_with_a_loss_adds_the_backward() -> None:
    with torch.device("meta"):
        model = torch.nn.Linear(32, 16)
        x = torch.randn(4, 32)
    forward = 2 * 4 * 32 * 16
    # the weight's gradient costs one more matmul; x needs no gradient
    assert measure_flops(model, lambda: model(x), lambda y: y.sum()) == 2 * forward
    x.requires_grad_(True)
    assert measure_flops(model, lambda: model(x), lambda y: y.sum()) == 3 * forward


def test_measure_flops_returns_an_int_and_works_on_real_tensors() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    x = torch.randn(3, 8)
    flops = measure_flops(model, lambda: model(x))
    assert type(flops) is int
    assert flops == 2 * 3 * 8 * 8 + 2 * 3 * 8 * 2


def test_measure_flops_rejects_what_is_not_a_module() -> None:
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        measure_flops(lambda: None, lambda: torch.zeros(1))  # type: ignore[arg-type]


# -- get_available_flops ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "dtype", "expected"),
    [
        ("NVIDIA H100 80GB HBM3", torch.bfloat16, 989.4e12),
        ("NVIDIA H100 80GB HBM3", torch.float16, 989.4e12),
        ("NVIDIA H100 PCIe", torch.bfloat16, 756e12),
        ("NVIDIA H100 NVL", torch.bfloat16, 835.5e12),
        ("NVIDIA H200", torch.bfloat16, 989.4e12),
        ("NVIDIA H200 NVL", "tf32", 417.5e12),
        ("NVIDIA GH200 480GB", torch.bfloat16, 989.4e12),
        ("NVIDIA A100-SXM4-80GB", torch.bfloat16, 312e12),
        ("NVIDIA A100 80GB PCIe", "tfloat32", 156e12),
        ("NVIDIA L40S", torch.float16, 362.05e12),
        ("NVIDIA L4", torch.bfloat16, 121e12),
        ("Tesla V100-SXM2-16GB", torch.float16, 125e12),
        ("Tesla T4", torch.float16, 65e12),
        ("NVIDIA B200", torch.bfloat16, 2.25e15),
    ],
)
def test_known_gpus_give_their_dense_peak(
    gpu: SimpleNamespace, name: str, dtype: torch.dtype | str, expected: float
) -> None:
    gpu.name = name
    assert get_available_flops(CUDA, dtype) == int(expected)


def test_float32_counts_as_tf32_on_ampere_unless_precision_is_highest(gpu: SimpleNamespace) -> None:
    gpu.name, gpu.capability = "NVIDIA A100-SXM4-40GB", (8, 0)
    torch.set_float32_matmul_precision("highest")
    assert get_available_flops(CUDA, torch.float32) == int(19.5e12)
    torch.set_float32_matmul_precision("high")
    assert get_available_flops(CUDA, torch.float32) == int(156e12)


def test_float32_stays_float32_before_ampere(gpu: SimpleNamespace) -> None:
    gpu.name, gpu.capability = "Tesla V100-PCIE-32GB", (7, 0)
    torch.set_float32_matmul_precision("high")
    assert get_available_flops(CUDA, torch.float32) == int(14e12)


def test_an_unknown_gpu_gives_none_and_a_warning(gpu: SimpleNamespace) -> None:
    gpu.name = "CocoNut 9000"
    with pytest.warns(UserWarning, match="unknown for the GPU 'CocoNut 9000'"):
        assert get_available_flops(CUDA, torch.bfloat16) is None


def test_a_dtype_the_gpu_has_no_peak_for_gives_none_and_a_warning(gpu: SimpleNamespace) -> None:
    gpu.name = "Tesla T4"
    with pytest.warns(UserWarning, match="unknown for torch.bfloat16"):
        assert get_available_flops(CUDA, torch.bfloat16) is None


def test_the_cpu_gives_none_and_a_warning() -> None:
    with pytest.warns(UserWarning, match="unknown for 'cpu' devices"):
        assert get_available_flops(torch.device("cpu"), torch.float32) is None
    with pytest.warns(UserWarning, match="unknown"):
        assert get_available_flops("cpu", torch.bfloat16) is None


def test_the_warning_is_rank_zero_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import warnings

    monkeypatch.setattr(rank_zero_only, "rank", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert get_available_flops("cpu", torch.float32) is None


# -- compute_dtype ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "dtype"),
    [
        ("32-true", torch.float32),
        ("bf16-mixed", torch.bfloat16),
        ("bf16-true", torch.bfloat16),
        ("16-mixed", torch.float16),
        ("16-true", torch.float16),
        ("64-true", torch.float64),
        ("transformer-engine", torch.float8_e4m3fn),
    ],
)
def test_the_compute_dtype_follows_the_precision_name(name: str, dtype: torch.dtype) -> None:
    precision = type("P", (Precision,), {"precision": name})()
    assert compute_dtype(precision) is dtype


def test_a_precision_can_state_its_compute_dtype() -> None:
    precision = type("P", (Precision,), {"precision": "custom", "compute_dtype": torch.float16})()
    assert compute_dtype(precision) is torch.float16
