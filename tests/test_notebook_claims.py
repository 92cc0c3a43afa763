"""Every claim a page's findings make in bold is checked by an assert that names it (NOTEBOOK.md §7).

Convention (`helpers.claims`): a bold claim in the Findings section ends with ``<!-- claim: ID -->``, and
an assert message of the same page starts with ``claim ID:``. This test fails when a bold claim has no
marker, a marker has no assert, an assert names an id the text does not carry, or an assert is
conditional on what the notebook happened to define (``globals()``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from helpers import claims

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def findings_bullets(path: Path) -> list[str]:
    """The bullets of the page's Findings section (from its heading to the next level-2 heading), outside
    fenced blocks (the "How this differs from the paper" box is a list of differences, not of findings)."""
    text, inside, fenced = [], False, False
    for cell in cells(path):
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            for line in source.splitlines():
                if line.startswith("```"):
                    fenced = not fenced
                elif line.startswith("## ") and not fenced:
                    inside = line.strip() == "## Findings"
                elif inside and not fenced:
                    text.append(line)
    bullets, current = [], None
    for line in text:
        if line.startswith("- "):
            current = [line]
            bullets.append(current)
        elif current is not None and line.startswith("  "):
            current.append(line)
        else:
            current = None
    return ["\n".join(b) for b in bullets]


def code_of(path: Path) -> str:
    return "\n".join("".join(c["source"]) for c in cells(path) if c["cell_type"] == "code")


def markdown_of(path: Path) -> str:
    return "\n".join("".join(c["source"]) for c in cells(path) if c["cell_type"] == "markdown")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_bold_finding_carries_a_claim_marker(path):
    unmarked = [b.splitlines()[0][:80] for b in findings_bullets(path) if "**" in b and not claims.markers(b)]
    assert not unmarked, f"{path.name}: bold findings without <!-- claim: ID -->: {unmarked}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_marked_claim_is_asserted_and_every_asserted_claim_is_marked(path):
    marked, asserted = set(claims.markers(markdown_of(path))), set(claims.asserted(code_of(path)))
    assert marked, f"{path.name}: no claim markers at all"
    assert not marked - asserted, f"{path.name}: claims with no assert naming them: {sorted(marked - asserted)}"
    assert not asserted - marked, f"{path.name}: asserts name claims the text does not carry: {sorted(asserted - marked)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_assert_depends_on_what_the_notebook_happened_to_define(path):
    code = code_of(path)
    assert not re.search(r"in globals\(\)|in locals\(\)|globals\(\)\.get", code), (
        f"{path.name}: an assert conditional on notebook state passes in a top-to-bottom run whatever it checks")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_family_page_says_how_it_differs_from_the_paper(path):
    assert "How this differs from the paper" in markdown_of(path), f"{path.name}: no 'How this differs from the paper' box"
