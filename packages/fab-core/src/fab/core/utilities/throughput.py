"""Throughput (batches, samples, items and FLOPs per second, MFU) over a window of updates."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from fab.core.utilities.flops import compute_dtype, get_available_flops, measure_flops

if TYPE_CHECKING:
    from fab.core.fabric import Fabric

# measure_flops and get_available_flops live in flops.py; they are importable from here too, as
# from Lightning's ``lightning.fabric.utilities.throughput`` (LitGPT imports them so).
__all__ = ["Throughput", "ThroughputMonitor", "get_available_flops", "measure_flops"]

Metrics = dict[str, int | float]


class Throughput:
    """Computes throughput from running totals, over the last ``window_size`` updates.

    Call ``update`` with the totals so far (elapsed time, batches, samples, and optionally the
    summed lengths of the samples, e.g. tokens) and the FLOPs done since the previous update;
    ``compute`` returns:

    ============================  ==========================================================
    ``time``                      total elapsed time (the last ``time`` given)
    ``batches``                   total batches seen (per device)
    ``samples``                   total samples seen (per device)
    ``lengths``                   total items seen (per device), if lengths were given
    ``device/batches_per_sec``    batches per second on this device, over the window
    ``device/samples_per_sec``    samples per second on this device
    ``device/items_per_sec``      items per second on this device, if lengths were given
    ``device/flops_per_sec``      FLOP/s on this device, if flops were given
    ``device/mfu``                ``device/flops_per_sec / available_flops``, if known
    ``batches_per_sec`` ...       the ``device/`` rates times ``world_size`` (all devices),
                                  only when ``world_size > 1``; not for ``mfu``
    ============================  ==========================================================

    The rates appear once ``window_size`` updates were made (before that, ``compute`` returns
    only the totals); the FLOP rates once each of the last ``window_size - 1`` updates gave
    ``flops``. Every device is assumed to do the same work and to have the same peak FLOP/s.

    Args:
        available_flops: peak FLOP/s of one device (see ``get_available_flops``), for MFU.
        world_size: the number of devices, to scale the rates to the whole run.
        window_size: how many of the most recent updates the rates average over (at least 2).
        separator: between ``device`` and a metric's name.
    """

    def __init__(
        self,
        available_flops: float | None = None,
        world_size: int = 1,
        window_size: int = 100,
        separator: str = "/",
    ) -> None:
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"world_size must be an int of at least 1, got {world_size!r}")
        if isinstance(window_size, bool) or not isinstance(window_size, int) or window_size < 2:
            raise ValueError(
                f"window_size must be an int of at least 2 (rates need two updates to compare), "
                f"got {window_size!r}"
            )
        if available_flops is not None and available_flops <= 0:
            raise ValueError(f"available_flops must be positive, got {available_flops!r}")
        self.available_flops = available_flops
        self.world_size = world_size
        self.window_size = window_size
        self.separator = separator
        self._time: deque[float] = deque(maxlen=window_size)
        self._batches: deque[int] = deque(maxlen=window_size)
        self._samples: deque[int] = deque(maxlen=window_size)
        self._lengths: deque[int] = deque(maxlen=window_size)
        # FLOPs done since the previous update, one entry per update (None: not given).
        self._flops: deque[float | None] = deque(maxlen=window_size)

    def update(
        self,
        *,
        time: float,
        batches: int,
        samples: int,
        lengths: int | None = None,
        flops: float | None = None,
    ) -> None:
        """Record the running totals after a step.

        Args:
            time: seconds elapsed since the start; must increase with every call.
            batches: batches seen so far on this device; must increase with every call.
            samples: samples seen so far on this device; must increase, and be >= batches.
            lengths: summed lengths of the samples seen so far (tokens, for a language model);
                must increase and be >= samples, and be given in every call or in none.
            flops: FLOPs this device did since the previous call (``measure_flops`` of one
                batch times the batches since then).

        Raises ValueError, and records nothing, if a value breaks these rules.
        """
        _check_increasing("time", self._time, time)
        _check_increasing("batches", self._batches, batches)
        _check_increasing("samples", self._samples, samples)
        if samples < batches:
            raise ValueError(f"samples ({samples}) must be >= batches ({batches})")
        if lengths is not None:
            if self._time and not self._lengths:
                raise ValueError("lengths must be given in every update() or in none")
            _check_increasing("lengths", self._lengths, lengths)
            if lengths < samples:
                raise ValueError(f"lengths ({lengths}) must be >= samples ({samples})")
        elif self._lengths:
            raise ValueError("lengths must be given in every update() or in none")
        if flops is not None and flops < 0:
            raise ValueError(f"flops must be >= 0 (FLOPs since the last update), got {flops}")

        self._time.append(time)
        self._batches.append(batches)
        self._samples.append(samples)
        if lengths is not None:
            self._lengths.append(lengths)
        self._flops.append(flops)

    def compute(self) -> Metrics:
        """The totals, and the rates over the window once it is full (see the class)."""
        if not self._time:
            raise RuntimeError("Throughput.compute() needs at least one update() first")
        metrics: Metrics = {
            "time": self._time[-1],
            "batches": self._batches[-1],
            "samples": self._samples[-1],
        }
        if self._lengths:
            metrics["lengths"] = self._lengths[-1]
        if len(self._time) < self.window_size:
            return metrics

        elapsed = self._time[-1] - self._time[0]
        rates: Metrics = {
            "batches_per_sec": (self._batches[-1] - self._batches[0]) / elapsed,
            "samples_per_sec": (self._samples[-1] - self._samples[0]) / elapsed,
        }
        if self._lengths:
            rates["items_per_sec"] = (self._lengths[-1] - self._lengths[0]) / elapsed
        # The first entry's FLOPs were done before the window's first time stamp.
        window_flops = list(self._flops)[1:]
        flops_per_sec: float | None = None
        if all(f is not None for f in window_flops):
            flops_per_sec = sum(f for f in window_flops if f is not None) / elapsed
            rates["flops_per_sec"] = flops_per_sec

        device = f"device{self.separator}"
        metrics.update({device + name: value for name, value in rates.items()})
        if flops_per_sec is not None and self.available_flops:
            metrics[f"{device}mfu"] = flops_per_sec / self.available_flops
        if self.world_size > 1:
            metrics.update({name: value * self.world_size for name, value in rates.items()})
        return metrics

    def reset(self) -> None:
        """Forget every update."""
        for window in (self._time, self._batches, self._samples, self._lengths, self._flops):
            window.clear()


def _check_increasing(name: str, window: deque[Any], value: float) -> None:
    if window and not value > window[-1]:
        raise ValueError(
            f"{name} must increase with every update() (it is a running total): "
            f"got {value} after {window[-1]}"
        )


class ThroughputMonitor(Throughput):
    """A ``Throughput`` for a Fabric run: it takes the world size and the device's peak FLOP/s
    (for the precision's compute dtype) from ``fabric``, and logs through ``fabric.log_dict``.

    Only the global-zero process records anything: elsewhere ``update`` and ``reset`` do
    nothing, and ``compute`` and ``compute_and_log`` return ``{}``. Give ``available_flops`` in
    ``kwargs`` to skip the lookup (and its warning on CPU); the other ``kwargs`` go to
    ``Throughput``.

    Example::

        monitor = ThroughputMonitor(fabric, window_size=50)
        t0 = time.perf_counter()
        for i, batch in enumerate(loader, 1):
            ...
            monitor.update(time=time.perf_counter() - t0, batches=i, samples=i * batch_size)
            if i % 10 == 0:
                monitor.compute_and_log(step=i)
    """

    def __init__(self, fabric: Fabric, **kwargs: Any) -> None:
        if "world_size" in kwargs:
            raise TypeError("ThroughputMonitor takes world_size from fabric; do not pass it")
        if "available_flops" in kwargs:
            available_flops = kwargs.pop("available_flops")
        else:
            dtype = compute_dtype(fabric.strategy.precision)
            available_flops = get_available_flops(fabric.device, dtype)
        super().__init__(available_flops=available_flops, world_size=fabric.world_size, **kwargs)
        self._fabric = fabric
        #: The step the last ``compute_and_log`` logged at (-1 before the first).
        self.step = -1

    def update(
        self,
        *,
        time: float,
        batches: int,
        samples: int,
        lengths: int | None = None,
        flops: float | None = None,
    ) -> None:
        if self._fabric.is_global_zero:
            super().update(
                time=time, batches=batches, samples=samples, lengths=lengths, flops=flops
            )

    def compute(self) -> Metrics:
        return super().compute() if self._fabric.is_global_zero else {}

    def reset(self) -> None:
        if self._fabric.is_global_zero:
            super().reset()

    def compute_and_log(self, step: int | None = None) -> Metrics:
        """``compute()``, logged with ``fabric.log_dict`` at ``step`` (default: one more than the
        last call's); returns the metrics."""
        if not self._fabric.is_global_zero:
            return {}
        self.step = self.step + 1 if step is None else step
        metrics = self.compute()
        self._fabric.log_dict(metrics, step=self.step)
        return metrics
