"""No module of the library, the application or the benchmarks is over 600 lines.

One module owns one thing (../shared/STYLE.md); a module that grows past this size owns
several, and is split by concern. The test names every file over the limit with its length.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Lines a module may have.
MAX_LINES = 600

#: The folders whose modules are held to it.
FOLDERS = ("clipy_qdrant", "ingest", "benchmarks")


def oversized(root: Path, folders: tuple[str, ...] = FOLDERS) -> list[str]:
    """``"<path>: <lines> lines"`` for every .py file under ``root/<folder>`` over the limit."""
    found = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > MAX_LINES:
                found.append(f"{path.relative_to(root)}: {lines} lines")
    return found


def test_no_module_is_over_the_limit() -> None:
    assert all((ROOT / folder).is_dir() for folder in FOLDERS)
    too_long = oversized(ROOT)
    assert not too_long, f"split these modules by concern (at most {MAX_LINES} lines): " + (
        "; ".join(too_long)
    )


@pytest.mark.parametrize(("lines", "flagged"), [(MAX_LINES, False), (MAX_LINES + 1, True)])
def test_the_check_flags_a_module_over_the_limit(tmp_path: Path, lines: int, flagged: bool) -> None:
    package = tmp_path / "ingest" / "deep"
    package.mkdir(parents=True)
    (package / "module.py").write_text("x = 1\n" * lines, encoding="utf-8")
    expected = [f"{Path('ingest/deep/module.py')}: {lines} lines"] if flagged else []
    assert oversized(tmp_path, ("ingest",)) == expected
