"""The book's head index: every head a page names, per model, with each role that page gives it.

The survey's families need not be disjoint (Zheng et al. 2024 warn that their categories may overlap), and on
this book's pages they are not: SmolLM2-135M's L24H4 is a memory head, a negative name mover and the main
backup name mover, and its layer-23 name movers turn up on several pages each. Each family page names its
heads in its own words; ``NAMINGS`` collects those namings, curated by reading the pages' markdown (and, to
tell which model a label belongs to, the asserts that check it), so one place lists all the roles of a head.

Two things are generated from ``NAMINGS`` and checked against it by ``tests/test_head_index.py``:

- ``book/head_index.md`` (`page_markdown`), one entry per head of SmolLM2-135M, Gemma 3 270M and the GPT-2
  small heads the papers publish, each with a MyST target (`anchor`) the pages can link to;
- on every page that names a head of those models, one paragraph at the end of its Findings text
  (`page_links`) that links each head the page names to its entry.

The test fails when a page's markdown names a head that has no naming here, a naming's head is not on its
page, a head is outside its model, or either generated text is stale. After editing a page or ``NAMINGS``::

    python -m helpers.experiments.head_index --write         # rewrites book/head_index.md
    python -m helpers.experiments.head_index --write-links   # rewrites the pages' link paragraphs
    python -m helpers.experiments.head_index --check         # exit 1 when either is stale

The module reads the notebooks and the book page from the repository checkout it sits in (``ROOT``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from helpers import heads, models
from helpers.experiments import registry
from helpers.heads import Head

ROOT = Path(__file__).resolve().parents[3]  # src/helpers/experiments/head_index.py -> the repository
NOTEBOOKS = ROOT / "notebooks"
INDEX_PAGE = ROOT / "book" / "head_index.md"

# The models a naming can be of, in the order the index lists them, with the name the book uses for each.
MODELS: dict[str, str] = {
    "smollm2-135m": "SmolLM2-135M",
    "gemma3-270m": "Gemma 3 270M",
    "gpt2-small": "GPT-2 small",
    "toy": "Toy models",
}
# Models whose heads get an entry with an anchor. Toy models are trained per page: a toy's L1H0 on one page
# is not the same head as on another, so they are listed without anchors and without cross-page links.
ANCHORED = ("smollm2-135m", "gemma3-270m", "gpt2-small")
# The atlas page screens every head; only the heads its text names are indexed (its tables list the rest).
PAGES: tuple[str, ...] = (
    *(family.page for family in registry.FAMILIES), *registry.CIRCUIT_PAGES, *registry.ATLAS_PAGES
)  # the book's order: the survey's stages, then the circuit page, then the atlas
MAX_ROLE = 90  # characters; a role is a phrase, the page says the rest
LABEL = re.compile(r"L\d+H\d+")
LINKS_PREFIX = "Heads named on this page, in the {doc}`head index <../book/head_index>`:"
MANY_PAGES = 3  # a head named on this many pages or more is listed at the top of its model's section


@dataclass(frozen=True)
class Naming:
    """One page saying what one head does: the unit the index is built from."""

    model: str  # a key of MODELS
    head: str  # "L24H4": layer and head, 0-based, the book's notation
    page: str  # a notebook stem in PAGES
    role: str  # what that page found or says the head does, at most MAX_ROLE characters

    @property
    def pair(self) -> Head:
        """The head as a ``(layer, head)`` pair."""
        return heads.parse(self.head)


def _named(model: str, page: str, role: str, *labels: str) -> tuple[Naming, ...]:
    """Several heads a page names in one role (the list below stays readable)."""
    return tuple(Naming(model, label, page, role) for label in labels)


_SMOL, _GEMMA, _GPT2 = "smollm2-135m", "gemma3-270m", "gpt2-small"
_WANG, _ACRONYMS = "(Wang et al.)", "(García-Carrasco et al.)"
_VULNERABLE = "vulnerable head: carries flips of acronym letters; END patching repairs them"

NAMINGS: tuple[Naming, ...] = (
    # memory_heads
    Naming(_SMOL, "L24H4", "memory_heads",
           "top memory head by DLA: pushes against the context's capital, not a recall head"),
    Naming(_SMOL, "L23H4", "memory_heads",
           "memory head that recalls: pushes the remembered capital in every form and format"),
    Naming(_SMOL, "L29H0", "memory_heads", "memory head: pushes against the context's capital, not a recall head"),
    Naming(_GEMMA, "L12H2", "memory_heads", "memory head that recalls: pushes the remembered capital in every form"),
    # constant_heads
    Naming(_SMOL, "L0H4", "constant_heads",
           "Constant signature: the most even reader of the four labels (0.97 of log 4)"),
    Naming(_SMOL, "L28H4", "constant_heads", "Constant signature; stops reading the labels on the held-out questions"),
    # single_letter_heads
    Naming(_SMOL, "L7H4", "single_letter_heads",
           'Single Letter signature: 70 % of its label attention on "A"; not on held-out questions'),
    Naming(_SMOL, "L14H6", "single_letter_heads",
           'Single Letter signature: 68 % on "D"; the one that passes again on held-out questions'),
    Naming(_SMOL, "L23H5", "single_letter_heads",
           'Single Letter signature: 65 % on "D"; keeps "D" but below the bar on held-out questions'),
    *_named(_SMOL, "single_letter_heads", "passes the Single Letter rule on the held-out questions only",
            "L15H2", "L16H2", "L19H4"),
    # negative_heads
    *_named(_SMOL, "negative_heads", "top-NAS head in the question-first exercise; fails the order-swap control",
            "L14H4", "L17H7", "L21H7"),
    # previous_token_heads
    Naming(_SMOL, "L16H0", "previous_token_heads",
           "previous-token head, first on the screen; in the ablated top three"),
    Naming(_SMOL, "L11H1", "previous_token_heads",
           "previous-token head, second on the screen; in the ablated top three"),
    Naming(_SMOL, "L1H2", "previous_token_heads", "previous-token head, third on the screen; in the ablated top three"),
    Naming(_GPT2, "L2H2", "previous_token_heads",
           "published previous-token head (Wang et al.; García-Carrasco et al.)"),
    Naming(_GPT2, "L4H11", "previous_token_heads",
           "published previous-token head, the strongest (Wang et al.; García-Carrasco et al.)"),
    Naming(_GPT2, "L1H0", "previous_token_heads", f"previous-token head of the acronym circuit {_ACRONYMS}"),
    # duplicate_heads
    Naming(_SMOL, "L8H1", "duplicate_heads",
           "duplicate head, the best (S2 → S1 above 0.8); loses reach on far repeats"),
    *_named(_SMOL, "duplicate_heads", "duplicate head: passes the rule on both prompt kinds, against the control",
            "L2H4", "L5H6", "L8H0"),
    *_named(_SMOL, "duplicate_heads", "near-miss duplicate head: looks back, but fails the control ratio",
            "L9H2", "L14H3"),
    Naming(_GEMMA, "L3H3", "duplicate_heads", "duplicate head, the stronger of two (above 0.6)"),
    Naming(_GEMMA, "L0H1", "duplicate_heads", "duplicate head, the second of two"),
    *_named(_GPT2, "duplicate_heads", f"published duplicate token head {_WANG}", "L0H1", "L0H10", "L3H0"),
    # name_mover_heads
    Naming(_SMOL, "L23H0", "name_mover_heads",
           "name mover, the strongest (DLA above +0.85); its OV circuit copies names"),
    *_named(_SMOL, "name_mover_heads", "name mover (DLA above +0.4): attends END → IO, its OV circuit copies names",
            "L23H2", "L23H1"),
    Naming(_SMOL, "L23H3", "name_mover_heads",
           "largest DLA, but attends to S and pushes it down; tops the held-out screen"),
    Naming(_SMOL, "L29H1", "name_mover_heads", "second by DLA on the held-out IOI wording"),
    Naming(_GEMMA, "L12H1", "name_mover_heads",
           "strong name mover (DLA above +1.5) whose OV circuit does not copy names"),
    Naming(_GEMMA, "L12H3", "name_mover_heads", "weak name mover (DLA below +0.5)"),
    *_named(_GPT2, "name_mover_heads", f"published name mover {_WANG}", "L9H9", "L10H0", "L9H6"),
    # backup_name_mover_heads
    *_named(_SMOL, "backup_name_mover_heads", "name mover, knocked out to measure self-repair",
            "L23H0", "L23H2", "L23H1"),
    Naming(_SMOL, "L23H3", "backup_name_mover_heads",
           "largest DLA, pushes S down; rises after the knockout, no more than in controls"),
    Naming(_SMOL, "L24H4", "backup_name_mover_heads",
           "main backup: an IO suppressor that relaxes once the name movers are knocked out"),
    Naming(_SMOL, "L29H2", "backup_name_mover_heads",
           "rises after the knockout, but no more than after control knockouts"),
    *_named(_GEMMA, "backup_name_mover_heads", "name mover, knocked out (Gemma over-repairs)", "L12H1", "L12H3"),
    Naming(_GEMMA, "L13H3", "backup_name_mover_heads",
           "rises most after the knockout, yet no Gemma head passes the backup rule"),
    *_named(_GPT2, "backup_name_mover_heads", f"published name mover {_WANG}, knocked out to find the backups",
            "L9H9", "L9H6", "L10H0"),
    *_named(_GPT2, "backup_name_mover_heads", f"published backup name mover {_WANG}",
            "L10H10", "L10H6", "L10H2", "L10H1", "L11H2", "L9H7", "L9H0", "L11H9"),
    # negative_name_mover_heads
    Naming(_SMOL, "L24H4", "negative_name_mover_heads",
           "negative name mover (DLA below −0.8) and the clearest copy suppressor on prose"),
    Naming(_SMOL, "L29H6", "negative_name_mover_heads",
           "copy suppressor on prose, tied with the bar; third most negative OV diagonal"),
    Naming(_SMOL, "L23H3", "negative_name_mover_heads",
           "subject suppressor on IOI (DLA above +2); most negative OV diagonal; prose near the bar"),
    Naming(_GEMMA, "L17H2", "negative_name_mover_heads",
           "negative name mover (DLA below −0.9); also passes the prose rule"),
    Naming(_GEMMA, "L13H3", "negative_name_mover_heads",
           "strongest copy suppressor on prose; ablating it raises the attended token"),
    Naming(_GEMMA, "L11H3", "negative_name_mover_heads",
           "copy suppressor on prose; attends to S on IOI and helps the task (DLA above +3)"),
    Naming(_GPT2, "L10H7", "negative_name_mover_heads",
           "published negative name mover, the main copy-suppression head (Wang; McDougall)"),
    Naming(_GPT2, "L11H10", "negative_name_mover_heads",
           "published negative name mover, a weaker copy suppressor (Wang; McDougall)"),
    # letter_mover_heads
    *_named(_SMOL, "letter_mover_heads", "letter mover: attends to the current word (C3) and writes its initial",
            "L23H0", "L23H1"),
    *_named(_SMOL, "letter_mover_heads", "carries the acronym prediction without attending to C3 (a writer)",
            "L29H1", "L29H2"),
    Naming(_GEMMA, "L12H1", "letter_mover_heads",
           "letter mover, first by carried logit difference: attends to C3, writes its initial"),
    Naming(_GEMMA, "L11H2", "letter_mover_heads",
           "letter mover, third by carried logit difference: attends to C3, writes its initial"),
    Naming(_GEMMA, "L15H2", "letter_mover_heads",
           "one of the top four heads in acronyms (second by carried difference)"),
    Naming(_GEMMA, "L11H1", "letter_mover_heads",
           "one of the top four heads in acronyms (fourth by carried difference)"),
    *_named(_GPT2, "letter_mover_heads", f"published letter mover {_ACRONYMS}", "L8H11", "L9H9", "L10H10", "L11H4"),
    Naming(_GPT2, "L5H8", "letter_mover_heads", f"relays position information in the acronym circuit {_ACRONYMS}"),
    Naming(_GPT2, "L1H0", "letter_mover_heads", f"previous-token head of the acronym circuit {_ACRONYMS}"),
    *_named(_GPT2, "letter_mover_heads", f"published previous-token head, also in the acronym circuit {_ACRONYMS}",
            "L2H2", "L4H11"),
    # vulnerable_heads
    *_named(_SMOL, "vulnerable_heads", _VULNERABLE, "L29H1", "L23H0", "L23H1", "L29H2"),
    *_named(_SMOL, "vulnerable_heads", "works against acronym flips: its direct effect rises when the letter flips",
            "L29H0", "L24H4"),
    *_named(_GEMMA, "vulnerable_heads", _VULNERABLE, "L15H2", "L12H1", "L11H2"),
    Naming(_GEMMA, "L15H3", "vulnerable_heads", "vulnerable head: fourth by drop on flips; not a top letter mover"),
    *_named(_GPT2, "vulnerable_heads", "vulnerable head of the acronym circuit (secondary summary)",
            "L10H10", "L8H11", "L9H9"),
    # mover_heads
    Naming(_SMOL, "L23H4", "mover_heads", "top mover of factual recall: over 0.85 of its attention on the subject"),
    Naming(_SMOL, "L23H1", "mover_heads", "mover of factual recall, second of three"),
    Naming(_SMOL, "L23H5", "mover_heads", "mover of factual recall, third of three"),
    *_named(_SMOL, "mover_heads", "writer: raises the factual answer directly, hardly attending to the subject",
            "L29H1", "L29H2"),
    Naming(_GEMMA, "L12H2", "mover_heads", "top mover of factual recall (score above 2.5)"),
    Naming(_GEMMA, "L12H1", "mover_heads", "mover of factual recall, second of three"),
    Naming(_GEMMA, "L15H3", "mover_heads",
           "mover of factual recall, half a writer (under 0.2 of its attention on the subject)"),
    # context_heads
    Naming(_SMOL, "L23H1", "context_heads",
           "context head, first of three: pushes the context's capital in every format"),
    Naming(_SMOL, "L23H7", "context_heads", "context head: pushes the context's capital in every format"),
    Naming(_SMOL, "L29H1", "context_heads",
           "context head in Q/A only: pushes the remembered capital in the other formats"),
    # in_context_heads
    Naming(_SMOL, "L18H6", "in_context_heads",
           "in-context head: top END ablation drop; attends to the matching labels, copies them"),
    *_named(_SMOL, "in_context_heads",
            "passes the in-context screen (END zero ablation); does not attend to the labels",
            "L14H3", "L20H1"),
    # truthfulness_heads
    Naming(_SMOL, "L12H5", "truthfulness_heads",
           "best truth probe (96 %); steering along its direction does not help"),
    # consistency_heads
    Naming(_SMOL, "L27H1", "consistency_heads",
           "best consistency probe (79 %, the larger class 74 %); its bias does not make answers agree"),
    Naming(_SMOL, "L12H5", "consistency_heads",
           "the best truth probe reads consistency below the larger class (66 %)"),
    # accuracy_heads
    Naming(_SMOL, "L6H4", "accuracy_heads",
           "best right-vs-wrong probe (72 %, no better than shuffled labels); steering does not help"),
    Naming(_SMOL, "L12H5", "accuracy_heads", "not among the top 27 right-vs-wrong probes"),
    # induction_heads
    Naming(_SMOL, "L18H6", "induction_heads", "induction head, first on the screen; in the ablated top three"),
    Naming(_SMOL, "L17H4", "induction_heads", "induction head, second on the screen; in the ablated top three"),
    Naming(_SMOL, "L17H3", "induction_heads", "induction head, third on the screen; in the ablated top three"),
    Naming(_SMOL, "L17H5", "induction_heads", "induction head: passes the rule; first on held-out English"),
    *_named(_SMOL, "induction_heads", "passes the induction rule in the page's run", "L23H2", "L23H7"),
    *_named(_GPT2, "induction_heads", "published induction head (one of the five most tutorials use)",
            "L5H1", "L7H2", "L7H10"),
    *_named(_GPT2, "induction_heads", "published induction head (tutorials' five; IOI induction class, Wang et al.)",
            "L5H5", "L6H9"),
    *_named(_GPT2, "induction_heads", f"published induction head of the IOI circuit {_WANG}", "L5H8", "L5H9"),
    # summary_reader_heads
    *_named(_SMOL, "summary_reader_heads",
            "summary reader (top 3 by summary route); END patching beats 100 random triples",
            "L18H4", "L18H3", "L21H1"),
    *_named(_GEMMA, "summary_reader_heads",
            "top 3 by summary route; END patching p = 0.04, not significant at 0.01",
            "L10H0", "L10H2", "L10H3"),
    # function_vector_heads
    Naming(_SMOL, "L20H5", "function_vector_heads",
           "function vector head, first by AIE (exact +0.24; +0.44 on capitalize); reads the answers"),
    *_named(_SMOL, "function_vector_heads",
            "in the top ten summed into the vector (beats 100 random sets; p ≈ 0.04 norm-matched)",
            "L14H1", "L24H4", "L18H6", "L22H5", "L20H6", "L23H3", "L20H0", "L17H3", "L17H6"),
    Naming(_GEMMA, "L9H3", "function_vector_heads",
           "first by AIE (exact +0.43); its output alone steers (0.71, best of 72), the top ten not"),
    *_named(_GEMMA, "function_vector_heads",
            "in the top ten by AIE; summed with L9H3 into the vector, which then does not steer",
            "L13H3", "L11H2"),
    # successor_heads
    Naming(_SMOL, "L23H3", "successor_heads",
           "top succession score (0.18, under the bar); suppresses the item it reads; ablation hurts"),
    *_named(_SMOL, "successor_heads", "top three by succession score (under the bar); alone, its ablation does nothing",
            "L28H8", "L1H1"),
    Naming(_GEMMA, "L7H2", "successor_heads", "top succession score (0.16, under the bar); top-3 ablation does nothing"),
    *_named(_GEMMA, "successor_heads", "top three by succession score (under the bar); top-3 ablation does nothing",
            "L0H0", "L2H0"),
    Naming(_GPT2, "L9H1", "successor_heads", "published successor head (Gould et al.; blog post on time in GPT-2)"),
    # inhibition_heads
    Naming(_SMOL, "L20H0", "inhibition_heads", "S-inhibition head, the dominant one (shift +0.22 to +0.32)"),
    Naming(_SMOL, "L19H2", "inhibition_heads", "S-inhibition head (shift +0.06 to +0.12); with L20H0 above 0.3"),
    Naming(_SMOL, "L22H5", "inhibition_heads", "S-inhibition head that only just clears the random-head bar"),
    *_named(_SMOL, "inhibition_heads", "name mover: the receiver whose queries the S-inhibition heads steer",
            "L23H0", "L23H2", "L23H1"),
    Naming(_GEMMA, "L10H3", "inhibition_heads", "S-inhibition head, first of the leading two"),
    Naming(_GEMMA, "L11H3", "inhibition_heads", "S-inhibition head, second of the leading two"),
    *_named(_GPT2, "inhibition_heads", f"published S-inhibition head {_WANG}", "L7H3", "L7H9", "L8H6", "L8H10"),
    # ioi_circuit
    *_named(_SMOL, "ioi_circuit", "previous-token head of the circuit (picked by attention, not checked here)",
            "L16H0", "L11H1"),
    Naming(_SMOL, "L8H1", "ioi_circuit", "duplicate-token head of the circuit; first again on held-out prompts"),
    Naming(_SMOL, "L2H4", "ioi_circuit", "duplicate-token head of the circuit; leaves the top two on held-out prompts"),
    *_named(_SMOL, "ioi_circuit", "induction head of the circuit (picked by attention, not checked here)",
            "L17H4", "L17H5"),
    *_named(_SMOL, "ioi_circuit", "S-inhibition head of the circuit, path-patched on the inhibition page",
            "L20H0", "L19H2", "L22H5"),
    *_named(_SMOL, "ioi_circuit", "name mover of the circuit", "L23H0", "L23H2", "L23H1"),
    Naming(_SMOL, "L24H4", "ioi_circuit", "negative name mover of the circuit"),
    Naming(_SMOL, "L23H3", "ioi_circuit",
           "subject suppressor: with it, 14 heads recover over 0.85 of the logit difference"),
    Naming(_GEMMA, "L11H3", "ioi_circuit", "subject suppressor, also one of the S-inhibition heads"),
    # positional_heads
    Naming(_SMOL, "L11H6", "positional_heads",
           "offset-0 positional head (attends to itself), best on the screen; ablated in the top three"),
    Naming(_SMOL, "L16H0", "positional_heads", "offset-1 positional head (the previous token); ablated in the top three"),
    Naming(_SMOL, "L29H1", "positional_heads", "offset-0 positional head, third offset head; ablated in the top three"),
    *_named(_SMOL, "positional_heads", "near miss: offset 1 on >= 95 % of random tokens, 80-90 % of prose",
            "L1H2", "L2H1", "L11H1", "L19H3"),
    Naming(_SMOL, "L11H5", "positional_heads", "content head: attends to itself on 86 % of random tokens, 28 % of prose"),
    Naming(_GEMMA, "L8H0", "positional_heads", "offset-0 positional head (itself); ablated with L2H3 and L4H1"),
    *_named(_GEMMA, "positional_heads", "offset-1 positional head (the previous token); ablated in the top three",
            "L2H3", "L4H1"),
    # subword_merge_heads
    Naming(_SMOL, "L12H3", "subword_merge_heads",
           "the one subword merge head (0.27); first on held-out text; ablation leaves loss unchanged"),
    Naming(_SMOL, "L19H3", "subword_merge_heads",
           "runner-up subword-merge score (0.12): attends within words, but also across; fails"),
    Naming(_SMOL, "L11H0", "subword_merge_heads",
           "subword-merge score 0.11: a quarter of its attention on the word's start; fails"),
    Naming(_SMOL, "L16H0", "subword_merge_heads",
           "strongest previous-token head on long-word windows (0.76), the contrast to L12H3"),
    Naming(_SMOL, "L11H1", "subword_merge_heads",
           "second previous-token head on long-word windows (0.68), the contrast to L12H3"),
    Naming(_GEMMA, "L2H0", "subword_merge_heads",
           "the one subword merge head (0.25); first on held-out text; ablation leaves loss unchanged"),
    # syntactic_heads
    Naming(_SMOL, "L25H2", "syntactic_heads", "best nsubj head (0.91 vs 0.29); lands on \" that\" in relative clauses"),
    Naming(_SMOL, "L13H8", "syntactic_heads", "nsubj head (0.83); ablated with L25H2 and L16H5, no effect on agreement"),
    Naming(_SMOL, "L16H5", "syntactic_heads", "nsubj head (0.67); ablated in the top three, no effect on agreement"),
    Naming(_SMOL, "L10H1", "syntactic_heads", "best dobj head: attends from the object to its verb (0.99)"),
    Naming(_SMOL, "L7H6", "syntactic_heads", "best det head: attends from a noun to its \"the\" (0.87)"),
    *_named(_SMOL, "syntactic_heads", "previous-token head; 1.0 on amod, passes no syntactic relation",
            "L16H0", "L11H1", "L1H2"),
    Naming(_GEMMA, "L9H2", "syntactic_heads", "best nsubj head (0.69 vs 0.27); its top-3 ablation lowers agreement"),
    # rare_words_heads
    Naming(_SMOL, "L28H2", "rare_words_heads", "top rare-word share (0.50), but 0.56 on a common word in the slot: fails"),
    Naming(_SMOL, "L23H1", "rare_words_heads",
           "reads the noun in the slot, rare or common (0.39 / 0.82); rarest token on reference text"),
    Naming(_SMOL, "L28H0", "rare_words_heads",
           "reads the noun in the slot, rare or common (0.38 / 0.54); rarest token on reference text"),
    *_named(_GEMMA, "rare_words_heads", "top rare-word share (0.63), higher on a common word in the slot: fails",
            "L9H0", "L12H2", "L6H1"),
    # retrieval_heads
    Naming(_SMOL, "L18H6", "retrieval_heads", "top retrieval head (1.00); first on held-out haystacks; induction head"),
    Naming(_SMOL, "L23H7", "retrieval_heads", "retrieval head (0.95), induction head; below rank 30 held out"),
    Naming(_SMOL, "L17H4", "retrieval_heads", "retrieval head (0.94), induction head; top 5 held out"),
    Naming(_SMOL, "L17H3", "retrieval_heads", "retrieval head (0.89), induction head; second held out"),
    Naming(_SMOL, "L23H1", "retrieval_heads", "retrieval head (0.86), not an induction head; below rank 30 held out"),
    *_named(_GEMMA, "retrieval_heads", "top-three retrieval head (> 0.7), also an induction head", "L11H2", "L5H1", "L5H2"),
    # global_retrieval_heads
    *_named(_SMOL, "global_retrieval_heads", "kept global first (retrieval ranking); does not save recall",
            "L18H6", "L23H7", "L17H4", "L17H3", "L23H1"),
    *_named(_GEMMA, "global_retrieval_heads", "kept global first (retrieval ranking); 4 prompts, inconclusive",
            "L11H2", "L5H1", "L5H2"),
    # sentiment_summarizer_heads
    Naming(_SMOL, "L14H2", "sentiment_summarizer_heads",
           "top sentiment summarizer: writes sentiment at the comma, attends to the adjective"),
    Naming(_SMOL, "L21H1", "sentiment_summarizer_heads", "sentiment summarizer at the comma; also writes it at END"),
    Naming(_SMOL, "L13H6", "sentiment_summarizer_heads", "sentiment summarizer at the comma (third)"),
    Naming(_GEMMA, "L15H0", "sentiment_summarizer_heads", "top sentiment summarizer, at the comma; also writes it at END"),
    Naming(_GEMMA, "L17H1", "sentiment_summarizer_heads", "sentiment summarizer at the comma"),
    Naming(_GEMMA, "L9H0", "sentiment_summarizer_heads", "sentiment summarizer at the period"),
    # semantic_induction_heads
    Naming(_SMOL, "L23H4", "semantic_induction_heads", "top semantic induction head (relation index +0.84)"),
    Naming(_SMOL, "L23H5", "semantic_induction_heads", "semantic induction head (+0.73)"),
    Naming(_SMOL, "L23H1", "semantic_induction_heads", "semantic induction head (+0.22)"),
    Naming(_GEMMA, "L12H2", "semantic_induction_heads", "top semantic induction head (relation index +2.69)"),
    Naming(_GEMMA, "L12H1", "semantic_induction_heads", "semantic induction head (+1.65)"),
    Naming(_GEMMA, "L11H2", "semantic_induction_heads", "semantic induction head (+0.79)"),
    # subject_heads
    *_named(_SMOL, "subject_heads", "subject head: > 95 % of its answer push from the subject; a mover",
            "L23H4", "L23H5", "L23H1"),
    *_named(_GEMMA, "subject_heads", "subject head, one of its top two movers", "L12H2", "L12H1"),
    *_named(_GEMMA, "subject_heads", "subject head (70 % rule)", "L11H2", "L17H0"),
    # relation_heads
    *_named(_SMOL, "relation_heads", "relation head in the last layer: answer push from the relation words",
            "L29H1", "L29H2"),
    Naming(_SMOL, "L27H4", "relation_heads", "third by relation-sourced push, under 0.25 logits: too small to count"),
    *_named(_GEMMA, "relation_heads", "relation head: answer push from the relation words",
            "L15H3", "L17H1", "L15H0", "L15H2"),
    # head_atlas
    Naming(_SMOL, "L23H1", "head_atlas", "seven atlas screens, more than any head: the copier families and the vulnerable heads"),
    Naming(_GEMMA, "L12H1", "head_atlas", "six atlas screens: context, mover, name mover, vulnerable, semantic induction, subject"),
    Naming(_SMOL, "L8H1", "head_atlas", "not a duplicate head on the atlas's far random repeats"),
    Naming(_SMOL, "L9H2", "head_atlas", "duplicate head on the atlas's random repeats, not on its page"),
    Naming(_SMOL, "L14H3", "head_atlas", "in-context head and, on random repeats only, duplicate head in the atlas"),
    *_named(_SMOL, "head_atlas", "summary reader in the atlas, level in depth with the induction heads",
            "L18H4", "L18H3", "L21H1"),
    *_named(_SMOL, "head_atlas", "in-context head in the atlas, shallower than the induction heads",
            "L18H6", "L20H1"),
)


def anchor(model: str, head: str) -> str:
    """The MyST target of a head's entry, e.g. ``head-smollm2-135m-l24h4`` (lowercase: a valid Sphinx label)."""
    if model not in ANCHORED:
        raise ValueError(f"{model!r} heads have no entry to link to; anchored models: {', '.join(ANCHORED)}")
    heads.parse(head)
    return f"head-{model}-{head.lower()}"


