"""Rare-words heads: heads whose strongest attention lands on the least frequent token of the sentence (Voita et
al. 2019, in a translation encoder), looked for in causal decoders.

The page's steps, in order, each one function here:

- `sentences`: short natural sentences, each with exactly one rare word (" ziggurat", " gazpacho"), and a matched
  control with a common word of the same role in the same slot (" tower", " soup"). A sentence is kept only when the
  rare word holds its least frequent token (`helpers.frequency`: counts in the docstrings, ties by id).
- `word_gate`: does the model carry the rare word forward? The sentence is followed by " The" and the word again;
  the loss on the second mention must fall at least 1 nat below the first mention's (paired).
- `screen`: Voita's metric per head, `argmax_hits`: the share of queries after the word whose strongest attention
  (position 0 left out) lands on the rare word's least frequent piece, against chance and against the same
  head's share on the same slot of the control sentences (the common word there). `RULE` is fixed in advance.
- `word_ablation`: mean-ablate the top heads (by the gap to the control) and sets drawn from all heads; the loss
  on the rare word's second mention, on the control word's, and the difference.
- `held_out`: windows of the Python language reference; target = the least frequent earlier token by the
  docstring counts; baselines = chance and the same positions taken from another window.

`study(model, *, sizes, seed)` runs them all, as the page does, for the comparison model.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from helpers import capture, controls, frequency, heads, heldout, interventions, models, readout, stats, store, tasks
from helpers.heads import Head

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

# Pre-registered before any head was scored: a head is a rare-words head when
#   (1) its share on the rare token is at least RATIO x chance, with the 95 % interval of (share - chance) above 0,
#   (2) and it beats its own share on the same slot of the control sentences by at least MIN_GAP, with the 95 %
#       interval of that paired difference above 0 (intervals: bootstrap over sentences).
RATIO = 3.0
MIN_GAP = 0.1
LEVEL = 0.95
RULE = (f"share on the rare token >= {RATIO:g} x chance, interval of (share - chance) above 0; and share minus the "
        f"same slot's share in the control sentences >= {MIN_GAP:g}, interval of that paired difference above 0")
FIRST_KEY = 1  # position 0 is never a target nor an argmax: BOS (Gemma) or SmolLM2's first token, an attention sink
HELDOUT_FIRST_QUERY = 8  # held-out queries from here on: earlier ones have few earlier tokens to choose from
HELD_OUT_FAMILY = "windows of the Python language reference (pydoc topics)"

# Sentence frames by role, and (rare word, common word) pairs of that role. The rare words were chosen so that their
# rarest piece is rarer than every token of the frames in both tokenizers; `sentences` checks it per sentence.
ROLES: dict[str, tuple[tuple[str, ...], tuple[tuple[str, str], ...]]] = {
    "building": (("We saw the old {} near the river.", "From the road we could see the {} in the distance.",
                  "People came from far away to see the {} in the city."),
                 (("ziggurat", "tower"), ("pagoda", "temple"), ("mausoleum", "tomb"), ("gazebo", "shed"),
                  ("colosseum", "stadium"))),
    "food": (("She made a large pot of {} for her friends.", "He had a plate of {} for lunch.",
              "They served us some {} at the end of the meal."),
             (("gazpacho", "soup"), ("tiramisu", "cake"), ("baklava", "bread"), ("falafel", "chicken"),
              ("bruschetta", "salad"))),
    "animal": (("The children saw the {} at the park today.", "A young {} was sleeping by the water.",
                "My brother took a picture of the {} on his trip."),
               (("platypus", "duck"), ("narwhal", "whale"), ("pangolin", "dog"), ("capybara", "horse"),
                ("flamingo", "bird"), ("chameleon", "cat"))),
    "fruit": (("He cut the {} into small pieces.", "She put a fresh {} on the table.",
               "After dinner we shared a large {} with the family."),
              (("kumquat", "apple"), ("papaya", "banana"), ("rambutan", "plum"), ("gooseberry", "cherry"),
               ("pomegranate", "peach"), ("apricot", "orange"))),
    "instrument": (("She has played the {} since she was a child.", "He found an old {} at the market.",
                    "The band added the {} to their last song."),
                   (("ukulele", "drum"), ("xylophone", "violin"), ("mandolin", "guitar"), ("bagpipe", "flute"))),
    "tool": (("The old man kept the {} in his bag.", "She found a {} in the box under the bed.",
              "He showed the class how to use the {} last week."),
             (("abacus", "calculator"), ("theodolite", "camera"), ("spatula", "knife"), ("chisel", "hammer"),
              ("stethoscope", "phone"))),
    "plant": (("My mother put the {} in front of the house.", "There was a large {} by the window.",
               "Every morning she looked after the {} in the garden."),
              (("chrysanthemum", "flower"), ("rhododendron", "plant"), ("bougainvillea", "rose"),
               ("wisteria", "tree"))),
    "clothing": (("He wore his {} to the party.", "She got a warm {} for the winter.",
                  "His father gave him a new {} for his birthday."),
                 (("kimono", "dress"), ("tuxedo", "suit"), ("dungarees", "jacket"), ("cummerbund", "belt"))),
}
SECOND_MENTION = " The"  # the gate's and the ablation's prompts: "<sentence> The <word>"


@dataclass(frozen=True)
class Sizes:
    """How many sentences, windows and draws each step uses (the notebook's parameters cell sets these)."""

    sentences: int = 64  # rare sentences (and as many controls) for the gate and the screen (the page's)
    ablation_prompts: int = 12  # of those, the first ones for the ablation
    top_k: int = 3
    n_random: int = 20
    mean_windows: int = 16  # docstring windows whose mean head outputs replace an ablated head
    mean_len: int = 24
    heldout_windows: int = 24  # reference windows for the held-out score
    heldout_len: int = 48
    n_boot: int = 1000  # bootstrap resamples for the rule's intervals


# --------------------------------------------------------------------------------------------------
# Data: sentences with one rare word, and the same sentences with a common word in its slot.


@dataclass(frozen=True)
class RareSentences:
    """Rare-word sentences and their controls, right-padded to one length (a causal model never lets a real
    position see the padding, so each row is exactly what the model would read alone).

    Attributes:
        tokens / control: ``[batch, pos]`` rare sentences and control sentences (BOS first where the model uses it).
        lengths / control_lengths: ``[batch]`` real lengths.
        word_start / word_stop: ``[batch]`` the rare word's pieces are ``tokens[b, word_start:word_stop]``.
        rare_at: ``[batch]`` the word's least frequent piece: the sentence's least frequent token, the target.
        control_at: ``[batch]`` the common word's position in the control (= word_start: the same slot).
        words: ``(rare, common)`` per row; texts / control_texts: the sentences.
        candidates: how many frame x word sentences were tried; ``len(texts)`` passed the checks.
    """

    tokens: Int[Tensor, "batch pos"]
    control: Int[Tensor, "batch pos"]
    lengths: Int[Tensor, "batch"]
    control_lengths: Int[Tensor, "batch"]
    word_start: Int[Tensor, "batch"]
    word_stop: Int[Tensor, "batch"]
    rare_at: Int[Tensor, "batch"]
    control_at: Int[Tensor, "batch"]
    words: tuple[tuple[str, str], ...]
    texts: tuple[str, ...]
    control_texts: tuple[str, ...]
    candidates: int

    def __len__(self) -> int:
        return len(self.texts)

    def head(self, n: int) -> RareSentences:
        """The first `n` rows (the rows are in a seeded random order already)."""
        cut = {name: getattr(self, name)[:n] for name in ("tokens", "control", "lengths", "control_lengths",
                                                          "word_start", "word_stop", "rare_at", "control_at",
                                                          "words", "texts", "control_texts")}
        return RareSentences(**cut, candidates=self.candidates)

    def pieces(self) -> Float[Tensor, "batch"]:
        """How many tokens each rare word takes."""
        return (self.word_stop - self.word_start).float()


def pad_right(rows: Sequence[Sequence[int]], pad: int) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch"]]:
    """Rows of token ids as one ``[batch, pos]`` tensor padded on the right with `pad`, and each row's length."""
    if not rows:
        raise ValueError("no rows to pad")
    longest = max(len(row) for row in rows)
    out = torch.full((len(rows), longest), pad, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, :len(row)] = torch.tensor(list(row), dtype=torch.long)
    return out, torch.tensor([len(row) for row in rows])


def pad_id(model: TransformerBridge) -> int:
    """A token for right padding: never read by a real position, so any id works; the tokenizer's own if any."""
    tokenizer = model.tokenizer
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def sentences(model: TransformerBridge, *, n: int, seed: int) -> RareSentences:
    """Up to `n` rare-word sentences (frame x rare word, shuffled by `seed`) with their controls.

    A sentence is kept when (1) its text tokenizes to exactly the frame's pieces, the word's and the rest (so the
    word's slot is known), (2) the common word is one token, and (3) the rare word's least frequent piece is the
    least frequent token of the whole sentence and never occurs in the docstrings (count 0).

    Raises:
        ValueError: if fewer than 8 sentences pass (the tokenizer splits the words in unexpected ways).
    """
    if n < 1:
        raise ValueError(f"n must be at least 1; got {n}")
    counts = frequency.token_counts(model)
    rank = frequency.rarity_rank(counts)
    bos = [model.tokenizer.bos_token_id] if model.cfg.default_prepend_bos else []
    candidates = [(frame, pair) for frames, pairs in ROLES.values() for frame in frames for pair in pairs]
    random.Random(seed).shuffle(candidates)
    rows: dict[str, list] = {key: [] for key in ("rare", "control", "start", "stop", "at", "words", "texts",
                                                 "controls")}
    for frame, (rare, common) in candidates:
        before, after = frame.split("{}")
        prefix = bos + tasks.token_ids(model, before.rstrip())
        word, common_ids, suffix = (tasks.token_ids(model, " " + rare), tasks.token_ids(model, " " + common),
                                    tasks.token_ids(model, after))
        text = frame.format(rare)
        if bos + tasks.token_ids(model, text) != prefix + word + suffix or len(common_ids) != 1:
            continue
        ids = prefix + word + suffix
        rarest = len(prefix) + frequency.least_frequent_piece(word, rank)
        eligible = ids[FIRST_KEY:]
        if FIRST_KEY + frequency.least_frequent_piece(eligible, rank) != rarest or counts[ids[rarest]] != 0:
            continue
        rows["rare"].append(ids)
        rows["control"].append(prefix + common_ids + suffix)
        rows["start"].append(len(prefix))
        rows["stop"].append(len(prefix) + len(word))
        rows["at"].append(rarest)
        rows["words"].append((rare, common))
        rows["texts"].append(text)
        rows["controls"].append(frame.format(common))
        if len(rows["texts"]) == n:
            break
    if len(rows["texts"]) < 8:
        raise ValueError(f"only {len(rows['texts'])} of {len(candidates)} sentences keep the rare word as their least "
                         "frequent token for this tokenizer; add words to ROLES whose pieces are rarer")
    pad = pad_id(model)
    tokens, lengths = pad_right(rows["rare"], pad)
    control, control_lengths = pad_right(rows["control"], pad)
    start = torch.tensor(rows["start"])
    return RareSentences(tokens=tokens, control=control, lengths=lengths, control_lengths=control_lengths,
                         word_start=start, word_stop=torch.tensor(rows["stop"]), rare_at=torch.tensor(rows["at"]),
                         control_at=start.clone(), words=tuple(rows["words"]), texts=tuple(rows["texts"]),
                         control_texts=tuple(rows["controls"]), candidates=len(candidates))


def slot_targets(length: Int[Tensor, "batch"], first_query: Int[Tensor, "batch"], target: Int[Tensor, "batch"],
                 seq_len: int) -> Int[Tensor, "batch query"]:
    """``[batch, query]`` targets: `target` for queries ``first_query <= q < length``, -1 (not scored) elsewhere."""
    q = torch.arange(seq_len)[None, :]
    scored = (q >= first_query[:, None]) & (q < length[:, None])
    return torch.where(scored, target[:, None], -1)


def rare_targets(data: RareSentences) -> Int[Tensor, "batch query"]:
    """Targets in the rare sentences: the rare token, from every query after the whole word (the shared tail).

    Queries inside the word (its later pieces) are not scored: their nearest earlier token is a piece of the same
    word, which previous-token and subword heads attend to anyway, and the control has no such queries.
    """
    return slot_targets(data.lengths, data.word_stop, data.rare_at, data.tokens.shape[1])


def control_targets(data: RareSentences) -> Int[Tensor, "batch query"]:
    """Targets in the control sentences: the common word's slot, from the same tail queries."""
    return slot_targets(data.control_lengths, data.control_at + 1, data.control_at, data.control.shape[1])


# --------------------------------------------------------------------------------------------------
# The score: where each head's strongest attention lands.


def argmax_hits(patterns: Float[Tensor, "layer batch head query key"], targets: Int[Tensor, "batch query"], *,
                first_key: int = FIRST_KEY) -> Float[Tensor, "layer head batch"]:
    """Per prompt, the share of scored queries whose strongest attention lands on their target key.

    For query q the head's choice is the argmax over keys ``first_key .. q`` (a tie goes to the earliest key):
    keys before `first_key` are left out, so a head parked on position 0 (an attention sink) is judged by where
    its attention goes next. Queries with target -1 are not scored.

    Raises:
        ValueError: if the shapes disagree (both named) or a prompt has no scored query.

    Example:
        >>> pattern = torch.eye(4)[None, None, None]              # every query looks at itself
        >>> argmax_hits(pattern, torch.tensor([[-1, -1, 1, 3]]))[0, 0]
        tensor([0.5000])
    """
    if patterns.ndim != 5 or targets.shape != (patterns.shape[1], patterns.shape[3]):
        raise ValueError(f"patterns must be [layer, batch, head, query, key] and targets [batch, query] of the same "
                         f"batch and query; got {tuple(patterns.shape)} and {tuple(targets.shape)}")
    scored = targets >= 0  # [batch, query]
    if not scored.any(-1).all():
        raise ValueError(f"prompts {(~scored.any(-1)).nonzero().flatten().tolist()} have no scored query")
    seq_len = patterns.shape[-1]
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool).tril()  # key <= query
    causal[:, :first_key] = False
    visible = torch.where(causal, patterns, -1.0)  # a masked key never wins the argmax
    choice = visible.argmax(dim=-1)  # [layer, batch, head, query]
    hit = (choice == targets[None, :, None, :]) & scored[None, :, None, :]
    share = hit.sum(-1) / scored.sum(-1)[None, :, None]  # [layer, batch, head]
    return share.permute(0, 2, 1).float()


