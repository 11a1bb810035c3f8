"""The search page end to end (issue #16): uvicorn serving the app over a real store of 240
generated products (fake encoder), driven by headless Chromium through Playwright.

It types a query and sees product pictures, applies a facet filter and sees only matching
products, moves the weight slider and sees the order change, uploads a picture and gets
products of its colour, clicks "more like this", pages forward and reloads the URL to get the
same results. Screenshots go to ``CLIPY_TEST_ARTIFACTS`` (default: a pytest temp folder).

Chromium must be installed (Debian: ``apt-get install chromium``); without it the test fails.
"""

from __future__ import annotations

import base64
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_encoder import FakeEncoder
from serve_store import COLOURS, build_store, picture, running_server

from clipy_qdrant.config import Settings
from clipy_qdrant.search import Searcher
from clipy_qdrant.serve import ServeOptions, create_app

CHROMIUM = "/usr/bin/chromium"
N = 240


def _chromium() -> str:
    found = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if found is None:
        pytest.fail(
            "the browser test needs Chromium: run `apt-get install chromium` (Debian/Ubuntu)",
            pytrace=False,
        )
    return found


@pytest.fixture(scope="module")
def searcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Searcher]:
    store = build_store(N, tmp_path_factory.mktemp("browser") / "store")
    yield Searcher(store, FakeEncoder())
    store.close()


@pytest.fixture(scope="module")
def base_url(searcher: Searcher) -> Iterator[str]:
    with running_server(create_app(searcher)) as url:
        yield url


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Settings().test_artifacts or tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nbrowser test screenshots: {folder}")
    return folder


def _card_ids(page) -> list[str]:
    return page.eval_on_selector_all("#results .card", "els => els.map(e => e.dataset.id)")


def _card_attrs(page) -> list[str]:
    return page.eval_on_selector_all("#results .card .attrs", "els => els.map(e => e.textContent)")


def _wait_for_new_results(page, before: list[str]) -> list[str]:
    """Wait until the result grid differs from ``before`` and holds results; return its ids."""
    page.wait_for_function(
        """before => {
            const ids = [...document.querySelectorAll('#results .card')].map(e => e.dataset.id);
            return !document.body.hasAttribute('aria-busy') && ids.length > 0
                && JSON.stringify(ids) !== JSON.stringify(before);
        }""",
        arg=before,
    )
    return _card_ids(page)


def _settled(page) -> None:
    page.wait_for_function("() => !document.body.hasAttribute('aria-busy')")


