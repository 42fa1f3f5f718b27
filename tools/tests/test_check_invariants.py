"""Tests for tools/check_invariants.py: each fake repository breaks one invariant."""

from __future__ import annotations

import ast
import importlib.util
import itertools
import json
import shutil
import sys
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/ is not a package
import check_invariants as ci

REPO_ROOT = Path(__file__).resolve().parents[2]

CORE_RANGE = "fab-core>=0.1,<0.2"
L2 = ("fab-accelerators", "fab-strategies", "fab-precision", "fab-loggers")
GOOD_DEPENDENCIES: dict[str, list[str]] = {
    "fab-wrappers": ["torch>=2.6"],
    "fab-lazy": ["torch>=2.6"],
    "fab-core": ["torch>=2.6", "fab-wrappers>=0.1,<0.2", "fab-lazy>=0.1,<0.2"],
    **{name: [CORE_RANGE, "torch>=2.6"] for name in L2},
}
CORE_EXTRAS: dict[str, list[str]] = {
    **{name.removeprefix("fab-"): [f"{name}>=0.1,<0.2"] for name in L2},
    "all": [f"{name}>=0.1,<0.2" for name in L2],
}


def write_package(
    root: Path,
    name: str,
    dependencies: Sequence[str],
    extras: Mapping[str, Sequence[str]] | None = None,
    version_line: str = 'version = "0.1.0"',
) -> Path:
    """Write a well-formed package ``packages/<name>/`` and return its folder."""
    pkg = root / "packages" / name
    leaf = pkg / "src" / "fab" / name.removeprefix("fab-")
    leaf.mkdir(parents=True)
    (leaf / "__init__.py").write_text('"""A leaf."""\n')
    (leaf / "py.typed").write_text("")
    (pkg / "tests").mkdir()
    (pkg / "README.md").write_text(f"# {name}\n")
    (pkg / "CHANGELOG.md").write_text("# Changelog\n")
    lines = [
        "[build-system]",
        'requires = ["hatchling>=1.27"]',
        'build-backend = "hatchling.build"',
        "",
        "[project]",
        f'name = "{name}"',
        version_line,
        'readme = "README.md"',
        'requires-python = ">=3.10"',
        f"dependencies = {json.dumps(list(dependencies))}",
        "",
        "[project.optional-dependencies]",
        *(f"{extra} = {json.dumps(list(reqs))}" for extra, reqs in (extras or {}).items()),
        "",
        "[tool.hatch.build.targets.wheel]",
        'packages = ["src/fab"]',
    ]
    (pkg / "pyproject.toml").write_text("\n".join(lines) + "\n")
    return pkg


def rewrite_package(
    root: Path,
    name: str,
    dependencies: Sequence[str],
    extras: Mapping[str, Sequence[str]] | None = None,
    version_line: str = 'version = "0.1.0"',
) -> None:
    """Replace ``packages/<name>/`` with a fresh ``write_package``."""
    shutil.rmtree(root / "packages" / name)
    write_package(root, name, dependencies, extras, version_line)


def make_repo(
    root: Path,
    dependencies: Mapping[str, Sequence[str]] | None = None,
    core_extras: Mapping[str, Sequence[str]] | None = None,
    names: Sequence[str] | None = None,
) -> Path:
    """A fake repo: all seven packages, laid out and pinned correctly unless overridden."""
    deps = {**GOOD_DEPENDENCIES, **(dependencies or {})}
    for name in names or deps:
        extras = (CORE_EXTRAS if core_extras is None else core_extras) if name == "fab-core" else {}
        write_package(root, name, deps[name], extras)
    return root


def failures(root: Path, wheels: Path | None = None) -> dict[str, list[str]]:
    """The failing checks of ``root``, by name, with their problems."""
    return {r.name: r.problems for r in ci.run_checks(root, wheels=wheels) if not r.ok}


