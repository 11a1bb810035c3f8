"""The query words table: its fit, its file, fashion-mini's query path with it on and off, the
query path through search and the batching encoder, ``CLIPY_QUERY_WORDS`` and
``clipy train-query-words``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_encoder import FakeEncoder
from PIL import Image
from typer.testing import CliRunner

from clipy_qdrant.encoders.base import encode_queries
from clipy_qdrant.encoders.batching import BatchingEncoder
from clipy_qdrant.encoders.fashion.query_words import QUERY_WORDS_FILE, QueryWords, text_words
from clipy_qdrant.errors import EncoderError
from clipy_qdrant.training.query_words import fit_query_words, fit_table, mean_cosine

WORDS = ["red", "blue", "black", "men's", "women", "shoes", "shirt", "bag", "casual", "sports"]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _linear_world(seed: int = 0) -> tuple[dict[str, np.ndarray], list[str], np.ndarray]:
    """Word vectors, texts of two to four words, and their features: the means of their words'
    vectors (a world the table describes exactly; the table's features are those, unit)."""
    rng = np.random.default_rng(seed)
    vectors = {w: rng.standard_normal(16) for w in text_words(" ".join(WORDS))}
    texts = [" ".join(rng.choice(WORDS, size=rng.integers(2, 5))) for _ in range(400)]
    features = np.stack([np.mean([vectors[w] for w in text_words(t)], axis=0) for t in texts])
    return vectors, texts, features


def test_text_words_are_lower_cased_word_tokens() -> None:
    assert text_words("Men's RED T-shirt, 2 pcs") == ["men", "s", "red", "t", "shirt", "2", "pcs"]


def test_a_fitted_table_gives_texts_of_its_words_their_features() -> None:
    _, texts, features = _linear_world()
    table = fit_table(texts[:300], features[:300], ridge=1e-6)
    # Texts never fitted, made of fitted words: their features to float rounding.
    found = table.features(texts[300:])
    assert all(f is not None for f in found)
    targets = _unit(features[300:])
    cosines = [float(f @ t) for f, t in zip(found, targets, strict=True) if f is not None]
    assert min(cosines) > 0.9999
    assert mean_cosine(table, texts[300:], targets) > 0.9999


def test_a_text_with_a_word_not_in_the_table_gets_none() -> None:
    _, texts, features = _linear_world()
    table = fit_table(texts, features, ridge=1e-3)
    assert table.features(["red xyzzy shoes", "", "!!!", "red shoes"])[:3] == [None, None, None]
    assert table.rows("Red SHOES") == table.rows("red shoes") is not None


def test_the_table_file_round_trips_in_float16(tmp_path: Path) -> None:
    _, texts, features = _linear_world()
    table = fit_table(texts, features, ridge=1e-3)
    table.save(tmp_path / "t.safetensors")
    again = QueryWords.load(tmp_path / "t.safetensors")
    assert again.words == table.words
    np.testing.assert_allclose(again.vectors, table.vectors, rtol=1e-3, atol=1e-4)


def test_an_unreadable_table_is_a_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a table")
    with pytest.raises(EncoderError, match=r"cannot read the query words table .*bad\.safetensors"):
        QueryWords.load(bad)
    with pytest.raises(EncoderError, match="3 words for a table of shape"):
        QueryWords(["a", "b", "c"], np.zeros((2, 4)))


@dataclass
class _Product:
    product_id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def load_image(self) -> Any:
        raise AssertionError("the table needs no image")


def test_the_fit_chooses_the_ridge_on_the_validation_fold_and_never_reads_held_out_texts() -> None:
    vectors, texts, _ = _linear_world(1)
    products = [_Product(str(i), text) for i, text in enumerate(texts)]
    products.append(_Product("1000", "heldoutword shoes"))  # id % 5 == 0: held out
    asked: list[str] = []

    def features(batch: list[str]) -> np.ndarray:
        asked.extend(batch)
        return np.stack([np.mean([vectors[w] for w in text_words(t)], axis=0) for t in batch])

    fit = fit_query_words(products, features, grid=(1e-6, 10.0))
    assert "heldoutword" not in fit.table.words
    assert not any("heldoutword" in text for text in asked)
    assert fit.ridge == 1e-6 and fit.validation_cosine[1e-6] > fit.validation_cosine[10.0]
    assert fit.validation_cosine[1e-6] > 0.999


class _TwoPaths(FakeEncoder):
    """A fake encoder whose query vectors differ from its product-text vectors (negated)."""

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return -self.encode_texts(texts)


def test_encode_queries_uses_an_encoders_query_path_where_it_has_one() -> None:
    plain, two = FakeEncoder(), _TwoPaths()
    np.testing.assert_array_equal(encode_queries(plain, ["red"]), plain.encode_texts(["red"]))
    np.testing.assert_array_equal(encode_queries(two, ["red"]), -two.encode_texts(["red"]))


def test_the_batching_encoder_keeps_query_and_product_texts_apart() -> None:
    inner = _TwoPaths()
    batching = BatchingEncoder(inner, cache_size=16)
    query = batching.encode_queries(["red shoes"])
    text = batching.encode_texts(["red shoes"])
    np.testing.assert_array_equal(query, -inner.encode_texts(["red shoes"]))
    np.testing.assert_array_equal(text, inner.encode_texts(["red shoes"]))
    # Each is cached under its own kind.
    np.testing.assert_array_equal(batching.encode_queries(["red shoes"]), query)
    np.testing.assert_array_equal(batching.encode_texts(["red shoes"]), text)
    assert batching.stats.cache_hits == 2


@pytest.mark.parametrize("backend", ["edge", "memory"])
def test_search_embeds_query_texts_through_the_query_path(tmp_path: Path, backend: str) -> None:
    from serve_store import build_store

    from clipy_qdrant.search import Searcher

    store = build_store(8, tmp_path / "store", backend=backend)
    try:
        encoder = _TwoPaths()
        vectors = Searcher(store, encoder).embed("red shoes")
        assert vectors.text is not None
        np.testing.assert_allclose(vectors.text, -encoder.encode_texts(["red shoes"])[0], atol=1e-6)
    finally:
        store.close()


# --------------------------------------------------------------------------- fashion-mini


@pytest.fixture(scope="module")
def fashion_pair() -> tuple[Any, Any]:
    from clipy_qdrant.encoders import get_encoder

    return get_encoder("fashion-mini"), get_encoder("fashion-mini", query_words=True)


def test_the_shipped_table_covers_catalog_words_and_comes_close_to_minilm(
    fashion_pair: tuple[Any, Any],
) -> None:
    plain, _ = fashion_pair
    table = QueryWords.load(QUERY_WORDS_FILE)
    assert len(table.words) > 5000 and table.dim == 384
    texts = ["men's red casual shoes", "women blue handbags", "black sports watch"]
    found = table.features(texts)
    assert all(f is not None for f in found)
    minilm = plain.text_tower.features(texts)
    cosines = [float(f @ m) for f, m in zip(found, minilm, strict=True) if f is not None]
    assert min(cosines) > 0.9, cosines


def test_fashion_mini_queries_use_the_table_only_where_it_covers_them(
    fashion_pair: tuple[Any, Any],
) -> None:
    plain, words = fashion_pair
    assert plain.info == words.info  # the same model: stores do not tell them apart
    covered, uncovered = "men's red casual shoes", "xyzzyq red shoes"
    # Product texts never use the table.
    np.testing.assert_array_equal(
        words.encode_texts([covered, uncovered]), plain.encode_texts([covered, uncovered])
    )
    # Off: queries are product texts.
    np.testing.assert_array_equal(plain.encode_queries([covered]), plain.encode_texts([covered]))
    # On: a covered text runs the heads on the table's feature; another on MiniLM's.
    both = words.encode_queries([covered, uncovered])
    feature = words.query_words.features([covered])[0]
    expected = words.heads.text_vectors(feature[None, :].astype(np.float32), [covered])[0]
    np.testing.assert_allclose(both[0], expected, atol=1e-6)
    assert not np.allclose(both[0], plain.encode_texts([covered])[0], atol=1e-3)
    np.testing.assert_allclose(both[1], plain.encode_texts([uncovered])[0], atol=1e-6)
    assert float(both[0] @ plain.encode_texts([covered])[0]) > 0.9


def test_the_setting_turns_the_table_on_for_searches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clipy_qdrant.config import Settings
    from clipy_qdrant.encoders.fashion import FashionEncoder
    from ingest.cli.shell import load_encoder

    monkeypatch.setenv("CLIPY_QUERY_WORDS", "1")
    assert Settings().query_words is True
    monkeypatch.setenv("CLIPY_QUERY_WORDS", "0")
    assert Settings().query_words is False
    on = load_encoder("fashion-mini", query_words=True)
    assert isinstance(on, FashionEncoder) and on.query_words is not None
    off = load_encoder("fashion-mini")
    assert isinstance(off, FashionEncoder) and off.query_words is None


def test_clipy_train_query_words_fits_a_table_from_a_catalog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ingest.cli import app

    monkeypatch.setenv("CLIPY_CACHE_DIR", str(tmp_path / "cache"))
    colours, items = ["Red", "Blue", "Black", "White"], ["Shirt", "Shoes", "Bag", "Watch", "Cap"]
    rows = ["id,productDisplayName,baseColour,articleType,gender"]
    for i in range(60):
        colour, item = colours[i % 4], items[(i // 4) % 5]
        rows.append(f"{i + 1},{colour} {item} {i % 3},{colour},{item},Men")
    (tmp_path / "styles.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "images").mkdir()  # a catalog has pictures; the table never reads them
    for i in range(60):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(tmp_path / "images" / f"{i + 1}.jpg")
    out = tmp_path / "words.safetensors"
    result = CliRunner().invoke(
        app, ["train-query-words", str(tmp_path / "styles.csv"), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert f"clipy: wrote {out} (" in result.stderr and "validation fold cosine" in result.stderr
    table = QueryWords.load(out)
    assert {"red", "shirt", "men"} <= set(table.words)
    found = table.features(["red shirt"])[0]
    assert found is not None and abs(float(np.linalg.norm(found)) - 1) < 1e-5
