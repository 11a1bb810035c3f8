"""Every third-party module that ``clipy_qdrant/`` or ``ingest/`` imports, on any code path
(imports inside functions included), belongs to a distribution that pyproject declares."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("clipy_qdrant", "ingest")


def _normalise(name: str) -> str:
    """PEP 503: case and runs of ``-``, ``_``, ``.`` do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, f"cannot read requirement {requirement!r}"
    return _normalise(match.group(1))


def imported_modules(package_dirs: list[Path]) -> dict[str, set[str]]:
    """Top-level module name -> the files that import it (absolute imports only)."""
    found: dict[str, set[str]] = {}
    for package_dir in package_dirs:
        for path in sorted(package_dir.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], set()).add(
                        str(path.relative_to(package_dir.parent))
                    )
    return found


def third_party(modules: dict[str, set[str]]) -> dict[str, set[str]]:
    first_party = {*PACKAGES, "__future__"}
    return {
        name: files
        for name, files in modules.items()
        if name not in sys.stdlib_module_names and name not in first_party
    }


def declared_distributions(pyproject: dict) -> set[str]:
    """``[project].dependencies`` and every optional extra."""
    project = pyproject["project"]
    requirements = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    return {_requirement_name(requirement) for requirement in requirements}


def undeclared_imports(pyproject: dict) -> list[str]:
    distributions = importlib.metadata.packages_distributions()
    declared = declared_distributions(pyproject)
    problems = []
    for module, files in sorted(
        third_party(imported_modules([ROOT / p for p in PACKAGES])).items()
    ):
        owners = {_normalise(d) for d in distributions.get(module, [])}
        if not owners:
            problems.append(f"{module} (imported by {sorted(files)}) is not installed")
        elif not owners & declared:
            problems.append(
                f"{module} (imported by {sorted(files)}) comes from {sorted(owners)}, "
                "which pyproject does not declare"
            )
    return problems


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_every_third_party_import_is_declared() -> None:
    assert undeclared_imports(_pyproject()) == []


def test_the_check_catches_a_missing_dependency() -> None:
    """Dropping a dependency that the code imports (numpy) is reported, and only that one."""
    pyproject = _pyproject()
    pyproject["project"]["dependencies"] = [
        r for r in pyproject["project"]["dependencies"] if _requirement_name(r) != "numpy"
    ]
    problems = undeclared_imports(pyproject)
    assert len(problems) == 1 and problems[0].startswith("numpy (imported by")


def test_imports_inside_functions_are_seen(tmp_path: Path) -> None:
    module = tmp_path / "pkg" / "mod.py"
    module.parent.mkdir()
    module.write_text(
        "import json\nfrom . import sibling\n\ndef f():\n    from scipy import ndimage\n"
        "    import numpy.linalg as la\n"
    )
    assert set(third_party(imported_modules([module.parent]))) == {"scipy", "numpy"}