def _order(naming: Naming) -> tuple[int, int, int]:
    """Sort key: layer, head, then the page's place in the book."""
    return (*naming.pair, PAGES.index(naming.page))


def named_on(page: str, namings: Sequence[Naming] = NAMINGS) -> tuple[Naming, ...]:
    """The namings of one page, by model (in MODELS' order), then layer and head."""
    found = [n for n in namings if n.page == page]
    return tuple(sorted(found, key=lambda n: (list(MODELS).index(n.model), *n.pair)))


def heads_of(model: str, namings: Sequence[Naming] = NAMINGS) -> dict[str, tuple[Naming, ...]]:
    """Every head of `model` any page names -> its namings in the book's page order; heads by (layer, head)."""
    found: dict[str, list[Naming]] = {}
    for naming in sorted((n for n in namings if n.model == model), key=_order):
        found.setdefault(naming.head, []).append(naming)
    return {head: tuple(found[head]) for head in found}


# ---------------------------------------------------------------------------------------------------------
# Checks: each raises ValueError saying what is wrong, so a typo in NAMINGS fails with its reason.
# ---------------------------------------------------------------------------------------------------------

def _published_gpt2_heads() -> set[Head]:
    return {tuple(h) for published in models.GPT2_SMALL_PUBLISHED_HEADS.values() for h in published}


