"""The HTTP API (issue #16) through FastAPI's TestClient, on both store backends (qdrant-edge
in a temp folder, qdrant-client in memory), over products ingested by the real pipeline with
the fake encoder: every endpoint, every kind of bad input (a JSON 4xx naming the problem,
never a 500), the key, CORS, the body caps, and concurrent requests through a real uvicorn."""

from __future__ import annotations

import base64
import io
import json
import re
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_encoder import FakeEncoder
from fastapi.testclient import TestClient
from PIL import Image
from serve_store import COLOURS, build_store, picture, products, running_server

from clipy_qdrant.encoders.batching import BatchingEncoder
from clipy_qdrant.filters import matches, parse_filter
from clipy_qdrant.fusion import FusionConfig
from clipy_qdrant.search import Searcher
from clipy_qdrant.serve import ServeOptions, create_app
from clipy_qdrant.serve.models import SearchResponse
from clipy_qdrant.store import VectorStore

N = 60


@pytest.fixture(scope="module", params=["edge", "memory"])
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VectorStore]:
    store = build_store(N, tmp_path_factory.mktemp("api") / "store", backend=request.param)
    yield store
    store.close()


@pytest.fixture(scope="module")
def searcher(store: VectorStore) -> Searcher:
    return Searcher(store, FakeEncoder())


@pytest.fixture(scope="module")
def client(searcher: Searcher) -> TestClient:
    return TestClient(create_app(searcher))


def _image(rgb: tuple[int, int, int], fmt: str = "PNG", size: tuple[int, int] = (60, 80)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, rgb).save(buffer, format=fmt)
    return buffer.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _error(response: Any, status: int, *words: str) -> str:
    """Assert a JSON error with ``status`` whose message names each of ``words``."""
    assert response.status_code == status, response.text
    body = response.json()
    message = body["error"]["message"]
    assert isinstance(body["error"]["code"], str)
    assert "\n" not in message and "Traceback" not in message
    for word in words:
        assert word.lower() in message.lower(), message
    return message


# -- searching ----------------------------------------------------------------------------


def test_text_search_is_the_library_search(client: TestClient, searcher: Searcher) -> None:
    response = client.post("/v1/search", json={"text": "red shoes", "k": 7})
    assert response.status_code == 200
    body = response.json()
    expected = searcher.search("red shoes", k=7)
    assert [h["product_id"] for h in body["hits"]] == [h.product_id for h in expected]
    for got, want in zip(body["hits"], expected, strict=True):
        assert got["score"] == pytest.approx(want.score)
        assert got["text_score"] == pytest.approx(want.text_score)
        assert got["image_score"] == pytest.approx(want.image_score)
        assert got["image_penalty"] == pytest.approx(want.image_penalty)
        assert got["payload"] == want.payload
        assert got["name"] == want.payload["productDisplayName"]
        assert got["image"] == f"/v1/products/{want.product_id}/image"
    assert body["total"] == N and body["k"] == 7 and body["offset"] == 0
    assert body["next_offset"] == 7
    assert body["took_ms"] > 0
    # Rendered by pydantic-core, not FastAPI: the same document the schema describes.
    assert response.headers["content-type"] == "application/json"
    assert SearchResponse.model_validate_json(response.content).model_dump() == body
    schema = client.get("/openapi.json").json()["paths"]["/v1/search"]["post"]
    returned = schema["responses"]["200"]["content"]["application/json"]["schema"]
    assert returned == {"$ref": "#/components/schemas/SearchResponse"}


def test_filters_in_both_forms_are_the_same_filter(client: TestClient, searcher: Searcher) -> None:
    strings = ["gender=Men", "year>=2015", "baseColour=Red,Blue"]
    structured = {"gender": "Men", "year": {"gte": 2015}, "baseColour": ["Red", "Blue"]}
    a = client.post("/v1/search", json={"text": "red", "filters": strings, "k": 50}).json()
    b = client.post("/v1/search", json={"text": "red", "filters": structured, "k": 50}).json()
    assert a == {**b, "took_ms": a["took_ms"]}
    flt = parse_filter(strings)
    expected = searcher.count(flt)
    assert a["total"] == expected == len(a["hits"]) > 0
    assert all(matches(flt, h["payload"]) for h in a["hits"])
    assert a["next_offset"] is None


