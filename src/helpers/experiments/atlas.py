"""The head atlas: every registered family the atlas can screen, on every head of one model, written as one
JSON file and one figure.

    python -m helpers.experiments.atlas --model smollm2-135m --out _build/atlas

Two kinds of family:

- **Pattern families** (previous-token, duplicate, induction heads), defined by where a head attends. Each
  uses its page's score and pass rule (`screens.Screen`: the score at least the family's threshold and at
  least `ratio` times the head's own score on a matched control), on random tokens only: the duplicate page
  also screens IOI prompts and the previous-token page English prose, so their lists can differ. All three
  read the patterns of two batches: random tokens repeated once, and the same prompts with the second half
  replaced by fresh tokens (the control: same positions, nothing to copy); `pattern_targets` says which
  positions each family scores and what its control is. They run on any model, toys included.
- **Task families** (memory, context, negative, mover, name mover and negative name mover heads; positional,
  subword merge, syntactic, rare words, retrieval, sentiment summarizer, semantic induction, subject and
  relation heads; and the five multiple-choice families: constant, single letter, content gatherer, correct
  letter, amplification heads; the successor and summary reader heads; the function vector and in-context
  heads; the truthfulness, accuracy, consistency and vulnerable heads), defined by a task's direct effect, by
  attention on a task's tokens, by a patch or an ablation at END, by a linear probe on the head's output, or,
  for the multiple-choice families, by END's attention on the options. Each runs its page's behaviour gate
  and screen with the page's functions, sizes and seeds, and picks the heads its page's screen picks
  (`TaskScreen`); families that read the same task share its passes (IOI: one read for name movers and
  negative name movers; knowledge conflict: one screen for memory and context heads; factual prompts: one
  source-split pass for subject and relation heads; multiple choice: one `mcq.study`, the one its six pages
  read; needle in a haystack: the needle run the retrieval pages keep in the results store; in-context
  labels: the gate and screen the in-context page keeps in the store).
  The pages' causal checks are not re-run here: the atlas says which heads each screen picks, the family
  page says whether they carry the behaviour. Four families are the exception, because their rule holds the
  causal check: a probe screen alone passes most of a model's heads (truthfulness: 166 of SmolLM2's 270), so
  the truthfulness, accuracy and consistency heads are listed only when steering (or the bias injection) of
  the page's top heads beats both of its nulls, and the vulnerable heads, a top four by construction, only
  when their split-half concentration and their repair beat every draw. Those four read their page's
  `study` from the results store, and `TaskScreen.check` says what the check found. Task families need a
  real model's vocabulary and are skipped on toys; a family whose gate fails lists no heads and says so.

Not in it: the registered families in `NOT_SCREENED`, each with the reason; every atlas lists them as skipped,
so its table shows them as "not screened" rather than leaving them out. The function vector screen lists the top
ten heads by average indirect effect whenever a task passes its gate, as its page and paper pick them: a
ranking, not a pass rule, so those ten are there by construction. The successor head is screened through its
weights (block 0, the head's OV, the unembedding), and no head meets its rule in either model. The positional,
subword merge and syntactic heads read prose and templated sentences, so they are task families here: they
need a tokenizer that a toy does not have. The atlas lists the positional page's offset heads only, not the
heads that rest on the first position (`positional_screens` says why).

The run is kept in the results store (`helpers.store`) under the model, sizes and seed, so the atlas page and
`make atlas` compute it once per code version.

JSON schema (``SCHEMA_VERSION`` 3)::

    {"schema": "attention-heads-atlas", "version": 3,
     "model": str, "n_layers": int, "n_heads": int, "seed": int,
     "sizes": {"prompts": int, "half_len": int},
     "families": {key: {"name": str, "stage": str, "kind": "pattern" | "task",
                        "score": str, "rule": str, "units": str,
                        "scores": [[float] * n_heads] * n_layers,   # larger = more the family
                        "control": [[float] * n_heads] * n_layers | null,  # pattern families' control
                        "threshold": float | null, "ratio": float | null,  # pattern families' rule
                        "gate": str | null,                         # task families' behaviour gate
                        "check": str | null,       # causal check in the family's rule (probe, vulnerable)
                        "passing": ["L1H2", ...]}},                 # best first
     "skipped": {key: str},           # families not screened on this model, and why
     "heads": {"L1H2": [key, ...]},   # every passing head with all the families it passes
     "seconds": float, "peak_memory_mb": float}
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections import Counter
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Callable

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from helpers import capture, controls, heads, overlap, scores, stats, store, tasks, toy
from helpers.experiments import (
    accuracy,
    conflict,
    consistency,
    duplicate,
    fact_sources,
    function_vectors,
    in_context,
    induction,
    ioi,
    mcq,
    mover,
    positional,
    previous_token,
    rare_words,
    registry,
    retrieval,
    semantic_induction,
    sentiment,
    subwords,
    successor,
    summary_reader,
    syntax,
    truthfulness,
    vulnerable,
    yesno,
)
from helpers.screens import Screen

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

SCHEMA_VERSION = 3
# Registered families the atlas does not screen (registry key -> why); each atlas reports them as skipped.
NOT_SCREENED: dict[str, str] = {
    "associative_memory": "a toy trained on its page, not a screen of a pretrained model's heads",
    "global_retrieval": "a test of head sets ranked by the retrieval score, not a screen of single heads",
    "backup_name_mover": "found by knocking out the name movers that another screen finds",
    "letter_mover": "attribution patching on acronym prompts; not yet screened here",
    "inhibition": "path patching into the name movers that another screen finds",
    "iteration": "toys trained on its page",
    "correct": "its page screens layers by vocabulary projection, not heads",
}
# registry key -> (threshold, ratio): the pass rule each family's page applies
PATTERN_RULES: dict[str, tuple[float, float]] = {
    "previous_token": (previous_token.THRESHOLD, 2.0),
    "duplicate": (duplicate.THRESHOLD, duplicate.RATIO),
    "induction": (induction.THRESHOLD, 2.0),
}


@dataclass(frozen=True)
class Sizes:
    prompts: int = 16
    half_len: int = 32


@dataclass(frozen=True)
class Probe:
    """What the atlas reads from a model: its shape, two token batches and a way to get the patterns."""

    name: str
    n_layers: int
    n_heads: int
    repeated: Int[Tensor, "batch pos"]  # each prompt: half_len tokens, then the same tokens again
    control: Int[Tensor, "batch pos"]  # the same first half, then fresh tokens
    first_query: int  # the first query position a score counts
    half_len: int  # the second copy is the last half_len positions
    patterns: Callable[[Tensor], Float[Tensor, "layer batch head query key"]]


def bridge_probe(model: TransformerBridge, *, sizes: Sizes, seed: int) -> Probe:
    from helpers import models

    batch = tasks.repeated_tokens(model, batch=sizes.prompts, half_len=sizes.half_len, seed=seed)
    return Probe(name=models.spec_of(model).name, n_layers=model.cfg.n_layers, n_heads=model.cfg.n_heads,
                 repeated=batch.tokens, control=batch.corrupted, first_query=2 if model.cfg.default_prepend_bos else 1,
                 half_len=sizes.half_len, patterns=lambda tokens: capture.capture_patterns(model, tokens))


def toy_probe(model: toy.AttentionOnlyTransformer, *, sizes: Sizes, seed: int, name: str = "toy") -> Probe:
    """Toy prompts: each first half draws distinct tokens when the vocabulary allows (no accidental repeat)."""
    config = model.config
    if 2 * sizes.half_len > config.n_ctx:
        raise ValueError(f"2 * half_len = {2 * sizes.half_len} positions do not fit the toy's n_ctx {config.n_ctx}")
    generator = torch.Generator().manual_seed(seed)
    if config.vocab_size >= sizes.half_len:
        first = torch.stack([torch.randperm(config.vocab_size, generator=generator)[:sizes.half_len]
                             for _ in range(sizes.prompts)])
    else:
        first = torch.randint(config.vocab_size, (sizes.prompts, sizes.half_len), generator=generator)
    fresh = torch.randint(config.vocab_size, (sizes.prompts, sizes.half_len), generator=generator)

    def patterns(tokens: Tensor) -> Tensor:
        with torch.no_grad():
            return model(tokens, return_patterns=True)[1]

    return Probe(name=name, n_layers=config.n_layers, n_heads=config.n_heads,
                 repeated=torch.cat([first, first], dim=1), control=torch.cat([first, fresh], dim=1),
                 first_query=1, half_len=sizes.half_len, patterns=patterns)


def probe(model, *, sizes: Sizes = Sizes(), seed: int = 0) -> Probe:
    if isinstance(model, toy.AttentionOnlyTransformer):
        return toy_probe(model, sizes=sizes, seed=seed)
    return bridge_probe(model, sizes=sizes, seed=seed)


def pattern_targets(probe: Probe) -> dict[str, tuple[str, Bool[Tensor, "b q k"], str, Bool[Tensor, "b q k"]]]:
    """Each family's (batch, targets) for its score and (batch, targets) for its control.

    Previous-token: key q - 1 on the control prompts (random tokens, nothing to copy), against key q - 2
    (its page's control: a head that spreads attention over the last few tokens scores alike on both).
    Duplicate and induction: their targets on the repeated prompts' second copy, against the same
    positions on the control prompts, where the second half holds fresh tokens."""
    batch, length = probe.repeated.shape
    second_half = torch.zeros(batch, length, length, dtype=torch.bool)
    second_half[:, length - probe.half_len:] = True  # queries on the second copy
    duplicate_targets = scores.duplicate_token_targets(probe.repeated, first_query=probe.first_query) & second_half
    induction_targets = scores.induction_targets(probe.repeated, first_query=probe.first_query) & second_half
    return {
        "previous_token": ("control", scores.offset_targets(batch, length, 1, first_query=probe.first_query),
                           "control", scores.offset_targets(batch, length, 2, first_query=probe.first_query)),
        "duplicate": ("repeated", duplicate_targets, "control", duplicate_targets),
        "induction": ("repeated", induction_targets, "control", induction_targets),
    }


UNITS = {"previous_token": "share of attention", "duplicate": "share of attention",
         "induction": "share of attention", "memory": "logit", "context": "logit", "mover": "attention x logit",
         "negative": "NAS", "name_mover": "logit", "negative_name_mover": "logit",
         "constant": "entropy / log 4", "single_letter": "share of label attention",
         "content_gatherer": "share of content attention", "correct_letter": "share of label attention",
         "amplification": "logit", "rare_words": "share of argmax choices", "retrieval": "retrieval score",
         "sentiment_summarizer": "shift along d", "semantic_induction": "relation index",
         "subject": "logit", "relation": "logit", "positional": "share of argmax choices",
         "subword_merge": "share of attention", "syntactic": "accuracy above baseline",
         "successor": "share of tokens mapped to their successor",
         "summary_reader": "signed mood difference via the summary positions",
         "function_vector": "average indirect effect (probability)",
         "in_context": "signed label difference lost", "truthfulness": "probe accuracy",
         "accuracy": "probe accuracy", "consistency": "probe accuracy",
         "vulnerable": "logit difference lost in the flips"}


@dataclass(frozen=True)
class TaskScreen:
    """A task family's screen on every head: the score its page ranks heads by (sign turned so that larger
    means more the family), the heads its page's screen picks, and the task's behaviour gate in words.
    An empty `passing` with a failed gate means the page finds no behaviour to look for heads in."""

    family: str
    scores: Float[Tensor, "layer head"]
    passing: list[heads.Head]
    gate: str
    check: str | None = None  # the causal check in the family's own pass rule, where it has one: PASS / FAIL ...


def _gated(family: str, scores: Tensor, picked: list[heads.Head], gate) -> TaskScreen:
    return TaskScreen(family=family, scores=scores, passing=picked if gate.passed else [], gate=gate.summary())


def ioi_screens(model: TransformerBridge, *, seed: int) -> dict[str, TaskScreen]:
    """Name movers and negative name movers from one IOI read (`ioi.ioi_read`), as their pages screen them."""
    sizes = ioi.Sizes()
    data = ioi.ioi_data(model, n=sizes.prompts, seed=seed)
    read = ioi.ioi_read(model, data)
    gate = ioi.ioi_gate(model, data, seed=seed, read=read)
    dla = read.dla.mean(-1)
    return {"name_mover": _gated("name_mover", dla, ioi.name_mover_ranking(read, sizes.top_k), gate),
            "negative_name_mover": _gated("negative_name_mover", -dla,
                                          ioi.negative_mover_ranking(read, sizes.top_k), gate)}


def conflict_screens(model: TransformerBridge, *, seed: int) -> dict[str, TaskScreen]:
    """Memory and context heads from one knowledge-conflict screen, with the seeds `conflict.study` uses."""
    sizes = conflict.Sizes()
    pairs = conflict.capital_pairs(model)
    known = conflict.knowledge(model, pairs, seed=seed)
    if not known.gate.passed or len(known.known) < 2:
        empty = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
        return {key: TaskScreen(key, empty, [], known.gate.summary()) for key in ("memory", "context")}
    prompts = conflict.conflict_prompts(model, known.known, n=sizes.screen_prompts, seed=seed + 10,
                                        counterfactuals=pairs)
    screen = conflict.screen_heads(model, prompts)
    return {"memory": _gated("memory", screen.conflict, screen.memory_heads(sizes.top_k), known.gate),
            "context": _gated("context", -screen.conflict, screen.context_heads(sizes.top_k), known.gate)}


def mover_screens(model: TransformerBridge, *, seed: int) -> dict[str, TaskScreen]:
    """Mover heads: attention to the subject times DLA on the facts the model recalls (`mover.study`'s steps)."""
    sizes = mover.Sizes()
    recall = mover.recall_gate(model, mover.relation_batches(model, seed=seed), seed=seed)
    known = recall.known()
    if not recall.gate.passed or any(len(batch) < 2 for batch in known):
        empty = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
        return {"mover": TaskScreen("mover", empty, [], recall.gate.summary())}
    screen = mover.screen_heads(model, mover.first(known, sizes.screen_prompts))
    return {"mover": _gated("mover", screen.score, screen.movers(sizes.top_k), recall.gate)}


def negative_screens(model: TransformerBridge, *, seed: int) -> dict[str, TaskScreen]:
    """Negative heads: NAS on yes/no questions (`yesno.nas_screen`), gated by the order-balanced mirror gate."""
    sizes = yesno.Sizes()
    truth, biases = yesno.order_biases(model, pairs_per_kind=sizes.gate_pairs_per_kind, seed=seed)
    gate = yesno.mirror_gate(yesno.balanced(biases), truth, seed=seed)
    found = yesno.nas_screen(model, pairs_per_kind=sizes.screen_pairs_per_kind, seed=seed + 10, top_k=sizes.top_k)
    return {"negative": _gated("negative", found.scores, found.top(sizes.top_k), gate)}


def mcq_screens(model: TransformerBridge, *, seed: int) -> dict[str, TaskScreen]:
    """The five multiple-choice families from one `mcq.study` (the one six pages read, from the results
    store): each class's screen score and its heads, if the model answers with 4 or with 2 options."""
    study = mcq.study(model, seed=seed)
    passed = study.gate.passed or study.gate_two.passed
    gate = f"{study.gate.summary()}; 2 options: {study.gate_two.summary()}"
    if passed and not gate.startswith("PASS"):
        gate = f"PASS (2 options): {gate}"
    return {family: TaskScreen(family, study.signature.screen(family), study.signature.heads(family) if passed else [],
                               gate)
            for family in mcq.CLASSES}


def _empty(model: TransformerBridge, family: str, gate: str) -> TaskScreen:
    return TaskScreen(family, torch.zeros(model.cfg.n_layers, model.cfg.n_heads), [], gate)


def positional_screens(model: TransformerBridge, *, seed: int) -> dict[str, TaskScreen]:
    """Positional heads: the same fixed argmax bin on random tokens and on prose (`positional.screen`), gated by
    the prose gate, with the seeds `positional.study` uses. Only the offset heads are listed: a head parked on
    the first position is resting, not reading position (the page's causal check leaves those out too), and
    the atlas would otherwise count a sixth of SmolLM2's heads and a third of Gemma's as one family."""
    sizes = positional.Sizes()
    gate = positional.prose_gate(model, windows=sizes.gate_windows, length=sizes.gate_len, seed=seed)
    found = positional.screen(model, prompts=sizes.screen_prompts, length=sizes.screen_len, seed=seed + 10)
    scores = found.scores.where(found.bins != positional.FIRST_BIN, torch.zeros(()))
    return {"positional": _gated("positional", scores, found.offset_heads(), gate)}


def subword_screens(model: TransformerBridge, *, seed: int) -> dict[str, TaskScreen]:
    """Subword merge heads: within-word minus offset-matched across-word attention with its bootstrap rule
    (`subwords.screen`), gated by the word gate, with the seeds `subwords.study` uses."""
    sizes = subwords.Sizes()
    gate = subwords.word_gate(model, windows=sizes.gate_windows, length=sizes.window_len, seed=seed)
    found = subwords.screen(model, windows=sizes.screen_windows, length=sizes.window_len, seed=seed + 10)
    return {"subword_merge": _gated("subword_merge", found.scores, found.passing, gate)}


def syntactic_screens(model: TransformerBridge, *, seed: int) -> dict[str, TaskScreen]:
    """Syntactic heads: a head passes when it passes any relation's rule (`syntax.SyntaxScreen.passing`);
    its score is its largest advantage over a relation's positional baseline. Gated by subject-verb agreement,
    with the seeds and default sizes of `syntax.study` on every model (the page screens its comparison model
    on 32 prompts instead of 48, for time)."""
    sizes = syntax.Sizes()
    agreement = syntax.agreement_gate(model, syntax.agreement_prompts(model, n=sizes.gate_prompts, seed=seed),
                                      seed=seed)
    found = syntax.screen(model, sizes=sizes, seed=seed + 10)
    advantage = torch.stack([found.advantage(relation) for relation in found.accuracy]).amax(dim=0)
    picked = {head for relation in found.accuracy for head in found.passing(relation)}
    where = heads.masks([sorted(picked)], *advantage.shape)[0]
    return {"syntactic": _gated("syntactic", advantage, heads.top(advantage, where=where), agreement.gate)}


def rare_words_screens(model: TransformerBridge, *, seed: int) -> dict[str, TaskScreen]:
    """Rare words heads: argmax share on the rarest token, with its chance and common-word rule
    (`rare_words.screen`), gated by the second-mention gate, with the seeds `rare_words.study` uses."""
    sizes = rare_words.Sizes()
    data = rare_words.sentences(model, n=sizes.sentences, seed=seed)
    gate = rare_words.word_gate(model, data, seed=seed)
    found = rare_words.screen(model, data, n_boot=sizes.n_boot, seed=seed + 10)
    return {"rare_words": _gated("rare_words", found.scores, found.passing, gate)}


def retrieval_screens(model: TransformerBridge, *, seed: int) -> dict[str, TaskScreen]:
    """Retrieval heads: Wu et al.'s score on needle-in-a-haystack prompts and its one-key-back control, from the
    needle run the retrieval page keeps in the results store (`retrieval.needle_gate`)."""
    sizes = retrieval.Sizes()
    run = retrieval.needle_gate(model, prompts=sizes.screen_prompts, controls_n=sizes.control_prompts,
                                length=sizes.length, seed=seed)
    if not run.exact.any():
        return {"retrieval": _empty(model, "retrieval", f"{run.gate.summary()}; no code recalled exactly")}
    found = retrieval.screen(run)
    return {"retrieval": _gated("retrieval", found.scores, found.passing, run.gate)}


def sentiment_screens(model: TransformerBridge, *, seed: int) -> dict[str, TaskScreen]:
    """Sentiment summarizers: each head's write along the fitted sentiment direction at the summary positions
    against random directions (`sentiment.screen`), read from the page's `sentiment.study` (default sizes,
    seed `seed`; kept in the results store, so the atlas and the page compute it once between them)."""
    study = sentiment.study(model, seed=seed)
    if study.screen is None:
        return {"sentiment_summarizer": _empty(model, "sentiment_summarizer", study.gate.summary())}
    return {"sentiment_summarizer": _gated("sentiment_summarizer", study.screen.scores, study.screen.passing,
                                           study.gate)}


def semantic_induction_screens(model: TransformerBridge, *, seed: int) -> dict[str, TaskScreen]:
    """Semantic induction heads: the relation index with its max-statistic re-pairing test on the prompts
    whose tail the model knows (`semantic_induction.screen`), with the seeds `semantic_induction.study` uses."""
    sizes = semantic_induction.Sizes()
    gate = semantic_induction.relation_gate(model, semantic_induction.relation_batches(model), seed=seed)
    if not gate.gate.passed:
        return {"semantic_induction": _empty(model, "semantic_induction", gate.gate.summary())}
    found = semantic_induction.screen(model, gate.known(), n_permutations=sizes.n_permutations, seed=seed + 10)
    return {"semantic_induction": _gated("semantic_induction", found.index, found.passing, gate.gate)}


def successor_screens(model: TransformerBridge, *, seed: int) -> dict[str, TaskScreen]:
    """Successor heads: the succession score of each head's effective OV (block 0, head OV, unembedding) on the
    page's four ordinal tasks, passing above the 95 % quantile of the best head over shuffled orders
    (`successor.screen`), gated by the incrementing gate, with the seeds and sizes `successor.study` uses."""
    sizes = successor.Sizes()
    gate = successor.gate(model, context=sizes.context, seed=seed)
    found = successor.screen(model, n_shuffles=sizes.n_shuffles, seed=seed + 10)
    return {"successor": _gated("successor", found.scores, found.passing, gate)}


def summary_reader_screens(model: TransformerBridge, *, seed: int) -> dict[str, TaskScreen]:
    """Summary readers: each head's attributed share of the mood carried from the summary positions' values
    to the last token (`summary_reader.screen`), passing its rule (top quantile of all heads and a share of
    the strongest), gated by the mood-story gate; read from the page's `summary_reader.study` (default sizes,
    seed `seed`; kept in the results store, so the atlas and the page compute it once between them)."""
    study = summary_reader.study(model, seed=seed)
    if study.screen is None:
        return {"summary_reader": _empty(model, "summary_reader", study.gate.summary())}
    return {"summary_reader": _gated("summary_reader", study.screen.scores, study.screen.passing, study.gate)}


def fact_source_screens(model: TransformerBridge, *, seed: int) -> dict[str, TaskScreen]:
    """Subject and relation heads from one source-split attribution pass over the facts the model knows
    (`fact_sources.run_pass`, classified by `fact_sources.classify` as the pages do)."""
    sizes = fact_sources.Sizes()
    everything = fact_sources.sample_per_relation(fact_sources.prompts(model, fact_sources.fact_table()),
                                                  sizes.facts_per_relation, seed=seed)
    candidates = fact_sources.candidate_ids(everything.facts, everything.answer_ids)
    clean = fact_sources.run_pass(model, everything, candidates, seed=seed)
    gate = stats.behaviour_gate(clean.correct.float(), clean.null_correct.float(), paired=True, seed=seed,
                                name="factual recall", metric_name="accuracy among the relation's answers",
                                null_name="scored against another answer of the relation")
    if not clean.correct.any():
        return {key: _empty(model, key, gate.summary()) for key in ("subject", "relation")}
    parts = clean.parts[:, :, clean.correct].mean(dim=2)  # [layer, head, source] over the known facts
    classes = fact_sources.classify(parts, sizes.rule)
    return {key: _gated(key, parts[..., i], heads.top(parts[..., i], where=classes[key]), gate)
            for i, key in enumerate(("subject", "relation"))}


def function_vector_screens(model: TransformerBridge, *, seed: int) -> dict[str, TaskScreen]:
    """Function vector heads: the top `function_vectors.K` heads by the average indirect effect over the tasks
    whose gate passes (`function_vectors.screened`, kept in the results store and shared with the page).
    The page picks the top K, as the paper, so a model that passes any task's gate lists K heads."""
    _, gates, screens = function_vectors.screened(model, sizes=function_vectors.Sizes(), seed=seed)
    kept = [screen for gate, screen in zip(gates, screens) if gate.passed]
    verdicts = ", ".join(f"{gate.task} {'kept' if gate.passed else 'dropped'}" for gate in gates)
    if not kept:
        return {"function_vector": _empty(model, "function_vector", f"FAIL: no task passes its gate ({verdicts})")}
    aie = function_vectors.average_aie(kept)
    return {"function_vector": TaskScreen("function_vector", aie, heads.top(aie, function_vectors.K),
                                          f"PASS: {verdicts}")}


def in_context_screens(model: TransformerBridge, *, seed: int) -> dict[str, TaskScreen]:
    """In-context heads: each head's drop of the signed label difference when zero-ablated at END, with its
    page's rule, gated by the foo / bar gate (`in_context.gated_screen`, kept in the results store and shared
    with the page)."""
    gate, found = in_context.gated_screen(model, sizes=in_context.Sizes(), seed=seed)
    if found is None:
        return {"in_context": _empty(model, "in_context", gate.summary())}
    return {"in_context": _gated("in_context", found.scores, found.passing, gate)}


def _verdict(passed: bool, text: str) -> str:
    return f"{'PASS' if passed else 'FAIL'}: {text}"


def _steered(check: controls.CausalCheck) -> str:
    return (f"{check.metric_name} {check.top} with the top {len(check.heads)}; p = {check.p_value:.3f} against "
            f"{check.n_draws} draws of {check.null}")


def _probe_family(model: TransformerBridge, family: str, study, checks: Sequence[tuple[str, object]]
                  ) -> TaskScreen:
    """A probe family from its page's study: every head's cross-validated probe accuracy; the heads listed are
    the steered top heads that pass the probe screen, and only when every causal check in `checks` (name,
    `Steering` or `Injection` or None when the page did not run it) passes, as the family's rule asks."""
    if study.screen is None:
        return _empty(model, family, study.gate.summary())
    texts, passed = [], True
    for name, check in checks:
        if check is None:
            texts.append(f"{name}: not run")
            passed = False
            continue
        texts.append(f"{name}: same heads, random directions: {_steered(check.same_heads)}; random heads: "
                     f"p = {check.other_heads.p_value:.3f}")
        passed = passed and check.passed
    picked = [head for head in study.found if head in set(study.screen.passing)]
    return TaskScreen(family, study.screen.accuracy, picked if passed else [],
                      f"{study.gate.summary()}; screen: {study.screen.summary()}",
                      check=_verdict(passed and bool(picked), "; ".join(texts)))


def truthfulness_screens(model: TransformerBridge, *, seed: int) -> dict[str, TaskScreen]:
    """Truthfulness heads from the truthfulness page's study (`truthfulness.study`, in the results store): the
    probe screen, and the steering of the top heads on held-out facts, which the family's rule requires."""
    study = truthfulness.study(model, seed=seed)
    if study.screen is None and study.gate.passed:
        held_out = f"FAIL (held-out facts): {study.held_out_gate.summary()}"
        return {"truthfulness": _empty(model, "truthfulness", held_out)}
    return {"truthfulness": _probe_family(model, "truthfulness", study, [("steering", study.steering)])}


def accuracy_screens(model: TransformerBridge, *, seed: int) -> dict[str, TaskScreen]:
    """Accuracy heads from the accuracy page's study (`accuracy.study`): the probe screen, the cross-fitted
    steering and the same steering on the held-out question family."""
    study = accuracy.study(model, seed=seed)
    return {"accuracy": _probe_family(model, "accuracy", study, [("steering", study.steering),
                                                                 ("held-out family", study.held_out)])}


def consistency_screens(model: TransformerBridge, *, seed: int) -> dict[str, TaskScreen]:
    """Consistency heads from the consistency page's study (`consistency.study`): the probe screen and the bias
    injected on held-out items (not run when the held-out items hold no inconsistent answer to fix)."""
    study = consistency.study(model, seed=seed)
    return {"consistency": _probe_family(model, "consistency", study, [("injection", study.injection)])}


def vulnerable_screens(model: TransformerBridge, *, seed: int) -> dict[str, TaskScreen]:
    """Vulnerable heads from the vulnerable page's study (`vulnerable.study`): each head's mean drop of its
    direct logit attribution over the flips; the top four are listed when both of the family's checks beat
    every draw (split-half concentration, and repair by the clean END outputs)."""
    study = vulnerable.study(model, seed=seed)
    gate = study.gate.summary().replace("\n", "; ")  # starts with the acronym gate's PASS / FAIL
    if study.flips is None or study.concentration is None or study.repair is None:
        return {"vulnerable": _empty(model, "vulnerable", gate)}
    spread, fixed = study.concentration, study.repair.check
    passed = spread.as_strong == 0 and fixed.as_strong == 0
    check = _verdict(passed, f"concentration p = {spread.p_value:.3f}, repair p = {fixed.p_value:.3f} "
                             f"({spread.as_strong} and {fixed.as_strong} of {len(spread.draws)} and {fixed.n_draws} "
                             "draws as strong)")
    return {"vulnerable": TaskScreen("vulnerable", study.flips.score, study.found if passed else [], gate,
                                     check=check)}


# The task families' screens, in registry order within each task; each runner shares its task's passes.
TASK_SCREENS: tuple[Callable[..., dict[str, TaskScreen]], ...] = (
    conflict_screens, negative_screens, mcq_screens, positional_screens, subword_screens, syntactic_screens,
    rare_words_screens, retrieval_screens, sentiment_screens, semantic_induction_screens, fact_source_screens,
    mover_screens, ioi_screens, successor_screens, summary_reader_screens, function_vector_screens,
    in_context_screens, truthfulness_screens, accuracy_screens, consistency_screens, vulnerable_screens)
TASK_FAMILIES = ("memory", "context", "constant", "single_letter", "negative", "positional", "subword_merge",
                 "syntactic", "rare_words", "retrieval",
                 "sentiment_summarizer", "semantic_induction", "subject", "relation", "mover", "name_mover",
                 "negative_name_mover", "content_gatherer", "successor", "summary_reader", "function_vector",
                 "in_context", "truthfulness", "accuracy", "consistency", "vulnerable", "correct_letter",
                 "amplification")
# Families defined by the form of the text, whatever it says: where a head attends by position, to a repeated
# token, within a word, along a grammatical arc, or to what followed an earlier copy. The rest are defined by a
# task's content or answer.
FORM_FAMILIES = ("previous_token", "duplicate", "induction", "positional", "subword_merge", "syntactic")
# Pairs that one score splits by sign: a head cannot be in both, so an overlap test must not count them.
EXCLUSIVE_PAIRS = frozenset({frozenset({"memory", "context"}), frozenset({"name_mover", "negative_name_mover"})})


@dataclass(frozen=True)
class Atlas:
    model: str
    n_layers: int
    n_heads: int
    seed: int
    sizes: Sizes
    screens: dict[str, Screen | TaskScreen]  # registry key -> its screen, pattern families first
    skipped: dict[str, str] = field(default_factory=dict)  # registry key -> why it was not screened
    seconds: float = 0.0
    peak_memory_mb: float = 0.0

    def passing(self, key: str) -> list[heads.Head]:
        return self.screens[key].passing

    @property
    def roles(self) -> dict[heads.Head, list[str]]:
        """Every passing head with all the families it passes, in the screens' order."""
        roles: dict[heads.Head, list[str]] = {}
        for key, screen in self.screens.items():
            for head in screen.passing:
                roles.setdefault(head, []).append(key)
        return roles

    def to_json(self) -> dict[str, object]:
        families = {}
        for key, screen in self.screens.items():
            family = registry.by_key(key)
            pattern = isinstance(screen, Screen)
            families[key] = {"name": family.name, "stage": family.stage, "kind": "pattern" if pattern else "task",
                             "score": family.score, "rule": family.rule, "units": UNITS[key],
                             "scores": screen.scores.tolist(),
                             "control": screen.null.tolist() if pattern else None,
                             "threshold": screen.threshold if pattern else None,
                             "ratio": screen.ratio if pattern else None,
                             "gate": None if pattern else screen.gate,
                             "check": None if pattern else screen.check,
                             "passing": [heads.label(head) for head in screen.passing]}
        return {"schema": "attention-heads-atlas", "version": SCHEMA_VERSION, "model": self.model,
                "n_layers": self.n_layers, "n_heads": self.n_heads, "seed": self.seed,
                "sizes": {"prompts": self.sizes.prompts, "half_len": self.sizes.half_len},
                "families": families, "skipped": dict(self.skipped),
                "heads": {heads.label(head): keys for head, keys in sorted(self.roles.items())},
                "seconds": round(self.seconds, 2), "peak_memory_mb": round(self.peak_memory_mb, 1)}

    @classmethod
    def from_json(cls, data: dict) -> Atlas:
        """The atlas a `to_json` dict describes (what the results store and the JSON file keep)."""
        if data.get("schema") != "attention-heads-atlas" or data.get("version") != SCHEMA_VERSION:
            raise ValueError(f"not an atlas of schema version {SCHEMA_VERSION}: "
                             f"{data.get('schema')!r} version {data.get('version')!r}; run the atlas again")
        screens: dict[str, Screen | TaskScreen] = {}
        for key, row in data["families"].items():
            values = torch.tensor(row["scores"])
            if row["kind"] == "pattern":
                screens[key] = Screen(family=key, scores=values, null=torch.tensor(row["control"]),
                                      threshold=row["threshold"], baseline=float("nan"), ratio=row["ratio"])
            else:
                screens[key] = TaskScreen(family=key, scores=values, gate=row["gate"], check=row["check"],
                                          passing=[heads.parse(label) for label in row["passing"]])
        return cls(model=data["model"], n_layers=data["n_layers"], n_heads=data["n_heads"], seed=data["seed"],
                   sizes=Sizes(**data["sizes"]), screens=screens, skipped=dict(data["skipped"]),
                   seconds=data["seconds"], peak_memory_mb=data["peak_memory_mb"])


def pattern_screens(source: Probe, *, progress: bool = False) -> dict[str, Screen]:
    """The attention-pattern families' screens, from two forward passes."""
    steps = [("repeated", source.repeated), ("control", source.control)]
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc=f"atlas {source.name}: patterns", unit="batch")
    patterns = {name: source.patterns(tokens).float().cpu() for name, tokens in steps}
    screens = {}
    for key, (batch, targets, null_batch, null_targets) in pattern_targets(source).items():
        threshold, ratio = PATTERN_RULES[key]
        screens[key] = Screen(family=key, scores=scores.attention_on_targets(patterns[batch], targets),
                              null=scores.attention_on_targets(patterns[null_batch], null_targets),
                              threshold=threshold, baseline=scores.uniform_baseline(targets), ratio=ratio)
    return screens


