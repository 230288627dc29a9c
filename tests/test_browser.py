"""The book as readers see it: every page of the built site opened in headless Chromium.

Each page must load without a JavaScript console error or a failed request (the machine is
offline: anything fetched from a CDN fails here, and would fail for an offline reader), show
every image, render its math with MathJax (no raw ``$...$`` left), and show no executed cell
with an error. The left navigation lists the chapters in the table of contents' order, and
the search page finds a chapter by one of its words. On a chapter, no figure is shrunk below
80 % of its width (so its text stays 9 px or taller), no printout scrolls sideways, the
papers' claims against this run show as a table, and the download menu's ``.ipynb`` is the
executed chapter with plain Markdown. A screenshot of each chapter is saved
in ``test-artifacts/screenshots/`` (or ``$COURSEKIT_ARTIFACTS/screenshots/``).

Chromium and its driver are Debian's ``chromium`` and ``chromium-driver`` packages, which
``make test`` installs when they are missing; no browser is downloaded.
"""
from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import CHAPTERS, ROOT, toc_files

pytestmark = pytest.mark.slow

ARTIFACTS = Path(os.environ.get("COURSEKIT_ARTIFACTS", ROOT / "test-artifacts")) / "screenshots"


def browser_paths() -> tuple[str, str]:
    """Debian's Chromium and ChromeDriver (or ``$CHROMIUM`` and ``$CHROMEDRIVER``)."""
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.fail("the browser tests need Debian's chromium and chromium-driver packages "
                    f"(found chromium={chromium!r}, chromedriver={driver!r}); `make test` installs them "
                    "with apt-get, or set CHROMIUM and CHROMEDRIVER to their paths")
    return chromium, driver


@pytest.fixture(scope="module")
def server(site):
    """The built site over HTTP on localhost, as a reader's browser gets it (search needs HTTP)."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1280,1000",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@dataclass
class PageReport:
    """What a reader's browser saw on one page."""
    console_errors: list[str] = field(default_factory=list)
    broken_images: list[str] = field(default_factory=list)
    images: int = 0
    math_elements: int = 0          # Sphinx's math spans and blocks
    math_rendered: int = 0          # MathJax's output containers
    math_errors: list[str] = field(default_factory=list)
    raw_math: list[str] = field(default_factory=list)
    error_outputs: list[str] = field(default_factory=list)
    nav: list[str] = field(default_factory=list)
    figures: list[dict] = field(default_factory=list)      # an output image: src, natural and shown width
    overflowing: list[str] = field(default_factory=list)   # output blocks wider than the page: first line
    tables: list[list[str]] = field(default_factory=list)  # the header cells of each table in the text
    download: dict = field(default_factory=dict)          # the .ipynb the download menu offers, as fetched


# Runs in the page once it has loaded: waits for MathJax, then reports what is on screen.
INSPECT = """
const done = arguments[arguments.length - 1];
(async () => {
  window.scrollTo(0, document.body.scrollHeight);          // lazy content, if any
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  const images = [...document.images];
  for (let i = 0; i < 100 && images.some(im => !im.complete); i++) { await new Promise(r => setTimeout(r, 100)); }
  const main = document.querySelector('main') || document.body;
  const prose = main.cloneNode(true);
  prose.querySelectorAll('pre, code, script, style, mjx-container, .cell_output, .highlight').forEach(e => e.remove());
  const seen = {
    images: images.length,
    broken_images: images.filter(im => !(im.complete && im.naturalWidth > 0)).map(im => im.getAttribute('src')),
    math_elements: main.querySelectorAll('.math').length,
    math_rendered: main.querySelectorAll('mjx-container').length,
    math_errors: [...main.querySelectorAll('mjx-merror')].map(e => e.getAttribute('data-mjx-error') || e.textContent),
    text: prose.textContent,
    error_outputs: [...main.querySelectorAll('.cell_output .traceback, .cell_output .output.error, .cell_output .stderr')]
                     .map(e => e.textContent.slice(0, 200)),
    nav: [...document.querySelectorAll('nav.bd-docs-nav a.reference.internal')].map(a => a.getAttribute('href')),
    figures: [...main.querySelectorAll('.cell_output img')].map(im => ({src: im.getAttribute('src'),
                natural: im.naturalWidth, shown: im.getBoundingClientRect().width})),
    overflowing: [...main.querySelectorAll('.cell_output pre')].filter(p => p.scrollWidth > p.clientWidth + 1)
                   .map(p => `${p.scrollWidth} px in ${p.clientWidth} px: ` +
                             p.textContent.split('\\n').reduce((a, l) => l.length > a.length ? l : a, '').slice(0, 120)),
    tables: [...main.querySelectorAll('table')].map(t => [...t.querySelectorAll('thead th, tr:first-child th')]
                                                           .map(th => th.textContent.trim())),
    download: {},
  };
  const link = document.querySelector('a[href$=".ipynb"]');
  if (link) {                                               // what a reader's click on "Download .ipynb" gets
    const response = await fetch(link.href);
    seen.download = {href: link.getAttribute('href'), status: response.status,
                     text: response.ok ? await response.text() : ''};
  }
  window.scrollTo(0, 0);                                    // the screenshot shows the top of the page
  done(seen);
})().catch(e => done({error: String(e)}));
"""