def write_source(root: Path, package: str, relpath: str, code: str) -> None:
    path = root / "packages" / package / "src" / "fab" / package.removeprefix("fab-") / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(code)


# --- the baseline ------------------------------------------------------------------------------


def test_well_formed_fake_repo_passes_every_check(tmp_path: Path) -> None:
    make_repo(tmp_path)
    assert failures(tmp_path) == {}


def test_real_repo_passes_every_check() -> None:
    assert failures(REPO_ROOT) == {}


def test_main_prints_one_ok_line_per_check_and_exits_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_repo(tmp_path)
    assert ci.main(["--root", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "ok   pyproject",
        "ok   namespace",
        "ok   py.typed",
        "ok   requirements",
        "ok   dependency-graph",
        "ok   imports",
        "ok   declared-imports",
        "ok   known-providers",
        "ok   package-files",
    ]


def test_main_prints_fail_lines_and_exits_nonzero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_repo(tmp_path)
    (tmp_path / "packages/fab-lazy/src/fab/__init__.py").write_text("")
    assert ci.main(["--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert "FAIL namespace: packages/fab-lazy/src/fab/__init__.py exists" in out[1]
    assert [line for line in out if line.startswith("FAIL")] == [out[1]]


# --- 1. namespace, 2. py.typed --------------------------------------------------------------------


def test_fab_init_py_breaks_the_namespace(tmp_path: Path) -> None:
    make_repo(tmp_path)
    (tmp_path / "packages/fab-core/src/fab/__init__.py").write_text("")
    assert failures(tmp_path) == {
        "namespace": [
            "packages/fab-core/src/fab/__init__.py exists (it breaks the namespace)",
        ]
    }


def test_stray_src_init_py_is_reported(tmp_path: Path) -> None:
    make_repo(tmp_path)
    (tmp_path / "packages/fab-wrappers/src/__init__.py").write_text("")
    assert list(failures(tmp_path)) == ["namespace"]


def test_a_package_shipping_another_leaf_is_reported(tmp_path: Path) -> None:
    make_repo(tmp_path)
    (tmp_path / "packages/fab-loggers/src/fab/strategies").mkdir()
    assert failures(tmp_path) == {
        "namespace": [
            "packages/fab-loggers/src/fab/strategies: fab-loggers may ship only fab/loggers/"
        ]
    }


def test_missing_py_typed_is_reported(tmp_path: Path) -> None:
    make_repo(tmp_path)
    (tmp_path / "packages/fab-precision/src/fab/precision/py.typed").unlink()
    assert failures(tmp_path) == {
        "py.typed": ["packages/fab-precision/src/fab/precision/py.typed: missing"]
    }


# --- 3. requirements ---------------------------------------------------------------------------


def test_range_that_excludes_the_in_repo_version_is_reported(tmp_path: Path) -> None:
    make_repo(tmp_path, {"fab-accelerators": ["fab-core>=0.2,<0.3", "torch>=2.6"]})
    assert failures(tmp_path) == {
        "requirements": [
            (
                "packages/fab-accelerators/pyproject.toml [project.dependencies]: "
                "'fab-core<0.3,>=0.2' excludes the in-repo version 0.1.0 of fab-core"
            )
        ]
    }


def test_extra_range_that_excludes_the_in_repo_version_is_reported(tmp_path: Path) -> None:
    make_repo(tmp_path, core_extras={**CORE_EXTRAS, "loggers": ["fab-loggers>=0.3,<0.4"]})
    problems = failures(tmp_path)
    assert list(problems) == ["requirements"]
    assert "[project.optional-dependencies.loggers]" in problems["requirements"][0]


@pytest.mark.parametrize("requirement", ["fab-core>=0.1", "fab-core", "fab-core!=0.3,>0.0"])
def test_requirement_without_upper_bound_is_reported(tmp_path: Path, requirement: str) -> None:
    make_repo(tmp_path, {"fab-strategies": [requirement]})
    problems = failures(tmp_path)
    assert list(problems) == ["requirements"]
    assert "has no upper bound" in problems["requirements"][0]


@pytest.mark.parametrize("requirement", ["fab-core~=0.1.0", "fab-core==0.1.*", "fab_core<0.2"])
def test_bounded_requirement_forms_are_accepted(tmp_path: Path, requirement: str) -> None:
    make_repo(tmp_path, {"fab-strategies": [requirement]})
    assert failures(tmp_path) == {}


def test_requirement_naming_no_in_repo_package_is_reported(tmp_path: Path) -> None:
    make_repo(tmp_path, {"fab-loggers": [CORE_RANGE, "fab-missing>=0.1,<0.2"]})
    problems = failures(tmp_path)
    assert list(problems) == ["requirements"]
    assert "'fab-missing<0.2,>=0.1' names no package in packages/" in problems["requirements"][0]


# --- 4. dependency graph -----------------------------------------------------------------------


def test_cycle_is_reported(tmp_path: Path) -> None:
    make_repo(
        tmp_path,
        {"fab-wrappers": ["fab-lazy>=0.1,<0.2"], "fab-lazy": ["fab-wrappers>=0.1,<0.2"]},
    )
    problems = failures(tmp_path)
    assert list(problems) == ["dependency-graph"]
    cycle = problems["dependency-graph"][0]
    assert cycle.startswith("cycle among hard dependencies: ")
    assert cycle in {
        "cycle among hard dependencies: fab-lazy -> fab-wrappers -> fab-lazy",
        "cycle among hard dependencies: fab-wrappers -> fab-lazy -> fab-wrappers",
    }


def test_cycle_is_printed_in_depends_on_order(tmp_path: Path) -> None:
    make_repo(
        tmp_path,
        {
            "fab-accelerators": ["fab-strategies>=0.1,<0.2"],
            "fab-strategies": ["fab-precision>=0.1,<0.2"],
            "fab-precision": ["fab-accelerators>=0.1,<0.2"],
        },
    )
    cycle = failures(tmp_path)["dependency-graph"][0].removeprefix(
        "cycle among hard dependencies: "
    )
    depends_on = {
        "fab-accelerators": "fab-strategies",
        "fab-strategies": "fab-precision",
        "fab-precision": "fab-accelerators",
    }
    nodes = cycle.split(" -> ")
    assert nodes[0] == nodes[-1]
    assert sorted(nodes[1:]) == sorted(depends_on)
    assert all(depends_on[a] == b for a, b in itertools.pairwise(nodes))


def test_upward_hard_dependency_is_reported(tmp_path: Path) -> None:
    # fab-strategies does not depend on fab-core here, so the upward edge makes no cycle.
    make_repo(
        tmp_path,
        {
            "fab-strategies": ["torch>=2.6"],
            "fab-core": [*GOOD_DEPENDENCIES["fab-core"], "fab-strategies>=0.1,<0.2"],
        },
    )
    assert failures(tmp_path) == {
        "dependency-graph": [
            (
                "packages/fab-core/pyproject.toml [project.dependencies]: fab-core (L1) -> "
                "fab-strategies (L2) as a hard dependency: dependencies point down only; "
                "upward edges are allowed only as fab-core extras"
            )
        ]
    }


def test_l0_depending_on_another_l0_package_is_reported(tmp_path: Path) -> None:
    make_repo(tmp_path, {"fab-wrappers": ["fab-lazy>=0.1,<0.2"]})
    problems = failures(tmp_path)
    assert list(problems) == ["dependency-graph"]
    assert "fab-wrappers (L0) -> fab-lazy (L0)" in problems["dependency-graph"][0]


def test_l2_depending_on_l0_is_allowed(tmp_path: Path) -> None:
    make_repo(tmp_path, {"fab-strategies": [CORE_RANGE, "fab-wrappers>=0.1,<0.2"]})
    assert failures(tmp_path) == {}


def test_upward_extra_outside_fab_core_is_reported(tmp_path: Path) -> None:
    make_repo(tmp_path)
    rewrite_package(tmp_path, "fab-wrappers", [], {"core": [CORE_RANGE]})
    problems = failures(tmp_path)
    assert list(problems) == ["dependency-graph"]
    assert (
        "fab-wrappers (L0) -> fab-core (L1) through extra [core]" in problems["dependency-graph"][0]
    )


# --- 5. imports --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "import fab.strategies\n",
        "import fab.strategies.ddp as ddp\n",
        "from fab.strategies import DDPStrategy\n",
        "from fab import strategies\n",
        "from .. import strategies\n",
        "import importlib\nimportlib.import_module('fab.strategies.ddp')\n",
        "from importlib import import_module\nimport_module(name='fab.strategies')\n",
        "def f():\n    from fab.strategies.ddp import DDPStrategy\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import fab.strategies\n",
    ],
)
def test_fab_core_importing_fab_strategies_is_reported(tmp_path: Path, code: str) -> None:
    make_repo(tmp_path)
    write_source(tmp_path, "fab-core", "connector.py", code)
    problems = failures(tmp_path)
    assert list(problems) == ["imports"]
    [problem] = problems["imports"]
    assert problem.startswith("packages/fab-core/src/fab/core/connector.py:")
    assert "fab-core imports the L2 package 'fab.strategies" in problem


@pytest.mark.parametrize(
    "code",
    [
        "from fab.core.strategies import Strategy\n",
        "from .strategies import Strategy\n",
        "from . import strategies\n",
        "import fab.core.accelerators.cpu\n",
        "from fab import core, wrappers, lazy\n",
        "import importlib\nimportlib.import_module(name)\n",
        "GROUP = 'fab.strategies'\n",
    ],
)
def test_fab_core_own_subpackages_and_strings_are_fine(tmp_path: Path, code: str) -> None:
    make_repo(tmp_path)
    write_source(tmp_path, "fab-core", "connector.py", code)
    assert failures(tmp_path) == {}


def test_relative_import_inside_a_fab_core_subpackage_is_fine(tmp_path: Path) -> None:
    make_repo(tmp_path)
    write_source(tmp_path, "fab-core", "strategies/single.py", "from ..strategies import base\n")
    write_source(tmp_path, "fab-core", "strategies/__init__.py", "from .single import x\n")
    assert failures(tmp_path) == {}


@pytest.mark.parametrize(
    "code",
    [
        "from fab.core import Fabric\n",
        "import fab.core\n",
        "from fab import core\n",
        "import fab.lazy\n",
        "import importlib\nimportlib.import_module('fab.core.registry')\n",
    ],
)
def test_l0_package_importing_fab_is_reported(tmp_path: Path, code: str) -> None:
    make_repo(tmp_path)
    write_source(tmp_path, "fab-wrappers", "module.py", code)
    problems = failures(tmp_path)
    assert list(problems) == ["imports"]
    [problem] = problems["imports"]
    assert problem.startswith("packages/fab-wrappers/src/fab/wrappers/module.py:")
    assert "fab-wrappers (L0) imports 'fab." in problem


def test_l0_package_importing_its_own_leaf_is_fine(tmp_path: Path) -> None:
    make_repo(tmp_path)
    code = "import fab.wrappers.surgery\nfrom fab.wrappers import x\nfrom . import y\n"
    write_source(tmp_path, "fab-wrappers", "module.py", code)
    assert failures(tmp_path) == {}


def test_l2_packages_may_import_what_they_declare(tmp_path: Path) -> None:
    make_repo(tmp_path, dependencies={"fab-strategies": [CORE_RANGE, "fab-lazy>=0.1,<0.2"]})
    code = "from fab.core import Fabric\nfrom fab.lazy import materialize\n"
    write_source(tmp_path, "fab-strategies", "ddp.py", code)
    assert failures(tmp_path) == {}


def test_an_l2_package_importing_another_is_reported(tmp_path: Path) -> None:
    make_repo(tmp_path)
    write_source(tmp_path, "fab-strategies", "ddp.py", "from fab.accelerators import CUDA\n")
    assert failures(tmp_path) == {
        "imports": [
            "packages/fab-strategies/src/fab/strategies/ddp.py:1: fab-strategies (L2) imports "
            "the L2 package 'fab.accelerators': L2 packages never import each other"
        ]
    }


# --- declared imports ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "import fab.lazy\n",
        "from fab.lazy.loading import lazy_load\n",
        "from fab import lazy\n",
        "def f():\n    from fab.lazy import materialize\n",
        "import importlib\nimportlib.import_module('fab.lazy.loading')\n",
    ],
)
def test_an_undeclared_fab_import_is_reported(tmp_path: Path, code: str) -> None:
    """fab-strategies importing fab-lazy without declaring it (issue 10, item 15)."""
    make_repo(tmp_path)
    write_source(tmp_path, "fab-strategies", "fsdp.py", code)
    problems = failures(tmp_path)["declared-imports"]
    assert len(problems) == 1
    assert problems[0].startswith("packages/fab-strategies/src/fab/strategies/fsdp.py:")
    assert problems[0].endswith(
        "fab-strategies imports 'fab.lazy' but does not declare fab-lazy in "
        "[project.dependencies]: installed alone it would fail"
    )


