"""Search side by side on the same query vectors: clipy on the embedded store, clipy on
qdrant-client ``:memory:`` (the same points copied in through the store API), and FAISS
exact search; recall@10 of each against the exact oracle (:mod:`benchmarks.oracle`).

Query texts are attribute phrases built from stored payloads ("Men Red Casual Shoes"): four
words, so a text query's image channel is hubness-corrected at the encoder's default
strength. Image queries are catalog images (decoded and encoded by the timed call).
"""

from __future__ import annotations

import inspect
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.common import percentiles, time_each
from benchmarks.oracle import ExactOracle, FaissFused, StoredVectors
from clipy_qdrant.fusion import FusionConfig
from clipy_qdrant.search import QueryVectors, Searcher
from clipy_qdrant.store import CONTENT_HASH_KEY, PRODUCT_ID_KEY, PointRecord, VectorStore

#: The filter of the filtered row, as CLI strings and as a payload predicate for the oracle.
FILTER = ["gender=Men,Women", "year>=2012"]


def filter_predicate(payload: dict[str, Any]) -> bool:
    year = payload.get("year")
    return payload.get("gender") in ("Men", "Women") and year is not None and year >= 2012


WEIGHT_GRID = [round(0.1 * i, 1) for i in range(11)]


@dataclass
class Case:
    """One measured configuration: which query vectors, which fusion, which filter."""

    name: str
    #: "text" (a text query: its image channel hubness-corrected), "text-plain" (the same
    #: vectors without the correction) or "text+image" (a text and an image query together)
    query: str
    fusion: FusionConfig
    filtered: bool = False


def cases() -> list[Case]:
    """The dense channels against the FAISS oracle (``w_lexical`` 0: the lexical channel has
    its own brute-force BM25 reference in tests/test_search_lexical.py)."""
    rows = [
        Case("text-only (w_text=1)", "text", FusionConfig(w_text=1, w_image=0, w_lexical=0)),
        Case(
            "image-only, hubness-corrected (w_image=1)",
            "text",
            FusionConfig(w_text=0, w_image=1, w_lexical=0),
        ),
        Case("text + filter, weighted 0.5/0.5", "text", FusionConfig(w_lexical=0), filtered=True),
        Case("text+image query, weighted 0.5/0.5", "text+image", FusionConfig(w_lexical=0)),
        Case("weighted 0.5/0.5, hubness off", "text-plain", FusionConfig(w_lexical=0)),
        Case("RRF (k=60)", "text", FusionConfig("rrf", 1, 1, w_lexical=0)),
        Case("DBSF", "text", FusionConfig("dbsf", 1, 1, w_lexical=0)),
    ]
    for w in WEIGHT_GRID:
        w_text, w_image = w, round(1 - w, 1)
        if w_text == 0 and w_image == 0:
            continue
        rows.append(
            Case(
                f"weighted w_text={w_text:g}, hubness on",
                "text",
                FusionConfig(w_text=w_text, w_image=w_image, w_lexical=0),
            )
        )
    return rows


def select_cases(patterns: list[str] | None) -> list[Case]:
    """The cases whose name contains one of ``patterns`` (case-insensitive); all without.
    A pattern that names no case is an error."""
    every = cases()
    if not patterns:
        return every
    unknown = [p for p in patterns if not any(p.lower() in c.name.lower() for c in every)]
    if unknown:
        names = ", ".join(c.name for c in every)
        raise SystemExit(f"--cases: {', '.join(unknown)} names no search case (cases: {names})")
    return [c for c in every if any(p.lower() in c.name.lower() for p in patterns)]


