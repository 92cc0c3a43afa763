"""The family registry is the one source: every page has a row and every row a page, and the stage pages,
the table of contents and each page's header agree with it."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
import yaml

from helpers import heads
from helpers.experiments import registry

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(path.stem for path in (ROOT / "notebooks").glob("*.ipynb"))
LINKED_PAGE = re.compile(r"</notebooks/(\w+)>")


def stage_rows(text: str) -> dict[str, tuple[str, str, str]]:
    """A stage page's family table: family name -> (GPT-2 small heads cell, chapter cell, the whole row)."""
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 4 and cells[0] not in {"family", ""} and not set(cells[0]) <= {"-"}:
            rows[cells[0]] = (cells[-2], cells[-1], line)
    return rows


def stage_sections(toc: dict, stage_file: str) -> list[str]:
    """The notebook stems _toc.yml lists under a stage page."""
    for part in toc["parts"]:
        for chapter in part.get("chapters", []):
            if chapter["file"] == f"book/stages/{stage_file}":
                return [Path(section["file"]).name for section in chapter.get("sections", [])]
    raise AssertionError(f"_toc.yml has no chapter book/stages/{stage_file}")


def test_every_page_has_one_family_and_every_family_a_page():
    families = [family.page for family in registry.FAMILIES]
    assert len(set(families)) == len(families), "two families share a page"
    assert len({family.key for family in registry.FAMILIES}) == len(registry.FAMILIES), "two families share a key"
    missing_page = sorted(set(families) - set(PAGES))
    assert not missing_page, f"registry rows without a notebook: {missing_page}"
    unregistered = sorted(set(PAGES) - set(families) - set(registry.CIRCUIT_PAGES) - set(registry.ATLAS_PAGES))
    assert not unregistered, f"notebooks with no registry row: {unregistered}; add them to helpers.experiments.registry"


@pytest.mark.parametrize("family", registry.FAMILIES, ids=lambda f: f.key)
def test_each_row_names_a_stage_a_study_and_cited_papers(family):
    assert family.stage in registry.STAGES
    assert callable(getattr(family.experiment, "study", None)), f"{family.experiment.__name__} has no study()"
    bib = (ROOT / "book" / "references.bib").read_text()
    for key in family.papers:
        assert re.search(rf"@\w+\{{{re.escape(key)},", bib), f"{family.key}: {key} is not in book/references.bib"
    for head in family.published_gpt2_heads:
        assert 0 <= head[0] < 12 and 0 <= head[1] < 12, f"{family.key}: {head} is not a GPT-2 small head"
    assert family.score and family.rule and family.method


@pytest.mark.parametrize("family", registry.FAMILIES, ids=lambda f: f.key)
def test_each_pages_header_names_its_stage_and_discovery_paper(family):
    header = nbformat.read(ROOT / "notebooks" / f"{family.page}.ipynb", as_version=4).cells[0].source
    stage_row = next((line for line in header.splitlines() if line.startswith("| **Survey stage**")), "")
    assert family.stage in stage_row, f"{family.page}: the header's stage row {stage_row!r} is not {family.stage}"
    assert family.papers[0] in header, f"{family.page}: the header does not cite {family.papers[0]}"
    published_row = next((line for line in header.splitlines() if line.startswith("| **Published heads**")), "")
    for head in family.published_gpt2_heads:
        assert heads.label(head) in published_row, f"{family.page}: {heads.label(head)} not in {published_row!r}"


@pytest.mark.parametrize("stage", registry.STAGES)
def test_the_stage_page_and_the_toc_agree_with_the_registry(stage):
    stage_file = registry.STAGES[stage]
    rows = stage_rows((ROOT / "book" / "stages" / f"{stage_file}.md").read_text())
    sections = stage_sections(yaml.safe_load((ROOT / "_toc.yml").read_text()), stage_file)
    families = registry.in_stage(stage)
    assert families, f"no registered family in {stage}"
    for family in families:
        assert family.name in rows, f"{stage_file}.md has no table row for {family.name!r}"
        gpt2_cell, chapter_cell, row = rows[family.name]
        for key in family.papers:
            assert key in row, f"{stage_file}.md: the {family.name} row does not cite {key}"
        assert LINKED_PAGE.findall(chapter_cell) == [family.page], f"{family.name}: chapter cell {chapter_cell!r}"
        for head in family.published_gpt2_heads:
            assert heads.label(head) in gpt2_cell, f"{family.name}: {heads.label(head)} missing from {gpt2_cell!r}"
        assert family.page in sections, f"_toc.yml does not list {family.page} under {stage_file}"
    linked = {page for _, chapter, _ in rows.values() for page in LINKED_PAGE.findall(chapter)}
    assert linked == {family.page for family in families}, (
        f"{stage_file}.md links {sorted(linked)}; the registry's {stage} pages are {sorted(f.page for f in families)}")
    circuit_sections = set(sections) - {family.page for family in families}
    assert circuit_sections <= set(registry.CIRCUIT_PAGES), f"{stage_file}: unregistered sections {circuit_sections}"


def test_the_stage_table_reader_sees_rows_and_skips_headers():
    text = ("| family | what | heads | chapter |\n|---|---|---|---|\n"
            "| Name mover head | copies | L9H9, L10H0 | {doc}`Name movers </notebooks/name_mover_heads>` |\n"
            "| Successor head | 3 -> 4 | L9H1 | coming |\n")
    rows = stage_rows(text)
    assert set(rows) == {"Name mover head", "Successor head"}
    assert LINKED_PAGE.findall(rows["Name mover head"][1]) == ["name_mover_heads"]
    assert LINKED_PAGE.findall(rows["Successor head"][1]) == []


def test_unknown_keys_pages_and_stages_name_what_there_is():
    with pytest.raises(KeyError, match="name_mover"):
        registry.by_key("nmae_mover")
    with pytest.raises(KeyError, match="memory_heads"):
        registry.by_page("memroy_heads")
    with pytest.raises(KeyError, match="Latent Reasoning"):
        registry.in_stage("Latent reasoning")
    assert registry.by_page("induction_heads").key == "induction"
