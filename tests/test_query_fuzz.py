"""Fuzzing the query inputs (issue #19): filter expressions, the ``--queries`` JSONL lines and
the fusion arguments never raise anything but a one-line ``ClipyError``, and what they accept
is valid. ``clipy search --queries``: a bad line is an error object on its own output line
and the batch goes on (exit 1 at the end).

Hypothesis runs with a fixed seed (``derandomize``) so a failure replays as is.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from corpus import GOOD, write_csv, write_good_images
from fake_encoder import register_fake
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from clipy_qdrant.errors import ClipyError
from clipy_qdrant.filters import Filter, Match, Range, filter_from_mapping, matches, parse_filter
from clipy_qdrant.fusion import FUSION_METHODS, FusionConfig
from ingest.cli import app
from ingest.cli.search import BATCH_QUERY_KEYS, _batch_query

FUZZ = settings(
    max_examples=300, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

OPERATORS = ["=", "!=", ">=", "<=", ">", "<", "==", "=>", ""]
FIELDS = st.sampled_from(["year", "gender", "baseColour", "price", "x.y", "", "1bad", " year"])
VALUES = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        ["2012", "2012a", "nan", "inf", "-inf", "1e309", "1..2", "..", "2..1", "a,b", ",", "1,,2"]
    ),
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
EXPRESSIONS = st.one_of(
    st.text(max_size=30),
    st.builds(lambda f, o, v: f"{f}{o}{v}", FIELDS, st.sampled_from(OPERATORS), VALUES),
)


def _one_line(exc: ClipyError) -> None:
    message = str(exc)
    assert message and "\n" not in message and "Traceback" not in message


def _valid_filter(flt: Filter) -> None:
    assert flt.must or flt.must_not
    for cond in (*flt.must, *flt.must_not):
        assert cond.field
        if isinstance(cond, Range):
            bounds = [b for b in (cond.gt, cond.gte, cond.lt, cond.lte) if b is not None]
            assert bounds and all(isinstance(b, float) for b in bounds)
            assert not any(math.isnan(b) for b in bounds), cond
        else:
            assert isinstance(cond, Match) and cond.values
            assert all(isinstance(v, str | int | float | bool) for v in cond.values)


@FUZZ
@given(st.lists(EXPRESSIONS, max_size=4))
def test_filter_parser_accepts_or_names_the_problem(exprs: list[str]) -> None:
    try:
        flt = parse_filter(exprs)
    except ClipyError as exc:
        _one_line(exc)
        return
    if flt is not None:
        _valid_filter(flt)
        matches(flt, {"year": 2012, "gender": "Men"})  # the reference evaluator takes it too


JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**20), 10**20),
        st.floats(allow_nan=True),
        st.text(max_size=8),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@FUZZ
@given(st.dictionaries(st.sampled_from(["year", "gender", "price"]), JSON_VALUES, max_size=3))
def test_filter_from_mapping_accepts_or_names_the_problem(rule: dict[str, Any]) -> None:
    try:
        flt = filter_from_mapping(rule)
    except ClipyError as exc:
        _one_line(exc)
        return
    if flt is not None:
        _valid_filter(flt)


WEIGHTS = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-5, 5),
    st.booleans(),
    st.text(max_size=4),
)


@FUZZ
@given(
    st.one_of(st.sampled_from([*FUSION_METHODS, "RRF", "", "exact"]), st.text(max_size=6)),
    WEIGHTS,
    WEIGHTS,
)
def test_fusion_weights_accept_or_name_the_problem(method: str, w_text: Any, w_image: Any) -> None:
    try:
        config = FusionConfig.from_weights(method, w_text=w_text, w_image=w_image)
    except ClipyError as exc:
        _one_line(exc)
        return
    assert config.method in FUSION_METHODS
    assert math.isfinite(config.w_text) and math.isfinite(config.w_image)
    assert config.w_text >= 0 and config.w_image >= 0 and config.w_text + config.w_image > 0


LINE_OBJECTS = st.dictionaries(
    st.one_of(st.sampled_from(sorted(BATCH_QUERY_KEYS)), st.text(max_size=4)),
    JSON_VALUES,
    max_size=4,
)
LINES = st.one_of(
    st.text(max_size=40),
    LINE_OBJECTS.map(json.dumps),
    st.builds(lambda t: json.dumps({"text": t}), st.text(max_size=10)),
    st.just("[" * 5000),  # deeper than the JSON parser's recursion
)


@FUZZ
@given(LINES)
def test_batch_line_is_a_query_or_a_reason(line: str) -> None:
    result = _batch_query(line)
    if isinstance(result, str):
        assert result and "\n" not in result
        return
    assert set(result) <= BATCH_QUERY_KEYS
    assert result.get("text") or result.get("image")


# -- the batch mode end to end ---------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    register_fake()
    root = tmp_path_factory.mktemp("fuzz")
    write_good_images(root / "images")
    source = write_csv(root / "styles.csv", GOOD)
    path = root / "store"
    result = CliRunner().invoke(
        app,
        [
            "ingest",
            str(source),
            "--store",
            str(path),
            "--encoder",
            "fake",
            "--report",
            str(root / "r.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    return path


BATCH_LINES = [
    ({"text": "red shirt", "k": 2}, None),
    ("{not json", "not valid JSON"),
    ({"text": "blue", "filters": ["year>=soon"]}, "is not a number"),
    ({"k": 3}, "needs 'text' or 'image'"),
    ({"text": "green", "w_image": 1.5}, "w_image given alone must be within [0, 1]"),
    ({"image": "missing.jpg"}, "missing.jpg"),
    ({"text": "shirt", "fusion": "magic"}, "unknown fusion method"),
    ({"text": "shirt", "k": "ten"}, "'k' must be a whole number"),
    ({"text": "shirt", "colour": "red"}, "unknown keys"),
    ({"text": "black", "filters": "year>=2011", "k": 1}, None),
]


def test_batch_bad_lines_become_error_objects_and_the_batch_goes_on(
    store: Path, tmp_path: Path
) -> None:
    queries = tmp_path / "q.jsonl"
    queries.write_text(
        "\n".join(q if isinstance(q, str) else json.dumps(q) for q, _ in BATCH_LINES) + "\n"
    )
    result = CliRunner().invoke(
        app, ["search", "--queries", str(queries), "--store", str(store), "--json"]
    )
    assert result.exit_code == 1
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(out) == len(BATCH_LINES)
    for number, ((_, error), answer) in enumerate(zip(BATCH_LINES, out, strict=True), 1):
        if error is None:
            assert isinstance(answer, list) and answer, (number, answer)
        else:
            assert answer["line"] == number and error in answer["error"], (number, answer)
            assert "\n" not in answer["error"]
    assert len(out[0]) == 2 and len(out[-1]) == 1
    assert all(h["payload"]["year"] >= 2011 for h in out[-1])
    # stderr: one line naming the first failure and how many more failed
    assert result.stderr.strip().count("\n") == 0
    assert "line 2: not valid JSON" in result.stderr and "7 more failed" in result.stderr


def test_batch_text_mode_marks_the_failed_line(store: Path, tmp_path: Path) -> None:
    queries = tmp_path / "q.jsonl"
    queries.write_text(
        '{"text": "red"}\n{"text": "red", "filters": ["nope=1"]}\n{"text": "blue"}\n'
    )
    result = CliRunner().invoke(app, ["search", "--queries", str(queries), "--store", str(store)])
    assert result.exit_code == 1
    assert "== line 2: error: " in result.stdout and "== line 3: blue" in result.stdout


def test_batch_of_only_good_lines_exits_0(store: Path, tmp_path: Path) -> None:
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"text": "red"}\n\n{"text": "blue", "k": 1}\n')
    result = CliRunner().invoke(
        app, ["search", "--queries", str(queries), "--store", str(store), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 2


@pytest.mark.parametrize(
    "exprs", [["year>=nan"], ["year=nan..2"], ["price<NaN"]], ids=["gte", "between", "lt"]
)
def test_nan_bound_is_an_error_not_an_empty_result(exprs: list[str]) -> None:
    with pytest.raises(ClipyError, match="is not a number"):
        parse_filter(exprs)


@pytest.mark.parametrize(
    "rule",
    [{"year": {"gte": None}}, {"year": {"from": 1}}, {"year": {}}, {"year": [None]}, {"year": []}],
)
def test_bad_mapping_rule_is_an_error(rule: dict[str, Any]) -> None:
    with pytest.raises(ClipyError, match="year"):
        filter_from_mapping(rule)
