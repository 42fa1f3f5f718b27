"""Part B of the DDP benchmark, raw PyTorch: run under `torchrun --nproc-per-node 2`.

Initializes the gloo process group from torchrun's environment, does one all_reduce, checks it
and exits."""

from __future__ import annotations

import torch
import torch.distributed as dist


def main() -> None:
    dist.init_process_group("gloo")
    value = torch.ones(1)
    dist.all_reduce(value)
    assert value.item() == dist.get_world_size(), value
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
