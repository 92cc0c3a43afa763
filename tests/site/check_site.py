"""Check the built book (run after `jupyter-book build`): every family page was executed and shows
its figures and the self-hosted attention view, without inlining circuitsvis's 1.3 MB bundle, and
carries what a reader needs around it: a version stamp, the Colab and download buttons, and a "report a
problem" link prefilled with the page.

Usage: python tests/site/check_site.py _build/html
"""

import re
import sys
from pathlib import Path

BUNDLE = "circuitsvis-1.43.3-iife.js"
MAX_PAGE_BYTES = 600_000  # one inlined circuitsvis bundle alone would be 1.3 MB


def check_page(page: Path) -> list[str]:
    html = page.read_text(encoding="utf-8")
    problems = []
    figures = len(re.findall(r'<img[^>]+src="[^"]*_images/[^"]+\.png"', html))
    if figures < 3:
        problems.append(f"{page.name}: {figures} executed figures (expected at least 3)")
    if 'id="circuits-vis-' not in html or "window.CircuitsVis" not in html:
        problems.append(f"{page.name}: no attention view")
    if f"_static/{BUNDLE}" not in html:
        problems.append(f"{page.name}: the page does not load the self-hosted {BUNDLE}")
    if len(html.encode()) > MAX_PAGE_BYTES:
        problems.append(f"{page.name}: {len(html.encode()):,} bytes, over {MAX_PAGE_BYTES:,}")
    if not re.search(r"model \S+ \([^)]*\) \| seed \d+ \| Python", html):
        problems.append(f"{page.name}: no version stamp (models.version_stamp) in the executed output")
    if "colab.research.google.com/github/" not in html:
        problems.append(f"{page.name}: no Open in Colab button")
    if f"_sources/notebooks/{page.stem}.ipynb" not in html:
        problems.append(f"{page.name}: no download button for the notebook")
    if f"issues/new?title=Issue%20on%20page%20%2Fnotebooks/{page.name}" not in html:
        problems.append(f"{page.name}: no 'report a problem' link prefilled with the page")
    if "Traceback (most recent call last)" in html:
        problems.append(f"{page.name}: an error was executed into the page")
    return problems


def main(site: Path) -> int:
    pages = sorted((site / "notebooks").glob("*.html"))
    problems = [] if pages else [f"no notebook pages under {site / 'notebooks'}"]
    if not (site / "_static" / BUNDLE).is_file():
        problems.append(f"{BUNDLE} is missing from {site / '_static'}")
    for page in pages:
        problems += check_page(page)
    for problem in problems:
        print("FAIL:", problem)
    print(f"site check: {len(pages)} notebook pages, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "_build/html")))
