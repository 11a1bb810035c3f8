"""Integrity check of a stored collection (``clipy verify``).

:func:`verify_store` reads every point of a :class:`~clipy_qdrant.store.base.VectorStore` and
lists what is wrong, one line per problem kind, each naming up to a few products:

- the collection exists, and the encoder that opens it is the one recorded in its metadata;
- every point has a product id, both named vectors (``image``, ``text``) of the recorded
  dimension, finite and of unit length, and a content hash; no product id is stored twice;
- the payload indexes recorded in the metadata exist in the engine with the same type, and
  every stored value of an indexed field fits the index type (a keyword field holding an
  int, or an integer field holding ``"2012a"``, is a problem: the engine skips such values,
  so a filter on the field silently misses the product);
- when the hubness record is present, every product carries a numeric hubness value;
- in a store with the lexical (BM25) vector, every product whose stored text has a word
  holds a sparse vector, and it is the BM25 document vector of that text under the recorded
  constants; lexical vectors need recorded BM25 constants, and product texts a vocabulary
  (the spelling corrector's and the IDFs');
- the HNSW graph covers every vector (embedded store: ``EdgeShard.info()`` counts indexed
  vectors; a server: the collection status is green; qdrant-client's local mode has no
  graph, which is not a problem).

A clean store gives an empty problem list. The check is read-only.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clipy_qdrant.encoders.base import EncoderInfo
from clipy_qdrant.lexical import Bm25Params, SparseTerms, document_vector, tokenize
from clipy_qdrant.store.base import (
    CONTENT_HASH_KEY,
    HUBNESS_KEY,
    LEXICAL_TEXT_KEY,
    PRODUCT_ID_KEY,
    VECTOR_NAMES,
    VectorStore,
)

#: A stored vector's norm may differ from 1 by this much (float32 rounding of a unit vector).
NORM_TOLERANCE = 1e-3
#: The embedded store builds a graph only for segments holding at least this many bytes of
#: one vector (its ``indexing_threshold``, 1 KB): below that, a search scans.
GRAPH_MIN_BYTES = 1024
#: Products named per problem kind in a message (the count is always given).
SHOWN = 3
#: A stored BM25 weight may differ from the one recomputed from the text by this much (the
#: embedded engine keeps float32 weights).
SPARSE_TOLERANCE = 1e-5


@dataclass
class VerifyReport:
    """What :func:`verify_store` found: ``problems`` (empty when the store is sound)."""

    store: str
    points: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "ok": self.ok,
            "points": self.points,
            "problems": list(self.problems),
            "notes": list(self.notes),
        }


def _fits(kind: str, value: Any) -> bool:
    """Whether one payload value (or each element of a list) fits an index of type ``kind``."""
    if isinstance(value, list):
        return all(_fits(kind, v) for v in value)
    if value is None:
        return True
    if kind in ("keyword", "text"):
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(float(value))
        )
    if kind == "bool":
        return isinstance(value, bool)
    return True


class _Findings:
    """Products per problem kind, rendered as one line each."""

    def __init__(self) -> None:
        self.by_kind: dict[str, list[str]] = defaultdict(list)

    def add(self, kind: str, product: str) -> None:
        self.by_kind[kind].append(product)

    def lines(self) -> list[str]:
        out = []
        for kind, products in self.by_kind.items():
            shown = ", ".join(products[:SHOWN])
            more = f" and {len(products) - SHOWN} more" if len(products) > SHOWN else ""
            out.append(f"{len(products)} product(s) {kind}: {shown}{more}")
        return out


def _check_point(
    product_id: str,
    payload: dict[str, Any],
    vectors: dict[str, np.ndarray],
    dim: int,
    fields: dict[str, str],
    findings: _Findings,
    *,
    hubness: bool,
) -> None:
    for name in VECTOR_NAMES:
        vector = vectors.get(name)
        if vector is None or vector.size == 0:
            findings.add(f"have no {name} vector", product_id)
            continue
        if vector.shape != (dim,):
            findings.add(f"have a {name} vector of the wrong dimension (not {dim})", product_id)
            continue
        if not np.isfinite(vector).all():
            findings.add(f"have a non-finite {name} vector", product_id)
            continue
        norm = float(np.linalg.norm(vector.astype(np.float64)))
        if abs(norm - 1.0) > NORM_TOLERANCE:
            findings.add(f"have a {name} vector that is not unit length", product_id)
    if not payload.get(CONTENT_HASH_KEY):
        findings.add("have no content hash", product_id)
    for key, kind in fields.items():
        if key in payload and not _fits(kind, payload[key]):
            value = payload[key]
            findings.add(
                f"hold a value that does not fit the {kind} index of {key!r} "
                f"(e.g. {type(value).__name__} {value!r:.40})",
                product_id,
            )
    if hubness:
        value = payload.get(HUBNESS_KEY)
        if isinstance(value, bool) or not isinstance(value, int | float):
            findings.add("have no hubness value although the store records one", product_id)


def _check_lexical(
    product_id: str,
    text: Any,
    lexical: SparseTerms | None,
    params: Bm25Params | None,
    findings: _Findings,
) -> bool:
    """Check one product's sparse vector against its stored text; whether the product has
    product text with a word (it then needs a vocabulary)."""
    words = isinstance(text, str) and bool(tokenize(text))
    if words and not lexical:
        findings.add("have product text but no lexical vector", product_id)
    elif lexical and params is not None:
        want = document_vector(text if isinstance(text, str) else "", params)
        if want.indices != lexical.indices or any(
            abs(a - b) > SPARSE_TOLERANCE for a, b in zip(want.values, lexical.values, strict=True)
        ):
            findings.add(
                "have a lexical vector that is not the BM25 vector of their text", product_id
            )
    return words


def _index_state(
    store: VectorStore, points: int, encoder: EncoderInfo | None
) -> tuple[str | None, str | None]:
    """(problem, note) about the HNSW graph of ``store``."""
    stats = getattr(store, "stats", None)
    if callable(stats):  # the embedded store: the engine counts indexed vectors
        counts = stats()
        wanted = points * (len(VECTOR_NAMES) + int(store.has_fused()))  # the fused vector
        dim = encoder.dim if encoder is not None else 0
        if points * dim * 4 < GRAPH_MIN_BYTES:
            return None, f"{points} products are too few for an HNSW graph (searches are exact)"
        if counts["indexed_vectors"] < wanted:
            return (
                f"HNSW index covers {counts['indexed_vectors']} of {wanted} vectors; "
                "run `clipy ingest` again (it resumes and builds the index)",
                None,
            )
        return None, None
    if getattr(store, "local", False):
        return None, "qdrant-client local mode has no HNSW graph (searches are exact)"
    client = getattr(store, "_client", None)
    collection = getattr(store, "collection", None)
    if client is None or collection is None:
        return None, "the backend does not report its index state"
    info = client.get_collection(collection)
    status = str(getattr(info.status, "value", info.status))
    if status != "green":
        return f"collection status is {status}, not green (the index is still building)", None
    return None, None


def index_unfinished(store: VectorStore) -> bool:
    """Whether the store holds products that its HNSW graph does not cover although it should
    (e.g. a run killed while building it; the next run finds every product unchanged)."""
    if store.encoder_info() is None:
        return False
    problem, _ = _index_state(store, store.count(), store.encoder_info())
    return problem is not None


def verify_store(store: VectorStore, encoder: EncoderInfo | None = None) -> VerifyReport:
    """Check every stored point and the collection's indexes; see the module docstring.

    ``encoder`` (the one a search would use) is compared with the recorded one.
    """
    report = VerifyReport(store=str(getattr(store, "where", store)))
    recorded = store.encoder_info()
    if recorded is None:
        report.problems.append("the store has no collection; run `clipy ingest` first")
        return report
    if encoder is not None and (encoder.name != recorded.name or encoder.dim != recorded.dim):
        report.problems.append(
            f"encoder {encoder.name!r} (dim {encoder.dim}) does not match the store's "
            f"recorded encoder {recorded.name!r} (dim {recorded.dim})"
        )
    meta = getattr(store, "_meta", None)
    recorded_fields: dict[str, str] = dict(getattr(meta, "indexed_fields", {}) or {})
    engine_fields = store.indexed_fields()
    for key, kind in sorted(recorded_fields.items()):
        found = engine_fields.get(key)
        if found is None:
            report.problems.append(f"payload index {key!r} ({kind}) is recorded but missing")
        elif found != kind:
            report.problems.append(
                f"payload index {key!r} is {found} in the engine but recorded as {kind}"
            )
    fields = {**engine_fields, **recorded_fields}
    fields.pop(PRODUCT_ID_KEY, None)
    findings = _Findings()
    seen: dict[str, int] = defaultdict(int)
    hubness = store.hubness_info() is not None
    lexical, params = store.has_lexical(), store.bm25_params()
    texts = sparse = 0
    for point in store.scroll(with_vectors=True):
        report.points += 1
        product_id = point.product_id
        if not product_id or product_id == "None" or PRODUCT_ID_KEY not in point.payload:
            findings.add("have no product id", f"#{report.points}")
            continue
        seen[product_id] += 1
        _check_point(
            product_id,
            point.payload,
            point.vectors,
            recorded.dim,
            fields,
            findings,
            hubness=hubness,
        )
        if lexical:
            sparse += bool(point.lexical)
            texts += _check_lexical(
                product_id, point.payload.get(LEXICAL_TEXT_KEY), point.lexical, params, findings
            )
    for product_id, times in seen.items():
        if times > 1:
            findings.add("are stored more than once", product_id)
    report.problems.extend(findings.lines())
    if sparse and params is None:
        report.problems.append(
            f"{sparse} lexical vector(s) are stored but no BM25 constants are recorded; "
            "re-ingest with --recreate"
        )
    vocabulary = store.vocabulary()
    if texts and vocabulary is None:
        report.problems.append(
            "the store has product texts but no vocabulary (spelling correction and the "
            "lexical channel are off); run `clipy ingest` again"
        )
    elif texts and vocabulary is not None and not vocabulary.documents:
        report.problems.append(
            "the vocabulary is marked stale (an ingest stopped before rebuilding it; "
            "spelling correction and the lexical channel are off); run `clipy ingest` again"
        )
    counted = store.count()
    if counted != report.points:
        report.problems.append(f"count() says {counted} products but {report.points} were read")
    problem, note = _index_state(store, report.points, recorded)
    if problem:
        report.problems.append(problem)
    if note:
        report.notes.append(note)
    return report
