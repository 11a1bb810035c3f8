"""Spelling correction against the catalog's own vocabulary (SymSpell-style, pure Python).

:class:`Vocabulary` holds the words of the stored product texts (tokenized as the lexical
channel does, :func:`clipy_qdrant.lexical.tokenize`) with their document frequencies, the
number of texts and of tokens, and the number of texts holding each pair of words; it is saved as JSON beside the collection and also gives the
lexical channel its IDFs and BM25 ``avg_len``.

:class:`SpellingCorrector` corrects a query word by word:

- a word the catalog knows is never changed, nor a code-like token (one holding a digit,
  ``CH2586``, ``3XL``, or written in mixed case, ``iPhone``), nor a common query word of
  :data:`QUERY_WORDS` ("for", "with", "under"…) that product names rarely hold;
- the edit budget grows with the word: :func:`max_edits` allows no edit up to 2 letters,
  1 edit for 3–4 letters and 2 from 5 letters on, so short words keep their many
  one-edit neighbours apart ("tee" is not "tea");
- candidates come from the symmetric-delete index: every catalog word is stored under each
  string it gives by deleting up to 2 letters; a typo's own deletes meet its word there
  (a transposition costs one delete on each side). Each meeting is checked with the
  optimal-string-alignment Damerau–Levenshtein distance (a transposition of neighbours
  counts 1);
- the query's other catalog words are the context: the vocabulary also counts how many texts
  hold each pair of words, and each candidate ``c`` scores ``log df(c) + Σ log P(w | c)``
  over the context words ``w``, with ``P(w | c) = (pair(c, w) + μ·df(w)/N) / (df(c) + μ)``
  (Dirichlet-smoothed towards the word's catalog rate, :data:`CONTEXT_SMOOTHING`, so a rare
  candidate sharing one text with the context gains nothing). The best one-edit candidate
  wins unless a two-edit one scores :data:`CONTEXT_EDIT_PENALTY` higher ("sirts" beside
  "women" is "skirts", beside "men" "shirts"; measured in docs/experiments.md,
  "Context-aware spelling correction");
- without context (a one-word query, or a vocabulary without pair counts) the replacement
  is the candidate with the least distance, then the highest document frequency; ties go to
  the first in alphabetical order, so the result is deterministic;
- a word with no candidate within its budget stays as it is.

The rest of the query (other words, spacing, punctuation) is kept; a replacement takes the
case shape of the word it replaces (``Sneakres`` → ``Sneakers``).
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipy_qdrant.errors import InputError, StoreError
from clipy_qdrant.lexical import DEFAULT_B, DEFAULT_K1, Bm25Params, idf, tokenize

VOCABULARY_FORMAT = "clipy-vocabulary"
VOCABULARY_VERSION = 2
#: Versions :meth:`Vocabulary.from_json` reads (version 1 has no word-pair counts).
_READABLE_VERSIONS = (1, 2)
#: The most edits a correction makes to one word.
MAX_DISTANCE = 2
#: How much higher (natural log) a two-edit candidate's context score must be than the best
#: one-edit candidate's to replace it (chosen on validation typos, docs/experiments.md).
CONTEXT_EDIT_PENALTY = 6.0
#: Dirichlet prior mass of a candidate's context likelihood (the ``μ`` of the module doc).
CONTEXT_SMOOTHING = 1000.0
#: Fewest texts holding a word pair for :meth:`Vocabulary.from_texts` to keep its count.
MIN_PAIR_TEXTS = 2
#: Words of shoppers' queries that product texts rarely contain: never "corrected".
QUERY_WORDS: frozenset[str] = frozenset(
    {
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "best",
        "buy",
        "by",
        "cheap",
        "for",
        "from",
        "has",
        "have",
        "her",
        "his",
        "i",
        "in",
        "is",
        "it",
        "its",
        "my",
        "of",
        "off",
        "on",
        "or",
        "our",
        "pair",
        "pairs",
        "sale",
        "she",
        "size",
        "than",
        "that",
        "the",
        "their",
        "them",
        "these",
        "this",
        "those",
        "to",
        "under",
        "upto",
        "what",
        "with",
        "within",
        "without",
        "you",
        "your",
    }
)

_WORD = re.compile(r"[^\W_]+")


def max_edits(length: int) -> int:
    """The edit budget of a word of ``length`` letters: 0 up to 2, 1 for 3–4, 2 from 5 on."""
    if length <= 2:
        return 0
    if length <= 4:
        return 1
    return MAX_DISTANCE


def is_code_like(word: str) -> bool:
    """Whether ``word`` (as typed) looks like a code or a name to keep as is: it holds a
    digit (``CH2586``, ``3XL``, ``501``) or a capital after a lower-case letter (``iPhone``,
    ``McQueen``)."""
    if any(ch.isdigit() for ch in word):
        return True
    return any(a.islower() and b.isupper() for a, b in itertools.pairwise(word))


def is_code_query(text: str) -> bool:
    """Whether ``text`` is a code and nothing else: it has a word and every word of it is
    code-like (:func:`is_code_like`, the rule that keeps a word from being corrected)."""
    words = _WORD.findall(text)
    return bool(words) and all(is_code_like(word) for word in words)


def damerau_levenshtein(a: str, b: str, limit: int = MAX_DISTANCE) -> int:
    """Optimal-string-alignment distance of ``a`` and ``b`` (insert, delete, substitute, swap
    two neighbours: 1 each); any distance above ``limit`` is returned as ``limit + 1``."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    if a == b:
        return 0
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            best = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                best = min(best, prev2[j - 2] + 1)
            cur[j] = best
        if min(cur) > limit:
            return limit + 1
        prev2, prev = prev, cur
    return min(prev[-1], limit + 1)