def chance(targets: Int[Tensor, "batch query"], *, first_key: int = FIRST_KEY) -> Float[Tensor, "batch"]:
    """Per prompt, what a head whose argmax fell uniformly on the eligible keys would score: the mean over scored
    queries of 1 / (number of keys ``first_key .. q``)."""
    scored = targets >= 0
    q = torch.arange(targets.shape[1], dtype=torch.float32)
    keys = (q - first_key + 1).clamp(min=1)
    return (scored / keys).sum(-1) / scored.sum(-1)


# --------------------------------------------------------------------------------------------------
# Screen: every head, rare token against chance and against the same slot in the control.


@dataclass(frozen=True)
class RareScreen:
    """Each head's argmax share on the rare token and on the control's slot, per sentence, and the rule.

    Attributes:
        rare: ``[layer, head, sentence]`` share of tail queries whose argmax is the rare token.
        control: the same on the control sentences, target the common word in the same slot.
        chance: ``[sentence]`` uniform-argmax share in the rare sentences.
    """

    rare: Float[Tensor, "layer head batch"]
    control: Float[Tensor, "layer head batch"]
    chance: Float[Tensor, "batch"]
    n_boot: int = 1000
    seed: int = 0

    @property
    def scores(self) -> Float[Tensor, "layer head"]:
        """Voita's metric: the mean share on the rare token."""
        return self.rare.mean(-1)

    @property
    def control_scores(self) -> Float[Tensor, "layer head"]:
        return self.control.mean(-1)

    @property
    def gap(self) -> Float[Tensor, "layer head"]:
        """Rare-token share minus the same slot's share in the control: what rarity adds."""
        return self.scores - self.control_scores

    @property
    def chance_level(self) -> float:
        return float(self.chance.mean())

    def over_chance(self, head: Head) -> stats.Estimate:
        """Interval of (share - chance), paired over sentences."""
        return stats.paired_difference(self.rare[head], self.chance, n_boot=self.n_boot, level=LEVEL, seed=self.seed)

    def over_control(self, head: Head) -> stats.Estimate:
        """Interval of (share - control share), paired over sentences."""
        return stats.paired_difference(self.rare[head], self.control[head], n_boot=self.n_boot, level=LEVEL,
                                       seed=self.seed)

    @cached_property
    def passing(self) -> list[Head]:
        """Heads that pass `RULE`, by gap. Intervals are computed only for heads that meet its point conditions,
        which the intervals cannot overturn in their favour."""
        point = (self.scores >= RATIO * self.chance_level) & (self.gap >= MIN_GAP)
        found = [h for h in heads.top(self.gap, where=point)
                 if self.over_chance(h).lower > 0 and self.over_control(h).lower > 0]
        return found

    def top(self, k: int) -> list[Head]:
        """The `k` heads with the largest gap: the candidates the causal check ablates."""
        return heads.top(self.gap, k)

    def describe(self, head: Head) -> str:
        """``L3H2: rare 0.41, control slot 0.12, gap +0.29 [0.22, 0.36]``."""
        return (f"{heads.label(head)}: rare token {float(self.scores[head]):.2f}, control slot "
                f"{float(self.control_scores[head]):.2f}, gap {self.over_control(head)}")

    def summary(self) -> str:
        best = self.top(1)[0]
        return (f"rare words: {len(self.passing)} of {self.scores.numel()} heads pass ({RULE}); chance "
                f"{self.chance_level:.3f}; largest gap {self.describe(best)}; best on the rare token alone "
                f"{heads.labels(heads.top(self.scores, 3), self.scores, signed=False)}")


