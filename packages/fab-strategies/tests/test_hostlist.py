"""Slurm's compressed host lists."""

from __future__ import annotations

import pytest

from fab.strategies.environments.hostlist import expand_hostlist, first_host


@pytest.mark.parametrize(
    ("hostlist", "hosts"),
    [
        ("node1", ["node1"]),
        ("node[01-03,07]", ["node01", "node02", "node03", "node07"]),
        ("a1,b[2-3]", ["a1", "b2", "b3"]),
        ("gpu-[1-2]x", ["gpu-1x", "gpu-2x"]),
        ("n[8-10]", ["n8", "n9", "n10"]),
        ("n[008-010]", ["n008", "n009", "n010"]),
        ("rack[1-2]-n[1-2]", ["rack1-n1", "rack1-n2", "rack2-n1", "rack2-n2"]),
        ("x[1],y,z[3-4,6]", ["x1", "y", "z3", "z4", "z6"]),
        ("[1-2]", ["1", "2"]),
        (" host.domain.org ", ["host.domain.org"]),
    ],
)
def test_expand(hostlist: str, hosts: list[str]) -> None:
    assert expand_hostlist(hostlist) == hosts
    assert first_host(hostlist) == hosts[0]


@pytest.mark.parametrize("bad", ["n[1-2", "n1-2]", "n[a-b]", "n[3-1]", "n[[1]]", "n[1-]"])
def test_invalid(bad: str) -> None:
    with pytest.raises(ValueError, match="host list"):
        expand_hostlist(bad)


def test_empty() -> None:
    assert expand_hostlist("") == []
    with pytest.raises(ValueError, match="empty host list"):
        first_host("")