def test_an_import_declared_only_as_an_extra_is_reported(tmp_path: Path) -> None:
    make_repo(tmp_path, core_extras={**CORE_EXTRAS})
    write_source(tmp_path, "fab-loggers", "csv.py", "import fab.wrappers\n")
    assert "declared-imports" in failures(tmp_path)


def test_own_leaf_and_non_fab_imports_need_no_declaration(tmp_path: Path) -> None:
    make_repo(tmp_path)
    write_source(tmp_path, "fab-lazy", "x.py", "import fab.lazy.loading\nimport torch\n")
    write_source(tmp_path, "fab-core", "y.py", "from fab.wrappers import FabricModule\n")
    assert failures(tmp_path) == {}


# --- known providers -----------------------------------------------------------------------

PROVIDED = {
    "fab-strategies": {"fab.strategies": ("ddp", "fsdp")},
    "fab-loggers": {"fab.loggers": ("csv",)},
}


def add_entry_points(root: Path, name: str, entry_points: Mapping[str, Mapping[str, str]]) -> None:
    pyproject = root / "packages" / name / "pyproject.toml"
    lines = [pyproject.read_text()]
    for group, entries in entry_points.items():
        lines.append(f'[project.entry-points."{group}"]')
        lines.extend(f'"{n}" = "{target}"' for n, target in entries.items())
    pyproject.write_text("\n".join(lines) + "\n")


