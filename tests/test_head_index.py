"""The head index lists every head the pages name, and the pages link to it (`helpers.experiments.head_index`).

The index is curated by hand (`NAMINGS`), so these tests hold it to the pages: every head label in a page's
markdown has a naming for that page and every naming's head is on its page, each head fits its model, each
GPT-2 small head called published is one the book records, and the generated page and the pages' link
paragraphs are current. The checker functions are tested on bad input too, so a check that cannot fail
does not pass unnoticed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from helpers import heads, models
from helpers.experiments import head_index as hi

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_PAGES = sorted(path.stem for path in (ROOT / "notebooks").glob("*.ipynb"))
WRITE = "run `python -m helpers.experiments.head_index --write`"
WRITE_LINKS = "run `python -m helpers.experiments.head_index --write-links`"
TARGET = re.compile(r"^\(([^)\s]+)\)=$", re.M)
REF = re.compile(r"\{ref\}`[^`<]*<([^>]+)>`")


def markdown_cells(page: str) -> list[str]:
    cells = json.loads((ROOT / "notebooks" / f"{page}.ipynb").read_text())["cells"]
    return ["".join(cell["source"]) for cell in cells if cell["cell_type"] == "markdown"]


def test_every_notebook_is_a_page_of_the_index():
    assert hi.ROOT == ROOT, "head_index reads another checkout than the one under test"
    missing = sorted(set(NOTEBOOK_PAGES) - set(hi.PAGES))
    assert not missing, f"notebooks the index does not read: {missing}; register them in helpers.experiments.registry"


@pytest.mark.parametrize("page", NOTEBOOK_PAGES)
def test_every_head_a_page_names_has_a_naming(page):
    in_text = set(hi.LABEL.findall(hi.page_text(page)))
    named = {naming.head for naming in hi.named_on(page)}
    assert in_text <= named, (f"{page} names {sorted(in_text - named)} with no Naming in head_index.NAMINGS: read "
                              "the sentence, decide the model, add a Naming and " + WRITE)


@pytest.mark.parametrize("page", NOTEBOOK_PAGES)
def test_every_naming_is_on_its_page(page):
    in_text = set(hi.LABEL.findall(hi.page_text(page)))
    named = {naming.head for naming in hi.named_on(page)}
    assert named <= in_text, f"{page} has Namings for {sorted(named - in_text)}, which its markdown does not name"
    hi.check_page(page, hi.page_text(page))


def test_every_head_is_in_range_for_its_model():
    wrong = []
    for naming in hi.NAMINGS:
        if naming.model in models.REGISTRY:
            spec = models.REGISTRY[naming.model]
            layer, head = heads.parse(naming.head)
            if not (0 <= layer < spec.n_layers and 0 <= head < spec.n_heads):
                wrong.append(naming)
    assert not wrong, f"heads outside their model: {wrong}"
    assert {n.model for n in hi.NAMINGS} <= set(hi.MODELS)


def test_every_published_gpt2_head_is_one_the_book_records():
    recorded = {tuple(h) for published in models.GPT2_SMALL_PUBLISHED_HEADS.values() for h in published}
    claimed = [n for n in hi.NAMINGS if n.model == "gpt2-small" and "published" in n.role]
    assert claimed, "no GPT-2 small head is called published: the check below would test nothing"
    unrecorded = [n for n in claimed if n.pair not in recorded]
    assert not unrecorded, f"called published, not in models.GPT2_SMALL_PUBLISHED_HEADS: {unrecorded}"


def test_every_naming_passes_the_checker():
    hi.check_namings()


def test_the_index_page_is_current():
    path = ROOT / "book" / "head_index.md"
    assert path.exists() and path.read_text() == hi.page_markdown(), f"book/head_index.md is stale: {WRITE}"


@pytest.mark.parametrize("page", NOTEBOOK_PAGES)
def test_every_page_links_exactly_its_heads(page):
    links = hi.page_links(page)
    cells = markdown_cells(page)
    carrying = [i for i, source in enumerate(cells) if hi.LINKS_PREFIX in source]
    if links is None:
        assert not carrying, f"{page} names no head with an index entry but carries a link paragraph: {WRITE_LINKS}"
        return
    assert len(carrying) == 1, f"{page}: {len(carrying)} markdown cells carry a head-index paragraph: {WRITE_LINKS}"
    source = cells[carrying[0]]
    assert source.count(hi.LINKS_PREFIX) == 1 and links in source.split("\n"), \
        f"{page}: the head-index paragraph differs from head_index.page_links: {WRITE_LINKS}"
    assert "<!-- claim:" in source, f"{page}: the head-index paragraph belongs in the findings cell"
    assert "**" not in links, "bold in Findings marks a claim that needs an assert"


def test_anchors_are_unique_labels_and_every_link_resolves():
    page = hi.page_markdown()
    targets = TARGET.findall(page)
    assert len(targets) == len(set(targets)), "two entries share an anchor"
    entries = {(n.model, n.head) for n in hi.NAMINGS if n.model in hi.ANCHORED}
    assert len({hi.anchor(*entry) for entry in entries}) == len(entries) == len(targets)
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", t) for t in targets), "an anchor is not a plain Sphinx label"
    for target in targets:  # a MyST target needs a block right after it
        following = page.split(f"({target})=\n", 1)[1].split("\n", 1)[0]
        assert following.startswith("**"), f"({target})= is not followed by its entry"
    refs = set(REF.findall(page))
    for stem in NOTEBOOK_PAGES:
        refs |= set(REF.findall(hi.page_links(stem) or ""))
    assert refs, "no {ref} links at all"
    assert refs <= set(targets), f"links to no entry: {sorted(refs - set(targets))}"


def test_heads_on_several_pages_are_listed_first():
    page = hi.page_markdown()
    for model in hi.ANCHORED:
        for head, namings in hi.heads_of(model).items():
            if len(namings) >= hi.MANY_PAGES:
                assert f"{{ref}}`{head} <{hi.anchor(model, head)}>` ({len(namings)} pages)" in page


# --- the checkers fail on bad input -------------------------------------------------------------------------

@pytest.mark.parametrize("bad, message", [
    (hi.Naming("smollm2-135m", "L30H0", "memory_heads", "a role"), "outside this model"),
    (hi.Naming("smollm2-135m", "L0H9", "memory_heads", "a role"), "outside this model"),
    (hi.Naming("gemma3-270m", "L12H4", "memory_heads", "a role"), "outside this model"),
    (hi.Naming("gemma3-270m", "L18H0", "memory_heads", "a role"), "outside this model"),
    (hi.Naming("gpt2-small", "L12H0", "name_mover_heads", "published name mover"), "outside this model"),
    (hi.Naming("smollm2-135m", "L23H1", "no_such_heads", "a role"), "no such page"),
    (hi.Naming("pythia-70m", "L1H1", "memory_heads", "a role"), "unknown model"),
    (hi.Naming("smollm2-135m", "23.1", "memory_heads", "a role"), "L<layer>H<head>"),
    (hi.Naming("smollm2-135m", "L23H1", "memory_heads", "x" * (hi.MAX_ROLE + 1)), "a role is a phrase"),
    (hi.Naming("smollm2-135m", "L23H1", "memory_heads", " "), "a role is a phrase"),
    (hi.Naming("gpt2-small", "L1H0", "letter_mover_heads", "published previous-token head"), "does not record it"),
])
def test_check_naming_rejects_a_bad_naming(bad, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        hi.check_naming(bad)


def test_check_naming_accepts_a_good_one_and_toys_of_any_size():
    hi.check_naming(hi.Naming("gpt2-small", "L9H9", "name_mover_heads", "published name mover"))
    hi.check_naming(hi.Naming("toy", "L40H40", "associative_memories", "a head of a toy trained on the page"))


def test_check_namings_rejects_a_head_named_twice_on_one_page():
    twice = [hi.Naming("smollm2-135m", "L24H4", "memory_heads", "one role"),
             hi.Naming("smollm2-135m", "L24H4", "memory_heads", "another role")]
    with pytest.raises(ValueError, match="named twice"):
        hi.check_namings(twice)
    hi.check_namings([twice[0], hi.Naming("gemma3-270m", "L0H1", "memory_heads", "another model's head")])


def test_check_page_rejects_a_head_without_naming_and_a_naming_without_head():
    namings = [hi.Naming("smollm2-135m", "L24H4", "memory_heads", "a role")]
    hi.check_page("memory_heads", "The top head is L24H4.", namings)
    with pytest.raises(ValueError, match=r"names \['L23H4'\] with no Naming"):
        hi.check_page("memory_heads", "The top heads are L24H4 and L23H4.", namings)
    with pytest.raises(ValueError, match=r"Namings for \['L24H4'\]"):
        hi.check_page("memory_heads", "No head is named here.", namings)


def test_anchor_is_lowercase_and_only_for_anchored_models():
    assert hi.anchor("smollm2-135m", "L24H4") == "head-smollm2-135m-l24h4"
    assert hi.anchor("gpt2-small", "L10H7") == "head-gpt2-small-l10h7"
    with pytest.raises(ValueError, match="no entry"):
        hi.anchor("toy", "L1H0")
    with pytest.raises(ValueError):
        hi.anchor("gemma3-270m", "12.1")


def test_with_links_adds_replaces_and_removes_only_its_paragraph():
    findings = "- **A finding.** <!-- claim: a -->\n\n```{admonition} Box\n\n  text\n```\n"
    closing = findings + "\nThe cell below checks each of these sentences against the numbers."
    links, other = hi.LINKS_PREFIX + " SmolLM2-135M x.", hi.LINKS_PREFIX + " SmolLM2-135M y."
    added = hi.with_links(closing, links)
    assert added.endswith(f"```\n\n{links}\n\nThe cell below checks each of these sentences against the numbers.")
    assert hi.with_links(added, links) == added
    assert hi.with_links(added, other) == closing.replace("\nThe cell below", f"\n{other}\n\nThe cell below")
    assert hi.with_links(added, None) == closing
    at_end = hi.with_links(findings, links)
    assert at_end == findings.rstrip("\n") + f"\n\n{links}\n" and hi.with_links(at_end, None) == findings


def test_page_links_lists_each_model_in_order_and_none_for_a_page_without_heads():
    namings = [hi.Naming("gemma3-270m", "L12H2", "memory_heads", "r"),
               hi.Naming("smollm2-135m", "L24H4", "memory_heads", "r"),
               hi.Naming("smollm2-135m", "L2H4", "memory_heads", "r")]
    assert hi.page_links("memory_heads", namings) == (
        f"{hi.LINKS_PREFIX} SmolLM2-135M {{ref}}`L2H4 <head-smollm2-135m-l2h4>`, "
        "{ref}`L24H4 <head-smollm2-135m-l24h4>`; Gemma 3 270M {ref}`L12H2 <head-gemma3-270m-l12h2>`.")
    assert hi.page_links("context_heads", namings) is None
    assert hi.page_links("associative_memories", [hi.Naming("toy", "L1H0", "associative_memories", "r")]) is None