def task_screens(model: TransformerBridge, *, seed: int, progress: bool = False) -> dict[str, TaskScreen]:
    """Every task family's screen, one task at a time (each task's passes shared by its families)."""
    runners = TASK_SCREENS
    if progress:
        from tqdm import tqdm

        runners = tqdm(runners, desc=f"atlas {model.cfg.model_name}: tasks", unit="task")
    found: dict[str, TaskScreen] = {}
    for runner in runners:
        found |= runner(model, seed=seed)
    return {key: found[key] for key in TASK_FAMILIES}


def _compute(model, *, sizes: Sizes, seed: int, progress: bool) -> Atlas:
    start = time.perf_counter()
    source = probe(model, sizes=sizes, seed=seed)
    screens: dict[str, Screen | TaskScreen] = dict(pattern_screens(source, progress=progress))
    skipped = dict(NOT_SCREENED)
    if isinstance(model, toy.AttentionOnlyTransformer):
        skipped |= {key: "a task family: it needs a real model's vocabulary, which a toy does not have"
                    for key in TASK_FAMILIES}
    else:
        screens |= task_screens(model, seed=seed, progress=progress)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return Atlas(model=source.name, n_layers=source.n_layers, n_heads=source.n_heads, seed=seed, sizes=sizes,
                 screens=screens, skipped=skipped, seconds=time.perf_counter() - start, peak_memory_mb=peak)


