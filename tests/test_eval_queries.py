"""Query files (JSONL) and the query generators, on a small hand-made catalog."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from random import Random

import pytest

from clipy_qdrant.errors import InputError
from clipy_qdrant.eval.catalog_queries import (
    KNOWN_ITEM,
    QUERY_FILES,
    SAME_NAME,
    UNSEEN_NAME,
    QuerySetSizes,
    attribute_queries,
    category_queries,
    composed_queries,
    image_queries,
    known_item_queries,
    make_query_sets,
    phrase_attributes,
    same_name_queries,
    unseen_name_queries,
)
from clipy_qdrant.eval.queries import (
    EvalQuery,
    read_queries,
    read_query_files,
    write_queries,
    write_query_sets,
)
from clipy_qdrant.split import is_heldout

TYPES = ["Tshirts", "Jeans", "Handbags"]
COLOURS = ["Red", "Blue", "Black", "White"]


def catalog(n: int = 120) -> list[dict[str, object]]:
    """Product i: type i % 3, colour i % 4, gender Men for even i; ids divisible by 5 are held out."""
    return [
        {
            "product_id": str(i),
            "articleType": TYPES[i % 3],
            "baseColour": COLOURS[i % 4],
            "gender": "Men" if i % 2 == 0 else "Women",
            "usage": "Casual",
            "season": "Summer",
            "masterCategory": "Apparel",
            "productDisplayName": f"Brand{i} {COLOURS[i % 4]} {TYPES[i % 3]}",
        }
        for i in range(n)
    ]


def test_jsonl_round_trip(tmp_path: Path) -> None:
    queries = [
        EvalQuery(id="q1", set="custom", text="red shirt", relevant_ids=("1", "2")),
        EvalQuery(
            id="q2",
            set="image/articleType",
            image="product:10",
            exclude=("10",),
            relevant_rule={"articleType": ["Jeans"]},
            gallery="heldout",
        ),
        EvalQuery(
            id="q3",
            set="composed",
            text="in red",
            image="product:7",
            filters={"gender": ["Men"], "year": {"gte": 2012}},
            relevant_rule={"articleType": ["Jeans"], "baseColour": ["Red"]},
        ),
        EvalQuery(id="q4", text="jeans", filters=("gender=Men",), relevant_ids=("3",)),
    ]
    path = write_queries(queries, tmp_path / "q.jsonl")
    assert read_queries(path) == queries
    first = json.loads(path.read_text().splitlines()[0])
    assert first == {"id": "q1", "set": "custom", "text": "red shirt", "relevant": ["1", "2"]}


def test_hand_written_file_with_comments_and_relative_image(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text(
        "# my queries\n"
        "\n"
        '{"id": 1, "text": "blue jeans", "relevant": {"articleType": ["Jeans"], "baseColour": ["Blue", "Navy Blue"]}}\n'
        '{"id": "p", "image": "pics/shoe.jpg", "relevant": [15970, "42"]}\n'
    )
    q1, q2 = read_queries(path)
    assert q1.id == "1" and q1.set == "custom"
    assert q1.relevant_rule == {"articleType": ["Jeans"], "baseColour": ["Blue", "Navy Blue"]}
    assert q2.image == str(tmp_path / "pics" / "shoe.jpg")
    assert q2.image_product is None
    assert q2.relevant_ids == ("15970", "42")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"id": "x", "text": "a", "relevant": ["1"], "colour": "red"}', "unknown key"),
        ('{"id": "x", "text": "a"}', "relevant"),
        ('{"id": "x", "relevant": ["1"]}', "neither text nor image"),
        ('{"text": "a", "relevant": ["1"]}', "'id'"),
        ('{"id": "x", "text": "a", "relevant": "1"}', "relevant"),
        ('{"id": "x", "text": "a", "relevant": ["1"], "filters": ["year>>2"]}', "bad filters"),
        ('{"id": "x", "text": "a", "relevant": ["1"], "gallery": "train"}', "gallery"),
        ('{"id": "x", "text": "a", "relevant": ["1"], "exclude": "1"}', "exclude"),
        ('["a"]', "JSON object"),
    ],
)
def test_malformed_lines_are_reported_with_file_and_line(
    tmp_path: Path, line: str, message: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "ok", "text": "a", "relevant": ["1"]}\n\n' + line + "\n")
    with pytest.raises(InputError, match=message) as err:
        read_queries(path)
    assert str(err.value).startswith(f"{path}:3: ")
    assert "\n" not in str(err.value)


def test_repeated_ids_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "dup.jsonl"
    path.write_text(
        '{"id": "a", "text": "x", "relevant": ["1"]}\n{"id": "a", "text": "y", "relevant": ["1"]}\n'
    )
    with pytest.raises(InputError, match=r"dup.jsonl:2: .*repeats line 1"):
        read_queries(path)
    with pytest.raises(InputError, match="no such query file"):
        read_queries(tmp_path / "missing.jsonl")
    other = tmp_path / "one.jsonl"
    other.write_text('{"id": "a", "text": "x", "relevant": ["1"]}\n')
    copy = tmp_path / "two.jsonl"
    copy.write_text(other.read_text())
    with pytest.raises(InputError, match="also appears"):
        read_query_files([other, copy])


def test_phrasing_worked_examples() -> None:
    rng = Random(0)
    red_shoes = {
        "baseColour": "Red",
        "usage": "Casual",
        "articleType": "Casual Shoes",
        "gender": "Men",
    }
    assert phrase_attributes(red_shoes, rng) in {
        "red casual shoes for men",
        "men's red casual shoes",
    }
    handbag = {"baseColour": "Black", "articleType": "Handbags", "gender": "Women"}
    assert phrase_attributes(handbag, rng) in {"women's black handbags", "black handbags for women"}
    assert (
        phrase_attributes({"articleType": "Tshirts", "season": "Summer"}, rng) == "summer t-shirts"
    )
    assert phrase_attributes({"articleType": "Caps", "gender": "Unisex"}, rng) == "unisex caps"


def test_known_item_queries_ask_about_heldout_products_and_are_reproducible() -> None:
    products = catalog()
    queries = known_item_queries(products, n=10, seed=3)
    assert len(queries) == 10
    assert all(is_heldout(q.relevant_ids[0]) for q in queries if q.relevant_ids)
    assert all(q.gallery == "all" and q.set == "known-item" for q in queries)
    q = queries[0]
    assert q.relevant_ids is not None
    assert q.text == f"Brand{q.relevant_ids[0]} " + q.text.split(" ", 1)[1]
    assert known_item_queries(products, n=10, seed=3) == queries
    assert known_item_queries(products, n=10, seed=4) != queries
    # All products may be asked about when not restricted; n larger than the pool is capped.
    assert len(known_item_queries(products, n=500, heldout_only=False)) == 120
    assert len(known_item_queries(products, n=500)) == 24


def test_category_queries_cover_every_value() -> None:
    queries = category_queries(catalog(), fields=("articleType", "baseColour"), min_relevant=1)
    assert [q.text for q in queries] == sorted(TYPES) + sorted(COLOURS)
    jeans = next(q for q in queries if q.text == "Jeans")
    assert jeans.set == "category/articleType"
    assert jeans.relevant_rule == {"articleType": ["Jeans"]}
    assert jeans.gallery == "heldout"
    # Held-out colour counts: ids 0,5,..,115 -> i % 4 cycles 0,1,2,3 -> 6 each.
    assert len(category_queries(catalog(), fields=("baseColour",), min_relevant=7)) == 0
    assert len(category_queries(catalog(), fields=("baseColour",), min_relevant=6)) == 4


def test_attribute_queries_need_enough_relevant_products() -> None:
    products = catalog()
    # Held-out products: i = 5j. (colour, type) repeats every lcm(4, 3) = 12 steps of j,
    # so among 24 held-out products each of the 12 pairs occurs exactly twice.
    queries = attribute_queries(
        products, n=1000, seed=0, min_relevant=2, templates=[("baseColour", "articleType")]
    )
    assert len(queries) == 12
    assert (
        attribute_queries(
            products, n=1000, min_relevant=3, templates=[("baseColour", "articleType")]
        )
        == []
    )
    some = queries[0]
    assert some.relevant_rule is not None and set(some.relevant_rule) == {
        "baseColour",
        "articleType",
    }
    assert attribute_queries(products, n=5, seed=1) == attribute_queries(products, n=5, seed=1)
    texts = [q.text for q in attribute_queries(products, n=1000, min_relevant=1)]
    assert len(texts) == len(set(texts))


def test_image_queries_exclude_the_query_product() -> None:
    queries = image_queries(catalog(), n=5, seed=0)
    by_set = Counter(q.set for q in queries)
    assert by_set == {"image/articleType": 5, "image/articleType+colour": 5}
    for q in queries:
        pid = q.image_product
        assert pid is not None and is_heldout(pid)
        assert q.exclude == (pid,)
        assert q.relevant_rule is not None
        assert q.relevant_rule["articleType"] == [TYPES[int(pid) % 3]]
        if q.set == "image/articleType+colour":
            assert q.relevant_rule["baseColour"] == [COLOURS[int(pid) % 4]]


def test_composed_queries_ask_for_another_colour() -> None:
    queries = composed_queries(catalog(), n=8, seed=0, min_relevant=2)
    assert len(queries) == 8
    for q in queries:
        pid = q.image_product
        assert pid is not None and q.exclude == (pid,)
        assert q.relevant_rule is not None and q.text is not None
        colour = q.relevant_rule["baseColour"][0]
        assert colour != COLOURS[int(pid) % 4]
        assert q.text == f"in {colour.lower()}"
        assert q.relevant_rule["articleType"] == [TYPES[int(pid) % 3]]


def test_make_and_write_query_sets(tmp_path: Path) -> None:
    sets = make_query_sets(
        catalog(), seed=0, sizes=QuerySetSizes(known_item=5, attribute=4, image=3, composed=2)
    )
    assert list(sets) == [*QUERY_FILES]
    assert {"typo", "code", "brand"} <= set(sets)
    paths = write_query_sets(sets, tmp_path)
    assert [p.name for p in paths] == [f"{name}.jsonl" for name in sets]
    assert read_query_files(paths) == [q for qs in sets.values() for q in qs]
    with pytest.raises(InputError, match="no products"):
        make_query_sets([])


def test_a_heldout_predicate_picks_the_products_queries_are_about() -> None:
    products = catalog()
    fold_1 = lambda pid: int(pid) % 5 == 1  # noqa: E731 - a validation fold, as the experiments use
    sets = make_query_sets(
        products,
        heldout=fold_1,
        sizes=QuerySetSizes(known_item=500, attribute=1000, image=500, composed=500),
    )
    known = [q.relevant_ids[0] for q in sets["known-item"] if q.set == KNOWN_ITEM]
    assert len(known) == 24 and all(int(pid) % 5 == 1 for pid in known)
    subjects = [q.image_product for q in sets["image"] + sets["composed"]]
    assert subjects and all(pid is not None and int(pid) % 5 == 1 for pid in subjects)
    # Category counts come from fold 1 (ids 1, 6, ..., 116): i % 4 cycles 1, 2, 3, 0 -> 6 each.
    colours = category_queries(products, fields=("baseColour",), min_relevant=6, heldout=fold_1)
    assert [q.text for q in colours] == sorted(COLOURS)
    # The default predicate is the training split's rule; passing it changes nothing.
    assert make_query_sets(products, heldout=is_heldout) == make_query_sets(products)
    assert known_item_queries(products, n=500, heldout=fold_1) != known_item_queries(
        products, n=500
    )
    # heldout_only=False ignores the predicate: every product may be asked about.
    assert len(known_item_queries(products, n=500, heldout_only=False, heldout=fold_1)) == 120


def test_unseen_name_queries_ask_every_name_no_training_product_has() -> None:
    products = catalog()
    products[1]["productDisplayName"] = products[10]["productDisplayName"]  # a training product
    products[20]["productDisplayName"] = products[15]["productDisplayName"]  # two held out
    unseen = unseen_name_queries(products)
    held_names = {
        str(p["productDisplayName"]) for p in products if int(str(p["product_id"])) % 5 == 0
    }
    assert {q.text for q in unseen} == held_names - {products[10]["productDisplayName"]}
    assert len(unseen) == 24 - 2  # 24 held-out products: 10's name is seen, 15 and 20 share one
    by_text = {q.text: q for q in unseen}
    assert by_text[products[15]["productDisplayName"]].relevant_ids == ("15", "20")
    assert all(q.set == UNSEEN_NAME and q.gallery == "all" for q in unseen)
    assert [q.relevant_ids[0] for q in unseen] == sorted(
        (q.relevant_ids[0] for q in unseen), key=lambda i: (len(i), i)
    )
    # A validation fold's rule, and no unseen name when every product may be asked about.
    fold_1 = unseen_name_queries(products, heldout=lambda pid: int(pid) % 5 == 1)
    assert {q.relevant_ids for q in fold_1} >= {("11",)} and ("1",) not in {
        q.relevant_ids for q in fold_1
    }
    assert unseen_name_queries(products, heldout_only=False) == []
    assert [q for q in make_query_sets(products)["known-item"] if q.set == UNSEEN_NAME] == unseen


def test_same_name_queries_count_every_product_of_that_exact_name_relevant() -> None:
    products = catalog()
    # Products 1 and 121 share product 10's name; 11 has a name that only contains it.
    products.append(
        {**products[3], "product_id": "121", "productDisplayName": "Brand10 Blue Kurta"}
    )
    products[1]["productDisplayName"] = "Brand10 Blue Kurta"
    products[11]["productDisplayName"] = "Brand10 Blue Kurta Set"
    products[10]["productDisplayName"] = "Brand10 Blue Kurta"
    known = known_item_queries(products, n=24)
    same = same_name_queries(products, known)
    assert [q.text for q in same] == [q.text for q in known]
    assert {q.set for q in same} == {SAME_NAME}
    by_text = {q.text: q for q in same}
    assert by_text["Brand10 Blue Kurta"].relevant_ids == ("1", "10", "121")
    for q, k in zip(same, known, strict=True):
        assert k.relevant_ids[0] in q.relevant_ids and q.gallery == "all"
    sets = make_query_sets(products)
    assert [q.set for q in sets["known-item"]].count(KNOWN_ITEM) == len(known)
    assert [q for q in sets["known-item"] if q.set == SAME_NAME] == same
