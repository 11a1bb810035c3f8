"""The BM25 sparse representation of :mod:`clipy_qdrant.lexical` on both engines, directly
(not through clipy's store): qdrant-edge (``EdgeShard`` in a temp dir) and qdrant-client's
local mode both reproduce the brute-force :class:`Bm25Reference` ranking and scores when the
sparse vector is configured with the IDF modifier."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from clipy_qdrant.lexical import (
    LEXICAL,
    Bm25Params,
    Bm25Reference,
    document_vector,
    query_vector,
)

TEXTS = [
    "Fossil Women Black Dial Watch CH2586, Women Casual Summer Watches Black",
    "Fossil Men Brown Watch FS4735, Men Casual Winter Watches Brown",
    "Nike Men Red Running Sports Shoes, Men Sports Summer Sports Shoes Red",
    "Puma Men Red Sneakers, Men Casual Summer Casual Shoes Red",
    "Adidas Women White Sports Shoes, Women Sports Fall Sports Shoes White",
    "Levis Men Blue Denim Jeans 511, Men Casual Winter Jeans Blue",
    "Spykar Women Blue Denim Skinny Jeans, Women Casual Summer Jeans Blue",
    "Red Tape Men Red Red Red Sneakers, Men Casual Summer Casual Shoes Red",
    "Baggit Women Red Handbag, Women Casual Summer Handbags Red",
    "Titan Men Silver Watch, Men Formal Winter Watches Silver",
    "Jockey Men White Vest, Men Casual Summer Innerwear Vests White",
    "Nike Women Black Running Shoes, Women Sports Summer Sports Shoes Black",
    " - ",  # no token: the point gets no sparse vector
]
QUERIES = [
    "red sneakers for men",
    "blue denim jeans",
    "white sports shoes",
    "CH2586",
    "fossil watch",
    "red red shoes",  # a repeated query word counts once
    "no such words",
]
TOP = len(TEXTS)


@pytest.fixture(scope="module")
def reference() -> Bm25Reference:
    return Bm25Reference(TEXTS, Bm25Params.for_texts(TEXTS))


def _expected(reference: Bm25Reference, query: str) -> list[tuple[int, float]]:
    return reference.top(query, TOP)


def _assert_same_ranking(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    assert len(got) == len(want)
    got_scores = np.array([s for _, s in got])
    want_scores = np.array([s for _, s in want])
    np.testing.assert_allclose(got_scores, want_scores, rtol=1e-5, atol=1e-6)
    # Same products at each score (ties may come in any order).
    by_score: dict[float, set[int]] = {}
    for row, score in want:
        by_score.setdefault(round(score, 4), set()).add(row)
    got_by_score: dict[float, set[int]] = {}
    for row, score in got:
        got_by_score.setdefault(round(score, 4), set()).add(row)
    assert got_by_score == by_score


def test_reference_is_bm25_by_hand(reference: Bm25Reference) -> None:
    """One score worked out from the formula, so the oracle itself is checked."""
    import math

    params = reference.params
    n, df = len(TEXTS) - 1, 1  # N: texts with a token; "ch2586" is in one text
    text_len = 11  # tokens of TEXTS[0]
    tf_weight = (
        1
        * (params.k1 + 1)
        / (1 + params.k1 * (1 - params.b + params.b * text_len / params.avg_len))
    )
    want = math.log((n - df + 0.5) / (df + 0.5) + 1) * tf_weight
    assert reference.top("CH2586", 5) == [(0, pytest.approx(want))]


def test_qdrant_edge_sparse_idf_matches_reference(tmp_path: Path, reference: Bm25Reference) -> None:
    qe = pytest.importorskip("qdrant_edge")
    config = qe.EdgeConfig(
        vectors={"text": qe.EdgeVectorParams(size=2, distance=qe.Distance.Cosine)},
        sparse_vectors={LEXICAL: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
    )
    shard = qe.EdgeShard.create(str(tmp_path / "shard"), config)
    params = reference.params
    points = []
    for row, text in enumerate(TEXTS):
        doc = document_vector(text, params)
        # Every product has its dense vectors; only a text with tokens gets a sparse one.
        vector: dict[str, object] = {"text": [1.0, 0.0]}
        if doc:
            vector[LEXICAL] = qe.SparseVector(indices=list(doc.indices), values=list(doc.values))
        points.append(qe.Point(str(uuid.UUID(int=row)), vector, {"row": row}))  # type: ignore[arg-type]
    shard.update(qe.UpdateOperation.upsert_points(points))
    for query in QUERIES:
        q = query_vector(query)
        request = qe.QueryRequest(
            query=qe.Query.Nearest(
                qe.SparseVector(indices=list(q.indices), values=list(q.values)), using=LEXICAL
            ),
            limit=TOP,
            with_payload=True,
        )
        got = [(int(h.payload["row"]), float(h.score)) for h in shard.query(request)]
        _assert_same_ranking(got, _expected(reference, query))
    shard.close()


def test_qdrant_client_local_sparse_idf_matches_reference(reference: Bm25Reference) -> None:
    from qdrant_client import QdrantClient, models

    client = QdrantClient(":memory:")
    client.create_collection(
        "products",
        vectors_config={"text": models.VectorParams(size=2, distance=models.Distance.COSINE)},
        sparse_vectors_config={LEXICAL: models.SparseVectorParams(modifier=models.Modifier.IDF)},
    )
    params = reference.params
    client.upsert(
        "products",
        [
            models.PointStruct(
                id=row,
                vector={"text": [1.0, 0.0]}
                | (
                    {LEXICAL: models.SparseVector(indices=list(d.indices), values=list(d.values))}
                    if d
                    else {}
                ),
                payload={"row": row},
            )
            for row, d in enumerate(document_vector(t, params) for t in TEXTS)
        ],
    )
    for query in QUERIES:
        q = query_vector(query)
        hits = client.query_points(
            "products",
            query=models.SparseVector(indices=list(q.indices), values=list(q.values)),
            using=LEXICAL,
            limit=TOP,
            with_payload=True,
        ).points
        got = [(int(h.payload["row"]), float(h.score)) for h in hits if h.payload is not None]
        _assert_same_ranking(got, _expected(reference, query))


def test_without_idf_modifier_the_engine_ranks_by_term_frequency_only(
    reference: Bm25Reference,
) -> None:
    """The modifier is what makes it BM25: without it a rare code weighs like a common word."""
    from qdrant_client import QdrantClient, models

    client = QdrantClient(":memory:")
    client.create_collection(
        "p", vectors_config={}, sparse_vectors_config={LEXICAL: models.SparseVectorParams()}
    )
    params = reference.params
    client.upsert(
        "p",
        [
            models.PointStruct(
                id=row,
                vector={
                    LEXICAL: models.SparseVector(indices=list(d.indices), values=list(d.values))
                },
            )
            for row, d in enumerate(document_vector(t, params) for t in TEXTS)
            if d
        ],
    )
    q = query_vector("fossil watch")
    hits = client.query_points(
        "p",
        query=models.SparseVector(indices=list(q.indices), values=list(q.values)),
        using=LEXICAL,
        limit=TOP,
    ).points
    want = reference.top("fossil watch", TOP)
    assert [float(h.score) for h in hits] != pytest.approx([s for _, s in want])
