"""The lexical channel written by ingest and read by search, end to end (issue #23): real
catalog files, the fake encoder, both stores; and the CLI's correction notice and flags.

- ingest writes each product's BM25 document vector and text, records the BM25 constants and
  rebuilds the vocabulary from the stored texts; the engine's BM25 then equals the reference
  over those texts (IDF included), also after a product is renamed;
- re-ingesting an unchanged catalog rewrites nothing (vectors, vocabulary, constants);
- correction never changes a catalog word or a code, end to end through ``search_page``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from fake_encoder import FakeEncoder, register_fake
from PIL import Image
from typer.testing import CliRunner

from clipy_qdrant.lexical import Bm25Reference, document_vector, query_vector
from clipy_qdrant.search import Searcher
from clipy_qdrant.spelling import Vocabulary
from clipy_qdrant.store import VectorStore, open_store
from clipy_qdrant.store.base import LEXICAL_TEXT_KEY
from ingest.cli import app
from ingest.pipeline import run_ingest
from ingest.readers import open_catalog

NAMES = [
    "Nike Men Red Running Shoes",
    "Puma Women Blue Sneakers",
    "Titan Men Silver Watch CH2586",
    "Fossil Women Black Watch FS4735",
    "Roadster Men Blue Slim Fit Jeans",
    "Levis Women Black Skinny Jeans",
    "Adidas Men White Sports Tshirt",
    "Nike Women Red Sports Tshirt",
    "Wildcraft Unisex Green Backpack",
    "Baggit Women Brown Handbag",
]


def write_catalog(root: Path, names: list[str]) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, name in enumerate(names, 1):
        Image.new("RGB", (24, 32), (20 * i, 100, 200 - 10 * i)).save(root / "images" / f"{i}.jpg")
        rows.append({"id": i, "gender": name.split()[1], "productDisplayName": name})
    path = root / "styles.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(params=["edge", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    s = open_store(tmp_path / "store") if request.param == "edge" else open_store(url=":memory:")
    yield s
    s.close()


def _stored(store: VectorStore) -> dict[str, tuple[str, tuple]]:
    """``{product_id: (stored text, lexical vector)}``."""
    out = {}
    for point in store.scroll(with_vectors=True):
        lexical = point.lexical
        out[point.product_id] = (
            point.payload[LEXICAL_TEXT_KEY],
            (lexical.indices, tuple(round(v, 5) for v in lexical.values)) if lexical else (),
        )
    return out


def test_ingest_writes_bm25_vectors_and_vocabulary_and_rerun_is_idempotent(
    store: VectorStore, tmp_path: Path
) -> None:
    styles = write_catalog(tmp_path, NAMES)
    encoder = FakeEncoder()
    first = run_ingest(open_catalog(styles), store, encoder, batch_size=4, progress=False)
    assert first.stored == len(NAMES)
    params = store.bm25_params()
    assert params is not None and store.has_lexical()
    stored = _stored(store)
    texts = [text for text, _ in stored.values()]
    assert all(NAMES[int(pid) - 1] in text for pid, (text, _) in stored.items())
    for text, vector in stored.values():
        want = document_vector(text, params)
        assert vector == (want.indices, tuple(round(v, 5) for v in want.values))
    assert store.vocabulary() == Vocabulary.from_texts(texts)
    # The engine's BM25 (its IDF over the stored vectors) is the reference's.
    reference = Bm25Reference(texts, params)
    ids = list(stored)
    for query in ("red shoes", "black watch", "jeans", "ch2586"):
        got = {p.product_id: p.score for p in store.search_lexical(query_vector(query), 20)}
        want = {ids[row]: score for row, score in reference.top(query, 20)}
        assert got == pytest.approx(want, abs=1e-4) and got

    again = run_ingest(open_catalog(styles), store, encoder, batch_size=4, progress=False)
    assert (again.stored, again.unchanged) == (0, len(NAMES))
    assert _stored(store) == stored
    assert store.vocabulary() == Vocabulary.from_texts(texts)
    assert store.bm25_params() == params

    renamed = [*NAMES]
    renamed[0] = "Nike Men Orange Trail Shoes"
    run_ingest(open_catalog(write_catalog(tmp_path, renamed)), store, encoder, progress=False)
    vocabulary = store.vocabulary()
    assert vocabulary is not None and "trail" in vocabulary and "running" not in vocabulary
    assert store.bm25_params() == params  # fixed once vectors exist
    texts = [text for text, _ in _stored(store).values()]
    reference = Bm25Reference(texts, params)
    ids = list(_stored(store))
    got = {p.product_id: p.score for p in store.search_lexical(query_vector("men shoes"), 20)}
    want = {ids[r]: s for r, s in reference.top("men shoes", 20)}
    assert got == pytest.approx(want, abs=1e-4) and got


def test_correction_never_changes_a_catalog_word_or_a_code(
    store: VectorStore, tmp_path: Path
) -> None:
    run_ingest(open_catalog(write_catalog(tmp_path, NAMES)), store, FakeEncoder(), progress=False)
    searcher = Searcher(store, FakeEncoder())
    vocabulary = store.vocabulary()
    assert vocabulary is not None
    for word in vocabulary.frequencies:
        result = searcher.search_page(word, k=3)
        assert result.correction is not None and not result.correction.changed, word
    # Codes as typed (mixed case, or unseen) stay; a misspelt word beside them is corrected.
    for code in ("CH2586", "ch2586", "FS4735", "XZ9999"):
        result = searcher.search_page(f"{code} wacth", k=3)
        assert result.correction is not None
        assert result.correction.corrected == f"{code} watch"
    result = searcher.search_page("blue sneakres", k=3)
    assert result.correction is not None and result.correction.corrected == "blue sneakers"
    assert result.hits[0].payload["productDisplayName"] == "Puma Women Blue Sneakers"
    assert searcher.search_page("blue sneakres", k=3, as_typed=True).correction is None


def test_cli_reports_the_correction_and_searches_as_typed(tmp_path: Path) -> None:
    register_fake()
    styles = write_catalog(tmp_path, NAMES)
    store = tmp_path / "store"
    runner = CliRunner()
    ingest = runner.invoke(
        app,
        [
            "ingest",
            str(styles),
            "--images",
            str(tmp_path / "images"),
            "--store",
            str(store),
            "--encoder",
            "fake",
        ],
    )
    assert ingest.exit_code == 0, ingest.output
    result = runner.invoke(
        app, ["search", "blue sneakres", "--store", str(store), "--json", "--w-lexical", "1"]
    )
    assert result.exit_code == 0, result.output
    assert 'showing results for "blue sneakers"' in result.stderr
    assert "--as-typed" in result.stderr
    hits = json.loads(result.stdout)
    assert hits[0]["product_id"] == "2" and hits[0]["lexical_score"] > 0
    assert hits[0]["correction"]["corrected"] == "blue sneakers"
    typed = runner.invoke(
        app, ["search", "blue sneakres", "--store", str(store), "--json", "--as-typed"]
    )
    assert typed.exit_code == 0, typed.output
    assert "showing results" not in typed.stderr
    assert all("correction" not in hit for hit in json.loads(typed.stdout))
    info = runner.invoke(app, ["info", "--store", str(store), "--json"])
    lexical = json.loads(info.stdout)["lexical"]
    assert lexical["enabled"] and lexical["documents"] == len(NAMES)


def test_an_ingest_stopped_after_its_last_write_leaves_the_vocabulary_stale_and_resume_rebuilds_it(
    store: VectorStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that dies between its last upsert and the vocabulary rebuild must not leave the
    previous catalog's words behind: its resume stores nothing new (content hashes match),
    so the stale mark written with the first upsert is what makes it rebuild them."""
    from clipy_qdrant.store.verify import verify_store

    encoder = FakeEncoder()
    run_ingest(open_catalog(write_catalog(tmp_path, NAMES)), store, encoder, progress=False)
    renamed = [*NAMES]
    renamed[0] = "Nike Men Orange Trail Shoes"
    changed = open_catalog(write_catalog(tmp_path, renamed))

    def killed(_store: VectorStore) -> None:
        raise KeyboardInterrupt("killed before the vocabulary rebuild")

    monkeypatch.setattr("ingest.pipeline.refresh_vocabulary", killed)
    with pytest.raises(KeyboardInterrupt):
        run_ingest(changed, store, encoder, progress=False)
    stale = store.vocabulary()
    assert stale is not None and stale.documents == 0  # marked stale, not the old words
    assert any("vocabulary is marked stale" in p for p in verify_store(store).problems)
    monkeypatch.undo()

    resumed = run_ingest(changed, store, encoder, progress=False)
    assert resumed.stored == 0
    vocabulary = store.vocabulary()
    assert vocabulary is not None and "trail" in vocabulary and "running" not in vocabulary
    assert vocabulary == Vocabulary.from_texts(text for text, _ in _stored(store).values())