def write_provided_names(root: Path, table: Mapping[str, object]) -> None:
    write_source(
        root,
        "fab-core",
        "registry/groups.py",
        "from collections.abc import Mapping\n\n"
        f"PROVIDED_NAMES: Mapping[str, Mapping[str, tuple[str, ...]]] = {table!r}\n",
    )


def repo_with_providers(root: Path, table: Mapping[str, object]) -> Path:
    make_repo(root)
    add_entry_points(root, "fab-strategies", {"fab.strategies": {"ddp": "m:D", "fsdp": "m:F"}})
    add_entry_points(root, "fab-loggers", {"fab.loggers": {"csv": "m:C"}})
    add_entry_points(root, "fab-core", {"fab.strategies": {"single_device": "m:S"}})
    write_provided_names(root, table)
    return root


def test_a_table_equal_to_the_entry_points_passes(tmp_path: Path) -> None:
    assert failures(repo_with_providers(tmp_path, PROVIDED)) == {}


def test_a_name_no_package_registers_is_reported(tmp_path: Path) -> None:
    """The table named deepspeed while no package registered it (issue 10, item 15)."""
    table = {**PROVIDED, "fab-strategies": {"fab.strategies": ("ddp", "deepspeed", "fsdp")}}
    assert failures(repo_with_providers(tmp_path, table)) == {
        "known-providers": [
            "packages/fab-core/src/fab/core/registry/groups.py: PROVIDED_NAMES says "
            "fab-strategies provides fab.strategies deepspeed, but its pyproject.toml registers "
            "no such entry point"
        ]
    }