def screen(model: TransformerBridge, data: RareSentences, *, n_boot: int = 1000, seed: int = 0) -> RareScreen:
    """Capture every head's patterns on the rare sentences and on the controls; score both (two forward passes)."""
    rare = argmax_hits(capture.capture_patterns(model, data.tokens), rare_targets(data))
    control = argmax_hits(capture.capture_patterns(model, data.control), control_targets(data))
    return RareScreen(rare=rare, control=control, chance=chance(rare_targets(data)), n_boot=n_boot, seed=seed)


# --------------------------------------------------------------------------------------------------
# Behaviour gate and causal check: the word said again.


@dataclass(frozen=True)
class Mentions:
    """Prompts "<sentence> The <word>": ``tokens`` (right-padded), and the word's first and second spans."""

    tokens: Int[Tensor, "batch pos"]
    first: tuple[Int[Tensor, "batch"], Int[Tensor, "batch"]]  # start, stop
    second: tuple[Int[Tensor, "batch"], Int[Tensor, "batch"]]


def mentions(model: TransformerBridge, data: RareSentences, *, control: bool = False) -> Mentions:
    """Each sentence (or its control) followed by " The" and the same word again."""
    the = tasks.token_ids(model, SECOND_MENTION)
    tokens, lengths = (data.control, data.control_lengths) if control else (data.tokens, data.lengths)
    start = data.control_at if control else data.word_start
    stop = data.control_at + 1 if control else data.word_stop
    rows, second_start = [], []
    for b in range(len(data)):
        row = tokens[b, :int(lengths[b])].tolist()
        word = tokens[b, int(start[b]):int(stop[b])].tolist()
        second_start.append(len(row) + len(the))
        rows.append(row + the + word)
    padded, _ = pad_right(rows, pad_id(model))
    second = torch.tensor(second_start)
    return Mentions(tokens=padded, first=(start.clone(), stop.clone()), second=(second, second + (stop - start)))


