"""The lexical channel's pure parts: tokenizer, BM25 sparse vectors, a reference scorer and
the normalisation that lets BM25 take part in weighted fusion.

BM25 runs inside Qdrant as a sparse vector with the IDF modifier, the way Qdrant's own BM25
models (qdrant-edge's ``Bm25``, FastEmbed's ``Qdrant/bm25``) use it:

- a **document** vector holds, for each distinct token ``t`` of the product text, the BM25
  term-frequency weight ``tf·(k1+1) / (tf + k1·(1 - b + b·len/avg_len))`` (``len`` = tokens
  in the text, ``avg_len`` = the catalog's mean, a constant fixed when the vectors are
  written);
- a **query** vector holds weight 1.0 for each distinct query token;
- the engine multiplies each query weight by ``idf(t) = ln((N - df + 0.5) / (df + 0.5) + 1)``
  at query time (``Modifier.Idf``; ``N`` = points holding the sparse vector, ``df`` = those
  holding ``t``), so the dot product is the BM25 score, with IDF always current. Replacing
  a point updates the statistics on both engines; a deleted point stays in qdrant-edge's
  ``N`` (as in a server's global IDF scope) while qdrant-client's local mode drops it.

Term ids are the first 4 bytes of ``blake2b(token)`` as a little-endian uint32
(:func:`term_id`): stable across processes and machines, no vocabulary to ship with the
vectors. On the fashion catalog the 8,606 distinct tokens give no collision (about 0.01
expected); a collision would only merge two words' statistics, never lose a document.

The tokenizer folds Unicode (NFKD, combining marks dropped), case-folds and splits on
anything that is not a letter or digit, so a product code stays one token
(``"CH2586"`` → ``"ch2586"``) and ``"T-Shirts"`` gives ``"t"``, ``"shirts"``. There is no
stemming and no stop-word list: the catalog's words are short names, and the spelling
corrector (:mod:`clipy_qdrant.spelling`) shares this tokenizer.

:class:`Bm25Reference` is a brute-force numpy scorer over the same definitions that tests
compare both engines against.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from clipy_qdrant.errors import ConfigError

#: Name of the sparse vector that holds the BM25 document weights.
LEXICAL = "lexical"
DEFAULT_K1 = 1.2
DEFAULT_B = 0.75

_TOKEN = re.compile(r"[^\W_]+")


def normalise_text(text: str) -> str:
    """``text`` folded for matching: NFKD with combining marks dropped, then case-folded."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def tokenize(text: str) -> list[str]:
    """The tokens of ``text``: folded (see :func:`normalise_text`) runs of letters and digits."""
    return _TOKEN.findall(normalise_text(text))