def test_an_entry_point_missing_from_the_table_is_reported(tmp_path: Path) -> None:
    table = {"fab-strategies": {"fab.strategies": ("ddp", "fsdp")}}
    assert failures(repo_with_providers(tmp_path, table)) == {
        "known-providers": [
            "packages/fab-core/src/fab/core/registry/groups.py: fab-loggers registers "
            "fab.loggers csv (its [project.entry-points]), missing from PROVIDED_NAMES"
        ]
    }


def test_entry_points_without_a_table_are_reported(tmp_path: Path) -> None:
    make_repo(tmp_path)
    add_entry_points(tmp_path, "fab-loggers", {"fab.loggers": {"csv": "m:C"}})
    assert "known-providers" in failures(tmp_path)


def test_the_real_table_is_read() -> None:
    table = ci._provided_names_table(REPO_ROOT / "packages" / "fab-core" / ci.PROVIDED_NAMES_FILE)
    assert isinstance(table, dict)
    assert "ddp" in table["fab-strategies"]["fab.strategies"]


def test_unparseable_source_is_reported(tmp_path: Path) -> None:
    make_repo(tmp_path)
    write_source(tmp_path, "fab-lazy", "broken.py", "def (:\n")
    assert list(failures(tmp_path)) == ["imports"]


@pytest.mark.parametrize(
    ("package", "code", "expected"),
    [
        (["fab", "core"], "from . import x", ["fab.core"]),
        (["fab", "core", "sub"], "from ..a import b", ["fab.core.a"]),
        (["fab", "core"], "from .. import strategies, lazy", ["fab.strategies", "fab.lazy"]),
        (["fab", "core"], "import a.b, c", ["a.b", "c"]),
        (["fab", "core"], "importlib.import_module('.x', 'fab.core')", ["fab.core.x"]),
        (["fab", "core"], "__import__('fab.loggers')", ["fab.loggers"]),
        (["fab", "core"], "from ..... import x", []),
    ],
)
def test_imported_modules_resolves_relative_and_dynamic_imports(
    package: list[str], code: str, expected: list[str]
) -> None:
    found = [module for _, module in ci.imported_modules(ast.parse(code), package)]
    assert found == expected