def span_mask(start: Int[Tensor, "batch"], stop: Int[Tensor, "batch"], seq_len: int) -> Float[Tensor, "batch pos"]:
    """1 at the positions ``start <= p < stop`` of each row."""
    p = torch.arange(seq_len)[None, :]
    return ((p >= start[:, None]) & (p < stop[:, None])).float()


def span_loss_metric(start: Int[Tensor, "batch"], stop: Int[Tensor, "batch"], seq_len: int, lo: int):
    """An `ablated_metric` metric: per row, the mean loss of predicting ``tokens[start:stop]`` of its prompt, from
    logits of the positions ``lo, lo + 1, ...`` only (``positions=slice(lo, ...)``). Rows repeat the batch once
    per head set (set-major), so the per-prompt mask is tiled to match."""
    mask = span_mask(start - 1, stop - 1, seq_len)[:, lo:]  # [batch, pos - lo]: the positions that predict the span

    def metric(logits: Tensor, tokens: Tensor) -> Tensor:  # logits [rows, width, vocab]
        width = logits.shape[1]
        targets = tokens[:, lo + 1:lo + 1 + width]
        losses = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten().to(logits.device),
                                                   reduction="none").view(len(tokens), width).cpu()
        tiled = mask[:, :width].repeat(len(tokens) // len(mask), 1)  # [rows, width]
        return (losses * tiled).sum(-1) / tiled.sum(-1)

    return metric


def span_positions(start: Int[Tensor, "batch"], stop: Int[Tensor, "batch"]
                   ) -> tuple[Int[Tensor, "batch k"], Float[Tensor, "batch k"]]:
    """The positions that predict ``tokens[start:stop]`` of each row (``start - 1 .. stop - 2``), padded to the
    longest span by repeating a row's last one, and a mask that is 1 on the real ones."""
    width = stop - start
    if int(width.min()) < 1 or int(start.min()) < 1:
        raise ValueError("every span needs at least one token and a position before it")
    offsets = torch.arange(int(width.max()))[None, :]
    at = torch.minimum(start[:, None] - 1 + offsets, stop[:, None] - 2)
    return at, (offsets < width[:, None]).float()


def span_loss_at_metric(at: Int[Tensor, "batch k"], mask: Float[Tensor, "batch k"]):
    """An `ablated_metric` metric for ``at=at``: per row, the mean loss of the tokens its positions predict, where
    `mask` is 1. Rows repeat the batch once per head set (set-major), so `at` and `mask` are tiled to match."""
    def metric(logits: Tensor, tokens: Tensor) -> Tensor:  # logits [rows, k, vocab]
        copies = len(tokens) // len(at)
        targets = tokens.gather(1, (at + 1).repeat(copies, 1).to(tokens.device))
        losses = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                                                   reduction="none").view(len(tokens), -1).cpu()
        tiled = mask.repeat(copies, 1)
        return (losses * tiled).sum(-1) / tiled.sum(-1)

    return metric


