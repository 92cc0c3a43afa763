"""Open the built book in a real browser (Debian's Chromium, headless) and check every page as a reader sees it.

A page fails on:
- a link to a page or file of the book that does not exist;
- an image that did not load (zero natural width);
- an attention view (circuitsvis) whose canvas was not drawn, or that drew nothing at all;
- a request that leaves the local site for a file the book hosts itself (the circuitsvis bundle, a
  figure, a stylesheet): the book must read like it does offline;
- an uncaught script error, or a console error that is not on the short `HARMLESS` list;
- a figure (under ``_images/``) that the page shrinks so far that its smallest text (a notebook figure's
  `helpers.plots.MIN_FONT_PT` at `helpers.plots.FIGURE_DPI`, an SVG's smallest font-size) shows below
  9 pt (12 CSS px).

Every page's screenshot (1280 px wide, the top of the page) goes to ``_build/screens/``. Requests to
other hosts are blocked (CI has no internet), listed, and allowed only when the file is not self-hosted.

Usage: python tests/site/browser_check.py _build/html [--screens _build/screens] [--pages name ...]
Needs Chromium: `apt-get install chromium` (Debian); set CHROMIUM to use another binary.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import os
import re
import shutil
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

WIDTH, HEIGHT = 1280, 900
SKIP_DIRS = {"_static", "_sources", "_images", "reports", "_sphinx_design_static", "_panels_static"}
# Console messages a reader never notices, matched as substrings: blocked third-party requests (the
# check runs offline; MathJax comes from a CDN online), and pydata-sphinx-theme's notice on a first visit
# (no light/dark choice stored yet, so it falls back to "auto", as intended).
HARMLESS = (
    "net::ERR_FAILED",
    "net::ERR_BLOCKED_BY_CLIENT",
    "net::ERR_INTERNET_DISCONNECTED",
    "net::ERR_NAME_NOT_RESOLVED",
    "Got invalid theme mode: . Resetting to auto.",
)
VIEW_IDS = """() => Array.from(document.querySelectorAll('div[id^="circuits-vis-"]')).map(view => view.id)"""
# One circuitsvis view's canvases as a count of painted pixels (alpha > 0). The views paint their
# canvases once they are scrolled into sight, so the check scrolls to each and waits for this to be > 0.
COUNT_DRAWN = """
(id) => {
  const view = document.getElementById(id);
  const canvases = Array.from(view.querySelectorAll('canvas'));
  let drawn = 0;
  for (const canvas of canvases) {
    if (!canvas.width || !canvas.height) continue;
    const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    for (let i = 3; i < data.length; i += 4) { if (data[i] > 0) { drawn++; } }
  }
  return {id: id, canvases: canvases.length, drawn: drawn, children: view.childElementCount};
}
"""
DRAW_WAIT_MS = 8_000
BROKEN_IMAGES = """
() => Array.from(document.images).filter(img => img.complete && img.naturalWidth === 0).map(img => img.src)
"""
LINKS = "() => Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"
# Every shown figure's natural and rendered width (figures folded away in a closed dropdown are skipped).
FIGURES = """
() => Array.from(document.images)
  .filter(img => img.src.includes('/_images/') && img.naturalWidth > 0 && img.clientWidth > 0)
  .map(img => ({src: img.src, natural: img.naturalWidth, shown: img.clientWidth}))