# --- 6. package files --------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["README.md", "CHANGELOG.md"])
def test_missing_package_file_is_reported(tmp_path: Path, missing: str) -> None:
    make_repo(tmp_path)
    (tmp_path / "packages/fab-lazy" / missing).unlink()
    assert failures(tmp_path) == {"package-files": [f"packages/fab-lazy/{missing}: missing"]}


def test_missing_tests_folder_is_reported(tmp_path: Path) -> None:
    make_repo(tmp_path)
    (tmp_path / "packages/fab-lazy/tests").rmdir()
    assert failures(tmp_path) == {"package-files": ["packages/fab-lazy/tests/: missing"]}


def test_dynamic_version_is_reported(tmp_path: Path) -> None:
    make_repo(tmp_path)
    rewrite_package(tmp_path, "fab-loggers", [CORE_RANGE], version_line='dynamic = ["version"]')
    assert failures(tmp_path) == {
        "package-files": ["packages/fab-loggers/pyproject.toml: [project].version must be static"]
    }


def test_package_missing_from_the_layer_map_is_reported(tmp_path: Path) -> None:
    make_repo(tmp_path)
    write_package(tmp_path, "fab-extra", [CORE_RANGE])
    assert list(failures(tmp_path)) == ["pyproject"]


# --- 7. wheels ---------------------------------------------------------------------------------