# A page that has loaded, and is not a redirect (the site's index.html sends the reader on
# to the first page with a meta refresh, after `get` has returned)
SETTLED = """return document.readyState === 'complete' && document.body !== null
              && !document.querySelector('meta[http-equiv="refresh" i]')"""


def inspect(browser, url: str) -> PageReport:
    """What a reader sees at ``url``: the page the browser ends on, once it has loaded."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    # (a script run while the browser leaves a page fails: try again)
    WebDriverWait(browser, 30, ignored_exceptions=(WebDriverException,)).until(lambda b: b.execute_script(SETTLED))
    browser.set_script_timeout(60)
    seen = browser.execute_async_script(INSPECT)
    assert "error" not in seen, f"{url}: the inspection script failed: {seen.get('error')}"
    logs = browser.get_log("browser")
    raw = re.findall(r"(?<![\w\\])\$[^$\s][^$\n]{0,80}\$|\\\(.{0,80}?\\\)", seen.pop("text"))
    return PageReport(console_errors=[f"{e['level']}: {e['message']}" for e in logs if e["level"] == "SEVERE"],
                      raw_math=raw, **seen)


@pytest.fixture(scope="module")
def reports(browser, server, site) -> dict[str, PageReport]:
    """Every HTML page of the site, opened once; screenshots of the chapters saved."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pages = sorted(str(p.relative_to(site).with_suffix("")) for p in site.rglob("*.html")
                   if not {"_static", "_sources", "_downloads"} & set(p.parts))
    result = {}
    for page in pages:
        result[page] = inspect(browser, f"{server}/{page}.html")
        if page in CHAPTERS:
            browser.save_screenshot(str(ARTIFACTS / f"{Path(page).name}.png"))
    return result


def test_every_page_of_the_site_is_inspected(reports):
    assert set(toc_files()) <= set(reports), f"pages not found in the site: {set(toc_files()) - set(reports)}"
    assert {"search", "genindex"} <= set(reports)


@pytest.mark.parametrize("page", toc_files() + ["search", "genindex"])
def test_page_has_no_console_error_or_failed_request(reports, page):
    assert reports[page].console_errors == [], f"{page}: " + "\n".join(reports[page].console_errors)


@pytest.mark.parametrize("page", toc_files())
def test_every_image_loads(reports, page):
    report = reports[page]
    assert report.broken_images == [], f"{page}: images that did not load: {report.broken_images}"
    if page in CHAPTERS:
        assert report.images >= 5, f"{page} shows {report.images} images"


@pytest.mark.parametrize("page", toc_files())
def test_math_is_rendered_by_mathjax(reports, page):
    report = reports[page]
    assert report.raw_math == [], f"{page}: math left as raw TeX: {report.raw_math[:5]}"
    assert report.math_errors == [], f"{page}: MathJax could not typeset: {report.math_errors[:5]}"
    assert report.math_rendered >= report.math_elements, \
        f"{page}: {report.math_rendered} of {report.math_elements} formulas rendered"
    if page in CHAPTERS:
        assert report.math_elements >= 5, f"{page} has {report.math_elements} formulas"