def check_naming(naming: Naming) -> None:
    """Raise ValueError when a naming's model, head, page or role could not be right.

    A head must be a label of its model's size (toys vary, so only the form is checked there), the page one
    of the book's pages, the role a short phrase, and a GPT-2 small head called "published" must be one that
    ``models.GPT2_SMALL_PUBLISHED_HEADS`` records.
    """
    where = f"{naming.model} {naming.head} on {naming.page}"
    if naming.model not in MODELS:
        raise ValueError(f"{where}: unknown model; a naming's model is one of {', '.join(MODELS)}")
    pair = heads.parse(naming.head)
    if naming.model in models.REGISTRY:
        spec = models.REGISTRY[naming.model]
        try:
            heads.check([pair], spec.n_layers, spec.n_heads)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
    if naming.page not in PAGES:
        raise ValueError(f"{where}: no such page; the pages are {', '.join(PAGES)}")
    if not naming.role.strip() or len(naming.role) > MAX_ROLE:
        raise ValueError(f"{where}: a role is a phrase of 1 to {MAX_ROLE} characters, not {len(naming.role)}")
    if naming.model == "gpt2-small" and "published" in naming.role and pair not in _published_gpt2_heads():
        raise ValueError(f"{where}: called published, but models.GPT2_SMALL_PUBLISHED_HEADS does not record it")