def write_wheel(
    directory: Path,
    name: str,
    version: str = "0.1.0",
    extra_entries: Sequence[str] = (),
    drop: Sequence[str] = (),
) -> Path:
    """A synthetic wheel of ``name`` laid out the way hatchling builds ours."""
    leaf = name.removeprefix("fab-")
    dist = name.replace("-", "_")
    dist_info = f"{dist}-{version}.dist-info"
    entries = {
        f"fab/{leaf}/__init__.py": "",
        f"fab/{leaf}/py.typed": "",
        f"{dist_info}/METADATA": f"Metadata-Version: 2.4\nName: {name}\nVersion: {version}\n",
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\n",
        f"{dist_info}/RECORD": "",
        **dict.fromkeys(extra_entries, ""),
    }
    path = directory / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for entry, text in entries.items():
            if entry not in drop:
                wheel.writestr(entry, text)
    return path


@pytest.fixture
def repo_and_wheels(tmp_path: Path) -> tuple[Path, Path]:
    root = make_repo(tmp_path / "repo")
    wheels = tmp_path / "dist"
    wheels.mkdir()
    for name in GOOD_DEPENDENCIES:
        if name != "fab-core":
            write_wheel(wheels, name)
    return root, wheels


def test_good_wheels_pass(repo_and_wheels: tuple[Path, Path]) -> None:
    root, wheels = repo_and_wheels
    write_wheel(wheels, "fab-core")
    assert failures(root, wheels) == {}


def test_wheel_with_fab_init_py_is_reported(repo_and_wheels: tuple[Path, Path]) -> None:
    root, wheels = repo_and_wheels
    write_wheel(wheels, "fab-core", extra_entries=["fab/__init__.py"])
    assert failures(root, wheels) == {
        "wheels": ["fab_core-0.1.0-py3-none-any.whl: contains fab/__init__.py"]
    }


def test_wheel_without_py_typed_is_reported(repo_and_wheels: tuple[Path, Path]) -> None:
    root, wheels = repo_and_wheels
    write_wheel(wheels, "fab-core", drop=["fab/core/py.typed"])
    assert failures(root, wheels) == {
        "wheels": ["fab_core-0.1.0-py3-none-any.whl: has no fab/core/py.typed"]
    }


def test_wheel_version_differing_from_pyproject_is_reported(
    repo_and_wheels: tuple[Path, Path],
) -> None:
    root, wheels = repo_and_wheels
    write_wheel(wheels, "fab-core", version="0.1.1")
    assert failures(root, wheels) == {
        "wheels": [
            (
                "fab_core-0.1.1-py3-none-any.whl: METADATA Version '0.1.1' differs from "
                "pyproject.toml '0.1.0'"
            )
        ]
    }


def test_wheel_shipping_files_outside_its_leaf_is_reported(
    repo_and_wheels: tuple[Path, Path],
) -> None:
    root, wheels = repo_and_wheels
    write_wheel(wheels, "fab-core", extra_entries=["tests/test_x.py"])
    assert failures(root, wheels) == {
        "wheels": [
            "fab_core-0.1.0-py3-none-any.whl: ships files outside fab/core/: tests/test_x.py"
        ]
    }


def test_missing_wheel_is_reported(repo_and_wheels: tuple[Path, Path]) -> None:
    root, wheels = repo_and_wheels
    assert failures(root, wheels) == {"wheels": [f"{wheels}: no wheel of fab-core"]}


@pytest.mark.skipif(importlib.util.find_spec("hatchling") is None, reason="needs hatchling")
def test_build_makes_wheels_that_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_repo(tmp_path, names=["fab-wrappers", "fab-lazy"])
    assert ci.main(["--root", str(tmp_path), "--build"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2:] == ["ok   build", "ok   wheels (built)"]
