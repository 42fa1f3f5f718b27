"""A 2-process run of ``strategy="ddp"`` in which rank 1 fails, for tools/stress.py's fault cases.

    python tools/stress_fault.py raise     # rank 1 raises
    python tools/stress_fault.py sigkill   # rank 1 is killed with SIGKILL (as by the OOM killer)

Rank 1 fails while rank 0 waits for it in a collective, the case where gloo ends rank 0 with
"Connection reset by peer" and only fab's launcher can say which rank failed. The run must exit
with code 1, name rank 1 and leave no process behind.
"""

from __future__ import annotations

import os
import signal
import sys

import torch

from fab.core import Fabric

FAULTS = ("raise", "sigkill")


def main(fabric: Fabric, fault: str) -> None:
    fabric.barrier()  # both ranks are up
    if fabric.global_rank == 1:
        if fault == "raise":
            raise RuntimeError("rank 1 fails on purpose (tools/stress_fault.py)")
        os.kill(os.getpid(), signal.SIGKILL)
    fabric.all_reduce(torch.ones(1))  # rank 0 waits here for a rank that never comes


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in FAULTS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(FAULTS)}}}")
    fabric = Fabric(accelerator="cpu", devices=2, strategy="ddp")
    fabric.launch(main, sys.argv[1])