def _deletes(word: str, depth: int) -> set[str]:
    """Every string made from ``word`` by deleting 1 to ``depth`` letters."""
    out: set[str] = set()
    frontier = {word}
    for _ in range(depth):
        nxt = {w[:i] + w[i + 1 :] for w in frontier for i in range(len(w))}
        nxt -= out
        out |= nxt
        frontier = nxt
    return out


def _pair_key(a: str, b: str) -> str:
    # Tokens hold no space, so "a b" names the unordered pair unambiguously.
    return f"{a} {b}" if a < b else f"{b} {a}"


@dataclass
class Vocabulary:
    """The catalog's words: document frequency of each token, number of texts (those with at
    least one token, as the lexical channel's IDF counts them) and of tokens, and ``pairs``:
    the number of texts holding each pair of distinct words (key ``"a b"``, ``a < b``), the
    spelling corrector's context; ``known``: catalog words found only outside the texts (in
    the products' filterable field values, e.g. a category "Topwear"), with the number of
    products holding each. Known words are never corrected; they take no part in BM25 or in
    the ranking of corrections."""

    frequencies: dict[str, int] = field(default_factory=dict)
    documents: int = 0
    tokens: int = 0
    pairs: dict[str, int] = field(default_factory=dict)
    known: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> Vocabulary:
        """The vocabulary of ``texts`` (each text counts once per distinct word). Word pairs
        held by fewer than :data:`MIN_PAIR_TEXTS` texts are left out: on the catalog they
        are half of the pairs and change no measured correction."""
        vocabulary = cls()
        vocabulary.add_texts(texts)
        vocabulary.pairs = {k: n for k, n in vocabulary.pairs.items() if n >= MIN_PAIR_TEXTS}
        return vocabulary

    def add_texts(self, texts: Iterable[str]) -> None:
        """Count more texts in (a text that replaces a stored one needs a rebuild instead)."""
        counts: Counter[str] = Counter(self.frequencies)
        pairs: Counter[str] = Counter(self.pairs)
        for text in texts:
            words = tokenize(text)
            if not words:
                continue  # no lexical vector either: outside the IDF's N
            distinct = sorted(set(words))
            counts.update(distinct)
            pairs.update(f"{a} {b}" for a, b in itertools.combinations(distinct, 2))
            self.documents += 1
            self.tokens += len(words)
        self.frequencies = dict(counts)
        self.pairs = dict(pairs)

    def add_known(self, values: Iterable[str]) -> None:
        """Count the words of field values (one count per value) that no text holds as
        :attr:`known` words."""
        counts: Counter[str] = Counter(self.known)
        for value in values:
            counts.update(set(tokenize(value)).difference(self.frequencies))
        self.known = dict(counts)

    def __contains__(self, word: object) -> bool:
        return isinstance(word, str) and (word in self.frequencies or word in self.known)

    def in_texts(self, word: str) -> bool:
        """True when a product text holds ``word`` (a known word outside the texts: False)."""
        return word in self.frequencies

    def __len__(self) -> int:
        return len(self.frequencies)

    def frequency(self, word: str) -> int:
        """Number of texts holding ``word`` (0 if none)."""
        return self.frequencies.get(word, 0)

    def cooccurrence(self, a: str, b: str) -> int:
        """Number of texts holding both ``a`` and ``b`` (0 if none)."""
        return self.pairs.get(_pair_key(a, b), 0)

    @property
    def avg_len(self) -> float:
        """Mean number of tokens per text (1.0 for an empty vocabulary)."""
        return self.tokens / self.documents if self.documents and self.tokens else 1.0

    def bm25_params(self, k1: float = DEFAULT_K1, b: float = DEFAULT_B) -> Bm25Params:
        """BM25 constants with this catalog's mean text length."""
        return Bm25Params(avg_len=self.avg_len, k1=k1, b=b)

    def idf(self, word: str) -> float:
        """The IDF Qdrant's modifier gives ``word`` over these texts."""
        return idf(self.frequency(word), self.documents)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": VOCABULARY_FORMAT,
            "version": VOCABULARY_VERSION,
            "documents": self.documents,
            "tokens": self.tokens,
            "frequencies": dict(sorted(self.frequencies.items())),
            "pairs": dict(sorted(self.pairs.items())),
            "known": dict(sorted(self.known.items())),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Vocabulary:
        """Read :meth:`to_json`'s layout (version 1, without pair counts, too: its corrector
        ranks without context until the next ingest rebuilds the vocabulary)."""
        if data.get("format") != VOCABULARY_FORMAT or data.get("version") not in _READABLE_VERSIONS:
            raise InputError(
                f"not a {VOCABULARY_FORMAT} version {VOCABULARY_VERSION} file "
                f"(format {data.get('format')!r}, version {data.get('version')!r})"
            )
        try:
            freqs = {str(w): int(c) for w, c in dict(data["frequencies"]).items()}
            pairs = {str(k): int(c) for k, c in dict(data.get("pairs") or {}).items()}
            known = {str(k): int(c) for k, c in dict(data.get("known") or {}).items()}
            return cls(freqs, int(data["documents"]), int(data["tokens"]), pairs, known)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"malformed vocabulary: {exc}") from None

    def save(self, path: str | Path) -> Path:
        """Write the vocabulary as JSON (atomically: a temp file renamed over ``path``)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(self.to_json(), ensure_ascii=False), encoding="utf-8")
            tmp.replace(path)
        except OSError as exc:
            raise StoreError(f"{path}: cannot write vocabulary: {exc}") from None
        return path

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise StoreError(f"{path}: no vocabulary; ingest the catalog first") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StoreError(f"{path}: cannot read vocabulary: {exc}") from None
        if not isinstance(data, dict):
            raise StoreError(f"{path}: cannot read vocabulary: not a JSON object")
        try:
            return cls.from_json(data)
        except InputError as exc:
            raise StoreError(f"{path}: {exc}") from None


@dataclass(frozen=True)
class Correction:
    """A query and its corrected form; ``changes`` lists (typed word, replacement) pairs."""

    original: str
    corrected: str
    changes: tuple[tuple[str, str], ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def to_json(self) -> dict[str, Any]:
        return {
            "original": self.original,
            "corrected": self.corrected,
            "changes": [list(pair) for pair in self.changes],
        }


def _same_case(typed: str, word: str) -> str:
    if len(typed) > 1 and typed.isupper():
        return word.upper()
    if typed[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


class SpellingCorrector:
    """Corrects query words to catalog words (see the module docstring for the rules).

    ``min_frequency`` keeps rarer catalog words out of the candidates (they stay known
    words, never changed); ``protected`` are words never changed besides the catalog's.
    ``edit_penalty`` and ``smoothing``: the context ranking's :data:`CONTEXT_EDIT_PENALTY`
    and :data:`CONTEXT_SMOOTHING`.
    """

    def __init__(
        self,
        vocabulary: Vocabulary,
        *,
        min_frequency: int = 1,
        protected: Iterable[str] = QUERY_WORDS,
        edit_penalty: float = CONTEXT_EDIT_PENALTY,
        smoothing: float = CONTEXT_SMOOTHING,
    ) -> None:
        self.vocabulary = vocabulary
        self.protected = frozenset(protected)
        self.edit_penalty = edit_penalty
        self.smoothing = smoothing
        self.min_frequency = min_frequency
        self._delete_index: dict[str, tuple[str, ...]] | None = None

    def prepare(self) -> None:
        """Build the candidate index now rather than on the first word that needs one: a
        server does it before its first request."""
        self._index  # noqa: B018 (the property builds it)

    @property
    def _index(self) -> dict[str, tuple[str, ...]]:
        """The symmetric-delete index, built on the first word that needs a candidate (about
        0.3 s of CPU at catalog scale): a query whose words the catalog all knows never
        builds it."""
        if self._delete_index is None:
            index: dict[str, list[str]] = {}
            for word, freq in self.vocabulary.frequencies.items():
                if freq < self.min_frequency or is_code_like(word) or max_edits(len(word)) == 0:
                    continue
                index.setdefault(word, []).append(word)
                for deleted in _deletes(word, MAX_DISTANCE):
                    index.setdefault(deleted, []).append(word)
            # Tuples of strings are not tracked by the garbage collector: a query does not
            # pay for a collection pass over a hundred thousand lists.
            self._delete_index = {k: tuple(v) for k, v in index.items()}
        return self._delete_index

    def _best(self, word: str, depth: int, limit: int) -> tuple[int, int, str] | None:
        """The best (distance, -frequency, word) among the catalog words that share a string
        with ``word`` after up to ``depth`` deletes on each side, within ``limit`` edits."""
        best: tuple[int, int, str] | None = None
        seen: set[str] = set()
        for key in (word, *_deletes(word, depth)):
            for candidate in self._index.get(key, ()):
                if candidate in seen:
                    continue
                seen.add(candidate)
                distance = damerau_levenshtein(word, candidate, limit)
                if distance > limit:
                    continue
                ranked = (distance, -self.vocabulary.frequency(candidate), candidate)
                if best is None or ranked < best:
                    best = ranked
        return best

    def context_score(self, candidate: str, context: Sequence[str]) -> float:
        """``log df(c) + Σ log P(w | c)`` over the context words (see the module doc)."""
        vocabulary = self.vocabulary
        df = vocabulary.frequency(candidate)
        rate = self.smoothing / vocabulary.documents
        return math.log(df) + sum(
            math.log(
                (vocabulary.cooccurrence(candidate, w) + rate * vocabulary.frequency(w))
                / (df + self.smoothing)
            )
            for w in context
        )

    def _best_in_context(
        self, word: str, depth: int, limit: int, context: Sequence[str], floor: float
    ) -> tuple[float, str] | None:
        """The best (-score, word) within ``limit`` edits whose context score beats ``floor``.
        The context term is never positive, so a candidate whose ``log df`` is at most
        ``floor`` is passed over before its edit distance is computed."""
        best: tuple[float, str] | None = None
        seen: set[str] = set()
        for key in (word, *_deletes(word, depth)):
            for candidate in self._index.get(key, ()):
                if candidate in seen:
                    continue
                seen.add(candidate)
                if math.log(self.vocabulary.frequency(candidate)) <= floor:
                    continue
                if damerau_levenshtein(word, candidate, limit) > limit:
                    continue
                score = self.context_score(candidate, context)
                ranked = (-score, candidate)
                if score > floor and (best is None or ranked < best):
                    best = ranked
        return best

    def suggest(self, word: str, context: Sequence[str] = ()) -> str | None:
        """The catalog word to replace ``word`` (a folded token) by, or ``None`` to keep it;
        ``context``: the query's other catalog words (folded)."""
        if word in self.vocabulary or word in self.protected or is_code_like(word):
            return None
        budget = max_edits(len(word))
        if budget == 0:
            return None
        context = [w for w in context if w != word and self.vocabulary.in_texts(w)]
        if context and self.vocabulary.pairs:
            near = self._best_in_context(word, 1, 1, context, -math.inf)
            if budget == 1:
                return None if near is None else near[1]
            # A two-edit candidate replaces the best one-edit one only by a clear margin.
            floor = -math.inf if near is None else -near[0] + self.edit_penalty
            far = self._best_in_context(word, budget, budget, context, floor)
            best_in_context = far or near
            return None if best_in_context is None else best_in_context[1]
        # One edit first: most typos are one edit away, and a one-edit candidate always beats
        # a two-edit one, so the larger search runs only when the first finds nothing.
        best = self._best(word, 1, 1)
        if best is None and budget > 1:
            best = self._best(word, budget, budget)
        return None if best is None else best[2]

    def correct(self, query: str) -> Correction:
        """``query`` with each correctable word replaced by its best catalog word."""
        pieces: list[str] = []
        changes: list[tuple[str, str]] = []
        end = 0
        words = [(match, tokenize(match.group())) for match in _WORD.finditer(query)]
        context = [
            folded[0]
            for _, folded in words
            if len(folded) == 1
            and self.vocabulary.in_texts(folded[0])
            and folded[0] not in self.protected
        ]
        for match, folded in words:
            typed = match.group()
            pieces.append(query[end : match.start()])
            end = match.end()
            replacement = None
            if len(folded) == 1 and not is_code_like(typed):
                replacement = self.suggest(folded[0], context)
            if replacement is None:
                pieces.append(typed)
                continue
            fixed = _same_case(typed, replacement)
            pieces.append(fixed)
            changes.append((typed, fixed))
        pieces.append(query[end:])
        corrected = "".join(pieces) if changes else query
        return Correction(query, corrected, tuple(changes))


__all__ = [
    "CONTEXT_EDIT_PENALTY",
    "CONTEXT_SMOOTHING",
    "MAX_DISTANCE",
    "QUERY_WORDS",
    "Correction",
    "SpellingCorrector",
    "Vocabulary",
    "damerau_levenshtein",
    "is_code_like",
    "is_code_query",
    "max_edits",
]