def test_structured_filter_not_and_integer_strings(client: TestClient) -> None:
    body = client.post(
        "/v1/search",
        json={
            "text": "shoes",
            "filters": {"baseColour": {"not": "Red"}, "year": ["2012", 2013]},
            "k": 50,
        },
    ).json()
    assert body["hits"]
    assert all(h["payload"]["baseColour"] != "Red" for h in body["hits"])
    assert {h["payload"]["year"] for h in body["hits"]} <= {2012, 2013}


@pytest.mark.parametrize(
    ("fusion", "w_text", "w_image"),
    [("weighted", 1.0, 0.0), ("weighted", None, 0.8), ("rrf", 1.0, 2.0), ("dbsf", 0.3, 0.7)],
)
def test_fusion_and_weights(
    client: TestClient, searcher: Searcher, fusion, w_text, w_image
) -> None:
    body = client.post(
        "/v1/search",
        json={"text": "blue bags", "fusion": fusion, "w_text": w_text, "w_image": w_image, "k": 10},
    ).json()
    config = FusionConfig.from_weights(fusion, w_text=w_text, w_image=w_image)
    expected = searcher.search("blue bags", k=10, fusion=config)
    assert [h["product_id"] for h in body["hits"]] == [h.product_id for h in expected]


def test_pages_join_up(client: TestClient) -> None:
    whole = client.post("/v1/search", json={"text": "green", "k": 20}).json()["hits"]
    first = client.post("/v1/search", json={"text": "green", "k": 10}).json()
    second = client.post(
        "/v1/search", json={"text": "green", "k": 10, "offset": first["next_offset"]}
    ).json()
    ids = [h["product_id"] for h in first["hits"] + second["hits"]]
    assert ids == [h["product_id"] for h in whole]
    last = client.post("/v1/search", json={"text": "green", "k": 10, "offset": N - 5}).json()
    assert len(last["hits"]) == 5 and last["next_offset"] is None


def test_more_like_this_and_diversity(client: TestClient, searcher: Searcher) -> None:
    body = client.post("/v1/search", json={"like": "1000", "k": 10}).json()
    ids = [h["product_id"] for h in body["hits"]]
    assert "1000" not in ids
    assert ids == [h.product_id for h in searcher.search(like="1000", k=10)]
    assert body["hits"][0]["payload"]["baseColour"] == "Red"
    in_red = client.post("/v1/search", json={"like": "1001", "text": "red", "k": 5}).json()
    assert [h["product_id"] for h in in_red["hits"]] == [
        h.product_id for h in searcher.search("red", like="1001", k=5)
    ]
    diverse = client.post("/v1/search", json={"text": "red", "k": 10, "diversity": 0.9}).json()
    expected = searcher.search("red", k=10, diversity=0.9)
    assert [h["product_id"] for h in diverse["hits"]] == [h.product_id for h in expected]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF"])
def test_image_search_by_base64_finds_the_colour(client: TestClient, fmt: str) -> None:
    data = _image(COLOURS["Green"], fmt)
    body = client.post("/v1/search", json={"image": _b64(data), "k": 5}).json()
    assert [h["payload"]["baseColour"] for h in body["hits"]] == ["Green"] * 5
    as_url = f"data:image/{fmt.lower()};base64,{_b64(data)}"
    same = client.post("/v1/search", json={"image": as_url, "k": 5}).json()
    assert [h["product_id"] for h in same["hits"]] == [h["product_id"] for h in body["hits"]]