"""
MIN_TEXT_PX = 12.0  # 9 pt in CSS pixels


SVG_FONT_SIZE = re.compile(r"font-size\s*[:=]\s*\"?\s*([0-9.]+)")


def smallest_text_px(natural: int, shown: int, svg: Path | None = None) -> float:
    """How tall the figure's smallest text shows, in CSS px, given how much the page scales it.

    A notebook figure's smallest text is `helpers.plots.MIN_FONT_PT` at `FIGURE_DPI`; a hand-drawn SVG's is
    the smallest font-size it declares (in its own px)."""
    from helpers.plots import FIGURE_DPI, MIN_FONT_PT

    if svg is not None:
        sizes = [float(size) for size in SVG_FONT_SIZE.findall(svg.read_text(encoding="utf-8"))]
        return (min(sizes) if sizes else 16.0) * shown / natural  # 16 px: the browser's default font size
    return MIN_FONT_PT * FIGURE_DPI / 72 * shown / natural


def find_chromium() -> str:
    """The Chromium binary, or a SystemExit that says how to install it."""
    for candidate in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and (path := shutil.which(candidate)):
            return path
    raise SystemExit("browser check: Chromium is not installed. On Debian/Ubuntu: `apt-get install chromium` "
                     "(.ci/run does this on a fresh machine); or set CHROMIUM=/path/to/chrome.")


def pages_of(site: Path) -> list[Path]:
    """Every HTML page of the book (not the theme's static files or the build reports)."""
    return sorted(p for p in site.rglob("*.html") if not SKIP_DIRS & set(p.relative_to(site).parts[:-1]))


@contextlib.contextmanager
def serve(site: Path) -> Iterator[str]:
    """Serve `site` on a free local port for the duration of the block; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # one line per request would drown the report
        pass


@dataclass
class PageReport:
    page: str
    problems: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    views: int = 0


def local_target(site: Path, base: str, url: str) -> Path | None:
    """The file a same-site URL points to (None for another host or a non-file scheme)."""
    if not url.startswith(base):
        return None
    path = unquote(urlsplit(url).path).lstrip("/")
    target = site / path
    return target / "index.html" if (target.is_dir() or path.endswith("/") or not path) else target


def check_page(browser, site: Path, base: str, page: Path, screens: Path | None, self_hosted: set[str]) -> PageReport:
    rel = page.relative_to(site).as_posix()
    report = PageReport(rel)
    context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
    tab = context.new_page()

    def route(request_route, request) -> None:
        url = request.url
        if url.startswith(base) or url.startswith("data:") or url.startswith("blob:"):
            request_route.continue_()
            return
        report.blocked.append(url)
        name = Path(urlsplit(url).path).name
        if name in self_hosted or "circuitsvis" in url:
            report.problems.append(f"requests {url} from another host, but the book hosts {name} itself")
        request_route.abort()

    tab.route("**/*", route)
    tab.on("pageerror", lambda error: report.problems.append(f"uncaught script error: {error}"))
    tab.on("console", lambda message: report.problems.append(f"console error: {message.text}")
           if message.type == "error" and not any(h in message.text for h in HARMLESS) else None)
    tab.goto(base + rel, wait_until="load")
    with contextlib.suppress(Exception):  # a page that never goes idle is still checked below
        tab.wait_for_load_state("networkidle", timeout=10_000)
    for url in tab.evaluate(BROKEN_IMAGES):
        report.problems.append(f"image did not load: {url}")
    for figure in tab.evaluate(FIGURES):
        target = local_target(site, base, figure["src"])
        svg = target if target is not None and target.suffix == ".svg" and target.exists() else None
        text_px = smallest_text_px(figure["natural"], figure["shown"], svg)
        if text_px < MIN_TEXT_PX:
            report.problems.append(
                f"figure {figure['src'].removeprefix(base)} is {figure['natural']} px wide but shown at "
                f"{figure['shown']} px: its smallest text shows at {text_px:.1f} px (< {MIN_TEXT_PX:.0f} px = 9 pt); "
                + ("enlarge the SVG's smallest font-size" if svg else "draw it at most helpers.plots.COLUMN_INCHES wide"))
    for url in sorted(set(tab.evaluate(LINKS))):
        target = local_target(site, base, url)
        if target is not None and not target.exists():
            report.problems.append(f"broken link: {url.removeprefix(base)}")
    view_ids = tab.evaluate(VIEW_IDS)
    report.views = len(view_ids)
    for view_id in view_ids:
        tab.locator(f"#{view_id}").scroll_into_view_if_needed()
        with contextlib.suppress(Exception):  # a view that never paints is reported just below
            tab.wait_for_function(f"(id) => ({COUNT_DRAWN})(id).drawn > 0", arg=view_id, timeout=DRAW_WAIT_MS)
        view = tab.evaluate(COUNT_DRAWN, view_id)
        if view["canvases"] == 0 or view["drawn"] == 0:
            report.problems.append(f"attention view {view_id} was not drawn ({view['canvases']} canvases, "
                                   f"{view['drawn']} painted pixels, {view['children']} child elements)")
    tab.evaluate("() => window.scrollTo(0, 0)")
    if screens is not None:
        shot = screens / (rel.replace("/", "__").removesuffix(".html") + ".png")
        tab.screenshot(path=str(shot))
    context.close()
    return report


def run(site: Path, screens: Path | None, only: list[str] | None = None) -> list[PageReport]:
    from playwright.sync_api import sync_playwright

    if not (site / "index.html").is_file():
        raise SystemExit(f"browser check: no built site at {site} (run `make book` or `make strict-book` first)")
    pages = pages_of(site)
    if only:
        pages = [p for p in pages if p.stem in only]
    if screens is not None:
        screens.mkdir(parents=True, exist_ok=True)
    self_hosted = {p.name for p in (site / "_static").rglob("*") if p.is_file()} if (site / "_static").is_dir() else set()
    with serve(site) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=find_chromium(), headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        try:
            return [check_page(browser, site, base, page, screens, self_hosted) for page in pages]
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", nargs="?", default="_build/html", type=Path)
    parser.add_argument("--screens", default=None, type=Path, help="screenshot folder (default: SITE/../screens)")
    parser.add_argument("--pages", nargs="*", help="only these pages (file stems), e.g. ioi_circuit")
    args = parser.parse_args(argv)
    screens = args.screens or args.site.parent / "screens"
    reports = run(args.site, screens, args.pages)
    failed = [r for r in reports if r.problems]
    for report in reports:
        for problem in report.problems:
            print(f"FAIL {report.page}: {problem}")
    blocked = sorted({url for r in reports for url in r.blocked})
    views = sum(r.views for r in reports)
    print(f"browser check: {len(reports)} pages, {views} attention views, {len(blocked)} blocked third-party "
          f"URLs, {sum(len(r.problems) for r in failed)} problems; screenshots in {screens}")
    for url in blocked:
        print(f"  blocked (not self-hosted): {url}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
