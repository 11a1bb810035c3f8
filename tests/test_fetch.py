"""ImageFetcher against a scripted HTTP server on loopback: every outcome, the cache, the bounds."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from http_fixture import Reply, ScriptedServer, serve
from PIL import Image

from clipy_qdrant.errors import ConfigError
from ingest.fetch import ImageFetcher, ImageURLCatalog, check_url, sniff_image
from ingest.records import Product


def image_bytes(fmt: str = "JPEG", colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 32), colour).save(buffer, format=fmt)
    return buffer.getvalue()


JPEG = image_bytes("JPEG")
PNG = image_bytes("PNG", (10, 120, 240))


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    yield from serve()


def fetcher(tmp_path: Path, **kwargs: object) -> ImageFetcher:
    options: dict[str, object] = {
        "workers": 4,
        "timeout_s": 1.0,
        "retries": 2,
        "backoff_s": 0.01,
        "progress": False,
    }
    options.update(kwargs)
    return ImageFetcher(tmp_path / "image-cache", **options)  # type: ignore[arg-type]


def test_good_images_are_fetched_decoded_and_cached(tmp_path: Path, server: ScriptedServer):
    jpeg = server.route("/a.jpg", Reply(body=JPEG))
    png = server.route("/b.png", Reply(body=PNG, content_type="image/png"))
    results = fetcher(tmp_path).fetch_many([jpeg, png])
    assert list(results) == [jpeg, png]
    for url, data in ((jpeg, JPEG), (png, PNG)):
        result = results[url]
        assert result.ok and result.error is None and not result.from_cache
        assert result.data == data
        assert result.path is not None and result.path.read_bytes() == data
        assert Image.open(result.path).size == (24, 32)
    assert results[png].path != results[jpeg].path


def test_second_fetch_makes_zero_requests(tmp_path: Path, server: ScriptedServer):
    urls = [server.route(f"/{i}.jpg", Reply(body=JPEG)) for i in range(6)]
    first = fetcher(tmp_path).fetch_many(urls)
    assert all(r.ok for r in first.values())
    assert server.total_hits == 6
    # A new fetcher over the same folder (a resumed run) finds everything in the cache.
    second = fetcher(tmp_path).fetch_many(urls)
    assert server.total_hits == 6
    assert all(r.from_cache and r.data == JPEG for r in second.values())
    assert fetcher(tmp_path).fetch(urls[0]).from_cache
    assert server.total_hits == 6


def test_duplicate_urls_in_a_batch_are_requested_once(tmp_path: Path, server: ScriptedServer):
    url = server.route("/same.jpg", Reply(body=JPEG, delay_s=0.1))
    results = fetcher(tmp_path).fetch_many([url, url, url])
    assert list(results) == [url] and results[url].ok
    assert server.hits["/same.jpg"] == 1


def test_404_fails_at_once_without_retry_and_is_not_cached(tmp_path: Path, server: ScriptedServer):
    url = server.url("/missing.jpg")
    result = fetcher(tmp_path, retries=3).fetch(url)
    assert result.error == "404 Not Found" and result.data is None and result.path is None
    assert server.hits["/missing.jpg"] == 1
    # The failure is not cached: the next run asks again (and now it is there).
    server.route("/missing.jpg", Reply(body=JPEG))
    again = fetcher(tmp_path).fetch(url)
    assert again.ok and not again.from_cache
    assert server.hits["/missing.jpg"] == 2


def test_500_then_200_is_retried(tmp_path: Path, server: ScriptedServer):
    url = server.route(
        "/flaky.jpg",
        Reply(500, b"oops", "text/plain"),
        Reply(503, b"busy", "text/plain"),
        Reply(body=JPEG),
    )
    result = fetcher(tmp_path, retries=3).fetch(url)
    assert result.ok and result.data == JPEG
    assert server.hits["/flaky.jpg"] == 3


def test_retries_are_bounded_and_backoff_grows(tmp_path: Path, server: ScriptedServer):
    url = server.route("/down.jpg", Reply(503, b"down", "text/plain"))
    started = time.perf_counter()
    result = fetcher(tmp_path, retries=2, backoff_s=0.1).fetch(url)
    elapsed = time.perf_counter() - started
    assert result.error == "503 Service Unavailable"
    assert server.hits["/down.jpg"] == 3  # one try + two retries
    assert elapsed >= 0.1 + 0.2  # 0.1 s, then 0.2 s


def test_429_honours_a_short_retry_after(tmp_path: Path, server: ScriptedServer):
    url = server.route(
        "/limited.jpg",
        Reply(429, b"slow down", "text/plain", headers={"Retry-After": "0"}),
        Reply(body=JPEG),
    )
    result = fetcher(tmp_path, backoff_s=5.0).fetch(url)  # Retry-After 0 replaces the 5 s
    assert result.ok and server.hits["/limited.jpg"] == 2


def test_slow_response_times_out_and_is_retried(tmp_path: Path, server: ScriptedServer):
    url = server.route("/slow.jpg", Reply(body=JPEG, delay_s=1.5))
    started = time.perf_counter()
    result = fetcher(tmp_path, timeout_s=0.3, retries=1).fetch(url)
    assert result.error == "timed out after 0.3 s"
    assert server.hits["/slow.jpg"] == 2
    assert time.perf_counter() - started < 1.5


def test_a_trickling_body_is_bounded_by_the_whole_request_timeout(
    tmp_path: Path, server: ScriptedServer
):
    # Every piece arrives well within the timeout, but the whole body would take 2 s.
    url = server.route(
        "/drip.jpg", Reply(body=JPEG, piece=max(1, len(JPEG) // 20), piece_delay_s=0.1)
    )
    started = time.perf_counter()
    result = fetcher(tmp_path, timeout_s=0.4, retries=0).fetch(url)
    assert result.error == "timed out after 0.4 s"
    assert time.perf_counter() - started < 1.5


def test_then_a_timeout_recovers(tmp_path: Path, server: ScriptedServer):
    url = server.route("/late.jpg", Reply(body=JPEG, delay_s=1.0), Reply(body=JPEG))
    result = fetcher(tmp_path, timeout_s=0.3, retries=2).fetch(url)
    assert result.ok and server.hits["/late.jpg"] == 2


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (
            Reply(body=b"<html>login</html>", content_type="text/html; charset=utf-8"),
            "not an image (text/html)",
        ),
        (
            Reply(body=b'{"a": 1}', content_type="application/json"),
            "not an image (application/json)",
        ),
        (
            Reply(body=b"<html>oops</html>", content_type="image/jpeg"),
            "not an image (image/jpeg, but the content is not)",
        ),
        (
            Reply(body=b"plain text", content_type=None),
            "not an image (no content type, but the content is not)",
        ),
    ],
)
def test_wrong_content_is_refused(
    tmp_path: Path, server: ScriptedServer, reply: Reply, reason: str
):
    url = server.route("/thing", reply)
    result = fetcher(tmp_path).fetch(url)
    assert result.error == reason
    assert server.hits["/thing"] == 1
    assert not any((tmp_path / "image-cache").rglob("*"))


def test_untyped_image_is_accepted_by_its_signature(tmp_path: Path, server: ScriptedServer):
    url = server.route("/blob", Reply(body=PNG, content_type="application/octet-stream"))
    assert fetcher(tmp_path).fetch(url).data == PNG


def test_huge_body_is_cut_off_by_declared_length(tmp_path: Path, server: ScriptedServer):
    url = server.route("/huge.jpg", Reply(body=JPEG + b"\0" * 50_000))
    result = fetcher(tmp_path, max_bytes=20_000).fetch(url)
    assert result.error == "too large (> 20,000 bytes)"
    assert server.hits["/huge.jpg"] == 1


def test_huge_streamed_body_is_abandoned_past_the_cap(tmp_path: Path, server: ScriptedServer):
    body = JPEG + b"\0" * 3_000_000
    url = server.route("/stream.jpg", Reply(body=body, content_length=False, piece=64 * 1024))
    result = fetcher(tmp_path, max_bytes=1_000_000).fetch(url)
    assert result.error == "too large (> 1 MB)"


def test_declared_length_past_the_default_cap_is_refused_unread(
    tmp_path: Path, server: ScriptedServer
):
    url = server.route(
        "/big.jpg",
        Reply(body=JPEG, content_length=False, headers={"Content-Length": "25000000"}),
    )
    assert fetcher(tmp_path, timeout_s=2).fetch(url).error == "too large (> 20 MB)"


def test_redirect_chain_within_bounds_is_followed(tmp_path: Path, server: ScriptedServer):
    for i in range(3):
        server.route(f"/r{i}", Reply(302, b"", None, headers={"Location": f"/r{i + 1}"}))
    server.route("/r3", Reply(body=JPEG))
    result = fetcher(tmp_path, max_redirects=5).fetch(server.url("/r0"))
    assert result.ok and result.data == JPEG
    # The cache is keyed by the URL asked for, not the final one.
    assert result.path == fetcher(tmp_path).cache_path(server.url("/r0"))


def test_redirect_chain_past_the_bound_fails(tmp_path: Path, server: ScriptedServer):
    for i in range(4):
        server.route(
            f"/c{i}", Reply(301, b"", None, headers={"Location": server.url(f"/c{i + 1}")})
        )
    server.route("/c4", Reply(body=JPEG))
    result = fetcher(tmp_path, max_redirects=2).fetch(server.url("/c0"))
    assert result.error == "too many redirects (> 2)"
    assert server.hits["/c3"] == 0


def test_redirect_loop_is_detected(tmp_path: Path, server: ScriptedServer):
    server.route("/x", Reply(302, b"", None, headers={"Location": "/y"}))
    server.route("/y", Reply(307, b"", None, headers={"Location": "/x"}))
    result = fetcher(tmp_path, max_redirects=10).fetch(server.url("/x"))
    assert result.error == "redirect loop"
    assert server.hits["/x"] == 1 and server.hits["/y"] == 1


def test_redirect_to_a_local_file_is_refused(tmp_path: Path, server: ScriptedServer):
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(JPEG)
    url = server.route("/evil", Reply(302, b"", None, headers={"Location": secret.as_uri()}))
    result = fetcher(tmp_path).fetch(url)
    assert (
        result.error == "redirect to a bad URL: unsupported URL scheme 'file' (only http and https)"
    )


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///etc/passwd", "unsupported URL scheme 'file' (only http and https)"),
        ("ftp://example.com/a.jpg", "unsupported URL scheme 'ftp' (only http and https)"),
        ("images/a.jpg", "unsupported URL scheme 'none' (only http and https)"),
        ("", "empty URL"),
        ("http:///a.jpg", "URL has no host"),
    ],
)
def test_only_http_urls_are_fetched(tmp_path: Path, url: str, reason: str):
    assert check_url(url) == reason
    assert fetcher(tmp_path).fetch(url).error == reason


def test_connection_refused_is_retried_then_reported(tmp_path: Path):
    probe = ScriptedServer()  # bound, never started, then closed: its port refuses connections
    url = probe.url("/a.jpg")
    probe.stop()
    result = fetcher(tmp_path, retries=1).fetch(url)
    assert result.error is not None and result.error.startswith("connection failed")


def test_a_batch_reports_every_failure_and_keeps_the_good(tmp_path: Path, server: ScriptedServer):
    good = [server.route(f"/ok{i}.jpg", Reply(body=JPEG)) for i in range(5)]
    bad = {
        server.url("/gone.jpg"): "404 Not Found",
        server.route(
            "/page", Reply(body=b"<html/>", content_type="text/html")
        ): "not an image (text/html)",
        server.route("/slow.jpg", Reply(body=JPEG, delay_s=1.0)): "timed out after 0.3 s",
        "file:///etc/hosts": "unsupported URL scheme 'file' (only http and https)",
    }
    started = time.perf_counter()
    results = fetcher(tmp_path, timeout_s=0.3, retries=0).fetch_many([*good, *bad])
    assert time.perf_counter() - started < 3
    assert all(results[u].ok for u in good)
    assert {u: results[u].error for u in bad} == bad


def test_progress_bar_goes_to_stderr(tmp_path: Path, server: ScriptedServer, capsys):
    url = server.route("/a.jpg", Reply(body=JPEG))
    fetcher(tmp_path).fetch_many([url], progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "fetch" in captured.err and "1/1" in captured.err


def test_damaged_cache_file_is_fetched_again(tmp_path: Path, server: ScriptedServer):
    url = server.route("/a.jpg", Reply(body=JPEG))
    f = fetcher(tmp_path)
    path = f.cache_path(url)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"truncated")
    assert f.fetch(url).data == JPEG and server.hits["/a.jpg"] == 1
    assert path.read_bytes() == JPEG
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".part-")]


def test_keep_data_false_leaves_the_bytes_in_the_file(tmp_path: Path, server: ScriptedServer):
    url = server.route("/a.jpg", Reply(body=JPEG))
    result = fetcher(tmp_path, keep_data=False).fetch(url)
    assert result.ok and result.data is None and result.path is not None
    assert result.path.read_bytes() == JPEG
    cached = fetcher(tmp_path, keep_data=False).fetch_many([url])[url]
    assert cached.from_cache and cached.data is None and cached.path == result.path
    assert fetcher(tmp_path).fetch(url).data == JPEG
    assert server.hits["/a.jpg"] == 1


def test_bad_settings_are_refused(tmp_path: Path):
    with pytest.raises(ConfigError, match="workers"):
        ImageFetcher(tmp_path, workers=0)
    with pytest.raises(ConfigError, match="timeout"):
        ImageFetcher(tmp_path, timeout_s=0)


def test_sniff_image_knows_the_signatures():
    assert sniff_image(JPEG[:16]) == "jpeg"
    assert sniff_image(PNG[:16]) == "png"
    assert sniff_image(image_bytes("GIF")[:16]) == "gif"
    assert sniff_image(image_bytes("WEBP")[:16]) == "webp"
    assert sniff_image(b"<!doctype html>") is None


def test_image_url_catalog_resolves_products_in_order(tmp_path: Path, server: ScriptedServer):
    class Listing(list):
        source = "export.csv"
        total = 4

    listing = Listing(
        [
            Product("a", "a", image_url=server.route("/a.jpg", Reply(body=JPEG)), line=2),
            Product("b", "b", image_url=server.url("/nope.jpg"), line=3),
            Product("c", "c", image_bytes=PNG),
            Product(
                "d",
                "d",
                image_url=server.route("/d.png", Reply(body=PNG, content_type="image/png")),
            ),
        ]
    )
    catalog = ImageURLCatalog(listing, fetcher(tmp_path), chunk_size=3)
    assert catalog.source == "export.csv" and catalog.total == 4
    products = list(catalog)
    assert [p.product_id for p in products] == ["a", "b", "c", "d"]
    assert products[0].load_image().size == (24, 32) and products[0].error is None
    assert products[1].error == f"image {server.url('/nope.jpg')}: 404 Not Found"
    assert products[2].image_path is None and products[2].image_bytes == PNG
    assert products[3].image_path is not None and products[3].image_path.read_bytes() == PNG
    # The wrapped products are left as they were: a second pass resolves them again (cached).
    assert listing[0].image_path is None and listing[1].error is None
    hits = server.total_hits
    assert [p.error is None for p in catalog] == [True, False, True, True]
    assert server.total_hits == hits + 1  # only the 404, which is not cached


def test_unfetched_image_url_refuses_to_load():
    with pytest.raises(FileNotFoundError, match="not fetched"):
        Product("a", "a", image_url="http://127.0.0.1:9/a.jpg").load_image()
