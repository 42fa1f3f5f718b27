"""When a training step through Fabric may skip the strategy's and precision's methods.

``fabric.backward(loss)`` runs ``strategy.backward``, which runs the precision's
``pre_backward``, ``backward`` and ``post_backward``; ``optimizer.step()`` runs
``strategy.optimizer_step`` and the precision's ``optimizer_step``. When none of these is
overridden (32-true on one device, DDP), they end in ``loss.backward()`` and
``optimizer.step()``, and the calls in between are the only per-step cost Fabric adds (issue 10
item 19). Fabric asks these functions once, when it is made, and calls torch directly when they
say so. An override anywhere (a subclass of the strategy or precision, a loss scaler, DeepSpeed's
engine) keeps the whole chain, as Lightning runs it.
"""

from __future__ import annotations

from fab.core.precision.precision import Precision
from fab.core.strategies.strategy import Strategy

_BACKWARD = ("pre_backward", "backward", "post_backward")


def backward_is_direct(strategy: Strategy) -> bool:
    """Whether ``strategy.backward(tensor, module, *args, **kwargs)`` does nothing but
    ``tensor.backward(*args, **kwargs)``: neither the strategy nor its precision overrides the
    methods it runs."""
    precision = type(strategy.precision)
    return type(strategy).backward is Strategy.backward and all(
        getattr(precision, name, None) is getattr(Precision, name) for name in _BACKWARD
    )


def optimizer_step_is_direct(strategy: Strategy) -> bool:
    """Whether ``strategy.optimizer_step(optimizer, **kwargs)`` does nothing but
    ``optimizer.step(**kwargs)``."""
    return (
        type(strategy).optimizer_step is Strategy.optimizer_step
        and getattr(type(strategy.precision), "optimizer_step", None) is Precision.optimizer_step
    )