def test_animated_gif_is_searched_by_its_first_frame(client: TestClient) -> None:
    frames = [Image.new("RGB", (60, 80), COLOURS[c]) for c in ("Purple", "Yellow")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    body = client.post("/v1/search", json={"image": _b64(buffer.getvalue()), "k": 3}).json()
    assert [h["payload"]["baseColour"] for h in body["hits"]] == ["Purple"] * 3


def test_image_upload_with_form_fields(client: TestClient, searcher: Searcher) -> None:
    data = picture(COLOURS["Blue"], 7, "JPEG")
    response = client.post(
        "/v1/search/image",
        files={"image": ("q.jpg", data, "image/jpeg")},
        data={
            "filter": ["gender=Women", "year>=2012"],
            "k": "4",
            "w_image": "0.9",
            "fusion": "weighted",
        },
    )
    assert response.status_code == 200, response.text
    hits = response.json()["hits"]
    expected = searcher.search(
        image=data,
        filters=["gender=Women", "year>=2012"],
        k=4,
        fusion=FusionConfig.from_weights("weighted", w_image=0.9),
    )
    assert [h["product_id"] for h in hits] == [h.product_id for h in expected]
    assert all(h["payload"]["gender"] == "Women" for h in hits)
    with_text = client.post(
        "/v1/search/image", files={"image": ("q.jpg", data, "image/jpeg")}, data={"text": "bags"}
    )
    assert with_text.status_code == 200


# -- bad searches: JSON 4xx that name the problem ------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"text": "x", "filters": ["colour=Red"]}, 400, ["colour", "not indexed"]),
        ({"text": "x", "filters": {"colour": "Red"}}, 400, ["colour"]),
        ({"text": "x", "filters": ["gender"]}, 400, ["gender", "FIELD=VALUE"]),
        ({"text": "x", "filters": ["year>=soon"]}, 400, ["soon", "not a number"]),
        ({"text": "x", "filters": {"year": "soon"}}, 400, ["year", "whole number"]),
        ({"text": "x", "filters": {"year": {}}}, 400, ["year"]),
        ({"text": "x", "filters": {"gender": []}}, 400, ["gender", "empty"]),
        ({"text": "x", "filters": {"year": {"gte": "x"}}}, 422, ["filters"]),
        ({"text": "x", "filters": {"year": {"above": 3}}}, 422, ["filters"]),
        ({"text": "x", "filters": 7}, 422, ["filters"]),
        ({"text": "x", "w_text": -1}, 400, ["w_text"]),
        ({"text": "x", "w_text": 0, "w_image": 0}, 400, ["w_text", "w_image"]),
        ({"text": "x", "w_text": "heavy"}, 422, ["w_text"]),
        ({"text": "x", "fusion": "sum"}, 422, ["fusion"]),
        ({"text": "x", "k": 0}, 422, ["k"]),
        ({"text": "x", "k": 101}, 400, ["k", "100"]),
        ({"text": "x", "k": 50, "offset": 990}, 400, ["offset + k", "1000"]),
        ({"text": "x", "offset": -1}, 422, ["offset"]),
        ({"text": "x", "diversity": 2}, 422, ["diversity"]),
        ({"text": "x", "colour": "Red"}, 422, ["colour"]),
        ({"text": "x" * 1001}, 422, ["text"]),
        ({}, 400, ["text", "image"]),
        ({"text": "   "}, 400, ["text", "image"]),
        ({"like": "no-such-product"}, 404, ["no-such-product"]),
        ({"like": "1000", "image": "aGVsbG8="}, 400, []),
        ({"image": "not base64!"}, 400, ["base64"]),
        ({"image": "/etc/passwd"}, 400, []),
        ({"image": "/etc/passwd/"}, 400, ["image"]),
        ({"image": _b64(b"GIF89a but not really")}, 400, ["image"]),
        ({"image": "data:image/png,abc"}, 400, ["base64"]),
        ({"image": ""}, 400, ["empty"]),
    ],
)
def test_bad_search_is_a_clear_4xx(
    client: TestClient, body: dict, status: int, words: list[str]
) -> None:
    _error(client.post("/v1/search", json=body), status, *words)


