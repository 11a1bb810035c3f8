"""Spelling correction against a catalog vocabulary: what it fixes, what it never touches."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clipy_qdrant.errors import StoreError
from clipy_qdrant.lexical import tokenize
from clipy_qdrant.spelling import (
    Correction,
    SpellingCorrector,
    Vocabulary,
    damerau_levenshtein,
    is_code_like,
    max_edits,
)

TEXTS = [
    "Puma Men Red Sneakers, Men Casual Summer Casual Shoes Red",
    "Nike Men Red Sneakers, Men Casual Summer Casual Shoes Red",
    "Adidas Men White Sports Shoes, Men Sports Summer Sports Shoes White",
    "Reebok Women White Sports Shoes, Women Sports Fall Sports Shoes White",
    "Levis Men Blue Denim Jeans, Men Casual Winter Jeans Blue",
    "Fossil Women Black Dial Watch CH2586, Women Casual Summer Watches Black",
    "Baggit Women Red Handbag, Women Casual Summer Handbags Red",
    "Jockey Men Black Vest 3XL, Men Casual Summer Innerwear Vests Black",
    "Wrangler Men Denims Blue Jeans, Men Casual Winter Jeans Blue",
    "Red Tape Men Brown Boots, Men Casual Winter Boots Brown",
    "Nike Men Grey Tee, Men Sports Summer Tshirts Grey",
]


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return Vocabulary.from_texts(TEXTS)


@pytest.fixture(scope="module")
def corrector(vocab: Vocabulary) -> SpellingCorrector:
    return SpellingCorrector(vocab)


def test_vocabulary_counts_documents_and_tokens(vocab: Vocabulary) -> None:
    assert vocab.documents == len(TEXTS)
    assert vocab.tokens == sum(len(tokenize(t)) for t in TEXTS)
    assert vocab.frequency("red") == 4  # texts holding it, not occurrences
    assert vocab.frequency("ch2586") == 1
    assert "sneakers" in vocab and "sneakres" not in vocab
    assert vocab.avg_len == pytest.approx(vocab.tokens / len(TEXTS))
    # A text without tokens is not a document (it gets no lexical vector).
    assert Vocabulary.from_texts([*TEXTS, " - "]) == vocab
    assert vocab.idf("ch2586") == pytest.approx(math.log((11 - 1 + 0.5) / 1.5 + 1))


def test_vocabulary_round_trips_through_json(tmp_path: Path, vocab: Vocabulary) -> None:
    path = vocab.save(tmp_path / "sub" / "vocabulary.json")
    assert Vocabulary.load(path) == vocab


def test_vocabulary_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no vocabulary"):
        Vocabulary.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "other"}')
    with pytest.raises(StoreError, match=r"bad.json: not a clipy-vocabulary"):
        Vocabulary.load(bad)
    bad.write_text("[1,")
    with pytest.raises(StoreError, match="cannot read vocabulary"):
        Vocabulary.load(bad)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("red sneakres for men", "red sneakers for men"),  # transposition
        ("blue denmi jeans", "blue denim jeans"),  # transposition
        ("white spotrs shoes", "white sports shoes"),  # transposition
        ("white sprts shoes", "white sports shoes"),  # deletion
        ("white sporrts shoes", "white sports shoes"),  # insertion
        ("white spirts shoes", "white sports shoes"),  # substitution
        ("blue dnemi jeans", "blue denim jeans"),  # two edits in a 5-letter word
        ("brwn boots", "brown boots"),  # one edit in a 4-letter word
    ],
)
def test_fixes_each_kind_of_edit(corrector: SpellingCorrector, query: str, expected: str) -> None:
    assert corrector.correct(query).corrected == expected


def test_keeps_the_other_words_spacing_punctuation_and_case(corrector: SpellingCorrector) -> None:
    result = corrector.correct("Red  SNEAKRES, for men!  Sneakres?")
    assert result == Correction(
        "Red  SNEAKRES, for men!  Sneakres?",
        "Red  SNEAKERS, for men!  Sneakers?",
        (("SNEAKRES", "SNEAKERS"), ("Sneakres", "Sneakers")),
    )
    assert result.changed
    assert result.to_json()["changes"] == [["SNEAKRES", "SNEAKERS"], ["Sneakres", "Sneakers"]]


def test_never_changes_a_catalog_word(vocab: Vocabulary, corrector: SpellingCorrector) -> None:
    # "denims" and "denim" are one edit apart, "tee" and "red" are short known words: all stay.
    for word in vocab.frequencies:
        assert corrector.suggest(word) is None, word
    for text in TEXTS:
        assert corrector.correct(text) == Correction(text, text)


def test_a_query_of_known_words_builds_no_candidate_index(vocab: Vocabulary) -> None:
    """The delete index (about 0.3 s of CPU at catalog scale) is built by the first word that
    needs a candidate, so a one-shot query whose words the catalog knows never pays for it."""
    corrector = SpellingCorrector(vocab)
    assert corrector.correct("Red Sneakers for men, CH2586 3XL").changes == ()
    assert corrector._delete_index is None
    assert corrector.correct("red sneakres").corrected == "red sneakers"
    assert corrector._delete_index is not None


@pytest.mark.parametrize(
    "token", ["CH2586", "CH2856", "ch2568", "3XL", "4XL", "501", "iPhone", "McQeen"]
)
def test_never_changes_a_code_like_token(corrector: SpellingCorrector, token: str) -> None:
    assert is_code_like(token)
    assert corrector.correct(f"fossil {token}").corrected == f"fossil {token}"


def test_common_query_words_are_left_alone(corrector: SpellingCorrector) -> None:
    # "the" is one edit from "tee", a catalog word.
    assert corrector.correct("the red tee with the boots").changes == ()


def test_unknown_word_without_candidate_stays(corrector: SpellingCorrector) -> None:
    result = corrector.correct("xylophone sneakers")
    assert result.corrected == "xylophone sneakers" and not result.changed
    # Two edits are beyond a four-letter word's budget ("bots" is one: it becomes "boots").
    assert corrector.correct("bxxt").corrected == "bxxt"
    assert corrector.correct("bots").corrected == "boots"


def test_short_words_are_never_changed(corrector: SpellingCorrector) -> None:
    assert max_edits(2) == 0
    assert corrector.correct("rd xl").corrected == "rd xl"


def test_tie_break_is_distance_then_frequency_then_alphabet() -> None:
    # "bat" is one edit from "bag", "bar", "cat" and "hat"; "hat" is the most frequent.
    vocab = Vocabulary.from_texts(["bag hat", "bar hat", "cat hat", "bag", "bar"])
    corrector = SpellingCorrector(vocab)
    assert corrector.suggest("bat") == "hat"
    # Equal frequency: alphabetical, whatever the insertion order.
    for texts in (["bag", "bar"], ["bar", "bag"]):
        assert SpellingCorrector(Vocabulary.from_texts(texts)).suggest("bat") == "bag"
    # Distance beats frequency: "sneaker" (1 edit) over the more frequent "speaker" (2 edits).
    vocab = Vocabulary.from_texts(["speakers"] * 5 + ["sneakers"])
    assert SpellingCorrector(vocab).suggest("sneakres") == "sneakers"


def test_min_frequency_keeps_rare_words_out_of_candidates_only() -> None:
    vocab = Vocabulary.from_texts(["sneakers", "sneakers", "sneaker"])
    corrector = SpellingCorrector(vocab, min_frequency=2)
    assert corrector.suggest("sneakr") == "sneakers"
    assert corrector.suggest("sneaker") is None  # known, though rare


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [
        ("sneakers", "sneakers", 0),
        ("sneakres", "sneakers", 1),
        ("snakers", "sneakers", 1),
        ("sneakerss", "sneakers", 1),
        ("snaekers", "sneakers", 1),
        ("ca", "abc", 3),  # optimal string alignment, not unrestricted Damerau
        ("denmi", "denim", 1),
        ("dnemi", "denim", 2),
    ],
)
def test_damerau_levenshtein(a: str, b: str, distance: int) -> None:
    assert damerau_levenshtein(a, b, limit=5) == distance
    assert damerau_levenshtein(b, a, limit=5) == distance
    assert damerau_levenshtein(a, b, limit=0) == min(distance, 1)


_EDITS = ("transpose", "delete", "insert", "substitute")


def _edit(word: str, kind: str, rng: random.Random) -> str:
    i = rng.randrange(len(word) - 1)
    if kind == "transpose":
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == "delete":
        return word[:i] + word[i + 1 :]
    letter = rng.choice("abcdefghijklmnopqrstuvwxyz")
    if kind == "insert":
        return word[:i] + letter + word[i:]
    return word[:i] + letter + word[i + 1 :]


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(sorted({w for t in TEXTS for w in tokenize(t) if len(w) >= 5 and w.isalpha()})),
    st.sampled_from(_EDITS),
    st.integers(0, 10**6),
)
def test_one_edit_of_a_long_catalog_word_gives_a_catalog_word_within_one_edit(
    word: str, kind: str, seed: int
) -> None:
    """Whatever the single edit, the result is a catalog word at the least distance: the
    word itself or another catalog word as close to the typo (never a farther one)."""
    vocab = Vocabulary.from_texts(TEXTS)
    corrector = SpellingCorrector(vocab)
    typo = _edit(word, kind, random.Random(seed))
    fixed = corrector.correct(typo).corrected
    if typo in vocab:
        assert fixed == typo
    else:
        assert fixed in vocab
        assert damerau_levenshtein(typo, fixed) <= damerau_levenshtein(typo, word) <= 1


def test_vocabulary_counts_word_pairs_and_reads_version_1() -> None:
    vocab = Vocabulary.from_texts(["red shoes", "Red Shoes men", "blue shoes"])
    # Pairs held by one text only ("blue shoes", "men …") are left out.
    assert vocab.pairs == {"red shoes": 2}
    assert vocab.cooccurrence("shoes", "red") == vocab.cooccurrence("red", "shoes") == 2
    assert vocab.cooccurrence("blue", "shoes") == 0
    data = vocab.to_json()
    assert data["version"] == 2 and Vocabulary.from_json(data) == vocab
    # A vocabulary written before pair counts existed reads without them.
    old = {k: v for k, v in data.items() if k != "pairs"} | {"version": 1}
    assert Vocabulary.from_json(old) == Vocabulary(vocab.frequencies, 3, 7)


def _context_catalog() -> Vocabulary:
    """ "shirts" beside "men" (1,200 texts), "skirts" beside "women" (800), "sandals" beside
    "women" (1,000) and two texts of "garden snails"."""
    texts = (
        ["men shirts"] * 1200
        + ["women skirts"] * 800
        + ["women sandals"] * 1000
        + ["garden snails"] * 2
    )
    return Vocabulary.from_texts(texts)


def test_context_picks_the_candidate_that_goes_with_the_other_words() -> None:
    corrector = SpellingCorrector(_context_catalog())
    # "sirts" is one edit from "shirts" and from "skirts".
    assert corrector.correct("sirts").corrected == "shirts"  # no context: the more frequent
    assert corrector.correct("women sirts").corrected == "women skirts"
    assert corrector.correct("men sirts").corrected == "men shirts"
    assert corrector.suggest("sirts", ["women"]) == "skirts"
    # Without pair counts (a version 1 vocabulary) the frequency decides, context or not.
    vocab = _context_catalog()
    plain = SpellingCorrector(Vocabulary(vocab.frequencies, vocab.documents, vocab.tokens))
    assert plain.correct("women sirts").corrected == "women shirts"


def test_a_two_edit_candidate_wins_only_by_a_clear_context_margin() -> None:
    corrector = SpellingCorrector(_context_catalog())
    # "snadls": one edit from the rare "snails", two from "sandals".
    assert damerau_levenshtein("snadls", "snails") == 1
    assert damerau_levenshtein("snadls", "sandals") == 2
    assert corrector.correct("snadls").corrected == "snails"
    assert corrector.correct("women snadls").corrected == "women sandals"
    assert corrector.correct("garden snadls").corrected == "garden snails"
    # A known word and a code stay whatever the context.
    assert corrector.correct("women snails CH2586").corrected == "women snails CH2586"


def test_known_field_words_are_never_corrected_to_a_near_text_word() -> None:
    texts = ["Ajanta Tower Clock", "Spring Goods Box", "Tower Fan"] * 3
    plain = SpellingCorrector(Vocabulary.from_texts(texts))
    assert plain.correct("Topwear").corrected == "Tower"  # what an unknown word gets
    vocabulary = Vocabulary.from_texts(texts)
    vocabulary.add_known(["Topwear", "Sporting Goods", "Tower"])
    assert vocabulary.known == {"topwear": 1, "sporting": 1}  # text words stay text words
    corrector = SpellingCorrector(vocabulary)
    for query in ("Topwear", "Sporting Goods", "topwear tower"):
        assert not corrector.correct(query).changed, query
    assert corrector.correct("Towre Fan").corrected == "Tower Fan"