def check_namings(namings: Sequence[Naming] = NAMINGS) -> None:
    """Check every naming, and that no page names the same head of the same model twice."""
    seen: set[tuple[str, str, str]] = set()
    for naming in namings:
        check_naming(naming)
        key = (naming.model, naming.head, naming.page)
        if key in seen:
            raise ValueError(f"{naming.model} {naming.head} is named twice on {naming.page}: merge the roles")
        seen.add(key)


def notebook_markdown(page: str, root: Path = ROOT) -> list[str]:
    """The sources of a page's markdown cells."""
    cells = json.loads((root / "notebooks" / f"{page}.ipynb").read_text())["cells"]
    return ["".join(cell["source"]) for cell in cells if cell["cell_type"] == "markdown"]


def _paragraphs(text: str) -> list[str]:
    return re.split(r"\n\s*\n", text)


def page_text(page: str, root: Path = ROOT) -> str:
    """A page's markdown without its head-index paragraph: the text whose head labels NAMINGS must cover."""
    return "\n\n".join(p for cell in notebook_markdown(page, root) for p in _paragraphs(cell)
                       if not p.strip().startswith(LINKS_PREFIX))


def check_page(page: str, text: str, namings: Sequence[Naming] = NAMINGS) -> None:
    """Raise ValueError when the labels in a page's text and the page's namings differ, either way."""
    in_text = set(LABEL.findall(text))
    named = {n.head for n in namings if n.page == page}
    if in_text - named:
        raise ValueError(f"{page} names {sorted(in_text - named)} with no Naming in head_index.NAMINGS: read the "
                         "sentence, decide the model and add one")
    if named - in_text:
        raise ValueError(f"{page} has Namings for {sorted(named - in_text)}, which its markdown does not name")


