"""Query words: MiniLM's text feature of a query, approximated from a table of word vectors.

A query text costs MiniLM about 6.5 ms of CPU on one thread (docs/experiments.md, "Serving
CPU per query"), a third of a served text query. Shop queries are short bags of catalog
words ("men's red casual shoes"): the table holds one 384-dim vector per word of the
catalog's training texts, fitted so that the mean of a text's word vectors, scaled to unit
length, is its MiniLM feature (ridge least squares, :mod:`clipy_qdrant.training.query_words`).
A text whose every word (lower-cased ``\\w+`` token) is in the table gets that mean; any other
text (a typo, a brand the catalog never named) goes through MiniLM as before. The heads then
run on the feature as on MiniLM's own.

It serves queries only: stored products' texts are encoded by MiniLM at ingest, so turning the
table on or off never touches a store. Its features differ from MiniLM's (cosine 0.97 on
held-out texts, model card), so results differ too; the held-out numbers are in the model card.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clipy_qdrant.errors import EncoderError

#: The shipped table, fitted on the catalog's training texts (model card, "Query words").
QUERY_WORDS_FILE = Path(__file__).resolve().parents[2] / "models" / "query-words.safetensors"
#: How a text is cut into words (the table's keys are lower-cased).
WORD = re.compile(r"\w+")


def text_words(text: str) -> list[str]:
    """The table's words of ``text``: its lower-cased ``\\w+`` tokens."""
    return WORD.findall(text.lower())


class QueryWords:
    """A word table: ``features`` gives the approximated MiniLM feature of each text whose
    words are all in it, and ``None`` for the others."""

    def __init__(self, words: Sequence[str], vectors: np.ndarray) -> None:
        if vectors.ndim != 2 or len(words) != len(vectors):
            raise EncoderError(
                f"query words: {len(words)} words for a table of shape {vectors.shape}"
            )
        self.words = list(words)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self._index = {word: i for i, word in enumerate(self.words)}

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def rows(self, text: str) -> list[int] | None:
        """The table rows of ``text``'s words, or ``None`` when one is missing (or it has none)."""
        index = self._index
        rows = [index.get(word, -1) for word in text_words(text)]
        return rows if rows and -1 not in rows else None

    def features(self, texts: Sequence[str]) -> list[np.ndarray | None]:
        """Per text: the unit mean of its words' vectors, or ``None`` (a word not in the table)."""
        out: list[np.ndarray | None] = []
        for text in texts:
            rows = self.rows(text)
            if rows is None:
                out.append(None)
                continue
            mean = self.vectors[rows].mean(axis=0)
            norm = float(np.linalg.norm(mean))
            out.append(mean / norm if norm > 0 else None)
        return out

    def save(self, path: Path) -> None:
        """Write the table (float16 vectors, the words in the file's metadata)."""
        from safetensors.numpy import save_file

        save_file(
            {"vectors": self.vectors.astype(np.float16)},
            str(path),
            metadata={"words": json.dumps(self.words, ensure_ascii=False)},
        )

    @classmethod
    def load(cls, path: Path = QUERY_WORDS_FILE) -> QueryWords:
        """The table at ``path`` (default: the shipped one)."""
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="numpy") as f:
                words = json.loads((f.metadata() or {})["words"])
                vectors = f.get_tensor("vectors")
        except (OSError, KeyError, ValueError, SafetensorError) as exc:
            raise EncoderError(f"cannot read the query words table {path}: {exc}") from None
        return cls(words, vectors)