def query_phrases(vectors: StoredVectors, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    phrases = []
    for payload in rng.sample(vectors.payloads, min(n, len(vectors.payloads))):
        parts = [payload.get(key) for key in ("gender", "baseColour", "usage", "articleType")]
        phrases.append(" ".join(str(p) for p in parts if p))
    return phrases


def copy_to_memory(store: VectorStore, vectors: StoredVectors) -> VectorStore:
    """A qdrant-client ``:memory:`` store holding the same points, written by the store API."""
    from clipy_qdrant.store import open_store

    info = store.encoder_info()
    assert info is not None
    memory = open_store(url=":memory:")
    fields = {k: v for k, v in store.indexed_fields().items() if k != PRODUCT_ID_KEY}
    memory.ensure_collection(info, fields)  # type: ignore[arg-type]
    points = [
        PointRecord(
            pid,
            {"text": vectors.text[i], "image": vectors.image[i]},
            {
                k: v
                for k, v in vectors.payloads[i].items()
                if k not in (PRODUCT_ID_KEY, CONTENT_HASH_KEY)
            },
            str(vectors.payloads[i].get(CONTENT_HASH_KEY, "")),
        )
        for i, pid in enumerate(vectors.ids)
    ]
    memory.upsert(points)
    memory.set_hubness_info(store.hubness_info())
    return memory


def run_search(
    store: VectorStore,
    searcher: Searcher,
    vectors: StoredVectors,
    text_qv: list[QueryVectors],
    image_vecs: list[np.ndarray],
    *,
    k: int,
    memory_queries: int,
    skip_memory: bool = False,
    only: list[str] | None = None,
) -> dict[str, Any]:
    """Every case (those :func:`select_cases` picks with ``only``) on every system; returns
    ``{"cases": [...], "notes": [...]}``."""
    notes: list[str] = []
    t0 = time.perf_counter()
    oracle = ExactOracle(vectors, searcher.candidates)
    faiss_index = FaissFused(vectors, searcher.candidates)
    mask = vectors.mask(filter_predicate)
    params = faiss_index.selector(mask)
    print(
        f"search: vectors and exact indexes ready in {time.perf_counter() - t0:.1f} s",
        file=sys.stderr,
    )

    memory_searcher = None
    if not skip_memory:
        t0 = time.perf_counter()
        memory = copy_to_memory(store, vectors)
        memory_searcher = Searcher(
            memory, searcher.encoder, candidates=searcher.candidates, hubness=searcher.hubness
        )
        notes.append(
            f"qdrant-client :memory: is brute force in Python: {memory_queries} queries per case "
            f"(the others use {len(text_qv)}); copy of {len(vectors.ids)} points took "
            f"{time.perf_counter() - t0:.1f} s"
        )

    by_kind = {
        "text": text_qv,
        "text-plain": [QueryVectors(text=q.text, image=q.image) for q in text_qv],
        "text+image": [
            QueryVectors(text=q.text, image=img) for q, img in zip(text_qv, image_vecs, strict=True)
        ],
    }
    results = []
    for case in select_cases(only):
        row = _measure_case(
            case,
            by_kind[case.query],
            oracle,
            faiss_index,
            mask,
            params,
            {"edge": (searcher, len(text_qv))}
            | ({"memory": (memory_searcher, memory_queries)} if memory_searcher else {}),
            k,
        )
        results.append(row)
        print(
            f"search: {case.name}: edge p50 {row['edge']['p50_ms']} ms "
            f"recall {row['edge']['recall']}",
            file=sys.stderr,
        )

    if not only:
        results.append(_more_like_this(searcher, vectors, k))
    if memory_searcher is not None:
        memory_searcher.store.close()
    return {
        "cases": results,
        "notes": notes,
        "filter_matches": int(mask.sum()) if mask is not None else None,
    }


def _measure_case(
    case: Case,
    qvs: list[QueryVectors],
    oracle: ExactOracle,
    faiss_index: FaissFused,
    mask: np.ndarray | None,
    params: Any,
    systems: dict[str, tuple[Searcher, int]],
    k: int,
) -> dict[str, Any]:
    """One case on the clipy ``systems`` (searcher, number of queries) and on FAISS."""
    filters = FILTER if case.filtered else None
    row: dict[str, Any] = {"case": case.name, "fusion": case.fusion.label, "filter": filters}
    case_mask = mask if case.filtered else None
    exact = [oracle.fused(q.text, q.image, q.image_hubness, case.fusion, case_mask) for q in qvs]
    for system, (searcher, limit) in systems.items():
        n = min(limit, len(qvs))

        def one(i: int, s: Searcher = searcher) -> list[Any]:
            return s.search_vectors(qvs[i], k=k, fusion=case.fusion, filters=filters)

        lat, hits = time_each(n, one)
        recall = [oracle.recall(exact[i], [h.product_id for h in hits[i]], k) for i in range(n)]
        row[system] = {**percentiles(lat), "recall": round(float(np.mean(recall)), 4)}
    p = params if case.filtered else None
    lat, got = time_each(
        len(qvs),
        lambda i: faiss_index.search(
            qvs[i].text, qvs[i].image, qvs[i].image_hubness, case.fusion, k, p
        ),
    )
    recall = [oracle.recall(exact[i], got[i], k) for i in range(len(qvs))]
    row["faiss"] = {**percentiles(lat), "recall": round(float(np.mean(recall)), 4)}
    return row


def _more_like_this(searcher: Searcher, vectors: StoredVectors, k: int) -> dict[str, Any]:
    """Time ``Searcher.search(like=...)`` when the Searcher has it (no oracle: the meaning of
    "like" belongs to the Searcher)."""
    name = "more like this (like=product)"
    # ``search`` forwards its keyword arguments to ``search_page``, which declares them.
    declared = getattr(Searcher, "search_page", Searcher.search)
    if "like" not in inspect.signature(declared).parameters:
        reason = "skipped: Searcher.search has no `like` parameter in this checkout"
        print(f"search: {name}: {reason}", file=sys.stderr)
        return {"case": name, "skipped": reason}
    like_ids = vectors.ids[: min(50, len(vectors.ids))]
    search: Callable[..., Any] = searcher.search
    try:
        lat, _ = time_each(len(like_ids), lambda i: search(like=like_ids[i], k=k))
    except TypeError:  # a Searcher whose ``like`` takes a list of products
        lat, _ = time_each(len(like_ids), lambda i: search(like=[like_ids[i]], k=k))
    return {"case": name, "edge": percentiles(lat), "note": "recall not checked (no oracle)"}
