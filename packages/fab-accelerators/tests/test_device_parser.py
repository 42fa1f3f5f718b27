"""Every form of ``devices`` that GPU accelerators accept, and every error, without a GPU."""

from __future__ import annotations

import pytest

from fab.accelerators.device_parser import (
    parse_cuda_devices,
    parse_device_indices,
    parse_mps_devices,
)


@pytest.mark.parametrize(
    ("devices", "available", "expected"),
    [
        (1, 1, [0]),
        (2, 4, [0, 1]),
        (4, 4, [0, 1, 2, 3]),
        ("2", 4, [0, 1]),
        (" 3 ", 4, [0, 1, 2]),
        (-1, 3, [0, 1, 2]),
        ("-1", 3, [0, 1, 2]),
        (" -1 ", 2, [0, 1]),
        ("auto", 2, [0, 1]),
        ([0], 1, [0]),
        ([2, 0], 4, [2, 0]),  # the order is kept: rank 0 uses device 2
        ((1, 3), 4, [1, 3]),
        (range(2), 2, [0, 1]),
        ("0,1", 2, [0, 1]),
        (" 0 , 2 ", 3, [0, 2]),
        ("1,", 2, [1]),  # a trailing comma makes an index, not a count
        ("0,", 1, [0]),
        ("3,1,", 4, [3, 1]),
    ],
)
def test_accepted_forms(devices: object, available: int, expected: list[int]) -> None:
    assert parse_device_indices(devices, available) == expected


def test_a_digit_string_is_a_count_and_with_a_comma_an_index() -> None:
    assert parse_device_indices("2", 4) == [0, 1]
    assert parse_device_indices("2,", 4) == [2]


@pytest.mark.parametrize("devices", [0, "0", " 0 "])
def test_zero_devices_is_an_error_that_says_what_to_give(devices: object) -> None:
    with pytest.raises(ValueError, match=r"selects no CUDA device.*accelerator='cpu'") as err:
        parse_device_indices(devices, 2)
    assert "No CUDA device is available" not in str(err.value)


def test_zero_devices_where_there_are_none_says_so_too() -> None:
    with pytest.raises(ValueError, match="No CUDA device is available here"):
        parse_device_indices(0, 0)


@pytest.mark.parametrize("devices", [[], ()])
def test_an_empty_list_is_an_error(devices: object) -> None:
    with pytest.raises(ValueError, match="selects no CUDA device"):
        parse_device_indices(devices, 2)


@pytest.mark.parametrize(
    ("devices", "available", "message"),
    [
        (3, 2, r"devices=3 asks for 3 CUDA devices, but only 2 CUDA devices are available"),
        ("2", 1, r"devices='2' asks for 2 CUDA devices, but only 1 CUDA device is available"),
        (1, 0, r"devices=1 asks for 1 CUDA device, but no CUDA device is available"),
        (
            [0, 2],
            2,
            r"asks for the CUDA device 2, but only 2 CUDA devices are available "
            r"\(indices 0 to 1\)",
        ),
        ([3, 4], 2, r"asks for the CUDA devices 3, 4, but only 2"),
        ("0,5", 4, r"devices='0,5' asks for the CUDA device 5, but only 4 CUDA devices"),
        (
            "1,",
            1,
            r"asks for the CUDA device 1, but only 1 CUDA device is available "
            r"\(index 0\)$",
        ),
        ([0], 0, r"asks for the CUDA device 0, but no CUDA device is available$"),
        (-1, 0, r"devices=-1 asks for every CUDA device, but none is available"),
        ("-1", 0, r"asks for every CUDA device, but none is available"),
        ("auto", 0, r"devices='auto' asks for every CUDA device, but none is available"),
    ],
)
def test_requests_beyond_the_available_devices_name_the_count(
    devices: object, available: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        parse_device_indices(devices, available)


@pytest.mark.parametrize(
    ("devices", "message"),
    [
        (-2, r"devices=-2 is negative; only -1 \(all devices\) is"),
        ("-2", r"devices='-2' is not accepted"),
        ([0, -1], r"holds the negative index -1"),
        ("0,-1", r"'-1' is not a device index"),
        ([1, 1], r"lists the CUDA device 1 twice"),
        ("0,0", r"lists the CUDA device 0 twice"),
        ("", r"devices='' is not accepted"),
        ("two", r"devices='two' is not accepted"),
        ("1.5", r"devices='1.5' is not accepted"),
        ("cuda:0", r"devices='cuda:0' is not accepted"),
        (",", r"has an empty entry"),
        (",1", r"has an empty entry"),
        ("0,,1", r"has an empty entry"),
        ("0,a", r"'a' is not a device index"),
    ],
)
def test_malformed_values_are_value_errors(devices: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_device_indices(devices, 4)


@pytest.mark.parametrize(
    ("devices", "message"),
    [
        (True, r"devices=True is a bool"),
        (False, r"devices=False is a bool"),
        (None, r"devices=None \(NoneType\) is not accepted"),
        (1.0, r"devices=1.0 \(float\) is not accepted"),
        ({0}, r"\(set\) is not accepted"),
        (b"\x00", r"\(bytes\) is not accepted"),
        ([0, True], r"holds True \(bool\); device indices are ints"),
        ([0.0], r"holds 0.0 \(float\)"),
        (["0"], r"holds '0' \(str\)"),
    ],
)
def test_wrong_types_are_type_errors(devices: object, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        parse_device_indices(devices, 4)


def test_errors_name_the_kind_of_device_and_the_note() -> None:
    with pytest.raises(ValueError, match=r"only 1 XPU device is available; one XPU here$"):
        parse_device_indices(2, 1, kind="XPU", note="one XPU here")


def test_a_negative_count_of_available_devices_is_refused() -> None:
    with pytest.raises(ValueError, match="num_available=-1"):
        parse_device_indices(1, -1)


def test_cuda_errors_say_where_the_count_comes_from() -> None:
    assert parse_cuda_devices("0,1", 2) == [0, 1]
    with pytest.raises(
        ValueError,
        match=r"only 2 CUDA devices are available; the count is torch.cuda.device_count\(\), "
        r"which CUDA_VISIBLE_DEVICES limits$",
    ):
        parse_cuda_devices(3, 2)


@pytest.mark.parametrize("devices", [1, "1", -1, "-1", "auto", [0], (0,), "0,", " 1 "])
def test_mps_accepts_its_one_device(devices: object) -> None:
    assert parse_mps_devices(devices) == [0]


@pytest.mark.parametrize(
    ("devices", "error", "message"),
    [
        (
            2,
            ValueError,
            r"asks for 2 MPS devices, but only 1 MPS device is available; an Apple GPU is "
            r"one MPS device: use devices=1$",
        ),
        ("2", ValueError, r"asks for 2 MPS devices"),
        ([1], ValueError, r"asks for the MPS device 1, but only 1 MPS device"),
        ([0, 1], ValueError, r"asks for the MPS device 1"),
        ("1,", ValueError, r"asks for the MPS device 1"),
        (0, ValueError, r"selects no MPS device"),
        ([], ValueError, r"selects no MPS device"),
        ([0, 0], ValueError, r"lists the MPS device 0 twice"),
        (True, TypeError, r"is a bool"),
        (None, TypeError, r"is not accepted"),
    ],
)
def test_mps_refuses_everything_else(devices: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        parse_mps_devices(devices)