def mention_losses(model: TransformerBridge, mentioned: Mentions, head_sets: Sequence[Sequence[Head]], *,
                   which: str = "second", means: Tensor | None = None) -> Float[Tensor, "set batch"]:
    """Mean loss on the word's first or second mention, with each head set mean-ablated (``[]`` = clean). Only the
    positions that predict each row's span are unembedded (Gemma's 262k columns are most of the cost otherwise)."""
    start, stop = mentioned.first if which == "first" else mentioned.second
    at, mask = span_positions(start, stop)
    return interventions.ablated_metric(model, mentioned.tokens, head_sets, span_loss_at_metric(at, mask),
                                        mode="mean" if means is not None else "zero", means=means, at=at)


@torch.no_grad()
def clean_mention_losses(model: TransformerBridge, mentioned: Mentions
                         ) -> tuple[Float[Tensor, "batch"], Float[Tensor, "batch"]]:
    """Mean loss on the word's first and on its second mention, from one clean pass that unembeds only the positions
    from the first mention on."""
    first_start, second_stop = mentioned.first[0], mentioned.second[1]
    seq_len = mentioned.tokens.shape[1]
    lo, hi = int(first_start.min()) - 1, int(second_stop.max()) - 1
    final = capture.final_at(model, mentioned.tokens, position=slice(lo, hi))  # [batch, width, d_model]
    logits = readout.logits(model, final.to(model.cfg.device))
    return tuple(span_loss_metric(start, stop, seq_len, lo)(logits, mentioned.tokens.to(model.cfg.device))
                 for start, stop in (mentioned.first, mentioned.second))