# ---------------------------------------------------------------------------------------------------------
# The generated texts
# ---------------------------------------------------------------------------------------------------------

def _ref(naming: Naming) -> str:
    return f"{{ref}}`{naming.head} <{anchor(naming.model, naming.head)}>`"


def _pages(count: int) -> str:
    return f"{count} page" if count == 1 else f"{count} pages"


def _entry(model: str, head: str, namings: Sequence[Naming]) -> str:
    """One head's entry: its target line, then its label, place and every role with its page."""
    layer, _ = heads.parse(head)
    where = f"layer {layer} of {models.REGISTRY[model].n_layers}"
    if len(namings) > 1:
        where += f"; {_pages(len(namings))}"
    roles = " · ".join(f"{n.role} ({{doc}}`../notebooks/{n.page}`)" for n in namings)
    return f"({anchor(model, head)})=\n**{head}** ({where}) · {roles}"


_INTRO = """\
A head need not belong to one family. The survey sorts heads into families and stages and warns that its
categories may not be orthogonal {cite:p}`zheng2024survey`; on this book's pages the same head often turns up
under several names, picked by different screens on different tasks. This page lists every head a page names,
per model, with each role that page gives it and a link to the page. The
{doc}`head atlas <../notebooks/head_atlas>` goes the other way: it screens every head of a model for every
family it can."""

