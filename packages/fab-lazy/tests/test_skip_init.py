"""skip_init: parameters are allocated but not initialized, and nothing else changes."""

from __future__ import annotations

import pytest
import torch

from fab.lazy import skip_init


class Custom(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(4, 4))
        self.weight.data.normal_()
        with torch.no_grad():
            self.weight.fill_(3.0)


def test_reset_parameters_and_tensor_init_methods_are_skipped() -> None:
    torch.manual_seed(0)
    state = torch.random.get_rng_state()
    with skip_init():
        linear = torch.nn.Linear(8, 8)
        custom = Custom()
    assert torch.equal(torch.random.get_rng_state(), state)  # no random number was drawn
    assert linear.weight.shape == (8, 8)
    assert not torch.all(custom.weight == 3.0)


def test_other_operations_still_run() -> None:
    with skip_init():
        x = torch.ones(3) * 2
        buffer = torch.arange(4.0).exp()
    assert torch.equal(x, torch.full((3,), 2.0))
    assert torch.allclose(buffer, torch.arange(4.0).exp())


def test_initialization_works_again_after_the_block() -> None:
    with skip_init():
        pass
    t = torch.empty(3).fill_(1.0)
    assert torch.equal(t, torch.ones(3))


def test_import_is_lazy_and_every_public_name_resolves() -> None:
    """``import fab.lazy`` (done by ``import fab.core``) loads no submodule; each public name
    loads its module on first use."""
    import subprocess
    import sys

    code = (
        "import sys, fab.lazy; print(sorted(m for m in sys.modules if m.startswith('fab.lazy.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    import fab.lazy

    for name in fab.lazy.__all__:
        assert getattr(fab.lazy, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        fab.lazy.nope
