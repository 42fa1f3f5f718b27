"""Part B of the DDP benchmark, Lightning Fabric: run under `fabric run --accelerator cpu
--devices 2`.

Builds a Fabric from what the launcher chose, does one all_reduce, checks it and exits."""

from __future__ import annotations

import torch

try:
    from lightning_fabric import Fabric  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # the `lightning` distribution ships it as lightning.fabric
    from lightning.fabric import Fabric  # type: ignore[no-redef, import-not-found, unused-ignore]


def main() -> None:
    fabric = Fabric()  # the CLI launched the processes and set them up: no launch()
    value = fabric.all_reduce(torch.ones(1), reduce_op="sum")
    assert fabric.world_size == 2, fabric.world_size
    assert float(value) == 2.0, value


if __name__ == "__main__":
    main()
