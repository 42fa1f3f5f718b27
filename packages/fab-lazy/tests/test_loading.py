"""Deferred loading: lazy, memory-mapped, weights-only reading of checkpoints (fab.lazy.loading)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from fab.lazy import CheckpointFormatError, UnsafeCheckpointError, lazy_load, load_safetensors

MIB = 1 << 20


class _RunsCode:
    """Unpickling this would run a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _rss_file_mib() -> float:
    """This process's resident file-backed pages (memory-mapped files), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no RssFile in /proc/self/status")


def test_checkpoint_that_would_run_code_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"model": {"w": torch.ones(2)}, "payload": _RunsCode(marker)}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpointError, match=r"refusing to load .*evil\.pt") as info:
        lazy_load(tmp_path / "evil.pt")
    assert "weights_only=False" in str(info.value)
    assert "add_safe_globals" in str(info.value)
    assert not marker.exists()


def test_tensors_are_memory_mapped_views_of_the_file(tmp_path: Path) -> None:
    torch.save({"w": torch.arange(6.0)}, tmp_path / "c.pt")
    loaded = lazy_load(tmp_path / "c.pt")
    assert torch.equal(loaded["w"], torch.arange(6.0))
    loaded["w"].add_(1)  # copy-on-write: this process's copy, never the file
    assert torch.equal(lazy_load(tmp_path / "c.pt")["w"], torch.arange(6.0))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_a_nested_checkpoint_reads_only_the_tensors_that_are_used(tmp_path: Path) -> None:
    """A Fabric-style checkpoint: using the model's weights does not read the optimizer's state."""
    n = 32 * MIB // 4
    checkpoint = {
        "model": {"weight": torch.ones(n)},
        "optimizer": {"state": {0: {"exp_avg": torch.ones(n), "exp_avg_sq": torch.ones(n)}}},
        "step": 7,
    }
    torch.save(checkpoint, tmp_path / "c.pt")
    del checkpoint
    before = _rss_file_mib()
    loaded = lazy_load(tmp_path / "c.pt")
    assert _rss_file_mib() - before < 8, "opening the checkpoint read its tensors"
    assert loaded["step"] == 7
    assert float(loaded["model"]["weight"].sum()) == n
    grown = _rss_file_mib() - before
    assert 24 < grown < 56, f"reading 32 MiB of weights made {grown:.0f} MiB resident"
    assert loaded["optimizer"]["state"][0]["exp_avg"].shape == (n,)  # there, never read


def test_legacy_format_checkpoints_load_whole_and_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "old.pt"
    torch.save({"w": torch.ones(3)}, path, _use_new_zipfile_serialization=False)
    assert torch.equal(lazy_load(path)["w"], torch.ones(3))
    marker = tmp_path / "pwned"
    torch.save({"x": _RunsCode(marker)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeCheckpointError, match=r"old\.pt"):
        lazy_load(path)
    assert not marker.exists()


def test_missing_file_and_directory_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"checkpoint not found: .*nope\.pt"):
        lazy_load(tmp_path / "nope.pt")
    with pytest.raises(IsADirectoryError, match="sharded checkpoint"):
        lazy_load(tmp_path)


def _write_safetensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """The safetensors format by hand: an 8-byte header length, a JSON header, raw data."""
    names = {torch.float32: "F32", torch.bfloat16: "BF16", torch.int64: "I64"}
    header: dict[str, object] = {"__metadata__": {"by": "hand"}}
    blobs, offset = [], 0
    for name, tensor in tensors.items():
        data = bytes(tensor.contiguous().view(torch.uint8).flatten().tolist())
        header[name] = {
            "dtype": names[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + b"".join(blobs))


def test_safetensors_files_are_read_without_the_library(tmp_path: Path) -> None:
    tensors = {
        "a": torch.randn(3, 4),
        "b": torch.randn(5).to(torch.bfloat16),
        "steps": torch.arange(3),
    }
    _write_safetensors(tmp_path / "w.safetensors", tensors)
    loaded = lazy_load(tmp_path / "w.safetensors")
    assert set(loaded) == set(tensors)
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype
        assert torch.equal(loaded[name], tensor)


def _safetensors_torch() -> Any:
    """safetensors.torch, whose writer needs numpy too; skip the test without them."""
    pytest.importorskip("numpy", reason="safetensors needs numpy to write torch tensors")
    return pytest.importorskip(
        "safetensors.torch", reason="the safetensors package is not installed"
    )


def test_safetensors_round_trip_with_the_library(tmp_path: Path) -> None:
    safetensors_torch = _safetensors_torch()
    tensors = {
        "layer.weight": torch.randn(8, 4),
        "layer.bias": torch.randn(8).half(),
        "mask": torch.tensor([True, False]),
        "empty": torch.zeros(0, 2),
    }
    safetensors_torch.save_file(tensors, str(tmp_path / "m.safetensors"), metadata={"k": "v"})
    loaded = load_safetensors(tmp_path / "m.safetensors")
    assert set(loaded) == set(tensors)
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype
        assert torch.equal(loaded[name], tensor)
    # and the other way: what fab reads, the library writes back identically
    safetensors_torch.save_file(loaded, str(tmp_path / "again.safetensors"))
    again = safetensors_torch.load_file(str(tmp_path / "again.safetensors"))
    assert all(torch.equal(again[name], tensors[name]) for name in tensors)


def test_a_damaged_safetensors_file_is_refused_with_its_name(tmp_path: Path) -> None:
    _write_safetensors(tmp_path / "w.safetensors", {"a": torch.ones(4)})
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-4])
    with pytest.raises(CheckpointFormatError, match=r"cut\.safetensors.*'a'"):
        lazy_load(tmp_path / "cut.safetensors")


# -- files that are not (whole) checkpoints ----------------------------------------------------


def _good_checkpoint(path: Path, **kwargs: Any) -> bytes:
    torch.save({"w": torch.arange(1000.0), "step": 3}, path, **kwargs)
    return path.read_bytes()


def test_an_empty_file_is_named_and_called_empty(tmp_path: Path) -> None:
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointFormatError, match=r"empty\.pt is empty \(0 bytes\)"):
        lazy_load(tmp_path / "empty.pt")


@pytest.mark.parametrize("keep", [0.5, 0.01])
def test_a_truncated_checkpoint_is_named_and_called_truncated(tmp_path: Path, keep: float) -> None:
    data = _good_checkpoint(tmp_path / "good.pt")
    (tmp_path / "cut.pt").write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointFormatError, match=r"cut\.pt is truncated") as info:
        lazy_load(tmp_path / "cut.pt")
    assert "weights_only" not in str(info.value)


def test_a_truncated_legacy_checkpoint_is_called_truncated(tmp_path: Path) -> None:
    data = _good_checkpoint(tmp_path / "good.pt", _use_new_zipfile_serialization=False)
    (tmp_path / "cut.pt").write_bytes(data[:-20])
    with pytest.raises(CheckpointFormatError, match=r"cut\.pt is truncated"):
        lazy_load(tmp_path / "cut.pt")


@pytest.mark.parametrize(
    "content",
    [
        os.urandom(4096),
        b"step,loss\n1,0.5\n",
        b"\x80\x04\x95\x0b\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01a\x94K\x01s.",  # a plain pickle
    ],
    ids=["random bytes", "text", "a plain pickle"],
)
def test_a_file_that_is_no_checkpoint_is_not_called_unsafe(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "other.pt").write_bytes(content)
    with pytest.raises(CheckpointFormatError, match=r"other\.pt is not a checkpoint") as info:
        lazy_load(tmp_path / "other.pt")
    assert not isinstance(info.value, UnsafeCheckpointError)
    assert "weights_only=False" not in str(info.value)  # no advice to run the file's code


def test_a_truncated_safetensors_file_is_called_truncated(tmp_path: Path) -> None:
    _write_safetensors(tmp_path / "w.safetensors", {"a": torch.ones(4)})
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-4])
    with pytest.raises(CheckpointFormatError, match=r"cut\.safetensors is truncated"):
        lazy_load(tmp_path / "cut.safetensors")
    (tmp_path / "head.safetensors").write_bytes(data[:12])
    with pytest.raises(CheckpointFormatError, match=r"head\.safetensors is truncated"):
        lazy_load(tmp_path / "head.safetensors")
