"""Part B of the DDP benchmark, fab: run under `fab run --accelerator cpu --devices 2`.

Builds a Fabric from what the launcher chose, does one all_reduce, checks it and exits."""

from __future__ import annotations

import torch

from fab.core import Fabric


def main() -> None:
    fabric = Fabric()  # the CLI launched the processes and set them up: no launch()
    value = fabric.all_reduce(torch.ones(1), reduce_op="sum")
    assert fabric.world_size == 2, fabric.world_size
    assert float(value) == 2.0, value


if __name__ == "__main__":
    main()