def run(model, *, sizes: Sizes = Sizes(), seed: int = 0, progress: bool = False, reuse: bool = True) -> Atlas:
    """Screen every family the atlas knows on every head of `model`.

    A book model's atlas is kept in the results store (`reuse=False` recomputes it); a toy's is always
    computed (two forward passes), since a toy has no name that fixes its weights."""
    if isinstance(model, toy.AttentionOnlyTransformer) or not reuse:
        return _compute(model, sizes=sizes, seed=seed, progress=progress)
    from helpers import models

    name = models.spec_of(model).name
    data = store.cached("atlas", lambda: _compute(model, sizes=sizes, seed=seed, progress=progress).to_json(),
                        model=name, weights=store.weights_digest(model), sizes=sizes, seed=seed,
                        schema=SCHEMA_VERSION)
    return Atlas.from_json(data)


# One colour per family on every atlas figure (colour-blind-safe pairs kept apart).
FAMILY_COLORS = {"previous_token": "#8172b3", "duplicate": "#937860", "induction": "#da8bc3",
                 "memory": "#4c72b0", "context": "#dd8452", "negative": "#8c8c8c", "mover": "#64b5cd",
                 "name_mover": "#55a868", "negative_name_mover": "#c44e52", "constant": "#ccb974",
                 "single_letter": "#a6761d", "content_gatherer": "#1b9e77", "correct_letter": "#e7298a",
                 "amplification": "#666666", "rare_words": "#b3de69", "retrieval": "#fb8072",
                 "sentiment_summarizer": "#fdb462", "semantic_induction": "#80b1d3", "subject": "#bc80bd",
                 "relation": "#8dd3c7", "positional": "#000000", "subword_merge": "#b15928",
                 "syntactic": "#ffed6f", "successor": "#6a3d9a", "summary_reader": "#e31a1c",
                 "function_vector": "#1f78b4", "in_context": "#33a02c", "truthfulness": "#a6cee3",
                 "accuracy": "#b2df8a", "consistency": "#fb9a99", "vulnerable": "#ff7f00"}


