"""The README's install from a clone, run as written: build the seven wheels, install
"fab-core[all]" from them into an empty virtual environment, train a step with every logger.

The README's block (the ```bash block after the marker below) runs line by line in bash, in a copy
of packages/, with the new environment's bin/ first on PATH, as after `source venv/bin/activate`.
torch is not downloaded again: the new environment sees this one's torch 2.13.0 (CPU) through a
.pth file, as tools/dev.py's environments do, and pip is held to it by tools/constraints.txt.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
LICENSE = ROOT / "LICENSE"
CONSTRAINTS = ROOT / "tools" / "constraints.txt"
MARKER = "<!-- install-from-clone: run by tools/tests/test_install.py -->"
PACKAGES = sorted(p.parent for p in (ROOT / "packages").glob("*/pyproject.toml"))

TRAIN = """
import json, sys
import torch
from fab.core import Fabric

fabric = Fabric(accelerator="cpu", devices=1, loggers=["csv", "tensorboard", "mlflow"])
fabric.launch()
model = torch.nn.Linear(4, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
model, optimizer = fabric.setup(model, optimizer)
loss = model(torch.randn(8, 4)).pow(2).mean()
fabric.backward(loss)
optimizer.step()
fabric.log("loss", loss.item(), step=0)
for logger in fabric.loggers:
    logger.finalize("success")
print(json.dumps(sorted(type(logger).__name__ for logger in fabric.loggers)))
"""


def readme_install_block() -> list[str]:
    """The commands of the README's install-from-clone block, comments removed."""
    text = README.read_text(encoding="utf-8")
    assert MARKER in text, f"README.md has no {MARKER!r} before its install block"
    block = re.search(r"```bash\n(.*?)```", text[text.index(MARKER) :], re.DOTALL)
    assert block is not None, "no ```bash block after the marker in README.md"
    lines = [line.split("  #")[0].strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def share_this_torch(venv: Path) -> None:
    """Make venv see the torch this interpreter imports (its site-packages, after venv's own)."""
    spec = importlib.util.find_spec("torch")
    assert spec is not None
    assert spec.origin is not None
    torch_site = Path(spec.origin).parent.parent
    code = "import sysconfig; print(sysconfig.get_path('purelib'))"
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    (Path(purelib) / "_fab_test_torch.pth").write_text(f"{torch_site}\n", encoding="utf-8")


def run(cmd: str | list[str | Path], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", cmd] if isinstance(cmd, str) else [str(c) for c in cmd],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, f"{cmd}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_readme_names_one_build_and_one_install_command() -> None:
    commands = readme_install_block()
    assert any(c.startswith("python3 -m pip wheel") for c in commands), commands
    assert any("fab-core[all]" in c and "pip install" in c for c in commands), commands


def test_every_package_ships_the_repository_license() -> None:
    license_text = LICENSE.read_text(encoding="utf-8")
    assert "Apache License" in license_text
    assert "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text
    for package in PACKAGES:
        copy = package / "LICENSE"
        assert copy.is_file(), f"{copy} is missing (a copy of the repository's LICENSE)"
        assert copy.read_text(encoding="utf-8") == license_text, f"{copy} differs from LICENSE"
        pyproject = (package / "pyproject.toml").read_text(encoding="utf-8")
        assert 'license-files = ["LICENSE"]' in pyproject, f"{package.name}: no license-files"


@pytest.mark.skipif(os.name != "posix", reason="the README's commands are for a POSIX shell")
@pytest.mark.timeout(600)
def test_readme_install_from_a_clone_trains_with_every_logger(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    ignore = shutil.ignore_patterns("__pycache__", ".pytest_cache", "*.egg-info", "build", "dist")
    for package in PACKAGES:
        shutil.copytree(package, clone / "packages" / package.name, ignore=ignore)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=300)
    share_this_torch(venv)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env |= {
        "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        "VIRTUAL_ENV": str(venv),
        "PIP_CONSTRAINT": str(CONSTRAINTS),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_INPUT": "1",
    }

    for command in readme_install_block():
        run(command, clone, env)

    wheels = sorted((clone / "dist").glob("*.whl"))
    built = {w.name.split("-")[0] for w in wheels}
    assert built == {p.name.replace("-", "_") for p in PACKAGES}, wheels
    license_text = LICENSE.read_bytes()
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            shipped = [n for n in archive.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
            assert len(shipped) == 1, f"{wheel.name}: no .dist-info/licenses/LICENSE"
            assert archive.read(shipped[0]) == license_text, f"{wheel.name}: LICENSE differs"

    python = venv / "bin" / "python"
    names = "print(json.dumps([d.metadata['Name'].lower() for d in m.distributions()]))"
    installed = json.loads(
        run([python, "-c", f"import importlib.metadata as m, json; {names}"], tmp_path, env)
    )
    for name in ["tensorboard", "mlflow-skinny", "matplotlib", *(p.name for p in PACKAGES)]:
        assert name in installed, f"{name} was not installed by the README's command"
    assert "acme-fab-plugins" not in installed
    # Installed as wheels, not editable: fab comes from the new environment's site-packages.
    where = run([python, "-c", "import fab.core; print(fab.core.__file__)"], tmp_path, env)
    assert Path(where.strip()).is_relative_to(venv), where
    assert str(ROOT) not in where

    trained = run([python, "-c", TRAIN], tmp_path, env)
    loggers_used = json.loads(trained.splitlines()[-1])
    assert loggers_used == ["CSVLogger", "MLFlowLogger", "TensorBoardLogger"]
    assert list(tmp_path.glob("lightning_logs/version_0/metrics.csv")), "no CSV metrics written"

    listing = json.loads(run([venv / "bin" / "fab", "plugins", "--json"], tmp_path, env))
    loggers = {row["name"]: row for row in listing["plugins"] if row["group"] == "fab.loggers"}
    for name in ("csv", "tensorboard", "mlflow"):
        assert loggers[name]["status"] == "ok", loggers[name]