_MODEL_INTROS = {
    "smollm2-135m": "The book's default model: {layers} layers of {heads_per} heads.",
    "gemma3-270m": "The book's comparison model: {layers} layers of {heads_per} heads.",
    "gpt2-small": (
        "Where the published heads come from: {layers} layers of {heads_per} heads. The book cannot run it offline "
        "(its weights come from the Hugging Face Hub), so the heads below are those the papers name, as the pages "
        "quote them (a paper's \"9.9\" is L9H9); a page run with `MODEL = \"gpt2-small\"` where the Hub is "
        "reachable can be set beside them."),
}


def _section(model: str, namings: Sequence[Naming]) -> list[str]:
    """The section of one anchored model: intro, the heads on many pages, then one entry per head."""
    by_head = heads_of(model, namings)
    spec = models.REGISTRY[model]
    n_pages = len({n.page for group in by_head.values() for n in group})
    intro = _MODEL_INTROS[model].format(layers=spec.n_layers, heads_per=spec.n_heads)
    heading = MODELS[model] + (" (published heads)" if model == "gpt2-small" else "")
    lines = [f"## {heading}", "", f"{intro} {len(by_head)} heads are named on {_pages(n_pages)}.", ""]
    many = sorted(((h, g) for h, g in by_head.items() if len(g) >= MANY_PAGES), key=lambda hg: -len(hg[1]))
    if many:
        listed = ", ".join(f"{_ref(group[0])} ({_pages(len(group))})" for _, group in many)
        lines += [f"Named on {MANY_PAGES} pages or more: {listed}.", ""]
    for head, group in by_head.items():
        lines += [_entry(model, head, group), ""]
    return lines


