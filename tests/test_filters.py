"""Filter parsing and the reference matcher."""

from __future__ import annotations

import pytest

from clipy_qdrant.errors import FilterError
from clipy_qdrant.filters import Filter, Match, Range, filter_from_mapping, matches, parse_filter


def test_parse_every_form() -> None:
    flt = parse_filter(
        [
            "gender=Men",
            "baseColour=Red,Blue",
            "year>=2015",
            "year<2018",
            "season!=Summer",
            "year=2010..2012",
        ]
    )
    assert flt == Filter(
        must=(
            Match("gender", ("Men",)),
            Match("baseColour", ("Red", "Blue")),
            Range("year", gte=2015),
            Range("year", lt=2018),
            Range("year", gte=2010, lte=2012),
        ),
        must_not=(Match("season", ("Summer",)),),
    )


def test_integer_fields_are_numbers() -> None:
    assert parse_filter(["year=2012"]) == Filter(must=(Match("year", (2012,)),))


def test_empty_is_none() -> None:
    assert parse_filter([]) is None
    assert parse_filter(None) is None


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("gender", "not of the form"),
        ("gender=", "no value"),
        ("year>=soon", "not a number"),
        ("year=twenty", "whole number"),
        ("year=1..x", "not a number"),
    ],
)
def test_bad_filters_name_the_problem(expr: str, message: str) -> None:
    with pytest.raises(FilterError, match=message) as info:
        parse_filter([expr])
    assert expr in str(info.value)


def test_matches_reference_semantics() -> None:
    shirt = {"gender": "Men", "baseColour": "Red", "year": 2016, "season": "Fall"}
    assert matches(parse_filter(["gender=Men", "year>=2015"]), shirt)
    assert not matches(parse_filter(["gender=Women"]), shirt)
    assert matches(parse_filter(["baseColour=Blue,Red"]), shirt)
    assert not matches(parse_filter(["season!=Fall"]), shirt)
    assert matches(parse_filter(["usage!=Sports"]), shirt)  # missing field: negation holds
    assert not matches(parse_filter(["usage=Sports"]), shirt)
    assert not matches(parse_filter(["gender>=1"]), shirt)  # range on a string never holds
    assert matches(None, shirt)


def test_filter_from_mapping() -> None:
    flt = filter_from_mapping(
        {"articleType": ["Jeans"], "baseColour": ["Blue", "Navy Blue"], "year": {"gte": 2012}}
    )
    assert matches(flt, {"articleType": "Jeans", "baseColour": "Navy Blue", "year": 2013})
    assert not matches(flt, {"articleType": "Jeans", "baseColour": "Black", "year": 2013})
    assert filter_from_mapping({}) is None