def word_gate(model: TransformerBridge, data: RareSentences, *, seed: int) -> stats.GateResult:
    """Does the model carry the rare word forward? Loss on its second mention against its first, per sentence
    (paired); passes when p < 0.01 and the whole interval of the drop exceeds 1 nat."""
    first, second = clean_mention_losses(model, mentions(model, data))
    return stats.behaviour_gate(second, first, paired=True, higher_is_better=False, min_effect=1.0, seed=seed,
                                name="rare word carried forward", metric_name="loss on the rare word's second mention",
                                null_name="on its first mention")


@dataclass(frozen=True)
class WordAblation:
    """One mean ablation of the found heads and of each drawn set.

    Attributes:
        rare: change of the loss on the rare word's second mention.
        control: the same ablations, loss on the common word's second mention (control sentences).
        specific: (rare - control) change per sentence: what the heads do for a rare word beyond a common one.
    """

    rare: controls.CausalCheck
    control: controls.CausalCheck
    specific: controls.CausalCheck

    def summary(self) -> str:
        return (f"rare word: {self.rare.summary()}\ncommon word: {self.control.summary()}\n"
                f"difference in differences: {self.specific.summary()}")


def word_ablation(model: TransformerBridge, data: RareSentences, found: Sequence[Sequence[Head]], *, n_random: int,
                  mean_windows: int, mean_len: int, seed: int) -> list[WordAblation]:
    """Mean-ablate each head set of `found` (e.g. the top heads by gap, and by share alone) and `n_random` sets of as
    many heads drawn from all heads (seeded; all found sets must have the same size and share the draws); measure
    the loss on the second mention of the rare word and of the control's common word. Means: docstring windows."""
    found = [[tuple(h) for h in head_set] for head_set in found]
    if not found or not found[0] or len({len(head_set) for head_set in found}) != 1:
        raise ValueError(f"found must hold non-empty head sets of one size; got sizes {[len(f) for f in found]}")
    k = len(found[0])
    draws = controls.uniform_sets(model.cfg.n_layers, model.cfg.n_heads, k, n_random, seed=seed)
    reference = tasks.natural_text(model, batch=mean_windows, length=mean_len, seed=seed)
    means = capture.mean_head_outputs(model, reference.tokens)
    sets = [[], *found, *draws]
    rare = mention_losses(model, mentions(model, data), sets, means=means)  # [set, prompt]
    common = mention_losses(model, mentions(model, data, control=True), sets, means=means)
    null = f"{k} heads drawn from all {model.cfg.n_layers * model.cfg.n_heads}"
    drawn = slice(1 + len(found), None)

    def check(rows: Tensor, i: int, metric_name: str) -> controls.CausalCheck:
        picked = torch.cat([rows[:1], rows[1 + i:2 + i], rows[drawn]])  # clean, this set, the draws
        return controls.check_from_values(picked, found[i], metric_name=metric_name, mode="mean-ablated", null=null,
                                          seed=seed)

    return [WordAblation(rare=check(rare, i, "loss on the rare word's second mention"),
                         control=check(common, i, "loss on the common word's second mention"),
                         specific=check(rare - common, i, "loss, rare minus common word"))
            for i in range(len(found))]