def relative_depth(head: heads.Head, n_layers: int) -> float:
    """Where a head's layer sits in the model, 0 (first layer) to 1 (last): (layer + 0.5) / n_layers."""
    return (head[0] + 0.5) / n_layers


def transferability(atlases: Sequence[Atlas]):
    """Per family and model: how many heads the screen picks, their mean relative depth, the strongest
    score (in the family's units), or why there are none. A DataFrame, families in registry order."""
    import pandas as pd

    rows = []
    for family in registry.FAMILIES:
        if not any(family.key in atlas.screens or family.key in atlas.skipped for atlas in atlases):
            continue
        row = {"family": family.name, "stage": family.stage}
        for atlas in atlases:
            screen = atlas.screens.get(family.key)
            if screen is None:
                row[(atlas.model, "heads")] = "not screened"
                row[(atlas.model, "depth")] = row[(atlas.model, "strongest")] = ""
            elif not screen.passing:
                task = isinstance(screen, TaskScreen)
                failed = task and screen.gate.startswith("FAIL")
                check_failed = task and (screen.check or "").startswith("FAIL")
                row[(atlas.model, "heads")] = ("0 (gate fails)" if failed else "0 (causal check fails)"
                                               if check_failed else "0")
                row[(atlas.model, "depth")] = row[(atlas.model, "strongest")] = ""
            else:
                depths = [relative_depth(head, atlas.n_layers) for head in screen.passing]
                row[(atlas.model, "heads")] = str(len(screen.passing))
                row[(atlas.model, "depth")] = f"{sum(depths) / len(depths):.2f}"
                row[(atlas.model, "strongest")] = f"{screen.scores[screen.passing[0]]:.2f} {UNITS[family.key]}"
        rows.append(row)
    table = pd.DataFrame(rows).set_index(["stage", "family"])
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    return table