def test_search_page_end_to_end(base_url: str, artifacts: Path, tmp_path: Path) -> None:
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    started = time.monotonic()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            page.goto(base_url + "/")
            page.wait_for_function(
                "() => document.getElementById('status').textContent.includes('240 products')"
            )
            assert page.locator("#facet-groups fieldset").count() >= 3  # facets before a query

            # A text query shows product pictures, red ones first (the fake encoder's colours).
            page.fill("#q", "red")
            page.press("#q", "Enter")
            ids = _wait_for_new_results(page, [])
            assert len(ids) == 24
            assert "q=red" in page.url
            assert all("Red" in a for a in _card_attrs(page)[:5])
            page.wait_for_function(
                "() => [...document.querySelectorAll('#results img')].slice(0, 8)"
                ".every(i => i.complete && i.naturalWidth > 0)"
            )
            page.screenshot(path=str(artifacts / "1-text-query.png"), full_page=True)

            # A facet filter: only matching products, and the filter is in the URL.
            page.locator("#facet-groups input[name=gender][value=Women]").check()
            ids = _wait_for_new_results(page, ids)
            attrs = _card_attrs(page)
            assert attrs and all(a.startswith("Women") for a in attrs)
            assert "f=gender%3DWomen" in page.url
            status = page.text_content("#status") or ""
            assert "120 products match" in status
            page.screenshot(path=str(artifacts / "2-facet.png"), full_page=True)

            # The weight slider all the way to the image side re-runs the search: new order.
            page.focus("#weight")
            page.keyboard.press("End")
            ids = _wait_for_new_results(page, ids)
            assert "wi=1" in page.url
            page.screenshot(path=str(artifacts / "3-weights.png"), full_page=True)

            # A picture upload on a fresh page finds products of its colour.
            page.goto(base_url + "/")
            _settled(page)
            upload = tmp_path / "blue.png"
            upload.write_bytes(picture(COLOURS["Blue"], 3, "PNG"))
            page.set_input_files("#file", str(upload))
            ids = _wait_for_new_results(page, [])
            assert all("Blue" in a for a in _card_attrs(page)[:10])
            assert page.locator(".chip").count() == 1
            page.screenshot(path=str(artifacts / "4-image-query.png"), full_page=True)

            # More like this: the product itself is left out, similar (same colour) ones come.
            liked = ids[0]
            page.locator(f'#results .card[data-id="{liked}"] .like').click()
            ids = _wait_for_new_results(page, ids)
            assert liked not in ids
            assert f"like={liked}" in page.url
            assert all("Blue" in a for a in _card_attrs(page)[:5])

            # Page forward, then reload: the same results.
            page.click("#next")
            page_two = _wait_for_new_results(page, ids)
            assert not set(page_two) & set(ids)
            assert "page=2" in page.url
            page.reload()
            reloaded = _wait_for_new_results(page, [])
            assert reloaded == page_two
            page.screenshot(path=str(artifacts / "5-more-like-this-page-2.png"), full_page=True)

            # A text query with "like" kept composes the two ("like this, but blue"); a fresh
            # page shows the plain query. Hovering a card shows its score split.
            page.goto(base_url + "/?q=blue&f=articleType%3DShoes,Bags&n=12")
            _wait_for_new_results(page, [])
            first = page.locator("#results .card").first
            first.hover()
            assert first.locator(".scores").is_visible()
            assert first.locator(".s-text").text_content()
            assert page.locator("#results .card").count() == 12
            page.screenshot(path=str(artifacts / "search-page.png"))

            # A picture dropped on the page searches by it too (on a page without a text: with
            # one the page composes the two, and the lexical channel weighs the word).
            page.goto(base_url + "/?f=articleType%3DShoes,Bags&n=12")
            page.wait_for_selector("#status")
            red = base64.b64encode(picture(COLOURS["Red"], 5, "JPEG")).decode("ascii")
            before = _card_ids(page)
            page.evaluate(
                """b64 => {
                    const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
                    const data = new DataTransfer();
                    data.items.add(new File([bytes], "red.jpg", {type: "image/jpeg"}));
                    document.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true}));
                }""",
                red,
            )
            _wait_for_new_results(page, before)
            assert all("Red" in a for a in _card_attrs(page)[:5])

            # A bad filter in a shared URL shows the server's message, not a blank page.
            page.goto(base_url + "/?q=red&f=colour%3DRed")
            page.wait_for_selector("#message.error:not([hidden])")
            assert "colour" in (page.text_content("#message") or "")

            # A query that matches nothing says so.
            page.goto(base_url + "/?q=red&f=gender%3DNobody")
            page.wait_for_selector("#message:not([hidden])")
            assert "match" in (page.text_content("#message") or "")
            assert errors == []
        finally:
            browser.close()
    print(f"browser test took {time.monotonic() - started:.1f} s")


def test_search_page_asks_for_the_key(searcher: Searcher, artifacts: Path) -> None:
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    with (
        running_server(create_app(searcher, ServeOptions(api_key="page-k3y"))) as url,
        sync_playwright() as pw,
    ):
        browser = pw.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page()
            page.goto(url + "/?q=green")
            page.wait_for_selector("#key-dialog[open]")
            page.fill("#key-input", "page-k3y")
            page.press("#key-input", "Enter")
            ids = _wait_for_new_results(page, [])
            assert ids and all("Green" in a for a in _card_attrs(page)[:5])
            # Pictures come through fetch with the key header (an <img> cannot send it).
            page.wait_for_function(
                "() => [...document.querySelectorAll('#results img')].slice(0, 4)"
                ".every(i => i.src.startsWith('blob:') && i.complete && i.naturalWidth > 0)"
            )
            page.screenshot(path=str(artifacts / "6-with-key.png"))
        finally:
            browser.close()