# --------------------------------------------------------------------------------------------------
# Held-out text: the least frequent earlier token in windows of the language reference.


@dataclass(frozen=True)
class HeldOutRare:
    """Every head on reference windows: share of queries whose argmax is the least frequent earlier token, the
    same share for the positions of another window's targets (position baseline), and chance, per window."""

    shares: Float[Tensor, "layer head batch"]
    position: Float[Tensor, "layer head batch"]
    chance: Float[Tensor, "batch"]
    check: heldout.HeldOut  # screen = share - position baseline

    def carries_over(self, head: Head, *, seed: int = 0) -> bool:
        """The held-out rule, fixed in advance: the intervals of (share - chance) and of (share - position baseline),
        paired over windows, both lie above 0."""
        over_chance = stats.paired_difference(self.shares[head], self.chance, level=LEVEL, seed=seed)
        over_position = stats.paired_difference(self.shares[head], self.position[head], level=LEVEL, seed=seed)
        return over_chance.lower > 0 and over_position.lower > 0

    def kept(self) -> list[Head]:
        return [h for h in self.check.found if self.carries_over(h)]

    def describe(self, head: Head) -> str:
        return (f"{heads.label(head)}: {float(self.shares[head].mean()):.2f} on the rarest earlier token, "
                f"{float(self.position[head].mean()):.2f} at another window's positions, chance "
                f"{float(self.chance.mean()):.2f}")


def position_baseline(targets: Int[Tensor, "batch query"]) -> Int[Tensor, "batch query"]:
    """Each window's queries paired with the previous window's target positions (the last with the first's): the
    same distances back, the wrong tokens. A head that looks at a typical distance scores the same on both."""
    return targets.roll(1, dims=0)


def held_out(model: TransformerBridge, found: Sequence[Head], *, windows: int, length: int, seed: int) -> HeldOutRare:
    """The score on `windows` reference windows of `length` tokens (queries from `HELDOUT_FIRST_QUERY` on)."""
    batch = tasks.natural_text(model, batch=windows, length=length, seed=seed, corpus="reference")
    rank = frequency.rarity_rank(frequency.token_counts(model))
    targets = frequency.least_frequent_earlier(batch.tokens, rank, first_key=FIRST_KEY)
    targets[:, :HELDOUT_FIRST_QUERY] = -1
    patterns = capture.capture_patterns(model, batch.tokens)
    shares = argmax_hits(patterns, targets)
    position = argmax_hits(patterns, position_baseline(targets))
    score = shares.mean(-1) - position.mean(-1)
    return HeldOutRare(shares=shares, position=position, chance=chance(targets),
                       check=heldout.HeldOut(HELD_OUT_FAMILY, found=tuple(found), screen=score))


# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Study:
    """Rare-words heads measured on one model: data, gate, screen, ablations, held-out text.

    `ablation` is the pre-registered check (the top heads by gap over the control); `by_share` ablates the top heads
    by Voita's share alone (added after the screen: the heads that land on the rare token most often), against the
    same draws. `held_out` scores both sets on the language reference.
    """

    model: str
    data: RareSentences
    gate: stats.GateResult
    screen: RareScreen
    ablation: WordAblation | None  # None when the gate failed
    by_share: WordAblation | None = None
    held_out: HeldOutRare | None = None
    top_k: int = 3

    def by_gap(self) -> list[Head]:
        return self.screen.top(self.top_k)

    def by_share_heads(self) -> list[Head]:
        return heads.top(self.screen.scores, self.top_k)

    def row(self) -> dict[str, object]:
        """One row of the findings table."""
        screen = self.screen

        def shares(found: list[Head]) -> str:
            return ", ".join(f"{heads.label(h)} {float(screen.scores[h]):.2f}/{float(screen.control_scores[h]):.2f}"
                             for h in found)

        row: dict[str, object] = {
            "model": self.model,
            "sentences": f"{len(self.data)} of {self.data.candidates}",
            "behaviour gate": "pass" if self.gate.passed else "fail",
            "heads passing": f"{len(screen.passing)} of {screen.scores.numel()}",
            "chance": round(screen.chance_level, 3),
            "top by gap: rare/control": shares(self.by_gap()),
            "top by share: rare/control": shares(self.by_share_heads()),
        }
        if self.ablation is None:
            return row | {"ablation": "not run"}
        for label, check in (("by gap", self.ablation), ("by share", self.by_share)):
            if check is not None:
                row[f"ablate top {label}: rare word (p)"] = f"{check.rare.top} (p = {check.rare.p_value:.3f})"
                row[f"ablate top {label}: rare - common (p)"] = (f"{check.specific.top} "
                                                                 f"(p = {check.specific.p_value:.3f})")
        if self.held_out is not None:
            kept = self.held_out.kept()
            row["held-out: prefer rarest earlier token"] = heads.labels(kept) if kept else "none"
        return row


def study(model: TransformerBridge, *, sizes: Sizes = Sizes(), seed: int = 0) -> Study:
    """Data, gate, screen, ablations of the top heads and the held-out check, as the rare-words page runs them.

    Seeds: the sentences' order `seed`, the screen's bootstrap `seed + 10`, the ablation `seed + 20`, the held-out
    windows `seed + 40`. About 30 s for SmolLM2 and longer for Gemma (its 262k-column unembedding), so the
    result is kept in the results store and a rerun of the page reads it.
    """
    return store.cached("rare-words-study", lambda: _study(model, sizes=sizes, seed=seed),
                        model=models.spec_of(model).name, weights=store.weights_digest(model), sizes=sizes, seed=seed)


def _study(model: TransformerBridge, *, sizes: Sizes, seed: int) -> Study:
    name = models.spec_of(model).name
    data = sentences(model, n=sizes.sentences, seed=seed)
    gate = word_gate(model, data, seed=seed)
    found = screen(model, data, n_boot=sizes.n_boot, seed=seed + 10)
    if not gate.passed:
        return Study(model=name, data=data, gate=gate, screen=found, ablation=None, top_k=sizes.top_k)
    by_gap, by_share = found.top(sizes.top_k), heads.top(found.scores, sizes.top_k)
    ablation, shared = word_ablation(model, data.head(sizes.ablation_prompts), [by_gap, by_share],
                                     n_random=sizes.n_random, mean_windows=sizes.mean_windows,
                                     mean_len=sizes.mean_len, seed=seed + 20)
    union = list(dict.fromkeys(by_gap + by_share))
    held = held_out(model, union, windows=sizes.heldout_windows, length=sizes.heldout_len, seed=seed + 40)
    return Study(model=name, data=data, gate=gate, screen=found, ablation=ablation, by_share=shared, held_out=held,
                 top_k=sizes.top_k)