def test_field_values_outside_the_texts_are_known_words_never_corrected(
    store: VectorStore, tmp_path: Path
) -> None:
    """A category value that no product text holds ("Topwear", "Apparel") is still a catalog
    word: a query naming it keeps it, while a typo of a text word is still corrected."""
    styles = write_catalog(tmp_path, NAMES)
    rows = list(csv.DictReader(styles.open()))
    for i, row in enumerate(rows):
        row["masterCategory"] = "Apparel" if i % 2 else "Accessories"
        row["subCategory"] = "Topwear" if i % 3 else "Sporting Goods"
    with styles.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    catalog = open_catalog(styles, text_template="{productDisplayName}")
    run_ingest(catalog, store, FakeEncoder(), progress=False)
    assert {"masterCategory", "subCategory"} <= set(store.indexed_fields())
    vocabulary = store.vocabulary()
    assert vocabulary is not None
    assert {"apparel", "topwear", "sporting", "goods"} <= set(vocabulary.known)
    assert "apparel" not in vocabulary.frequencies  # not in any text: no BM25 weight
    texts = [text for text, _ in _stored(store).values()]
    assert vocabulary.frequencies == Vocabulary.from_texts(texts).frequencies
    searcher = Searcher(store, FakeEncoder())
    for query in ("Apparel", "Topwear", "Sporting Goods", "red Topwear"):
        correction = searcher.correct(query)
        assert correction is not None and not correction.changed, query
    correction = searcher.correct("blue sneakres")
    assert correction is not None and correction.corrected == "blue sneakers"
    # The known words survive the JSON round trip the store keeps them in.
    assert Vocabulary.from_json(vocabulary.to_json()) == vocabulary