def term_id(token: str) -> int:
    """Stable sparse-vector index of a token: the first 4 bytes of its blake2b, as a uint32."""
    digest = hashlib.blake2b(token.encode("utf-8"), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def idf(document_frequency: int, documents: int) -> float:
    """Qdrant's IDF modifier: ``ln((N - df + 0.5) / (df + 0.5) + 1)`` (always > 0)."""
    return math.log((documents - document_frequency + 0.5) / (document_frequency + 0.5) + 1.0)


@dataclass(frozen=True)
class Bm25Params:
    """BM25 constants: ``k1`` (term-frequency saturation), ``b`` (length normalisation) and
    ``avg_len``, the mean number of tokens of a product text, fixed when vectors are written.

    ``avg_len`` only scales the length normalisation: any positive constant gives a valid
    BM25 variant, but every stored vector and the reference must use the same one, so the
    store records the parameters it writes with (:meth:`to_json`)."""

    avg_len: float
    k1: float = DEFAULT_K1
    b: float = DEFAULT_B

    def __post_init__(self) -> None:
        if not self.avg_len > 0:
            raise ConfigError(f"BM25 avg_len must be positive, got {self.avg_len}")
        if self.k1 < 0:
            raise ConfigError(f"BM25 k1 must not be negative, got {self.k1}")
        if not 0.0 <= self.b <= 1.0:
            raise ConfigError(f"BM25 b must be within [0, 1], got {self.b}")

    @classmethod
    def for_texts(
        cls, texts: Iterable[str], k1: float = DEFAULT_K1, b: float = DEFAULT_B
    ) -> Bm25Params:
        """Parameters whose ``avg_len`` is the mean token count of ``texts`` (1.0 if none)."""
        lengths = [len(tokenize(text)) for text in texts]
        mean = sum(lengths) / len(lengths) if lengths else 0.0
        return cls(avg_len=mean if mean > 0 else 1.0, k1=k1, b=b)

    def to_json(self) -> dict[str, float]:
        return {"avg_len": self.avg_len, "k1": self.k1, "b": self.b}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Bm25Params:
        try:
            return cls(avg_len=float(data["avg_len"]), k1=float(data["k1"]), b=float(data["b"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"malformed BM25 parameters {dict(data)!r}: {exc}") from None

    def tf_weight(self, tf: int, length: int) -> float:
        """BM25 term-frequency weight of a token seen ``tf`` times in a text of ``length``."""
        norm = self.k1 * (1.0 - self.b + self.b * length / self.avg_len)
        return tf * (self.k1 + 1.0) / (tf + norm)


@dataclass(frozen=True)
class SparseTerms:
    """A sparse vector: term ids (sorted, distinct) and their weights."""

    indices: tuple[int, ...]
    values: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.indices)

    def as_dict(self) -> dict[int, float]:
        return dict(zip(self.indices, self.values, strict=True))


def _sparse(weights: Mapping[int, float]) -> SparseTerms:
    ids = sorted(weights)
    return SparseTerms(tuple(ids), tuple(float(weights[i]) for i in ids))


def document_vector(text: str, params: Bm25Params) -> SparseTerms:
    """The stored sparse vector of a product text: BM25 term-frequency weights per term id.

    A text without tokens gives an empty vector, which must not be written: qdrant-client's
    local mode counts a point holding an empty sparse vector in the IDF's N, qdrant-edge
    does not; a point without the sparse vector is outside N on both."""
    tokens = tokenize(text)
    weights: dict[int, float] = {}
    for token, tf in Counter(tokens).items():
        tid = term_id(token)
        # Two tokens that collide on one id add up, as one term would.
        weights[tid] = weights.get(tid, 0.0) + params.tf_weight(tf, len(tokens))
    return _sparse(weights)


def query_terms(text: str) -> list[str]:
    """The distinct tokens of a query, in first-seen order (a repeated word counts once)."""
    return list(dict.fromkeys(tokenize(text)))


def query_vector(text: str) -> SparseTerms:
    """The sparse query vector: weight 1.0 per distinct query term (IDF is the engine's)."""
    return _sparse(dict.fromkeys((term_id(t) for t in query_terms(text)), 1.0))


def max_bm25(query_idfs: Iterable[float], k1: float = DEFAULT_K1) -> float:
    """Supremum of a query's BM25 score: ``Σ idf(t)·(k1+1)`` over its distinct terms (a term's
    weight ``tf·(k1+1)/(tf+norm)`` stays below ``k1+1``)."""
    return sum(query_idfs) * (k1 + 1.0)


def normalise_bm25(
    scores: np.ndarray | Sequence[float], query_idfs: Iterable[float], k1: float = DEFAULT_K1
) -> np.ndarray:
    """BM25 scores divided by the query's attainable maximum (:func:`max_bm25`): in ``[0, 1)``.

    Why this divisor: weighted fusion adds ``w·score`` across channels whose cosines lie in
    ``[-1, 1]``, so the lexical score needs a fixed scale. Dividing by the query's own
    maximum depends only on the query and the collection statistics, never on which other
    products were retrieved (unlike min-max or divide-by-top, which rescale a product's score
    by its neighbours and make a product's fused score depend on the candidate list). The
    upper bound is then exactly 1 for every product, and 0 for a product with none of the
    query's terms, so the exact weighted fusion can still bound the score of a product
    missing from the lexical candidates (at most ``w·s_k``, the k-th candidate's normalised
    score, as for the dense channels). A query with no known term gets all zeros.

    ``query_idfs`` are the IDFs of the query's distinct terms over the collection (from the
    stored :class:`~clipy_qdrant.spelling.Vocabulary`'s document frequencies: the engine does
    not return them). A typical match sits well below 1 (one occurrence in a text of average
    length weighs ``(k1+1)/(1+k1)`` = 1 of a possible 2.2 per term), so the lexical weight is
    tuned on this scale.
    """
    bound = max_bm25(query_idfs, k1)
    arr = np.asarray(scores, dtype=np.float64)
    if bound <= 0:
        return np.zeros_like(arr)
    return arr / bound


@dataclass(frozen=True)
class LexicalQuery:
    """A query of the lexical channel: the sparse vector sent to the engine, the IDF of each
    of its terms over the collection and the normalisation divisor (:func:`max_bm25`).

    :meth:`score` gives a product's BM25 from its stored document vector, as the engine
    computes it (exact weighted fusion asks the engine for the lexical score of a product
    that only the dense channels found). The IDFs come from the collection's
    statistics (``document_frequency``, ``documents``: the stored vocabulary's), which equal
    the engine's as long as the vocabulary is rebuilt from the stored texts after ingest.
    """

    text: str
    vector: SparseTerms
    idfs: Mapping[int, float]
    k1: float = DEFAULT_K1

    @classmethod
    def build(
        cls,
        text: str,
        document_frequency: Callable[[str], int],
        documents: int,
        k1: float = DEFAULT_K1,
    ) -> LexicalQuery:
        """The lexical query of ``text`` over a collection of ``documents`` texts."""
        idfs: dict[int, float] = {}
        for term in query_terms(text):
            idfs.setdefault(term_id(term), idf(document_frequency(term), documents))
        return cls(text, query_vector(text), idfs, k1)

    @cached_property
    def bound(self) -> float:
        """The score no product reaches: ``Σ idf·(k1+1)`` (computed once: :meth:`normalise`
        divides every hit's score by it)."""
        return max_bm25(self.idfs.values(), self.k1)

    def score(self, document: SparseTerms | Mapping[int, float]) -> float:
        """BM25 of a product from its stored document vector (what the engine computes)."""
        weights = document.as_dict() if isinstance(document, SparseTerms) else document
        return sum(self.idfs[tid] * weights[tid] for tid in self.idfs if tid in weights)

    def normalise(self, raw: float) -> float:
        """``raw / bound`` (see :func:`normalise_bm25`); 0 for a query without terms."""
        bound = self.bound
        return raw / bound if bound > 0 else 0.0


class Bm25Reference:
    """Brute-force BM25 over a list of texts with the same tokenizer, weights and IDF as the
    engines: the oracle for the sparse-vector channel. Each query term adds ``idf·weight`` to
    the rows holding it (numpy over a term → rows table); every text gets a score."""

    def __init__(self, texts: Sequence[str], params: Bm25Params) -> None:
        self.params = params
        self.n = len(texts)
        #: Texts with at least one token: the IDF's N (a text without tokens has no vector).
        self.documents = 0
        postings: dict[str, tuple[list[int], list[float]]] = {}
        for row, text in enumerate(texts):
            tokens = tokenize(text)
            self.documents += bool(tokens)
            for token, tf in Counter(tokens).items():
                rows, weights = postings.setdefault(token, ([], []))
                rows.append(row)
                weights.append(params.tf_weight(tf, len(tokens)))
        self._postings = {
            token: (np.asarray(rows, dtype=np.int64), np.asarray(weights, dtype=np.float64))
            for token, (rows, weights) in postings.items()
        }

    def document_frequency(self, token: str) -> int:
        """Number of texts holding ``token``."""
        entry = self._postings.get(token)
        return 0 if entry is None else len(entry[0])

    def idf(self, token: str) -> float:
        return idf(self.document_frequency(token), self.documents)

    def scores(self, query: str) -> np.ndarray:
        """(n,) BM25 score of every text for ``query`` (0 for texts without its terms)."""
        out = np.zeros(self.n, dtype=np.float64)
        for term in query_terms(query):
            entry = self._postings.get(term)
            if entry is not None:
                out[entry[0]] += self.idf(term) * entry[1]
        return out

    def top(self, query: str, k: int) -> list[tuple[int, float]]:
        """The ``k`` best (row, score) pairs with a positive score, best first (ties by row)."""
        scores = self.scores(query)
        rows = np.flatnonzero(scores > 0)
        order = rows[np.lexsort((rows, -scores[rows]))]
        return [(int(i), float(scores[i])) for i in order[:k]]


__all__ = [
    "DEFAULT_B",
    "DEFAULT_K1",
    "LEXICAL",
    "Bm25Params",
    "Bm25Reference",
    "LexicalQuery",
    "SparseTerms",
    "document_vector",
    "idf",
    "max_bm25",
    "normalise_bm25",
    "normalise_text",
    "query_terms",
    "query_vector",
    "term_id",
    "tokenize",
]
