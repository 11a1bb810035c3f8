"""Collection options (shards, replicas, storage, quantization, HNSW): the pure mapping to each
engine's arguments, creation and read-back on the embedded store and qdrant-client's local
mode, the refusal of server-only options by the embedded store, the CLI flags and
``clipy info``, and (server tier) a real Qdrant's own view of a collection created with them."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import models
from typer.testing import CliRunner

from clipy_qdrant.encoders.base import EncoderInfo
from clipy_qdrant.errors import ConfigError, StoreError
from clipy_qdrant.filters import Filter, Match
from clipy_qdrant.store import PRODUCT_ID_KEY, PointRecord
from clipy_qdrant.store.client import ClientStore
from clipy_qdrant.store.edge import META_FILE, EdgeStore
from clipy_qdrant.store.meta import StoreMeta
from clipy_qdrant.store.options import (
    CollectionOptions,
    client_collection_kwargs,
    client_search_params,
    edge_config,
    edge_search_params,
)
from ingest.cli import app

ENC = EncoderInfo("fake", 16)
FULL = CollectionOptions(
    shards=6,
    replicas=2,
    write_consistency=2,
    on_disk=True,
    hnsw_on_disk=True,
    quantization="int8",
    oversampling=3.0,
    hnsw_m=32,
    hnsw_ef_construct=200,
)


def _points(n: int, dim: int = 16, seed: int = 0) -> list[PointRecord]:
    rng = np.random.default_rng(seed)
    return [
        PointRecord(
            f"p{i}",
            {"image": rng.normal(size=dim), "text": rng.normal(size=dim)},
            {"kind": ["a", "b"][i % 2], "rank": i},
            content_hash=f"h{i}",
        )
        for i in range(n)
    ]


# -- the mapping, pure ---------------------------------------------------------------------


def test_default_options_map_to_plain_collection_without_cluster_arguments() -> None:
    kwargs = client_collection_kwargs(CollectionOptions(), 512)
    assert set(kwargs) == {"vectors_config", "hnsw_config"}
    image = kwargs["vectors_config"]["image"]
    assert image.size == 512 and image.distance == models.Distance.COSINE and not image.on_disk
    assert kwargs["vectors_config"]["text"] == image
    assert kwargs["hnsw_config"] == models.HnswConfigDiff(m=16, ef_construct=100)
    assert client_search_params(CollectionOptions(), 64, False) == models.SearchParams(
        hnsw_ef=64, exact=False
    )


def test_full_options_map_to_create_collection_arguments() -> None:
    kwargs = client_collection_kwargs(FULL, 568)
    assert kwargs["shard_number"] == 6
    assert kwargs["replication_factor"] == 2
    assert kwargs["write_consistency_factor"] == 2
    assert kwargs["vectors_config"]["image"].on_disk is True
    assert kwargs["hnsw_config"] == models.HnswConfigDiff(m=32, ef_construct=200, on_disk=True)
    assert kwargs["quantization_config"] == models.ScalarQuantization(
        scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, always_ram=True)
    )
    params = client_search_params(FULL, 128, False)
    assert params.hnsw_ef == 128
    assert params.quantization == models.QuantizationSearchParams(rescore=True, oversampling=3.0)


def test_binary_quantization_maps_to_binary_config() -> None:
    options = CollectionOptions(quantization="binary", always_ram=False, rescore=False)
    assert client_collection_kwargs(options, 8)["quantization_config"] == (
        models.BinaryQuantization(binary=models.BinaryQuantizationConfig(always_ram=False))
    )
    assert client_search_params(options, 32, True).quantization == (
        models.QuantizationSearchParams(rescore=False, oversampling=2.0)
    )


def test_edge_config_carries_storage_quantization_and_graph() -> None:
    import qdrant_edge as qe

    config = edge_config(FULL.model_copy(update={"shards": None}), 568, 10)
    assert config.vectors["image"].size == 568 and config.vectors["image"].on_disk is True
    assert config.hnsw_config.m == 32 and config.hnsw_config.ef_construct == 200
    assert config.hnsw_config.on_disk is True
    assert isinstance(config.quantization_config, qe.ScalarQuantizationConfig)
    assert config.quantization_config.always_ram is True
    params = edge_search_params(FULL, 99, False)
    assert params.hnsw_ef == 99 and params.quantization.oversampling == 3.0
    assert params.quantization.rescore is True
    assert edge_search_params(CollectionOptions(), 99, True).quantization is None
    binary = edge_config(CollectionOptions(quantization="binary"), 8, 10)
    assert isinstance(binary.quantization_config, qe.BinaryQuantizationConfig)


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"shards": 0}, "shards"),
        ({"quantization": "int4"}, "quantization"),
        ({"oversampling": 0.5}, "oversampling"),
        ({"hnsw_m": 1}, "hnsw_m"),
    ],
)
def test_bad_option_values_are_one_line_config_errors(values: dict, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        CollectionOptions.build(**values)


# -- the embedded store and local mode ---------------------------------------------------------


@pytest.mark.parametrize("option", ["shards", "replicas", "write_consistency"])
def test_embedded_store_refuses_server_only_options_by_name(tmp_path: Path, option: str) -> None:
    flag = "--" + option.replace("_", "-")
    with pytest.raises(StoreError, match=f"^{flag} applies to a Qdrant server only"):
        EdgeStore(tmp_path / "s", options=CollectionOptions(**{option: 2}))
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("quantization", ["int8", "binary"])
def test_embedded_store_with_quantization_searches_and_remembers_options(
    tmp_path: Path, quantization: str
) -> None:
    options = CollectionOptions(
        quantization=quantization, on_disk=True, hnsw_on_disk=True, hnsw_m=8, oversampling=4
    )
    points = _points(300, dim=64)
    with EdgeStore(tmp_path / "s", options=options) as store:
        store.ensure_collection(EncoderInfo("fake", 64))
        store.upsert(points)
        store.build_index()
        assert store.collection_options() == options
    with EdgeStore(tmp_path / "s") as store:  # reopened without options: the recorded ones
        assert store.collection_options() == options
        assert store.options == options
        for p in points[:20]:
            hits = store.search("image", np.asarray(p.vectors["image"]), 3)
            assert hits[0].product_id == p.product_id  # rescoring ranks the exact match first
            assert hits[0].score == pytest.approx(1.0, abs=1e-4)
        # Exact fusion scores candidates with an exact search restricted to their ids: with
        # rescoring, those are the original vectors' cosines.
        some = points[100:140]
        query = np.asarray(points[7].vectors["text"], np.float32)
        restrict = Filter(must=(Match(PRODUCT_ID_KEY, tuple(p.product_id for p in some)),))
        hits = store.search("image", query, len(some), restrict, with_payload=False, exact=True)
        assert len(hits) == len(some)
        for hit in hits:
            image = np.asarray(some[int(hit.product_id[1:]) - 100].vectors["image"])
            cosine = float(image @ query / np.linalg.norm(image) / np.linalg.norm(query))
            assert hit.score == pytest.approx(cosine, abs=1e-5)
    meta = json.loads((tmp_path / "s" / META_FILE).read_text())
    assert meta["collection_options"]["quantization"] == quantization


def test_existing_collection_refuses_other_options(tmp_path: Path) -> None:
    with EdgeStore(tmp_path / "s") as store:
        store.ensure_collection(ENC)
    with (
        EdgeStore(tmp_path / "s", options=CollectionOptions(quantization="int8")) as store,
        pytest.raises(StoreError, match=r"quantization 'none', not 'int8'.*--recreate"),
    ):
        store.ensure_collection(ENC)
    with EdgeStore(tmp_path / "s", options=CollectionOptions()) as store:
        store.ensure_collection(ENC)  # the same options as recorded: accepted


def test_metadata_without_options_reads_as_defaults() -> None:
    data = StoreMeta(ENC, {"a": "keyword"}).to_json()
    del data["collection_options"]
    assert StoreMeta.from_json(data, "here").options == CollectionOptions()


def test_local_mode_accepts_every_option_and_records_them() -> None:
    # qdrant-client's local mode takes all of create_collection's arguments but keeps only the
    # vectors' on_disk flag (it has no shards, graph or quantization); clipy records the rest.
    store = ClientStore(":memory:", collection="opts", options=FULL)
    store.ensure_collection(ENC)
    store.upsert(_points(50))
    info = store._client.get_collection("opts")
    vectors = info.config.params.vectors
    assert isinstance(vectors, dict) and vectors["image"].on_disk is True
    assert store.collection_options() == FULL
    hits = store.search("text", np.asarray(_points(50)[7].vectors["text"]), 1)
    assert hits[0].product_id == "p7"


# -- the CLI -------------------------------------------------------------------------------------


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_info_shows_the_layout(tmp_path: Path) -> None:
    options = CollectionOptions(quantization="int8", on_disk=True, oversampling=3)
    with EdgeStore(tmp_path / "s", options=options) as store:
        store.ensure_collection(ENC)
        store.upsert(_points(5))
    code, out, _ = _run("info", "--store", str(tmp_path / "s"), "--json")
    assert code == 0
    assert CollectionOptions(**json.loads(out)["collection_options"]) == options
    code, out, _ = _run("info", "--store", str(tmp_path / "s"))
    layout = next(line for line in out.splitlines() if line.startswith("layout:"))
    assert "vectors on disk" in layout and "int8 quantization (rescore x3)" in layout


def test_ingest_flags_reach_the_new_collection_and_server_only_flags_fail(
    tmp_path: Path,
) -> None:
    from fake_encoder import register_fake
    from PIL import Image

    register_fake()
    (tmp_path / "images").mkdir()
    lines = ["id,productDisplayName,image"]
    for i in range(6):
        Image.new("RGB", (20, 20), (40 * i, 10, 200)).save(tmp_path / "images" / f"{i}.png")
        lines.append(f"{i},thing {i},{i}.png")
    (tmp_path / "c.csv").write_text("\n".join(lines) + "\n")
    common = ["ingest", str(tmp_path / "c.csv"), "--images", str(tmp_path / "images")]
    common += ["--encoder", "fake", "--report", str(tmp_path / "r.json"), "--store"]
    code, _, err = _run(*common, str(tmp_path / "bad"), "--shards", "3")
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("clipy: error: --shards applies to a Qdrant")
    code, _, err = _run(
        *common, str(tmp_path / "s"), "--quantization", "binary", "--hnsw-m", "12", "--on-disk"
    )
    assert code == 0, err
    with EdgeStore(tmp_path / "s") as store:
        assert store.collection_options() == CollectionOptions(
            quantization="binary", hnsw_m=12, on_disk=True
        )
        assert store.count() == 6


def test_layout_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ingest.cli.shell import build_settings

    monkeypatch.setenv("CLIPY_QUANTIZATION", "int8")
    monkeypatch.setenv("CLIPY_SHARDS", "4")
    settings = build_settings(replicas=2)
    assert settings.collection_options() == CollectionOptions(
        quantization="int8", shards=4, replicas=2
    )
    monkeypatch.delenv("CLIPY_QUANTIZATION")
    monkeypatch.delenv("CLIPY_SHARDS")
    assert build_settings().collection_options() is None


# -- server tier -------------------------------------------------------------------------------


@pytest.mark.server
def test_server_creates_collection_with_the_options() -> None:
    url = os.environ["CLIPY_TEST_QDRANT_URL"]
    name = f"clipy_test_opts_{uuid.uuid4().hex[:10]}"
    options = CollectionOptions(
        shards=2,
        replicas=1,
        write_consistency=1,
        on_disk=True,
        hnsw_on_disk=True,
        quantization="int8",
        hnsw_m=24,
        hnsw_ef_construct=150,
    )
    store = ClientStore(url, collection=name, options=options)
    try:
        store.ensure_collection(ENC)
        store.upsert(_points(200))
        store.build_index()
        config = store._client.get_collection(name).config
        assert config.params.shard_number == 2
        assert config.params.replication_factor == 1
        assert config.params.write_consistency_factor == 1
        vectors = config.params.vectors
        assert isinstance(vectors, dict) and vectors["image"].on_disk is True
        assert config.hnsw_config.m == 24 and config.hnsw_config.ef_construct == 150
        assert config.hnsw_config.on_disk is True
        assert isinstance(config.quantization_config, models.ScalarQuantization)
        assert config.quantization_config.scalar.type == models.ScalarType.INT8
        target = _points(200)[11]
        assert store.search("image", np.asarray(target.vectors["image"]), 1)[0].product_id == "p11"
        assert ClientStore(url, collection=name).collection_options() == options
    finally:
        store.delete_collection()
        store.close()