def head_scores(atlas: Atlas, shown: Sequence[heads.Head]):
    """Each shown head's score in every family that picks some head of this model (a DataFrame), with the
    families it passes."""
    import pandas as pd

    roles = atlas.roles
    rows = []
    for head in shown:
        row = {"head": heads.label(head)}
        row |= {registry.by_key(key).name: round(float(screen.scores[head]), 2)
                for key, screen in atlas.screens.items() if screen.passing}
        row["passes"] = ", ".join(registry.by_key(key).name for key in roles.get(head, [])) or "none"
        rows.append(row)
    return pd.DataFrame(rows).set_index("head")


def figure(atlases: Sequence[Atlas]):
    """Each model's layers x heads map, one stripe per family a head passes, side by side, one legend."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from helpers import plots

    tallest = max(atlas.n_layers for atlas in atlases)
    fig, axes = plt.subplots(1, len(atlases), figsize=(plots.COLUMN_INCHES, 0.2 * tallest + 2.8),
                             layout="constrained", squeeze=False,
                             gridspec_kw={"width_ratios": [atlas.n_heads + 3 for atlas in atlases]})
    shown: list[str] = []  # families with a head in some model, in screen order
    for ax, atlas in zip(axes[0], atlases):
        plots.family_map(atlas.roles, atlas.n_layers, atlas.n_heads, colors=FAMILY_COLORS, title=atlas.model, ax=ax)
        shown += [key for key, screen in atlas.screens.items() if screen.passing and key not in shown]
    fig.legend(handles=[Patch(color=FAMILY_COLORS[key], label=registry.by_key(key).name) for key in shown],
               loc="outside lower center", ncols=3)
    fig.suptitle("Heads each family's screen picks (a head in several families is striped)")
    return fig


def overlap_tests(atlas: Atlas, *, n_draws: int = 2000, seed: int = 0, leave_out: Collection[str] = ()
                  ) -> dict[str, overlap.OverlapTest]:
    """The shared-heads permutation test of one atlas against both nulls (all heads; same layers).
    Families whose screen picks no head take no part, nor do the families in `leave_out`; memory/context and
    name mover/negative name mover, split by one score's sign, are not counted as pairs (`EXCLUSIVE_PAIRS`)."""
    unknown = set(leave_out) - set(atlas.screens)
    if unknown:
        raise KeyError(f"leave_out names families this atlas did not screen: {sorted(unknown)}")
    claimed = {key: screen.passing for key, screen in atlas.screens.items()
               if screen.passing and key not in leave_out}
    return {null: overlap.permutation_test(claimed, atlas.n_layers, atlas.n_heads, excluded=EXCLUSIVE_PAIRS,
                                           n_draws=n_draws, within_layers=null == "same layers", seed=seed)
            for null in ("all heads", "same layers")}