def _toy_section(namings: Sequence[Naming]) -> list[str]:
    """Toy heads, per page: each toy is trained on its page, so its heads have no entry of their own."""
    lines = [f"## {MODELS['toy']}", "",
             "Each toy is trained on its own page, so a toy's head is named only there:", ""]
    for page in PAGES:
        for naming in named_on(page, [n for n in namings if n.model == "toy"]):
            lines.append(f"- **{naming.head}**: {naming.role} ({{doc}}`../notebooks/{page}`)")
    return lines + [""]


def page_markdown(namings: Sequence[Naming] = NAMINGS) -> str:
    """The whole of book/head_index.md."""
    lines = ["# Head index", "",
             "% Generated by `python -m helpers.experiments.head_index --write` from its NAMINGS; edit those.", "",
             _INTRO, ""]
    for model in ANCHORED:
        if any(n.model == model for n in namings):
            lines += _section(model, namings)
    if any(n.model == "toy" for n in namings):
        lines += _toy_section(namings)
    return "\n".join(lines).rstrip("\n") + "\n"


def page_links(page: str, namings: Sequence[Naming] = NAMINGS) -> str | None:
    """The paragraph a page carries at the end of its Findings text, linking each head it names to the index.

    One line, no bold (bold in Findings marks a claim that needs an assert); None when the page names no head
    of an anchored model.
    """
    groups = []
    for model in ANCHORED:
        found = [n for n in named_on(page, namings) if n.model == model]
        if found:
            groups.append(f"{MODELS[model]} " + ", ".join(_ref(n) for n in found))
    if not groups:
        return None
    return f"{LINKS_PREFIX} {'; '.join(groups)}."


