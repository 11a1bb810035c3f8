"""The lexical channel on a store: what ingest writes and what search reads.

Ingest (:class:`LexicalWriter`): each product's text goes into its payload
(:data:`~clipy_qdrant.store.base.LEXICAL_TEXT_KEY`) and its BM25 document vector
(:func:`~clipy_qdrant.lexical.document_vector`) beside the dense vectors. The BM25 constants
are fixed before the first vector is written: those the store records, else ``avg_len`` of
the first batch's texts, recorded then. After the run :func:`refresh_vocabulary` rebuilds the
catalog vocabulary from every stored text, so that its document frequencies (the spelling
corrector's ranking and the IDFs that normalise the lexical score) are the engine's.

Search (:class:`LexicalIndex`): the store's vocabulary, BM25 constants and a spelling
corrector built once, or ``None`` from :meth:`LexicalIndex.open` for a store without the
lexical vector (a store created before the channel existed) or without a vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from clipy_qdrant.lexical import Bm25Params, LexicalQuery, SparseTerms, document_vector
from clipy_qdrant.spelling import Correction, SpellingCorrector, Vocabulary
from clipy_qdrant.split import SPLIT_FIELD
from clipy_qdrant.store.base import LEXICAL_TEXT_KEY, PRODUCT_ID_KEY, VectorStore


class LexicalWriter:
    """Document vectors for the products ingest writes to ``store`` (none when the store has no
    lexical vector)."""

    def __init__(self, store: VectorStore) -> None:
        self.store = store
        # Read at the first write: ingest creates the collection only then.
        self.enabled: bool | None = None
        self._params: Bm25Params | None = None

    def vectors(self, texts: Sequence[str]) -> list[SparseTerms | None]:
        """One document vector per text (``None`` for a store without the lexical vector)."""
        if self.enabled is None:
            self.enabled = self.store.has_lexical()
            self._params = self.store.bm25_params() if self.enabled else None
        if not self.enabled:
            return [None] * len(texts)
        if self._params is None:
            self._params = Bm25Params.for_texts(texts)
            self.store.set_bm25_params(self._params)
        params = self._params
        return [document_vector(text, params) for text in texts]


def refresh_vocabulary(store: VectorStore) -> Vocabulary | None:
    """Rebuild and record the vocabulary of every stored product text, with the words of the
    products' keyword field values that no text holds as known words (a query naming a
    category is never "corrected" away from it). ``None``, and nothing recorded, for a store
    without the lexical vector."""
    if not store.has_lexical():
        return None
    keywords = [
        name
        for name, kind in store.indexed_fields().items()
        if kind == "keyword" and name not in (PRODUCT_ID_KEY, SPLIT_FIELD)
    ]
    texts: list[str] = []
    values: list[str] = []
    for point in store.scroll():
        payload = point.payload or {}
        texts.append(str(payload.get(LEXICAL_TEXT_KEY, "")))
        for name in keywords:
            value = payload.get(name)
            items = value if isinstance(value, list) else [value]
            values.extend(v for v in items if isinstance(v, str))
    vocabulary = Vocabulary.from_texts(texts)
    vocabulary.add_known(values)
    store.save_vocabulary(vocabulary)
    return vocabulary


@dataclass
class LexicalIndex:
    """What search needs of a store's lexical channel: its vocabulary, BM25 constants and the
    spelling corrector over that vocabulary (its candidate index is built on the first word
    that needs a correction: about 0.3 s of CPU at catalog scale)."""

    vocabulary: Vocabulary
    params: Bm25Params
    _corrector: SpellingCorrector | None = field(default=None, repr=False)

    @classmethod
    def open(cls, store: VectorStore) -> LexicalIndex | None:
        """The store's lexical index; ``None`` when the store has no lexical channel."""
        if not store.has_lexical():
            return None
        params = store.bm25_params()
        vocabulary = store.vocabulary()
        if params is None or vocabulary is None or vocabulary.documents == 0:
            return None
        return cls(vocabulary, params)

    @property
    def corrector(self) -> SpellingCorrector:
        if self._corrector is None:
            self._corrector = SpellingCorrector(self.vocabulary)
        return self._corrector

    def correct(self, text: str) -> Correction:
        """``text`` with its misspelt words replaced by catalog words."""
        return self.corrector.correct(text)

    def query(self, text: str) -> LexicalQuery:
        """The lexical query of ``text`` with this catalog's IDFs."""
        return LexicalQuery.build(
            text, self.vocabulary.frequency, self.vocabulary.documents, self.params.k1
        )


__all__ = ["LexicalIndex", "LexicalWriter", "refresh_vocabulary"]