def pair_sharing(atlas: Atlas):
    """Per pair of families that share a head: the heads both pick, and how many two random families of their
    sizes would share, drawn from all heads and from the same layers (expected values, exact). A DataFrame,
    largest excess over the same-layers expectation first: the pairs that share more than depth explains."""
    import pandas as pd

    claimed = {key: screen.passing for key, screen in atlas.screens.items() if screen.passing}
    rows = []
    for a, b in overlap.counted_pairs(list(claimed), EXCLUSIVE_PAIRS):
        shared = sorted(set(claimed[a]) & set(claimed[b]))
        if not shared:
            continue
        per_layer_a = Counter(layer for layer, _ in claimed[a])
        per_layer_b = Counter(layer for layer, _ in claimed[b])
        same_layers = sum(per_layer_a[layer] * per_layer_b[layer] for layer in per_layer_a) / atlas.n_heads
        all_heads = len(claimed[a]) * len(claimed[b]) / (atlas.n_layers * atlas.n_heads)
        rows.append({"families": f"{registry.by_key(a).name} & {registry.by_key(b).name}",
                     "shared": len(shared), "expected, same layers": round(same_layers, 1),
                     "expected, all heads": round(all_heads, 1), "heads": heads.labels(shared)})
    columns = ["families", "shared", "expected, same layers", "expected, all heads", "heads"]
    table = pd.DataFrame(rows, columns=columns)
    table["excess"] = table["shared"] - table["expected, same layers"]
    return table.sort_values(["excess", "shared"], ascending=False, kind="stable").set_index("families")


