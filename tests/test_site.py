"""The built HTML book as a reader gets it, tested in a real (headless) Chromium.

Needs the site (``python3 dev.py book``) and Debian's ``chromium``; skipped without them,
unless ``KEXUE_REQUIRE_SITE=1`` (CI sets it), which turns a skip into a failure. Every
request that is not to the local test server is blocked, so the test also proves that the
book reads offline. Screenshots go to ``_build/screenshots/`` (artefacts, not committed).
"""
from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PAGE_BUDGET = 3_000_000   # bytes: a page's HTML plus the images it loads
SITE_BUDGET = 80_000_000  # bytes: the whole built site
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _missing() -> str | None:
    if not (SITE / "index.html").exists():
        return "the book is not built (python3 dev.py book)"
    if not Path(CHROMIUM).exists():
        return "Debian's chromium is not installed (apt-get install chromium)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed"
    return None


if _missing():
    if os.environ.get("KEXUE_REQUIRE_SITE") == "1":
        raise RuntimeError(f"KEXUE_REQUIRE_SITE=1 but {_missing()}")
    pytest.skip(_missing(), allow_module_level=True)

from playwright.sync_api import sync_playwright  # noqa: E402

CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
REPO_URL = CONFIG["repository"]["url"].rstrip("/")
BRANCH = CONFIG["repository"]["branch"]
REPO_SLUG = urlparse(REPO_URL).path.strip("/")
PAGES = sorted(p.relative_to(SITE).as_posix() for p in SITE.rglob("*.html")
               if not p.relative_to(SITE).as_posix().startswith(("_static/", "_sources/", "_images/"))
               and p.relative_to(SITE).as_posix() != "index.html")  # a redirect, tested on its own
FRONT = "book/intro.html"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output clean
        pass


@pytest.fixture(scope="module")
def server():
    handler = functools.partial(_QuietHandler, directory=str(SITE))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Visit:
    """Open one page with every non-local request blocked; record errors and blocked URLs."""

    def __init__(self, browser, base: str, page: str):
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.blocked: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.context.route("**/*", self._route)
        self.page.goto(urljoin(base, page), wait_until="load")
        self.page.wait_for_function(
            "() => !window.MathJax || (window.MathJax.startup && window.MathJax.startup.promise)")
        self.page.evaluate("() => window.MathJax && window.MathJax.startup ? window.MathJax.startup.promise : null")

    def _route(self, route):
        host = urlparse(route.request.url).hostname
        if route.request.url.startswith("data:") or host == "127.0.0.1":
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort()

    def close(self):
        self.context.close()


def _is_notebook_page(page: str) -> bool:
    src = ROOT / page.replace(".html", ".md")
    return src.exists() and "kernelspec:" in src.read_text(encoding="utf-8")[:3000]


def test_index_redirects_to_front_page():
    assert f'url={FRONT}' in (SITE / "index.html").read_text() and FRONT in PAGES


def test_site_size_within_budget():
    total = sum(p.stat().st_size for p in SITE.rglob("*") if p.is_file())
    print(f"site size {total / 1e6:.1f} MB over {len(PAGES)} pages")
    assert total <= SITE_BUDGET, f"site is {total / 1e6:.1f} MB > {SITE_BUDGET / 1e6:.0f} MB"


@pytest.mark.parametrize("page", PAGES)
def test_page(browser, server, page):
    v = Visit(browser, server, page)
    try:
        p = v.page
        assert not v.errors, f"console errors: {v.errors}"
        # Math is typeset: MathJax containers exist where the page has math, no raw TeX is left.
        text = p.evaluate("""() => { const c = document.querySelector('main') || document.body;
            const k = c.cloneNode(true); k.querySelectorAll('pre, code, script, style, mjx-container, .kx-spec')
            .forEach(e => e.remove()); return k.innerText; }""")
        assert "$$" not in text and "\\begin{" not in text, "raw TeX left on the page"
        assert p.locator("mjx-container").count() >= (1 if "math notranslate" in p.content() else 0)
        # Every image is present and non-empty.
        broken = p.evaluate("""() => [...document.images].filter(i => !i.complete || i.naturalWidth === 0)
            .map(i => i.src.slice(0, 80))""")
        assert not broken, f"broken images: {broken}"
        # Page weight: HTML plus the images it loads.
        weight = (SITE / page).stat().st_size + sum(
            (SITE / unquote(urlparse(src).path).lstrip("/")).stat().st_size
            for src in p.evaluate("() => [...document.images].map(i => i.src)") if src.startswith(server))
        assert weight <= PAGE_BUDGET, f"{page} weighs {weight / 1e6:.2f} MB"
        # Internal links resolve to files of the site.
        for href in p.evaluate("() => [...document.querySelectorAll('a[href]')].map(a => a.href)"):
            if href.startswith(server):
                target = SITE / unquote(urlparse(href).path).lstrip("/")
                assert target.exists() or (target / "index.html").exists(), f"broken link {href}"
        # Colab link: the page's own .ipynb at its path in the repository, and that file exists.
        if _is_notebook_page(page):
            want = f"https://colab.research.google.com/github/{REPO_SLUG}/blob/{BRANCH}/{page[:-5]}.ipynb"
            hrefs = p.evaluate("() => [...document.querySelectorAll('a[href*=\"colab.research\"]')].map(a => a.href)")
            assert want in hrefs, f"Colab link {hrefs} != {want}"
            assert (ROOT / (page[:-5] + ".ipynb")).exists()
        _check_sliders(p, page)
        assert not [u for u in v.blocked if not u.startswith(("https://unpkg.com/thebe",))], \
            f"page requested the network: {v.blocked}"
    finally:
        v.close()


def _check_sliders(p, page: str) -> None:
    widgets = p.locator(".kx-widget")
    for w in range(widgets.count()):
        root = widgets.nth(w)
        img = root.locator("img.kx-frame")
        before = img.get_attribute("src")
        ranges = root.locator("input[type=range]")
        changed = False
        for r in range(ranges.count()):
            inp = ranges.nth(r)
            top = int(inp.get_attribute("max"))
            value = int(inp.input_value())
            inp.evaluate("(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }",
                         0 if value != 0 else top)
            changed |= img.get_attribute("src") != before
        assert ranges.count() == 0 or changed, f"{page}: widget {w} does not change its figure"


def test_screenshots(browser, server):
    SHOTS.mkdir(parents=True, exist_ok=True)
    v = Visit(browser, server, FRONT)
    v.page.screenshot(path=str(SHOTS / "front-page.png"), full_page=False)
    v.close()
    pages = [p for p in PAGES if _is_notebook_page(p)]
    assert pages, "no notebook pages in the site"
    target = next((p for p in pages if p.endswith("squareplus.html")), pages[0])
    v = Visit(browser, server, target)
    w = v.page.locator(".kx-widget").first
    assert w.count() == 1, f"{target} has no widget"
    w.scroll_into_view_if_needed()
    w.screenshot(path=str(SHOTS / "slider-default.png"))
    first = w.locator("img.kx-frame").get_attribute("src")
    w.locator("input[type=range]").first.evaluate(
        "el => { el.value = (+el.value === 0 ? el.max : 0); el.dispatchEvent(new Event('input')); }")
    w.screenshot(path=str(SHOTS / "slider-moved.png"))
    assert w.locator("img.kx-frame").get_attribute("src") != first
    v.close()