# ---------------------------------------------------------------------------------------------------------
# Writing them
# ---------------------------------------------------------------------------------------------------------

_CHECKED_BELOW = re.compile(r"^The cells? below check", re.M)  # the findings cell's closing line, about the asserts
_LINKS_PARAGRAPH = re.compile(r"\n\n" + re.escape(LINKS_PREFIX) + r"[^\n]*")


def with_links(source: str, links: str | None) -> str:
    """A findings cell's source with its head-index paragraph replaced, added or removed, the rest unchanged.

    The paragraph goes last, before the closing paragraph that points to the assert cell below when there is
    one (so that sentence stays next to the cell it points to).
    """
    source = _LINKS_PARAGRAPH.sub("", source)
    if links is None:
        return source
    body = source.rstrip("\n")
    tail = source[len(body):]
    last = body.rfind("\n\n") + 2
    if last >= 2 and _CHECKED_BELOW.match(body, last):
        return f"{body[:last]}{links}\n\n{body[last:]}{tail}"
    return f"{body}\n\n{links}{tail}"


def findings_cell(cells: Iterable[dict]) -> int:
    """The index of the cell holding the page's findings list (the markdown cell with claim markers)."""
    found = [i for i, cell in enumerate(cells)
             if cell["cell_type"] == "markdown" and "<!-- claim:" in "".join(cell["source"])]
    if not found:
        raise ValueError("no markdown cell carries a <!-- claim: ... --> marker, so there is no findings list")
    return found[0]


def write_links(page: str, root: Path = ROOT) -> bool:
    """Rewrite the head-index paragraph of one page's findings cell; True when the notebook changed."""
    import nbformat  # only for writing: reading and checking need no notebook library

    path = root / "notebooks" / f"{page}.ipynb"
    notebook = nbformat.read(path, as_version=4)
    cell = notebook.cells[findings_cell(notebook.cells)]
    source = with_links(cell.source, page_links(page))
    if source == cell.source:
        return False
    cell.source = source
    nbformat.write(notebook, path)
    return True


def stale(root: Path = ROOT) -> list[str]:
    """What is out of date: the index page and the pages whose link paragraph differs from `page_links`."""
    out = []
    index = root / "book" / "head_index.md"
    if not index.exists() or index.read_text() != page_markdown():
        out.append(str(index.relative_to(root)))
    for page in PAGES:
        cells = json.loads((root / "notebooks" / f"{page}.ipynb").read_text())["cells"]
        source = "".join(cells[findings_cell(cells)]["source"])
        if with_links(source, page_links(page)) != source:
            out.append(f"notebooks/{page}.ipynb")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.experiments.head_index",
                                     description=__doc__.split("\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="rewrite book/head_index.md")
    action.add_argument("--write-links", action="store_true", help="rewrite the pages' head-index paragraphs")
    action.add_argument("--check", action="store_true", help="exit 1 when the page or a paragraph is stale")
    args = parser.parse_args(argv)
    check_namings()
    if args.write:
        INDEX_PAGE.write_text(page_markdown())
        print(INDEX_PAGE)
    elif args.write_links:
        for page in PAGES:
            if write_links(page):
                print(NOTEBOOKS / f"{page}.ipynb")
    else:
        out = stale()
        for path in out:
            print(f"stale: {path}; run `python -m helpers.experiments.head_index --write` (the page) or "
                  "`--write-links` (the notebooks)")
        return 1 if out else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
