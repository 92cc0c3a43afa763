"""The browser check against a hand-built site with one good page and one page broken in every way it
looks for: it must pass the first and name each fault of the second.

Needs Chromium (`apt-get install chromium`); skipped where it is missing unless REQUIRE_BROWSER=1
(.ci/run sets it, so CI cannot skip it).
"""

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import browser_check  # noqa: E402

HAS_BROWSER = any(shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")) or \
    bool(os.environ.get("CHROMIUM"))
if not HAS_BROWSER and os.environ.get("REQUIRE_BROWSER") != "1":
    pytest.skip("Chromium is not installed (apt-get install chromium); set REQUIRE_BROWSER=1 to fail instead",
                allow_module_level=True)

# A view drawn the way circuitsvis draws one: a canvas with painted pixels inside the view's div.
DRAWN_VIEW = """<div id="circuits-vis-good"></div>
<script>
const canvas = document.createElement('canvas'); canvas.width = 20; canvas.height = 20;
canvas.getContext('2d').fillRect(0, 0, 10, 10);
document.getElementById('circuits-vis-good').appendChild(canvas);
</script>"""
# A view whose render call fails: the div stays empty and the error reaches the console.
BROKEN_VIEW = """<div id="circuits-vis-broken"></div>
<script>CV.render("circuits-vis-broken", CV.AttentionPatterns, {});</script>"""


def _site(tmp_path: Path) -> Path:
    site = tmp_path / "html"
    (site / "_static").mkdir(parents=True)
    (site / "_static" / "figure.png").write_bytes(_png())
    (site / "_static" / "circuitsvis-1.43.3-iife.js").write_text("window.CircuitsVis = {};")
    (site / "_images").mkdir()
    (site / "_images" / "fits.png").write_bytes(_png(width_inches=3.0))  # 300 px: shown at its own size
    (site / "_images" / "wide.png").write_bytes(_png(width_inches=20.0))  # 2000 px in a 700 px column
    for name, font in (("big_text.svg", 20), ("small_text.svg", 12)):  # 960 px wide: 20 px shows at 14.6 px
        (site / "_images" / name).write_text(
            '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 960 100" width="960" height="100">'
            f'<style>.t {{ font-size: {font}px; }}</style><text class="t" x="10" y="50">label</text></svg>')
    (site / "index.html").write_text(
        f'<html><body><a href="good.html">good</a><img src="_static/figure.png">{DRAWN_VIEW}'
        '<div style="width: 700px"><img style="max-width: 100%" src="_images/fits.png">'
        '<img style="max-width: 100%" src="_images/big_text.svg"></div></body></html>')
    (site / "good.html").write_text('<html><body><a href="index.html#top">home</a></body></html>')
    (site / "broken.html").write_text(
        '<html><body><a href="missing_page.html">gone</a><img src="_static/missing.png">'
        '<script src="https://unpkg.com/circuitsvis@1.43.3/dist/cdn/circuitsvis-1.43.3-iife.js"></script>'
        f"{BROKEN_VIEW}"
        '<div style="width: 700px"><img style="max-width: 100%" src="_images/wide.png">'
        '<img style="max-width: 100%" src="_images/small_text.svg"></div></body></html>')
    return site


def _png(width_inches: float = 0.2) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(width_inches, 0.2))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def test_good_pages_pass_and_a_broken_page_names_every_fault(tmp_path):
    site = _site(tmp_path)
    reports = {r.page: r for r in browser_check.run(site, tmp_path / "screens")}
    assert reports["index.html"].problems == [] and reports["index.html"].views == 1
    assert reports["good.html"].problems == []
    problems = "\n".join(reports["broken.html"].problems)
    assert "broken link: missing_page.html" in problems
    assert "image did not load" in problems and "missing.png" in problems
    assert "attention view circuits-vis-broken was not drawn" in problems
    assert "the book hosts circuitsvis-1.43.3-iife.js itself" in problems
    assert "uncaught script error" in problems and "CV is not defined" in problems
    assert "figure _images/wide.png is 2000 px wide but shown at 700 px" in problems
    assert "figure _images/small_text.svg is 960 px wide but shown at 700 px: its smallest text shows at 8.8 px" in problems
    assert "big_text.svg" not in problems
    assert sorted(p.name for p in (tmp_path / "screens").iterdir()) == ["broken.png", "good.png", "index.png"]


def test_main_exits_nonzero_on_a_broken_site_and_zero_without_it(tmp_path, capsys):
    site = _site(tmp_path)
    assert browser_check.main([str(site), "--screens", str(tmp_path / "s1")]) == 1
    assert "FAIL broken.html" in capsys.readouterr().out
    (site / "broken.html").unlink()
    assert browser_check.main([str(site), "--screens", str(tmp_path / "s2")]) == 0


def test_a_missing_site_gets_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no built site"):
        browser_check.run(tmp_path / "nowhere", None)
