"""Subword-merge heads: attention from the last piece of a word split into several tokens to its first piece.

Correia et al. (2019) saw heads of sparse-attention translation models that attend within words cut into BPE
pieces; Ferrando & Voita (2024) found heads in Llama 2's information-flow graphs that merge the pieces of a
word. The page `notebooks/subword_merge_heads.ipynb` tests this on the offline models with the steps here,
on windows of prose cut around words of several pieces (`long_word_windows`), split into words by `helpers.words`:

1. ``word_gate``: does the model use a word's earlier pieces? The loss on the last piece of every word of at
   least three pieces, intact against the same windows with the word's first piece replaced (paired per word);
2. ``merge_cases`` / ``merge_scores`` (pure): the pre-registered score. At the last piece q of every word of
   at least three pieces, the attention on the word's first piece (offset d = q - start >= 2), minus the
   attention at the same offset from the last piece of a word to the first piece of an *earlier* word
   (matched per offset). A previous-token head scores 0 (it looks at d = 1), a uniform head about 0;
3. ``screen``: the score of every head, with a bootstrap interval over words and the pass rule;
4. ``merge_ablation``: mean-ablate the passing heads (`ablated_heads`) and sets drawn from all heads; the rise of
   the loss on the pieces that continue a word, on word-initial tokens (the specificity control) and their
   difference;
5. ``held_out``: the score and the ablation again on the Python language reference (another corpus);
6. ``study``: all of it for one model (the comparison model of the page).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from helpers import capture, controls, heads, heldout, interventions, models, readout, stats, tasks, words
from helpers.heads import Head
from helpers.words import Span

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

THRESHOLD = 0.2  # pre-registered: within-word minus offset-matched across-word attention of at least this
MIN_PIECES = 3  # a word must have at least this many pieces to be scored (offset >= 2 from its first piece)
HELD_OUT_FAMILY = "prose from the Python language reference"


@dataclass(frozen=True)
class Sizes:
    """How many windows of how many tokens each step reads (the page's parameters cell sets these)."""

    gate_windows: int = 48  # each cut around another word of MIN_PIECES+ pieces (`long_word_windows`)
    screen_windows: int = 64
    window_len: int = 48  # tokens per window (after BOS, for models that use one)
    ablation_windows: int = 8
    top_k: int = 3  # the causal check ablates the passing heads, at most this many (`ablated_heads`)
    n_random: int = 20
    heldout_windows: int = 64
    heldout_draws: int = 20  # fresh draws from all heads for the held-out causal check; 0 skips it


# --------------------------------------------------------------------------------------------------
# The score: pure functions of attention patterns and word spans.


@dataclass(frozen=True)
class MergeCases:
    """Where the score looks, as ``(batch, query, key)`` index rows.

    Attributes:
        within: the last piece of each word of at least `MIN_PIECES` pieces (query) and the word's first
            piece (key).
        across: the last piece of any word (query) and the first piece of an earlier word (key), kept only
            at offsets (query - key) that some `within` case has; the control, matched per offset.
    """

    within: Int[Tensor, "case 3"]
    across: Int[Tensor, "pair 3"]

    @property
    def within_offsets(self) -> Int[Tensor, "case"]:
        return self.within[:, 1] - self.within[:, 2]

    @property
    def across_offsets(self) -> Int[Tensor, "pair"]:
        return self.across[:, 1] - self.across[:, 2]


def merge_cases(spans: Sequence[Sequence[Span]], *, min_pieces: int = MIN_PIECES) -> MergeCases:
    """The within-word cases and their offset-matched across-word pairs, from each sequence's word spans.

    A within case whose offset no across pair has (a word longer than any gap between two words) is dropped:
    it has no control to be compared with.

    Args:
        spans: per sequence, the ``[start, end)`` spans of its words, in order (`words.word_spans`, usually
            through `words.inner_spans`).
        min_pieces: at least 2, so that the scored offset is at least 1 (the page uses 3: offset >= 2, beyond
            what a previous-token head sees).

    Raises:
        ValueError: if a span is empty or out of order, `min_pieces` < 2, or no word is long enough.
    """
    if min_pieces < 2:
        raise ValueError(f"min_pieces must be at least 2 (a one-piece word has no earlier piece); got {min_pieces}")
    within, across = [], []
    for row, row_spans in enumerate(spans):
        row_spans = [tuple(span) for span in row_spans]
        for (a, b), nxt in zip(row_spans, row_spans[1:] + [None]):
            if not 0 <= a < b or (nxt is not None and nxt[0] < b):
                raise ValueError(f"sequence {row}: spans must be non-empty, [start, end) and in order; got {row_spans}")
        within += [(row, b - 1, a) for a, b in row_spans if b - a >= min_pieces]
        across += [(row, b - 1, earlier[0]) for i, (_, b) in enumerate(row_spans) for earlier in row_spans[:i]]
    if not within:
        raise ValueError(f"no word of at least {min_pieces} pieces in {len(spans)} sequences: use longer or more "
                         "windows of prose")
    within_t, across_t = torch.tensor(within), torch.tensor(across, dtype=torch.long).reshape(-1, 3)
    offsets = set((within_t[:, 1] - within_t[:, 2]).tolist())
    across_t = across_t[torch.tensor([q - k in offsets for _, q, k in across_t.tolist()], dtype=torch.bool)]
    covered = set((across_t[:, 1] - across_t[:, 2]).tolist())
    within_t = within_t[torch.tensor([q - k in covered for _, q, k in within_t.tolist()], dtype=torch.bool)]
    if not len(within_t):
        raise ValueError("no within-word case has an across-word pair at its offset: use longer windows")
    return MergeCases(within=within_t, across=across_t)


@dataclass(frozen=True)
class MergeScores:
    """Each head's within-word attention, its offset-matched across-word control and the difference.

    Attributes:
        within: mean attention from each scored word's last piece to its first piece, ``[layer, head]``.
        across: the across-word mean at each within case's offset, averaged over the within cases (so
            each offset weighs as often as the words have it).
        differences: ``[layer, head, case]`` per within case, its attention minus the across-word mean at
            its offset: the sample the bootstrap interval resamples.
    """

    within: Float[Tensor, "layer head"]
    across: Float[Tensor, "layer head"]
    differences: Float[Tensor, "layer head case"]

    @property
    def score(self) -> Float[Tensor, "layer head"]:
        return self.within - self.across


def gather_attention(patterns: Float[Tensor, "layer batch head query key"],
                     where: Int[Tensor, "n 3"]) -> Float[Tensor, "layer head n"]:
    """Each head's attention at the ``(batch, query, key)`` rows of `where`."""
    b, q, k = where.unbind(-1)
    return patterns.permute(1, 3, 4, 0, 2)[b, q, k].permute(1, 2, 0)  # [n, layer, head] -> [layer, head, n]


def merge_scores(patterns: Float[Tensor, "layer batch head query key"], cases: MergeCases) -> MergeScores:
    """The pre-registered subword-merge score of every head (see `MergeScores`).

    Raises:
        ValueError: if `patterns` is not 5-D or a case lies outside its batch, query or key range, or a key
            lies after its query.
    """
    if patterns.ndim != 5:
        raise ValueError(f"patterns must be [layer, batch, head, query, key]; got shape {tuple(patterns.shape)}")
    batch, seq_len = patterns.shape[1], patterns.shape[3]
    for name, rows in (("within", cases.within), ("across", cases.across)):
        if len(rows) and (rows[:, 0].max() >= batch or rows[:, 1:].max() >= seq_len or rows.min() < 0):
            raise ValueError(f"{name} cases reach ({rows[:, 0].max()}, {rows[:, 1:].max()}) but patterns have "
                             f"batch {batch} and {seq_len} positions; build the cases from the same tokens")
        if len(rows) and (rows[:, 2] > rows[:, 1]).any():
            raise ValueError(f"a {name} case has its key after its query: causal heads cannot attend there")
    within = gather_attention(patterns, cases.within)  # [layer, head, case]
    across = gather_attention(patterns, cases.across)  # [layer, head, pair]
    offsets = cases.across_offsets
    size = int(max(offsets.max(), cases.within_offsets.max())) + 1
    sums = torch.zeros(*across.shape[:2], size).index_add_(2, offsets, across)  # [layer, head, offset]
    counts = torch.zeros(size).index_add_(0, offsets, torch.ones(len(offsets)))
    matched = (sums / counts.clamp(min=1))[:, :, cases.within_offsets]  # [layer, head, case]
    return MergeScores(within=within.mean(-1), across=matched.mean(-1), differences=within - matched)


def head_score(pattern: Float[Tensor, "query key"], spans: Sequence[Span], *,
                      min_pieces: int = MIN_PIECES) -> float:
    """One head's score on one sequence: `merge_scores` for a single ``[query, key]`` pattern."""
    return merge_scores(pattern[None, None, None], merge_cases([spans], min_pieces=min_pieces)).score.item()


# --------------------------------------------------------------------------------------------------
# Reading the model.


def window_spans(model: TransformerBridge, tokens: Int[Tensor, "batch pos"]) -> list[list[Span]]:
    """The whole words of each window (`words.word_spans` without the words cut by the window's edges)."""
    first = tasks.bos_column(model, 1).shape[1]
    return [words.inner_spans(row, first=first, length=tokens.shape[1]) for row in words.word_spans(model, tokens)]


@lru_cache(maxsize=8)
def corpus_words(tokenizer, corpus: str) -> tuple[Int[Tensor, "n"], tuple[Span, ...]]:
    """A prose corpus of `tasks.CORPORA` as one token stream, and the span of each of its words, in order."""
    stream = torch.tensor(tokenizer.encode(tasks.CORPORA[corpus][0](), add_special_tokens=False))
    return stream, tuple(words.word_spans(tokenizer, stream[None])[0])


def long_words(tokenizer, corpus: str) -> tuple[Span, ...]:
    """The spans of the corpus's words of at least `MIN_PIECES` pieces (about 9 per 1000 tokens of docstrings for
    SmolLM2, 5 for Gemma: too rare for random windows, so the page cuts its windows around them)."""
    return tuple(span for span in corpus_words(tokenizer, corpus)[1] if span[1] - span[0] >= MIN_PIECES)


def long_word_windows(model: TransformerBridge, *, windows: int, length: int, seed: int,
                      corpus: str = "docstrings") -> tasks.TaskBatch:
    """`windows` windows of `length` prose tokens (after BOS, for models that use one), each cut around another
    occurrence of a word of at least `MIN_PIECES` pieces, drawn at random without replacement.

    The word's last piece lands at a random position in the window's second half (seeded), so it has context
    before it and other words around it; a window often holds more long words than the one it was cut for.
    Positions: ``word_start`` and ``word_end`` (the chosen word's first and last piece).

    Raises:
        ValueError: if the corpus has fewer such words than `windows`, or `length` cannot hold them.
    """
    if corpus not in tasks.CORPORA:
        raise ValueError(f"unknown corpus {corpus!r}; the book ships {sorted(tasks.CORPORA)}")
    stream, spans = corpus_words(model.tokenizer, corpus)[0], long_words(model.tokenizer, corpus)
    if len(spans) < windows:
        raise ValueError(f"{tasks.CORPORA[corpus][1]} holds {len(spans)} words of {MIN_PIECES}+ pieces for this "
                         f"tokenizer; ask for at most that many windows (got {windows})")
    longest = max(b - a for a, b in spans)
    if length < 2 * longest + 4:
        raise ValueError(f"windows of {length} tokens cannot place a {longest}-piece word in their second half; "
                         f"use length >= {2 * longest + 4}")
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(spans), generator=generator)[:windows].tolist()
    ends = torch.randint(length // 2, length - 1, (windows,), generator=generator).tolist()  # last piece's slot
    bodies, word_start, word_end = [], [], []
    for index, end in zip(chosen, ends):
        a, b = spans[index]
        start = min(max(b - 1 - end, 0), len(stream) - length)  # the window's first token in the stream
        bodies.append(stream[start:start + length])
        word_start.append(a - start)
        word_end.append(b - 1 - start)
    bos = tasks.bos_column(model, windows)
    tokens = torch.cat([bos, torch.stack(bodies)], dim=1)
    shift = bos.shape[1]
    return tasks.TaskBatch(
        name="long_word_windows", tokens=tokens, prompts=tasks.joined_text(model, tokens),
        positions={"word_start": torch.tensor(word_start) + shift, "word_end": torch.tensor(word_end) + shift},
        info={"length": length, "seed": seed, "corpus": tasks.CORPORA[corpus][1], "min_pieces": MIN_PIECES})


@dataclass(frozen=True)
class WordCounts:
    """How a model's tokenizer cuts a whole corpus into words."""

    corpus: str
    tokens: int
    words: int
    long_words: int  # words of at least MIN_PIECES pieces
    distinct: int  # different long words (as token sequences)
    examples: tuple[str, ...]  # the most frequent long words, their pieces joined by "|"

    @property
    def per_thousand(self) -> float:
        """Long words per 1000 tokens."""
        return 1000 * self.long_words / self.tokens

    def summary(self) -> str:
        return (f"{self.corpus}: {self.tokens} tokens, {self.words} words, {self.long_words} of {MIN_PIECES}+ pieces "
                f"({self.per_thousand:.1f} per 1000 tokens; {self.distinct} different), e.g. "
                + ", ".join(self.examples))


def word_counts(model: TransformerBridge, corpus: str = "docstrings", *, examples: int = 4) -> WordCounts:
    """Words and long words in a whole corpus, for this model's tokenizer."""
    stream, spans = corpus_words(model.tokenizer, corpus)
    long = Counter(tuple(stream[a:b].tolist()) for a, b in long_words(model.tokenizer, corpus))
    shown = tuple("|".join(words.token_texts(model, list(ids))).strip() for ids, _ in long.most_common(examples))
    return WordCounts(corpus=tasks.CORPORA[corpus][1], tokens=len(stream), words=len(spans),
                      long_words=sum(long.values()), distinct=len(long), examples=shown)


@torch.no_grad()
def losses_at(model: TransformerBridge, tokens: Int[Tensor, "batch pos"], where: Int[Tensor, "n 2"], *,
              fwd_hooks: list | tuple = (), chunk: int = 64) -> Float[Tensor, "n"]:
    """The loss of predicting ``tokens[b, p + 1]`` at each ``(b, p)`` of `where`, unembedding only those
    positions (Gemma's 262k-column unembedding of every position would cost more than the model)."""
    final = capture.final_at(model, tokens, position=slice(None), fwd_hooks=fwd_hooks)  # [batch, pos, d_model]
    b, p = where.unbind(-1)
    out = []
    for rows in torch.arange(len(where)).split(chunk):
        logits = readout.logits(model, final[b[rows], p[rows]])  # [rows, vocab]
        out.append(torch.nn.functional.cross_entropy(logits, tokens[b[rows], p[rows] + 1], reduction="none"))
    return torch.cat(out)


def replacement_starts(model: TransformerBridge) -> Int[Tensor, "n"]:
    """Ordinary tokens that begin a word with a space (" house"): what `word_gate` puts in place of a first piece."""
    pool = tasks.ordinary_token_ids(model)
    texts = words.token_texts(model, pool.tolist())
    return pool[torch.tensor([text.startswith(" ") for text in texts])]


def word_gate(model: TransformerBridge, *, windows: int, length: int, seed: int,
              min_effect: float = 1.0) -> stats.GateResult:
    """Does the model read a word's earlier pieces? Loss on the last piece of every whole word of at least
    `MIN_PIECES` pieces, intact against the same window with that word's first piece replaced by another
    word-initial token (seeded; the same replacement for every model run). Paired per word; passes when
    p < 0.01 and the whole interval of (replaced - intact) lies above `min_effect` nats. A model that predicted
    the last piece from the pieces next to it alone would fail."""
    batch = long_word_windows(model, windows=windows, length=length, seed=seed)
    long = [(row, a, b) for row, spans in enumerate(window_spans(model, batch.tokens))
            for a, b in spans if b - a >= MIN_PIECES]
    if len(long) < 2:
        raise ValueError(f"only {len(long)} words of {MIN_PIECES}+ pieces in {windows} windows; use more windows")
    rows, starts, ends = torch.tensor(long).unbind(-1)
    pool = replacement_starts(model)
    generator = torch.Generator().manual_seed(seed)
    picks = pool[torch.randint(len(pool), (len(long),), generator=generator)]
    picks = torch.where(picks == batch.tokens[rows, starts], pool[0], picks)  # never the piece it replaces
    replaced = batch.tokens.clone()
    replaced[rows, starts] = picks
    where = torch.stack([rows, ends - 2], dim=-1)  # the position that predicts the last piece
    intact, corrupted = losses_at(model, batch.tokens, where), losses_at(model, replaced, where)
    return stats.behaviour_gate(intact, corrupted, paired=True, higher_is_better=False, min_effect=min_effect,
                                seed=seed, name="reading earlier pieces of a word",
                                metric_name="loss on a long word's last piece", null_name="first piece replaced")


@dataclass(frozen=True)
class MergeScreen:
    """The subword-merge score of every head, with the pass rule applied as the page states it.

    A head *passes* when its score (within-word minus offset-matched across-word attention) is at least
    `threshold` and the lower end of its bootstrap 95 % interval, over the scored words, is above 0.
    """

    scores: Float[Tensor, "layer head"]
    within: Float[Tensor, "layer head"]
    across: Float[Tensor, "layer head"]
    lower: Float[Tensor, "layer head"]
    upper: Float[Tensor, "layer head"]
    threshold: float
    n_words: int  # within-word cases scored
    n_pairs: int  # across-word pairs behind the control
    family: str = "subword merge"

    @property
    def passing(self) -> list[Head]:
        """Heads that pass the rule, best first."""
        return heads.top(self.scores, where=(self.scores >= self.threshold) & (self.lower > 0))

    def top(self, k: int) -> list[Head]:
        return heads.top(self.scores, k)

    def summary(self) -> str:
        best = self.top(1)[0]
        return (f"{self.family}: {len(self.passing)} of {self.scores.numel()} heads score >= {self.threshold} with a "
                f"95 % interval above 0 ({self.n_words} words, {self.n_pairs} across-word pairs); best "
                f"{heads.label(best)} = {self.scores[best]:.2f} [{self.lower[best]:.2f}, {self.upper[best]:.2f}] "
                f"(within {self.within[best]:.2f}, across {self.across[best]:.2f})")


def screen_from_patterns(patterns: Float[Tensor, "layer batch head query key"], spans: Sequence[Sequence[Span]], *,
                         threshold: float = THRESHOLD, seed: int = 0) -> MergeScreen:
    """`merge_scores` on every head, with a bootstrap interval of each head's mean difference over the within
    cases (each case paired with the across-word mean at its own offset; 2000 resamples, seeded)."""
    cases = merge_cases(spans)
    merged = merge_scores(patterns, cases)
    n_layers, n_heads = merged.score.shape
    lower, upper = torch.zeros(n_layers, n_heads), torch.zeros(n_layers, n_heads)
    for layer, head in heads.every(n_layers, n_heads):
        estimate = stats.bootstrap_ci(merged.differences[layer, head], seed=seed)
        lower[layer, head], upper[layer, head] = estimate.lower, estimate.upper
    return MergeScreen(scores=merged.score, within=merged.within, across=merged.across, lower=lower, upper=upper,
                       threshold=threshold, n_words=len(cases.within), n_pairs=len(cases.across))


def screen(model: TransformerBridge, *, windows: int, length: int, seed: int, corpus: str = "docstrings",
           threshold: float = THRESHOLD) -> MergeScreen:
    """The subword-merge screen on `windows` prose windows of `corpus` cut around long words (`long_word_windows`)."""
    batch = long_word_windows(model, windows=windows, length=length, seed=seed, corpus=corpus)
    patterns = capture.capture_patterns(model, batch.tokens)
    return screen_from_patterns(patterns, window_spans(model, batch.tokens), threshold=threshold, seed=seed)


# --------------------------------------------------------------------------------------------------
# The causal check: what the loss on continuation pieces loses without the heads.


def prediction_sites(spans: Sequence[Sequence[Span]]) -> tuple[Int[Tensor, "n 2"], Int[Tensor, "m 2"]]:
    """``(continuation, initial)`` ``(batch, position)`` rows of the positions that predict, respectively, a
    piece that continues a word (the 2nd, 3rd, ... piece) and a word's first piece."""
    continuation = [(row, p - 1) for row, row_spans in enumerate(spans) for a, b in row_spans for p in range(a + 1, b)]
    initial = [(row, a - 1) for row, row_spans in enumerate(spans) for a, _ in row_spans if a >= 1]
    if not continuation or not initial:
        raise ValueError(f"the windows hold {len(continuation)} continuation pieces and {len(initial)} word starts "
                         "after the first position; use longer windows of prose")
    return torch.tensor(continuation), torch.tensor(initial)


def per_window(values: Float[Tensor, "n"], rows: Int[Tensor, "n"], batch: int) -> Float[Tensor, "batch"]:
    """Mean of `values` per window (`rows` names each value's window); every window must have some."""
    counts = torch.zeros(batch).index_add_(0, rows, torch.ones(len(rows)))
    if (counts == 0).any():
        raise ValueError(f"windows {(counts == 0).nonzero().flatten().tolist()} have nothing to measure")
    return torch.zeros(batch).index_add_(0, rows, values) / counts


@dataclass(frozen=True)
class MergeAblation:
    """One mean ablation of the found heads and of each drawn set, read at two kinds of position.

    Attributes:
        continuation: change of the loss on pieces that continue a word (per window).
        initial: the same ablations' change of the loss on word-initial tokens (the specificity control).
        specific: the difference in differences, (continuation - initial) change per window.
    """

    continuation: controls.CausalCheck
    initial: controls.CausalCheck
    specific: controls.CausalCheck

    def summary(self) -> str:
        return (f"continuation pieces: {self.continuation.summary()}\nword-initial tokens: {self.initial.summary()}\n"
                f"difference in differences: {self.specific.summary()}")


def merge_ablation(model: TransformerBridge, found: Sequence[Head], *, windows: int, length: int, n_random: int,
                   seed: int, corpus: str = "docstrings") -> MergeAblation:
    """Mean-ablate `found`, and `n_random` sets of as many heads drawn from all heads, on prose windows.

    Means come from other windows of the same corpus (seed + 1). Each window's metric is its mean loss on the
    continuation pieces of its whole words, and on as many of its word-initial tokens, drawn at random
    (seeded): equal counts keep the two measures equally noisy and halve the unembedding's cost.
    """
    found = [tuple(head) for head in found]
    if not found:
        raise ValueError("found is empty: pass the heads to ablate, e.g. screen.top(3)")
    batch = long_word_windows(model, windows=windows, length=length, seed=seed, corpus=corpus)
    reference = tasks.natural_text(model, batch=windows, length=length, seed=seed + 1, corpus=corpus)
    continuation, initial = prediction_sites(window_spans(model, batch.tokens))
    generator = torch.Generator().manual_seed(seed)
    initial = initial[torch.randperm(len(initial), generator=generator)[:len(continuation)]]
    where = torch.cat([continuation, initial])
    means = capture.mean_head_outputs(model, reference.tokens)
    draws = controls.uniform_sets(model.cfg.n_layers, model.cfg.n_heads, len(found), n_random, seed=seed)
    values = {"continuation": [], "initial": []}  # per set: [window]
    for head_set in [[], found, *draws]:
        hooks = interventions.ablation_hooks(model, head_set, means=means) if head_set else []
        losses = losses_at(model, batch.tokens, where, fwd_hooks=hooks)
        values["continuation"].append(per_window(losses[:len(continuation)], continuation[:, 0], windows))
        values["initial"].append(per_window(losses[len(continuation):], initial[:, 0], windows))
    rows = {name: torch.stack(sets) for name, sets in values.items()}  # [set, window]
    null = f"{len(found)} heads drawn from all {model.cfg.n_layers * model.cfg.n_heads}"

    def check(table: Tensor, metric_name: str) -> controls.CausalCheck:
        return controls.check_from_values(table, found, metric_name=metric_name, mode="mean-ablated", null=null,
                                          seed=seed)

    return MergeAblation(continuation=check(rows["continuation"], "loss on continuation pieces"),
                         initial=check(rows["initial"], "loss on word-initial tokens"),
                         specific=check(rows["continuation"] - rows["initial"],
                                        "loss, continuation minus word-initial"))


# --------------------------------------------------------------------------------------------------
# Held-out corpus and the study.


def held_out(model: TransformerBridge, found: Sequence[Head], *, sizes: Sizes, seed: int
             ) -> tuple[heldout.HeldOut, MergeScreen, MergeAblation | None]:
    """The screen and the ablation of `found` again on the Python language reference (the screen read
    standard-library docstrings), with fresh draws (another seed); no ablation when ``heldout_draws`` is 0."""
    found = [tuple(head) for head in found]
    held_screen = screen(model, windows=sizes.heldout_windows, length=sizes.window_len, seed=seed, corpus="reference")
    ablation = (merge_ablation(model, found, windows=sizes.ablation_windows, length=sizes.window_len,
                               n_random=sizes.heldout_draws, seed=seed + 1, corpus="reference")
                if sizes.heldout_draws > 0 else None)
    held = heldout.HeldOut(HELD_OUT_FAMILY, found=tuple(found), screen=held_screen.scores,
                           check=ablation.continuation if ablation else None)
    return held, held_screen, ablation


def ablated_heads(screen: MergeScreen, k: int) -> list[Head]:
    """The heads the causal check ablates: the passing heads, at most `k`, best first; the best head alone when
    none passes (so a page without the family still measures what its strongest candidate does)."""
    return screen.passing[:k] or screen.top(1)


@dataclass(frozen=True)
class Study:
    """The subword-merge family on one model: word counts, gate, screen, causal check, held-out corpus."""

    model: str
    counts: WordCounts
    gate: stats.GateResult
    screen: MergeScreen
    ablation: MergeAblation | None  # None when the gate failed: no head hunting without the behaviour
    held_out: heldout.HeldOut | None = None
    held_out_screen: MergeScreen | None = None
    held_out_ablation: MergeAblation | None = None

    def row(self) -> dict[str, object]:
        """One row of a findings table."""
        passing, best = self.screen.passing, self.screen.top(1)[0]
        row = {
            "model": self.model,
            f"words of {MIN_PIECES}+ pieces per 1000 tokens": round(self.counts.per_thousand, 1),
            "behaviour gate (loss change)": f"{'pass' if self.gate.passed else 'fail'}: {self.gate.difference}",
            "heads passing (score)": heads.labels(passing[:5], self.screen.scores, signed=False)
            + (f" +{len(passing) - 5} more" if len(passing) > 5 else ""),
            "best head: within / across": f"{heads.label(best)}: {self.screen.within[best]:.2f} / "
                                          f"{self.screen.across[best]:.2f}",
        }
        if self.ablation is None:
            return row | {"ablation": "not run (gate failed)"}
        row |= {"ablation: continuation loss": str(self.ablation.continuation.top),
                "random heads (from all heads)": self.ablation.continuation.draws_summary(),
                "difference in differences (p)": f"{self.ablation.specific.top} "
                                                  f"(p = {self.ablation.specific.p_value:.3f})"}
        return row | (self.held_out.row() if self.held_out is not None else {})


def study(model: TransformerBridge, *, sizes: Sizes = Sizes(), seed: int = 0) -> Study:
    """Word counts, gate, screen, ablation of the found heads and the held-out corpus, as the page runs them.

    Seeds: the gate's windows `seed`, the screen's `seed + 10`, the ablation's `seed + 20` (its means and
    draws `seed + 21` and `seed + 20`), the held-out screen's `seed + 40` and its ablation's `seed + 41`.
    """
    counts = word_counts(model)
    gate = word_gate(model, windows=sizes.gate_windows, length=sizes.window_len, seed=seed)
    found = screen(model, windows=sizes.screen_windows, length=sizes.window_len, seed=seed + 10)
    name = models.spec_of(model).name
    if not gate.passed:
        return Study(model=name, counts=counts, gate=gate, screen=found, ablation=None)
    ablated = ablated_heads(found, sizes.top_k)
    ablation = merge_ablation(model, ablated, windows=sizes.ablation_windows, length=sizes.window_len,
                              n_random=sizes.n_random, seed=seed + 20)
    held, held_screen, held_ablation = held_out(model, ablated, sizes=sizes, seed=seed + 40)
    return Study(model=name, counts=counts, gate=gate, screen=found, ablation=ablation, held_out=held,
                 held_out_screen=held_screen, held_out_ablation=held_ablation)
