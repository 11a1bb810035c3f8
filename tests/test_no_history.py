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

#: Phrases that narrate (case-insensitive, matched across line breaks and repeated spaces).
#: Each is unambiguous: none has a present-tense, descriptive reading.
NARRATION: tuple[str, ...] = (
    "head of before",
    "heads of before",
    "heads before (",
    "the heads before",
    "the previous heads",
    "the previous encoder",
    "the previous model",
    "previous machine",
    "previous session",
    "earlier session",
    "in earlier sessions",
    "this session",
    "on a slower machine",
    "this machine is faster",
    "this session's machine",
    "not built into search yet",
    "not yet shipped",
    "before the colour heads",
    "before the type block",
    "before the hubness correction",
    "the first version of this card",
    "earlier that day",
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
    assert narration_in("x = 1\n# measured on the previous\n# machine, 3 runs\n") == [
        (2, "previous machine")
    ]
    assert narration_in("The HEAD OF BEFORE\n") == [(1, "head of before")]
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
