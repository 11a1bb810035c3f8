"""The code-only query rule (issue #23): a query that is a code and nothing else is searched
without the text channel where the lexical channel holds the code, and the result says so
(library, CLI JSON, HTTP API); it fires on nothing else and turns off."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_encoder import FakeEncoder, register_fake
from fastapi.testclient import TestClient
from serve_store import build_store, products
from typer.testing import CliRunner

from clipy_qdrant.fusion import FusionConfig
from clipy_qdrant.query_rules import CODE_ONLY
from clipy_qdrant.search import Searcher
from clipy_qdrant.serve import ServeOptions, create_app
from clipy_qdrant.spelling import is_code_query
from clipy_qdrant.store import VectorStore
from ingest.cli import app

N = 48
#: Product id → the code its name carries.
CODES = {"1005": "A166", "1017": "BCFR02", "1030": "3017D"}


def _catalog() -> list:
    out = []
    for p in products(N):
        code = CODES.get(p.product_id)
        if code is not None:
            name = f"{p.text} {code}"
            p = dataclasses.replace(
                p, text=name, metadata={**p.metadata, "productDisplayName": name}
            )
        out.append(p)
    return out


@pytest.fixture(scope="module", params=["edge", "memory"])
def store(request, tmp_path_factory) -> Iterator[VectorStore]:
    where = tmp_path_factory.mktemp("rules") / "store"
    s = build_store(N, where, backend=request.param, catalog=_catalog())
    yield s
    s.close()


@pytest.fixture(scope="module")
def searcher(store: VectorStore) -> Searcher:
    return Searcher(store, FakeEncoder(), candidates=8)


def test_is_code_query_needs_every_word_code_like() -> None:
    assert is_code_query("A166") and is_code_query("bcfr02") and is_code_query("1192E 7ADF")
    assert is_code_query("A166-7ADF") and is_code_query("iPhone")
    # A word of capitals alone is not code-like (it may be an acronym or a shouted word).
    assert not is_code_query("MTP-1192E")
    assert not is_code_query("A166 watch") and not is_code_query("red watches")
    assert not is_code_query("") and not is_code_query(" - ")


@pytest.mark.parametrize(("pid", "code"), list(CODES.items()))
def test_code_query_drops_the_text_channel_and_says_so(
    searcher: Searcher, pid: str, code: str
) -> None:
    asked = FusionConfig()
    result = searcher.search_page(code, k=5, fusion=asked)
    assert result.rule is not None and result.rule.name == CODE_ONLY
    used = result.fusion
    assert used is not None and used == dataclasses.replace(asked, w_text=0.0)
    assert result.hits[0].product_id == pid
    # The search is the one asked with those weights and the rule off.
    plain = searcher.search(code, k=5, fusion=used, code_queries=False)
    assert [(h.product_id, h.score) for h in result.hits] == [
        (h.product_id, h.score) for h in plain
    ]
    for h in result.hits:
        assert h.score == pytest.approx(
            used.w_image * h.image_score + used.w_lexical * h.lexical_score, abs=1e-5
        )
    body = result.to_dict()
    assert body["weights"]["w_text"] == 0.0 and body["weights"]["w_image"] == asked.w_image
    assert body["rule"]["name"] == CODE_ONLY and body["rule"]["weights"] == body["weights"]


@pytest.mark.parametrize(
    "text", ["Red Watches", "red watches 5", "A166 watches", "ZZ9999", "Q7Q7Q7 XX11"]
)
def test_other_queries_keep_the_weights_asked_for(searcher: Searcher, text: str) -> None:
    """Words that are not all codes, and codes the catalog does not hold, keep the weights."""
    asked = FusionConfig("weighted", 0.7, 0.3, w_lexical=0.4)
    result = searcher.search_page(text, k=5, fusion=asked)
    assert result.rule is None and result.fusion == asked
    assert result.to_dict()["rule"] is None


def test_a_code_filtered_out_keeps_the_weights(searcher: Searcher) -> None:
    """The lexical channel is asked under the search's filter: a code held only by products
    the filter leaves out is a code the searched set does not hold."""
    gender = searcher.product("1005")["gender"]
    other = "Women" if gender == "Men" else "Men"
    assert searcher.search_page("A166", filters=[f"gender={gender}"]).rule is not None
    assert searcher.search_page("A166", filters=[f"gender={other}"]).rule is None
    assert searcher.search_page("A166", exclude={"1005"}).rule is None


@pytest.mark.parametrize(
    "asked",
    [
        FusionConfig("weighted", 1.0, 0.0, w_lexical=0.5),  # no image channel left
        FusionConfig("weighted", 0.5, 0.5, w_lexical=0.0),  # no lexical channel
    ],
)
def test_fusions_the_rule_cannot_change(searcher: Searcher, asked: FusionConfig) -> None:
    result = searcher.search_page("A166", fusion=asked)
    assert result.rule is None and result.fusion == asked


@pytest.mark.parametrize("method", ["rrf", "dbsf"])
def test_rank_fusions_drop_the_text_channel_too(searcher: Searcher, method: str) -> None:
    asked = FusionConfig(method, 0.5, 0.5, w_lexical=0.5)  # type: ignore[arg-type]
    result = searcher.search_page("A166", fusion=asked)
    assert result.rule is not None and result.fusion is not None
    assert result.fusion.w_text == 0.0 and result.fusion.method == method
    plain = searcher.search("A166", fusion=result.fusion, code_queries=False)
    assert [h.product_id for h in result.hits] == [h.product_id for h in plain]


def test_the_rule_turns_off(store: VectorStore, searcher: Searcher) -> None:
    asked = FusionConfig()
    off = Searcher(store, FakeEncoder(), candidates=8, code_queries=False)
    result = off.search_page("A166", fusion=asked)
    assert result.rule is None and result.fusion == asked
    assert off.search_page("A166", fusion=asked, code_queries=True).rule is not None
    assert searcher.search_page("A166", fusion=asked, code_queries=False).rule is None
    # The grid (``clipy eval``) follows the same switch.
    query = searcher.embed("A166")
    on_grid = searcher.search_grid(query, [asked], k=5)[0]
    off_grid = off.search_grid(query, [asked], k=5)[0]
    text_only = off.search_grid(query, [dataclasses.replace(asked, w_text=0.0)], k=5)[0]
    assert [h.score for h in on_grid] == [h.score for h in text_only]
    assert [h.score for h in on_grid] != [h.score for h in off_grid]


def test_http_api_reports_the_rule(searcher: Searcher) -> None:
    client = TestClient(create_app(searcher, ServeOptions()))
    body = client.post("/v1/search", json={"text": "A166", "k": 3}).json()
    assert body["rule"]["name"] == CODE_ONLY and body["weights"]["w_text"] == 0.0
    assert body["hits"][0]["product_id"] == "1005"
    off = client.post("/v1/search", json={"text": "A166", "k": 3, "code_rule": False}).json()
    assert off["rule"] is None and off["weights"]["w_text"] == 0.5
    words = client.post("/v1/search", json={"text": "red watches", "k": 3}).json()
    assert words["rule"] is None and words["weights"]["w_text"] == 0.5


def test_http_api_follows_the_server_setting(store: VectorStore) -> None:
    off = Searcher(store, FakeEncoder(), candidates=8, code_queries=False)
    client = TestClient(create_app(off, ServeOptions()))
    body = client.post("/v1/search", json={"text": "A166", "k": 3}).json()
    assert body["rule"] is None and body["weights"]["w_text"] == 0.5
    on = client.post("/v1/search", json={"text": "A166", "k": 3, "code_rule": True}).json()
    assert on["rule"]["name"] == CODE_ONLY


def test_cli_json_and_stderr_report_the_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    register_fake()
    build_store(N, tmp_path / "store", catalog=_catalog()).close()
    runner = CliRunner()
    args = ["search", "A166", "--store", str(tmp_path / "store"), "--json", "-k", "3"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert hits[0]["product_id"] == "1005"
    assert all(h["rule"]["name"] == CODE_ONLY for h in hits)
    assert hits[0]["rule"]["weights"]["w_text"] == 0.0
    assert "code_only" in result.stderr and "--no-code-rule" in result.stderr
    off = runner.invoke(app, [*args, "--no-code-rule"])
    assert off.exit_code == 0, off.output
    assert all("rule" not in h for h in json.loads(off.stdout)) and "code_only" not in off.stderr
    # The setting (what ``clipy eval`` runs under) turns it off too.
    monkeypatch.setenv("CLIPY_CODE_QUERIES", "0")
    env_off = runner.invoke(app, args)
    assert env_off.exit_code == 0, env_off.output
    assert all("rule" not in h for h in json.loads(env_off.stdout))
