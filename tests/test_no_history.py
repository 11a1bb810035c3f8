"""Code and current docs describe what is, not how it came to be.

History (which machine, which session, what the heads were before) belongs in CHANGELOG.md
and docs/experiments.md. This test reads the README, docs/*.md (except experiments.md), the
model card and every .py file of the library, the application, the benchmarks and the
experiments, and fails on phrases that only a narrative uses, naming each file:line.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Phrases that narrate (tests/data/narration_phrases.txt; case-insensitive, matched across
#: line breaks and repeated spaces). Each is unambiguous: none has a present-tense,
#: descriptive reading.
NARRATION: tuple[str, ...] = tuple(
    line.strip()
    for line in (ROOT / "tests" / "data" / "narration_phrases.txt").read_text("utf-8").splitlines()
    if line.strip() and not line.startswith("#")
)

#: Files whose job is the history itself.
HISTORY_FILES = {ROOT / "CHANGELOG.md", ROOT / "docs" / "experiments.md"}


def current_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    files += sorted((ROOT / "clipy_qdrant").rglob("MODEL_CARD.md"))
    for folder in ("clipy_qdrant", "ingest", "benchmarks", "experiments"):
        files += sorted((ROOT / folder).rglob("*.py"))
    return [f for f in files if f.is_file() and f not in HISTORY_FILES]


def _pattern(phrase: str) -> re.Pattern[str]:
    words = (re.escape(word) for word in phrase.split())
    return re.compile(r"\s+(?:#:?\s*)?".join(words), re.IGNORECASE)


PATTERNS = [(phrase, _pattern(phrase)) for phrase in NARRATION]


def narration_in(text: str) -> list[tuple[int, str]]:
    """(line number, phrase) for every narration phrase in ``text``; a phrase may span lines
    (also across ``#`` comment markers)."""
    found = []
    for phrase, pattern in PATTERNS:
        for match in pattern.finditer(text):
            found.append((text.count("\n", 0, match.start()) + 1, phrase))
    return sorted(found)


def test_the_phrase_finder_sees_narration_across_lines_and_comments() -> None:
    assert len(NARRATION) == 22  # every phrase of the data file was read
    phrase = next(p for p in NARRATION if len(p.split()) == 2)
    first, second = phrase.split()
    assert narration_in(f"x = 1\n# measured on the {first}\n# {second}, 3 runs\n") == [(2, phrase)]
    assert narration_in(f"The {phrase.upper()}\n") == [(1, phrase)]
    assert narration_in("the heads are trained before the type head\n") == []


def test_no_history_narration_in_code_and_current_docs() -> None:
    files = current_files()
    assert ROOT / "README.md" in files and any(f.suffix == ".py" for f in files)
    hits = [
        f"{path.relative_to(ROOT)}:{line}: {phrase!r}"
        for path in files
        for line, phrase in narration_in(path.read_text(encoding="utf-8"))
    ]
    assert not hits, (
        "history narration belongs in CHANGELOG.md or docs/experiments.md:\n" + "\n".join(hits)
    )