@pytest.mark.parametrize("page", CHAPTERS)
def test_no_executed_cell_shows_an_error(reports, page):
    assert reports[page].error_outputs == [], f"{page}: {reports[page].error_outputs}"


@pytest.mark.parametrize("page", toc_files())
def test_left_navigation_lists_every_page_in_order(reports, page):
    # the page itself is listed as "#"
    listed = [re.sub(r"(\.html)?(#.*)?$", "", href).split("/")[-1] or Path(page).name for href in reports[page].nav]
    assert listed == [Path(p).name for p in toc_files()], f"{page}: the navigation lists {listed}"


@pytest.mark.parametrize("page", CHAPTERS)
def test_figures_are_shown_near_their_natural_size_with_legible_text(reports, page):
    """At a 1280-px window no figure is shrunk below 80 % of its width, so that the book
    style's smallest text (coursekit.plots.MIN_FONT_SIZE at DPI) renders at 9 px or more."""
    from coursekit.plots import DPI, MIN_FONT_SIZE

    figures = reports[page].figures
    assert len(figures) >= 5, f"{page} shows {len(figures)} figures"
    for figure in figures:
        ratio = figure["shown"] / figure["natural"]
        assert ratio >= 0.8, (f"{page}: {figure['src']} is {figure['natural']} px wide, shown at "
                              f"{figure['shown']:.0f} px ({ratio:.0%}); make it at most coursekit.plots.COLUMN_WIDTH wide")
        assert MIN_FONT_SIZE * DPI / 72 * min(ratio, 1) >= 9, f"{page}: {figure['src']}: text below 9 px"


@pytest.mark.parametrize("page", CHAPTERS)
def test_no_printout_needs_horizontal_scrolling(reports, page):
    assert reports[page].overflowing == [], \
        f"{page}: output blocks wider than the page (print at most 88 characters a line):\n" + \
        "\n".join(reports[page].overflowing)


@pytest.mark.parametrize("page", CHAPTERS)
def test_chapter_shows_its_papers_claims_against_this_run_as_a_table(reports, page):
    assert ["Claim", "Paper", "This run", "Reproduced"] in reports[page].tables, \
        f"{page}: no table of its papers' claims against this run; tables: {reports[page].tables}"


@pytest.mark.parametrize("page", CHAPTERS)
def test_the_download_menu_gives_a_clean_executed_notebook(reports, page):
    """The .ipynb a reader downloads from the page: the executed chapter, its Markdown
    without MyST roles (glued numbers filled in, citations as text) and with its papers'
    claims table (test_book.py checks the rest of the file)."""
    import nbformat

    download = reports[page].download
    assert download, f"{page}: the download menu offers no .ipynb"
    assert download["status"] == 200, f"{page}: {download['href']} answered {download['status']}"
    notebook = nbformat.reads(download["text"], as_version=4)
    nbformat.validate(notebook)
    markdown = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    assert not re.search(r"\{(glue|cite|doc|ref)[a-z:]*\}`", markdown), f"{page}: MyST roles in the download"
    assert "| Claim | Paper | This run | Reproduced |" in markdown
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 5, f"{page}: the download has no figures"


def test_screenshot_of_each_chapter_is_saved(reports):
    for page in CHAPTERS:
        shot = ARTIFACTS / f"{Path(page).name}.png"
        assert shot.is_file() and shot.stat().st_size > 10_000, f"no screenshot of {page} at {shot}"


@pytest.mark.parametrize("term, page", [("covariate", "why_batchnorm"), ("Prechelt", "early_stopping"),
                                        ("Kaiming", "initialization"), ("standardization", "scaling")])
def test_search_finds_a_chapter_by_its_words(browser, server, term, page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{server}/search.html?q={term}")
    WebDriverWait(browser, 30).until(
        lambda b: b.find_elements(By.CSS_SELECTOR, "#search-results li")
        or "did not match" in b.find_element(By.ID, "search-results").text)
    hits = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "#search-results li a")]
    assert any(f"/book/{page}.html" in hit for hit in hits), f"searching {term!r} found {hits}"
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
