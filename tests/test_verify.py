"""``clipy verify`` / :func:`verify_store` on both backends: a clean store passes; each problem
written directly through the engine (bypassing clipy's own checks) is reported."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from corpus import GOOD, write_csv, write_good_images
from fake_encoder import FakeEncoder, register_fake
from typer.testing import CliRunner

from clipy_qdrant.encoders.base import EncoderInfo
from clipy_qdrant.split import SPLIT_FIELD
from clipy_qdrant.store import PointRecord, VectorStore, open_store, point_id
from clipy_qdrant.store.engine import EnginePoint
from clipy_qdrant.store.verify import _check_point, _Findings, verify_store
from ingest.cli import app
from ingest.pipeline import run_ingest
from ingest.readers import open_catalog


@pytest.fixture(scope="module", autouse=True)
def _fake() -> None:
    register_fake()


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("verify-cat")
    write_good_images(root / "images")
    return write_csv(root / "styles.csv", GOOD)


@pytest.fixture(params=["edge", "memory"])
def store(request: pytest.FixtureRequest, catalog: Path, tmp_path: Path) -> Iterator[VectorStore]:
    url = ":memory:" if request.param == "memory" else None
    vector_store = open_store(tmp_path / "store", url=url)
    run_ingest(open_catalog(catalog), vector_store, FakeEncoder(), progress=False)
    yield vector_store
    vector_store.close()


def _put(store: VectorStore, product_id: str, vectors: dict, **payload: object) -> None:
    unit = np.ones(32, np.float32) / np.sqrt(32)
    full = {"product_id": product_id, "content_hash": "h", "hubness": 0.1, **payload}
    full = {k: v for k, v in full.items() if v is not None}
    point = EnginePoint(
        point_id(product_id), {k: unit if v is None else v for k, v in vectors.items()}, full
    )
    store._upsert_points([point])  # type: ignore[attr-defined]


def test_clean_store_passes(store: VectorStore) -> None:
    report = verify_store(store, FakeEncoder().info)
    assert report.ok, report.problems
    assert report.points == len(GOOD)


CASES = {
    "no image vector": ({"text": None}, {}, "have no image vector"),
    "no content hash": ({"text": None, "image": None}, {"content_hash": None}, "no content hash"),
    "int in a keyword field": (
        {"text": None, "image": None},
        {SPLIT_FIELD: 5},
        f"does not fit the keyword index of {SPLIT_FIELD!r}",
    ),
    "text in an integer field": (
        {"text": None, "image": None},
        {"year": "2012a"},
        "does not fit the integer index of 'year'",
    ),
    "no hubness value": ({"text": None, "image": None}, {"hubness": None}, "no hubness value"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_injected_point_problem_is_reported(store: VectorStore, case: str) -> None:
    vectors, payload, words = CASES[case]
    _put(store, "injected", vectors, **payload)
    report = verify_store(store)
    assert not report.ok
    assert any(words in p and "injected" in p for p in report.problems), report.problems


def test_non_finite_vector_is_reported(tmp_path: Path, catalog: Path) -> None:
    """Only the embedded engine accepts a NaN vector (qdrant-client refuses it on upsert)."""
    with open_store(tmp_path / "s") as vector_store:  # type: ignore[attr-defined]
        run_ingest(open_catalog(catalog), vector_store, FakeEncoder(), progress=False)
        _put(vector_store, "nan", {"image": np.full(32, np.nan, np.float32), "text": None})
        problems = verify_store(vector_store).problems
    assert any("non-finite image vector: nan" in p for p in problems), problems


def test_non_unit_and_wrong_dimension_vectors_are_reported() -> None:
    """Cosine collections normalise what they store, so these are checked on the point."""
    findings = _Findings()
    unit = np.ones(32, np.float32) / np.sqrt(32)
    payload = {"content_hash": "h"}
    _check_point(
        "long", payload, {"image": unit * 3, "text": unit}, 32, {}, findings, hubness=False
    )
    _check_point(
        "short", payload, {"image": unit[:8], "text": unit}, 32, {}, findings, hubness=False
    )
    lines = findings.lines()
    assert any("not unit length: long" in line for line in lines), lines
    assert any("wrong dimension (not 32): short" in line for line in lines), lines


def test_encoder_mismatch_is_reported(store: VectorStore) -> None:
    report = verify_store(store, EncoderInfo("fake-64", 64))
    assert any("does not match the store's recorded encoder 'fake'" in p for p in report.problems)


def test_missing_payload_index_is_reported(tmp_path: Path, catalog: Path) -> None:
    import qdrant_edge as qe

    with open_store(tmp_path / "s") as vector_store:  # type: ignore[attr-defined]
        run_ingest(open_catalog(catalog), vector_store, FakeEncoder(), progress=False)
        vector_store._shard.update(qe.UpdateOperation.delete_field_index("year"))
        problems = verify_store(vector_store).problems
    assert "payload index 'year' (integer) is recorded but missing" in problems


def test_unbuilt_hnsw_is_reported_on_the_embedded_store(tmp_path: Path) -> None:
    rng = np.random.default_rng(19)
    vectors = rng.standard_normal((64, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    points = [
        PointRecord(f"p{i}", {"image": v, "text": v}, {"year": 2000 + i}, "h")
        for i, v in enumerate(vectors)
    ]
    with open_store(tmp_path / "s") as vector_store:  # type: ignore[attr-defined]
        vector_store.ensure_collection(FakeEncoder().info, {"year": "integer"})
        vector_store.upsert(points)
        before = verify_store(vector_store).problems
        vector_store.build_index()
        after = verify_store(vector_store).problems
    # text, image and fused for each of the 64 products
    assert any(p.startswith("HNSW index covers 0 of 192 vectors") for p in before), before
    assert after == []


def test_tiny_store_needs_no_graph(tmp_path: Path, catalog: Path) -> None:
    with open_store(tmp_path / "s") as vector_store:  # type: ignore[attr-defined]
        run_ingest(open_catalog(catalog), vector_store, FakeEncoder(), progress=False)
        report = verify_store(vector_store)
    assert report.ok and "too few for an HNSW graph" in report.notes[0]


def test_cli_verify_exit_codes(tmp_path: Path, catalog: Path) -> None:
    path = tmp_path / "s"
    with open_store(path) as vector_store:  # type: ignore[attr-defined]
        run_ingest(open_catalog(catalog), vector_store, FakeEncoder(), progress=False)
    runner = CliRunner()
    ok = runner.invoke(app, ["verify", "--store", str(path), "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["ok"] is True
    with open_store(path) as vector_store:  # type: ignore[attr-defined]
        _put(vector_store, "injected", {"text": None}, year="2012a")
    bad = runner.invoke(app, ["verify", "--store", str(path)])
    assert bad.exit_code == 1
    assert "problem: 1 product(s) have no image vector: injected" in bad.stdout
    assert "problem: 1 product(s) hold a value that does not fit the integer index" in bad.stdout
    assert "clipy: error: store" in bad.stderr and "2 problem(s)" in bad.stderr
    empty = runner.invoke(app, ["verify", "--store", str(tmp_path / "none")])
    assert empty.exit_code == 1 and "no collection" in empty.output