@pytest.mark.parametrize("fmt", ["BMP", "TIFF"])
def test_image_formats_other_than_the_four_are_refused(client: TestClient, fmt: str) -> None:
    data = _image((1, 2, 3), fmt)
    _error(client.post("/v1/search", json={"image": _b64(data)}), 400, fmt, "not accepted")
    upload = client.post("/v1/search/image", files={"image": (f"q.{fmt}", data, "image/png")})
    _error(upload, 400, fmt)


def test_truncated_image_is_a_400(client: TestClient) -> None:
    data = _image((200, 10, 10), "PNG", (300, 300))
    _error(client.post("/v1/search", json={"image": _b64(data[: len(data) // 2])}), 400, "image")


def test_bad_json_and_wrong_methods(client: TestClient) -> None:
    _error(
        client.post("/v1/search", content=b"{oops", headers={"Content-Type": "application/json"}),
        422,
        "not valid JSON",
    )
    _error(client.post("/v1/search", json=["text"]), 422)
    _error(client.get("/v1/search"), 405)
    _error(client.get("/v2/search"), 404, "/v2/search")


def test_bad_uploads(client: TestClient) -> None:
    _error(client.post("/v1/search/image", data={"text": "red"}), 422, "image")
    _error(
        client.post("/v1/search/image", files={"image": ("a.txt", b"hello", "text/plain")}),
        400,
        "image",
    )
    ok = ("q.png", _image((0, 0, 0)), "image/png")
    _error(client.post("/v1/search/image", files={"image": ok}, data={"k": "lots"}), 422, "k")
    _error(
        client.post("/v1/search/image", files={"image": ok}, data={"filter": "nope=1"}), 400, "nope"
    )
    _error(
        client.post("/v1/search/image", files={"image": ok}, data={"w_image": "2"}), 400, "w_image"
    )


# -- limits -----------------------------------------------------------------------------------


def test_image_and_body_caps(searcher: Searcher) -> None:
    small = TestClient(
        create_app(
            searcher,
            ServeOptions(max_body_bytes=20_000, max_image_bytes=5_000, max_image_pixels=100 * 100),
        )
    )
    big_pixels = _image((9, 9, 9), "PNG", (200, 200))  # a few hundred bytes, 40,000 pixels
    assert len(big_pixels) < 5_000
    _error(small.post("/v1/search", json={"image": _b64(big_pixels)}), 400, "200x200", "10000")
    _error(
        small.post("/v1/search/image", files={"image": ("b.png", big_pixels, "image/png")}),
        400,
        "pixels",
    )
    noise = np.random.default_rng(0).integers(0, 256, 60 * 60 * 3, dtype=np.uint8)
    noisy = Image.frombytes("RGB", (60, 60), noise.tobytes())
    buffer = io.BytesIO()
    noisy.save(buffer, format="PNG")
    assert 5_000 < len(buffer.getvalue()) < 15_000
    _error(small.post("/v1/search", json={"image": _b64(buffer.getvalue())}), 400, "5000")
    _error(
        small.post("/v1/search/image", files={"image": ("n.png", buffer.getvalue(), "image/png")}),
        400,
        "5000",
    )
    huge = "A" * 30_000
    _error(small.post("/v1/search", json={"text": huge}), 413, "20000")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"text": "'
        for _ in range(30):
            yield b"x" * 1000
        yield b'"}'

    _error(
        small.post("/v1/search", content=chunks(), headers={"Content-Type": "application/json"}),
        413,
        "20000",
    )


def test_decompression_bomb_is_refused_before_decoding(client: TestClient) -> None:
    # A PNG that declares 20000x20000 pixels (400 M, over the default 25 M cap) in a tiny file.
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, format="PNG")
    assert len(buffer.getvalue()) < 200_000
    _error(client.post("/v1/search", json={"image": _b64(buffer.getvalue())}), 400, "pixels")


# -- products, facets, info ----------------------------------------------------------------------


def test_product_and_its_image(client: TestClient) -> None:
    body = client.get("/v1/products/1003").json()
    assert body["product_id"] == "1003"
    assert body["name"] == body["payload"]["productDisplayName"]
    assert body["image"] == "/v1/products/1003/image"
    image = client.get("/v1/products/1003/image")
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/jpeg"
    assert "max-age" in image.headers["cache-control"]
    assert Image.open(io.BytesIO(image.content)).size == (60, 80)
    again = client.get("/v1/products/1003/image", headers={"If-None-Match": image.headers["etag"]})
    assert again.status_code == 304
    _error(client.get("/v1/products/424242"), 404, "424242")
    _error(client.get("/v1/products/424242/image"), 404, "424242")
    _error(client.get("/v1/products/..%2F..%2Fetc%2Fpasswd"), 404)


def test_image_url_redirects_and_missing_thumbnail_is_404(tmp_path: Path) -> None:
    catalog = products(4)
    catalog[0].metadata["image_url"] = "https://img.example/1000.jpg"
    store = build_store(4, tmp_path / "s", backend="memory", catalog=catalog, thumbnails=False)
    try:
        client = TestClient(create_app(Searcher(store, FakeEncoder())))
        redirect = client.get("/v1/products/1000/image", follow_redirects=False)
        assert redirect.status_code == 302
        assert redirect.headers["location"] == "https://img.example/1000.jpg"
        _error(client.get("/v1/products/1001/image"), 404, "1001", "thumbnails")
    finally:
        store.close()


def test_facets(client: TestClient, searcher: Searcher) -> None:
    body = client.get("/v1/facets", params={"filter": ["gender=Men"]}).json()
    assert body["total"] == searcher.count(["gender=Men"]) == N // 2
    assert set(body["facets"]) == {"articleType", "baseColour", "gender", "year"}
    assert body["facets"]["gender"] == [{"value": "Men", "count": N // 2}]
    expected = searcher.facets(["baseColour"], ["gender=Men"], 3)
    one = client.get(
        "/v1/facets", params={"field": "baseColour", "filter": "gender=Men", "limit": 3}
    ).json()
    assert one["facets"] == {"baseColour": [c.to_dict() for c in expected["baseColour"]]}
    _error(client.get("/v1/facets", params={"field": "colour"}), 400, "colour")
    _error(client.get("/v1/facets", params={"field": "productDisplayName"}), 400, "text")
    _error(client.get("/v1/facets", params={"filter": "year>x"}), 400, "not a number")
    _error(client.get("/v1/facets", params={"limit": 0}), 422, "limit")


def test_info_healthz_page_and_docs(client: TestClient, store: VectorStore) -> None:
    info = client.get("/v1/info").json()
    assert info["api_version"] == "v1"
    assert info["products"] == N
    assert info["encoder"] == {"name": "fake", "dim": 32}
    assert info["backend"] == type(store).__name__
    assert info["facet_fields"] == ["articleType", "baseColour", "gender", "year"]
    assert info["indexed_fields"]["year"] == "integer"
    assert info["auth"] is False
    assert info["limits"]["max_k"] == 100
    assert client.get("/healthz").json() == {"status": "ok"}
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert "fetch(" in client.get("/static/app.js").text
    assert client.get("/static/app.css").status_code == 200
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/search", "/v1/search/image", "/v1/facets", "/v1/info", "/healthz"} <= set(paths)
    assert "/v1/products/{product_id}/image" in paths
    _error(client.get("/static/../../etc/passwd"), 404)


# -- the key and CORS ---------------------------------------------------------------------------


def test_api_key_guards_every_endpoint_but_healthz(searcher: Searcher) -> None:
    client = TestClient(create_app(searcher, ServeOptions(api_key="s3cret-ké")))
    guarded = [
        ("post", "/v1/search", {"json": {"text": "red"}}),
        (
            "post",
            "/v1/search/image",
            {"files": {"image": ("q.png", _image((1, 1, 1)), "image/png")}},
        ),
        ("get", "/v1/products/1000", {}),
        ("get", "/v1/products/1000/image", {}),
        ("get", "/v1/facets", {}),
        ("get", "/v1/info", {}),
    ]
    for method, path, kwargs in guarded:
        _error(getattr(client, method)(path, **kwargs), 401, "X-API-Key")
        wrong = getattr(client, method)(path, headers={"X-API-Key": "s3cret"}, **kwargs)
        _error(wrong, 401, "X-API-Key")
        right = getattr(client, method)(path, headers={"X-API-Key": "s3cret-ké".encode()}, **kwargs)
        assert right.status_code == 200, (path, right.text)
    assert client.get("/v1/info", headers={"X-API-Key": "s3cret-ké".encode()}).json()["auth"]
    assert client.get("/healthz").status_code == 200
    assert client.get("/").status_code == 200  # the page holds no data; it asks for the key


def test_cors_is_off_unless_an_origin_is_allowed(client: TestClient, searcher: Searcher) -> None:
    origin = {"Origin": "https://shop.example"}
    assert "access-control-allow-origin" not in client.get("/v1/info", headers=origin).headers
    allowed = TestClient(create_app(searcher, ServeOptions(cors_origins=("https://shop.example",))))
    response = allowed.get("/v1/info", headers=origin)
    assert response.headers["access-control-allow-origin"] == "https://shop.example"
    other = allowed.get("/v1/info", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    preflight = allowed.options(
        "/v1/search",
        headers={
            **origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-api-key",
        },
    )
    assert preflight.status_code == 200


# -- concurrency ---------------------------------------------------------------------------------

QUERIES: list[dict[str, Any]] = [
    {"text": "red shoes", "k": 8},
    {"text": "blue", "filters": ["gender=Women"], "k": 8},
    {"text": "bags", "fusion": "rrf", "k": 8},
    {"like": "1010", "k": 8},
    {"image": _b64(picture(COLOURS["Yellow"], 1, "PNG")), "k": 8},
    {"text": "green watches", "w_image": 0.8, "offset": 4, "k": 8},
]


def _ask(url: str, query: dict[str, Any]) -> list[tuple[str, float]]:
    request = urllib.request.Request(
        url + "/v1/search",
        data=json.dumps(query).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        hits = json.load(response)["hits"]
    return [(h["product_id"], round(h["score"], 5)) for h in hits]


def test_concurrent_requests_give_the_serial_results(searcher: Searcher) -> None:
    with running_server(create_app(searcher)) as url:
        serial = [_ask(url, q) for q in QUERIES]
        batch = QUERIES * 6
        with ThreadPoolExecutor(max_workers=12) as pool:
            parallel = list(pool.map(lambda q: _ask(url, q), batch))
    assert parallel == serial * 6
    assert all(serial)


@pytest.mark.parametrize("cache_size", [0, 64])
def test_coalesced_encodes_give_the_plain_encoders_results(
    store: VectorStore, searcher: Searcher, cache_size: int
) -> None:
    """``clipy serve``'s searcher (texts encoded in coalesced batches, with or without the
    query cache) answers concurrent requests with the results of a plain searcher."""
    batching = BatchingEncoder(FakeEncoder(), cache_size=cache_size)
    texts = [f"{colour} {item}" for colour in COLOURS for item in ("shoes", "bags", "watch")]
    queries = [*QUERIES, *({"text": t, "k": 8} for t in texts)]
    with running_server(create_app(searcher)) as url:
        serial = [_ask(url, q) for q in queries]
    app = create_app(Searcher(store, batching))
    with running_server(app) as url, ThreadPoolExecutor(max_workers=12) as pool:
        parallel = list(pool.map(lambda q: _ask(url, q), queries * 3))
    assert parallel == serial * 3
    assert batching.stats.calls >= 3 * len(texts)
    assert (batching.stats.cache_hits > 0) == (cache_size > 0)


def test_the_readme_curl_example_is_a_valid_request(client: TestClient) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    (body,) = re.findall(r"curl -s localhost:8000/v1/search .*?-d '(\{.*?\})'", readme, flags=re.S)
    response = client.post("/v1/search", json=json.loads(body))
    assert response.status_code == 200, response.text
    assert all(h["payload"]["gender"] == "Men" for h in response.json()["hits"])