def overlap_figure(tests: dict[str, dict[str, overlap.OverlapTest]]):
    """Per model, the number of shared memberships under each null (step histograms) and the observed one."""
    import matplotlib.pyplot as plt
    import numpy as np

    from helpers import plots

    fig, axes = plt.subplots(1, len(tests), figsize=(plots.COLUMN_INCHES, 3.2), layout="constrained",
                             squeeze=False)
    styles = {"all heads": "#8c8c8c", "same layers": "#4c72b0"}
    for ax, (model, by_null) in zip(axes[0], tests.items()):
        top = max(max(int(test.null.max()), test.observed) for test in by_null.values())
        edges = np.arange(-0.5, top + 1.5)
        for null, test in by_null.items():
            ax.hist(test.null, bins=edges, histtype="step", linewidth=2, color=styles[null],
                    label=f"{null} (p = {test.p_value:.3f})")
        observed = next(iter(by_null.values())).observed
        ax.axvline(observed, color=plots.MARK_COLOR, linestyle="--", label=f"observed: {observed}")
        ax.set_xlabel("shared memberships")
        ax.set_ylabel(f"draws (of {next(iter(by_null.values())).n_draws})")
        ax.set_ylim(0, ax.get_ylim()[1] * 1.6)  # headroom for the legend above the bars
        ax.set_title(plots.fit_to_axes(ax, model, plots.TITLE_PT))
        ax.legend(loc="upper right")
    fig.suptitle("Heads shared between families, against redrawn families")
    return fig


def write(atlas: Atlas, out: Path) -> list[Path]:
    """`out/atlas_<model>.json` and `out/atlas_<model>.png`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from helpers import plots

    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"atlas_{atlas.model}"
    stem.with_suffix(".json").write_text(json.dumps(atlas.to_json(), indent=1) + "\n")
    with matplotlib.rc_context(plots.BOOK_STYLE):
        fig = figure([atlas])
        fig.savefig(stem.with_suffix(".png"), dpi=plots.FIGURE_DPI)
        plt.close(fig)
    return [stem.with_suffix(".json"), stem.with_suffix(".png")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.experiments.atlas", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="a book model name or a Hub id (online only)")
    parser.add_argument("--out", type=Path, required=True, help="folder for atlas_<model>.json and .png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompts", type=int, default=Sizes.prompts)
    parser.add_argument("--half-len", type=int, default=Sizes.half_len)
    args = parser.parse_args(argv)
    from helpers import models

    model = models.load_model(args.model)
    atlas = run(model, sizes=Sizes(prompts=args.prompts, half_len=args.half_len), seed=args.seed, progress=True)
    for path in write(atlas, args.out):
        print(path)
    for key, screen in atlas.screens.items():
        print(f"{registry.by_key(key).name}: {heads.labels(screen.passing)}")
    print(f"{atlas.seconds:.1f} s, peak memory {atlas.peak_memory_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
