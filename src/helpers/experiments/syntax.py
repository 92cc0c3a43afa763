"""Syntactic heads (survey §5.2.8): attention that follows dependency arcs, against a positional baseline.

Voita et al. (2019) called a head syntactic when its strongest attention lands on a word's dependency partner
(subject, object, determiner, adjective) far more often than always guessing the relation's most common
distance would. Here the sentences are templated, so the arcs are known without a parser, and every word of
a template is one token (with its leading space) for the model's tokenizer. Optional parts (adjectives, a
prepositional phrase, an adverb) make each relation's distance vary between sentences: a head that always
attends a fixed number of tokens back cannot beat the baseline (it *is* one of the baseline's guesses).

In a causal model only the later word can look at the earlier one, so every arc runs backwards:

- ``nsubj``: the verb looks at its subject noun (past an optional adverb and a prepositional phrase whose
  noun is a closer, wrong candidate);
- ``dobj``: the object noun looks at its verb; ``det``: a noun at its determiner; ``amod``: a noun at any of
  its adjectives (English puts one right before the noun, so the positional baseline is 1.0 by construction).

The page's steps: `agreement_gate` (subject-verb agreement across an attractor noun, the behaviour syntax is
for), `screen` (argmax accuracy per head and relation against the positional baseline), `agreement_ablation`
(the top nsubj heads against random heads from all heads) and `held_out` (relative-clause sentences, other
words). `study` runs them in that order for any model.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from helpers import capture, controls, heads, heldout, interventions, models, readout, stats, tasks
from helpers.heads import Head

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

RELATIONS = ("nsubj", "dobj", "det", "amod")
MARGIN = 0.15  # pre-registered: a head beats its relation's positional baseline by at least this much
FIRST_KEY = 1  # position 0 (BOS, or SmolLM2's first token) is every head's resting place: never an argmax

# The screen's family: "The [ADJ] [ADJ] NOUN [PREP the [ADJ] NOUN] [ADV] VERB the [ADJ] [ADJ] NOUN."
SCREEN_WORDS = {
    "adjective": ("old", "young", "small", "big", "tall", "red", "green", "heavy", "quiet", "happy", "brave",
                  "dark", "new", "strong", "short", "white"),
    "subject": ("man", "woman", "boy", "girl", "dog", "cat", "farmer", "teacher", "doctor", "king", "driver",
                "pilot", "soldier", "bird", "horse", "student"),
    "object": ("door", "window", "box", "table", "book", "letter", "ball", "car", "cup", "bag", "wall", "chair",
               "bottle", "ring", "gift", "coin"),
    "verb": ("opened", "found", "moved", "pushed", "carried", "dropped", "watched", "cleaned", "painted", "washed",
             "fixed", "sold", "took", "lifted", "held", "grabbed"),
    "adverb": ("quickly", "slowly", "quietly", "carefully", "suddenly", "gently", "finally", "soon"),
    "preposition": ("near", "behind", "beside", "with", "from", "under"),
}
# The held-out family: other words and another frame, a relative clause between the subject and its verb:
# "A [ADJ] NOUN that VERB the [ADJ] [ADJ] NOUN [ADV] VERB a [ADJ] [ADJ] NOUN."
HELD_OUT_WORDS = {
    "adjective": ("tired", "angry", "clever", "lazy", "proud", "calm", "rich", "poor", "loud", "kind", "busy",
                  "wild", "shy", "clean", "gray", "cheap"),
    "subject": ("sailor", "baker", "singer", "painter", "hunter", "writer", "worker", "child", "queen", "nurse",
                "judge", "thief", "lawyer", "chef", "wolf", "fox"),
    "object": ("lamp", "hat", "key", "map", "rope", "stone", "fish", "apple", "bread", "boat", "shoe", "coat",
               "knife", "chain", "flag", "glass"),
    "verb": ("saw", "liked", "called", "kicked", "touched", "helped", "followed", "met", "paid", "hit", "chased",
             "loved", "hated", "pulled", "bought", "caught"),
    "adverb": ("often", "never", "always", "later", "again", "rarely"),
}
FAMILY_WORDS = {"screen": SCREEN_WORDS, "held-out": HELD_OUT_WORDS}
HELD_OUT_FAMILY = "relative clauses ('A tired sailor that saw the lamp often paid a cheap coat.'), other words"
MIN_POOL = 4  # fewest single-token words a slot may keep before a template family becomes too repetitive


# --------------------------------------------------------------------------------------------------
# Sentences and their arcs, word by word (one word = one token).

@dataclass(frozen=True)
class Sentence:
    """A templated sentence: its words (each with its leading space) and its arcs, as word indices.

    ``arcs`` holds ``(relation, dependent, partners)``: the dependent word attends backwards and any word in
    ``partners`` counts as a hit (several only for ``amod``, a noun with two adjectives).
    """

    words: tuple[str, ...]
    arcs: tuple[tuple[str, int, tuple[int, ...]], ...]


def _noun_phrase(words: list[str], arcs: list, determiner: str, adjectives: Sequence[str], noun: str) -> int:
    """Append "det adj* noun" and its det and amod arcs; return the noun's index."""
    det = len(words)
    words += [determiner, *(" " + a for a in adjectives), " " + noun]
    noun_at = len(words) - 1
    arcs.append(("det", noun_at, (det,)))
    if adjectives:
        arcs.append(("amod", noun_at, tuple(range(det + 1, noun_at))))
    return noun_at


def main_clause(subject: str, verb: str, obj: str, *, subject_adjectives: Sequence[str] = (),
                preposition: str | None = None, pp_noun: str | None = None, pp_adjectives: Sequence[str] = (),
                adverb: str | None = None, object_adjectives: Sequence[str] = ()) -> Sentence:
    """The sentence "The tall man near the old tree quickly opened the heavy door." and its arcs; pass the
    words without their leading space."""
    if (preposition is None) != (pp_noun is None):
        raise ValueError(f"a prepositional phrase needs both a preposition and a noun; got {preposition!r}, "
                         f"{pp_noun!r}")
    words: list[str] = []
    arcs: list = []
    subject_at = _noun_phrase(words, arcs, " The", subject_adjectives, subject)
    if preposition is not None:
        words.append(" " + preposition)
        _noun_phrase(words, arcs, " the", pp_adjectives, pp_noun)
    if adverb is not None:
        words.append(" " + adverb)
    verb_at = len(words)
    words.append(" " + verb)
    arcs.append(("nsubj", verb_at, (subject_at,)))
    object_at = _noun_phrase(words, arcs, " the", object_adjectives, obj)
    arcs.append(("dobj", object_at, (verb_at,)))
    words.append(".")
    return Sentence(tuple(words), tuple(arcs))


def relative_clause(subject: str, relative_verb: str, relative_object: str, verb: str, obj: str, *,
                    subject_adjectives: Sequence[str] = (), relative_adjectives: Sequence[str] = (),
                    adverb: str | None = None, object_adjectives: Sequence[str] = ()) -> Sentence:
    """The sentence "A tired sailor that saw the lamp often paid a coat." and its arcs: the main verb's subject
    sits behind a whole relative clause, whose object noun is the closest noun to the verb."""
    words: list[str] = []
    arcs: list = []
    subject_at = _noun_phrase(words, arcs, " A", subject_adjectives, subject)
    words.append(" that")
    inner_verb_at = len(words)
    words.append(" " + relative_verb)
    inner_object_at = _noun_phrase(words, arcs, " the", relative_adjectives, relative_object)
    arcs.append(("dobj", inner_object_at, (inner_verb_at,)))
    if adverb is not None:
        words.append(" " + adverb)
    verb_at = len(words)
    words.append(" " + verb)
    arcs.append(("nsubj", verb_at, (subject_at,)))
    object_at = _noun_phrase(words, arcs, " a", object_adjectives, obj)
    arcs.append(("dobj", object_at, (verb_at,)))
    words.append(".")
    return Sentence(tuple(words), tuple(arcs))


def _some(rng: random.Random, pool: Sequence[str], most: int) -> list[str]:
    return rng.sample(list(pool), rng.randint(0, most))


def random_sentence(rng: random.Random, pools: dict[str, Sequence[str]], family: str) -> Sentence:
    """One sentence of `family` ("screen" or "held-out"): every optional part is drawn independently, so each
    relation's distance varies (0-2 adjectives, a prepositional phrase half the time, an adverb half the time)."""
    if family == "screen":
        pp = rng.random() < 0.5
        nouns = rng.sample(list(pools["subject"]), 2)
        return main_clause(nouns[0], rng.choice(pools["verb"]), rng.choice(pools["object"]),
                           subject_adjectives=_some(rng, pools["adjective"], 2),
                           preposition=rng.choice(pools["preposition"]) if pp else None,
                           pp_noun=nouns[1] if pp else None,
                           pp_adjectives=_some(rng, pools["adjective"], 1) if pp else (),
                           adverb=rng.choice(pools["adverb"]) if rng.random() < 0.5 else None,
                           object_adjectives=_some(rng, pools["adjective"], 2))
    if family == "held-out":
        verbs = rng.sample(list(pools["verb"]), 2)
        return relative_clause(rng.choice(pools["subject"]), verbs[0], rng.choice(pools["object"]), verbs[1],
                               rng.choice(pools["object"]), subject_adjectives=_some(rng, pools["adjective"], 1),
                               relative_adjectives=_some(rng, pools["adjective"], 2),
                               adverb=rng.choice(pools["adverb"]) if rng.random() < 0.5 else None,
                               object_adjectives=_some(rng, pools["adjective"], 2))
    raise ValueError(f"family must be 'screen' or 'held-out'; got {family!r}")


def single_token_pools(model: TransformerBridge, words: dict[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    """Each slot's words that are one token with a leading space for this tokenizer; the others are skipped.

    Raises:
        ValueError: if a slot keeps fewer than `MIN_POOL` words (naming the slot and the words that split).
    """
    pools = {}
    for slot, pool in words.items():
        kept = tasks.single_token_words(model, pool)
        if len(kept) < MIN_POOL:
            split = sorted(set(pool) - set(kept))
            raise ValueError(f"only {len(kept)} of the {len(pool)} {slot} words are one token for this tokenizer "
                             f"(these split: {split}); a template family needs at least {MIN_POOL}: add single-token "
                             "words to the list")
        pools[slot] = tuple(kept)
    return pools


# --------------------------------------------------------------------------------------------------
# Batches of packed sentences, with every arc as a (prompt, query, target keys) triple.

@dataclass(frozen=True)
class Arcs:
    """One relation's arcs in a batch: arc i runs from ``query[i]`` of prompt ``prompt[i]`` back to the keys
    marked in ``targets[i]`` (positions before `FIRST_KEY` are never targets)."""

    prompt: Int[Tensor, "arc"]
    query: Int[Tensor, "arc"]
    targets: Bool[Tensor, "arc key"]

    def __len__(self) -> int:
        return len(self.query)

    def offsets(self) -> list[tuple[int, ...]]:
        """Each arc's distances back to its targets (one for every relation but amod)."""
        return [tuple(int(q) - k for k in row.nonzero().flatten().tolist()) for q, row in zip(self.query, self.targets)]


@dataclass(frozen=True)
class SyntaxBatch:
    """Prompts of packed templated sentences: ``tokens`` ``[batch, length]`` and each relation's `Arcs`."""

    family: str
    tokens: Int[Tensor, "batch pos"]
    arcs: dict[str, Arcs]
    sentences: tuple[tuple[Sentence, ...], ...] = field(repr=False)  # per prompt; the last one may be cut


def sentence_tokens(model: TransformerBridge, sentences: Sequence[Sentence]) -> Int[Tensor, "1 pos"]:
    """One prompt of `sentences` (BOS first when the model uses one), each word checked to be one token; the
    token positions are the word indices plus the BOS offset."""
    words = [word for sentence in sentences for word in sentence.words]
    ids = [tasks.require_single_token(model, word, why="every template word must be one token") for word in words]
    return torch.cat([tasks.bos_column(model, 1), torch.tensor([ids], dtype=torch.long)], dim=1)


def sentence_batch(model: TransformerBridge, *, family: str, batch: int, length: int, seed: int) -> SyntaxBatch:
    """`batch` prompts of `length` tokens (BOS included when the model uses one), each filled with random
    sentences of `family` and cut at `length`; an arc is kept when its dependent lies inside the prompt and it
    has a partner at or after `FIRST_KEY`. Every word is one token, so word positions are token positions."""
    if batch < 1 or length < 2:
        raise ValueError(f"batch must be positive and length at least 2; got batch={batch}, length={length}")
    if family not in FAMILY_WORDS:
        raise ValueError(f"family must be 'screen' or 'held-out'; got {family!r}")
    pools = single_token_pools(model, FAMILY_WORDS[family])
    rng = random.Random(seed)
    ids = {}  # word -> token id, each checked once
    rows, found, kept = [], {r: [] for r in RELATIONS}, []
    for prompt in range(batch):
        row, sentences = tasks.bos_column(model, 1)[0].tolist(), []
        while len(row) < length:
            sentence = random_sentence(rng, pools, family)
            offset = len(row)
            for word in sentence.words:
                if word not in ids:
                    ids[word] = tasks.require_single_token(model, word, why="every template word must be one token")
                row.append(ids[word])
            for relation, dependent, partners in sentence.arcs:
                keys = [offset + p for p in partners if offset + p >= FIRST_KEY]
                if offset + dependent < length and keys:
                    found[relation].append((prompt, offset + dependent, keys))
            sentences.append(sentence)
        rows.append(row[:length])
        kept.append(tuple(sentences))
    arcs = {}
    for relation, triples in found.items():
        targets = torch.zeros(len(triples), length, dtype=torch.bool)
        for i, (_, _, keys) in enumerate(triples):
            targets[i, keys] = True
        arcs[relation] = Arcs(prompt=torch.tensor([t[0] for t in triples], dtype=torch.long),
                              query=torch.tensor([t[1] for t in triples], dtype=torch.long), targets=targets)
    return SyntaxBatch(family=family, tokens=torch.tensor(rows, dtype=torch.long), arcs=arcs, sentences=tuple(kept))


# --------------------------------------------------------------------------------------------------
# Scores: argmax accuracy per head, and Voita's positional baseline.

def strongest_keys(patterns: Float[Tensor, "layer batch head query key"], arcs: Arcs, *,
                   first_key: int = FIRST_KEY) -> Int[Tensor, "layer head arc"]:
    """Where each head's strongest attention from each arc's dependent lands, over keys from `first_key` on
    (a tie goes to the earliest key, torch's rule)."""
    if patterns.ndim != 5 or patterns.shape[-1] != arcs.targets.shape[-1]:
        raise ValueError(f"patterns must be [layer, batch, head, query, key] with {arcs.targets.shape[-1]} keys "
                         f"(the arcs' length); got {tuple(patterns.shape)}")
    if len(arcs) == 0:
        raise ValueError("no arcs to score: make the prompts longer or use more of them")
    rows = patterns[:, arcs.prompt, :, arcs.query, :]  # advanced indices first: [arc, layer, head, key]
    rows = rows.clone()
    rows[..., :first_key] = -1.0  # never the argmax: attention probabilities are >= 0
    return rows.argmax(-1).permute(1, 2, 0)  # [layer, head, arc]


def arc_hits(patterns: Float[Tensor, "layer batch head query key"], arcs: Arcs, *,
             first_key: int = FIRST_KEY) -> Bool[Tensor, "layer head arc"]:
    """For every head and arc: does the head's strongest attention from the dependent (`strongest_keys`) land
    on one of the arc's targets?"""
    strongest = strongest_keys(patterns, arcs, first_key=first_key)  # [layer, head, arc]
    n_layers, n_heads, n_arcs = strongest.shape
    flat = strongest.permute(2, 0, 1).reshape(n_arcs, -1)  # [arc, layer * head]
    return arcs.targets.gather(1, flat).view(n_arcs, n_layers, n_heads).permute(1, 2, 0)


def offset_hits(arcs: Arcs, offset: int) -> Bool[Tensor, "arc"]:
    """Does "attend `offset` tokens back" hit each arc's target? (False where that key would be negative.)"""
    key = arcs.query - offset
    inside = key >= 0
    return inside & arcs.targets.gather(1, key.clamp(min=0)[:, None])[:, 0]


def positional_baseline(arcs: Arcs) -> tuple[int, float]:
    """Voita's baseline: the offset that hits the most arcs, and the share it hits (ties: the shorter offset).

    For one target per arc this is the share of the most common offset; for amod (any adjective counts) it is
    the best share a fixed offset reaches.
    """
    if len(arcs) == 0:
        raise ValueError("no arcs: the baseline of an empty relation is undefined")
    best = max(range(1, arcs.targets.shape[-1]), key=lambda d: (offset_hits(arcs, d).sum().item(), -d))
    return best, offset_hits(arcs, best).sum().item() / len(arcs)


def baseline_from_offsets(offsets: Sequence[int]) -> float:
    """The positional baseline from a list of arc offsets: the share of the most common one."""
    if len(offsets) == 0:
        raise ValueError("offsets is empty: a baseline needs at least one arc")
    return Counter(offsets).most_common(1)[0][1] / len(offsets)


@dataclass(frozen=True)
class SyntaxScreen:
    """Argmax accuracy of every head on every relation, against the relation's positional baseline.

    A head *passes* a relation when its accuracy beats the baseline by at least `margin` and the lower end of
    the 95 % bootstrap interval (resampling prompts) of its advantage over the baseline stays above 0.
    """

    family: str
    accuracy: dict[str, Float[Tensor, "layer head"]]
    baseline: dict[str, float]
    best_offset: dict[str, int]
    n_arcs: dict[str, int]
    intervals: dict[str, dict[Head, stats.Estimate]]  # advantage over the baseline, for heads above the margin
    margin: float = MARGIN

    def advantage(self, relation: str) -> Float[Tensor, "layer head"]:
        return self.accuracy[relation] - self.baseline[relation]

    def passing(self, relation: str) -> list[Head]:
        """Heads that pass `relation`, best first."""
        return [h for h in heads.top(self.accuracy[relation], where=self.advantage(relation) >= self.margin)
                if self.intervals[relation][h].lower > 0]

    def top(self, relation: str, k: int) -> list[Head]:
        return heads.top(self.accuracy[relation], k)

    def summary(self) -> str:
        lines = []
        for r in self.accuracy:
            best = self.top(r, 1)[0]
            lines.append(f"{r}: {self.n_arcs[r]} arcs, baseline {self.baseline[r]:.2f} (offset {self.best_offset[r]}); "
                         f"best {heads.label(best)} {self.accuracy[r][best]:.2f}; {len(self.passing(r))} heads pass")
        return "\n".join(lines)


def score(patterns: Float[Tensor, "layer batch head query key"], batch: SyntaxBatch, *, margin: float = MARGIN,
          n_boot: int = 2000, seed: int = 0) -> SyntaxScreen:
    """Every head's argmax accuracy per relation, the positional baselines and the pass rule's intervals.

    The interval is over prompts: prompt p contributes ``(hits_p - baseline hits_p) / mean arcs per prompt``,
    whose mean over prompts is exactly the pooled advantage (accuracy - baseline).
    """
    accuracy, baseline, best_offset, intervals, n_arcs = {}, {}, {}, {}, {}
    n_prompts = batch.tokens.shape[0]
    for relation, arcs in batch.arcs.items():
        hits = arc_hits(patterns, arcs).float()  # [layer, head, arc]
        best_offset[relation], baseline[relation] = positional_baseline(arcs)
        accuracy[relation] = hits.mean(-1)
        n_arcs[relation] = len(arcs)
        per_prompt = torch.zeros(*hits.shape[:2], n_prompts).index_add_(2, arcs.prompt, hits)  # [layer, head, prompt]
        base = torch.zeros(n_prompts).index_add_(0, arcs.prompt, offset_hits(arcs, best_offset[relation]).float())
        scale = len(arcs) / n_prompts
        intervals[relation] = {
            h: stats.bootstrap_ci((per_prompt[h] - base) / scale, n_boot=n_boot, seed=seed)
            for h in heads.top(accuracy[relation], where=accuracy[relation] - baseline[relation] >= margin)}
    return SyntaxScreen(family=batch.family, accuracy=accuracy, baseline=baseline, best_offset=best_offset,
                        n_arcs=n_arcs, intervals=intervals, margin=margin)


# --------------------------------------------------------------------------------------------------
# The behaviour: subject-verb agreement across an attractor ("The key near the cabinets" -> " is").

AGREEMENT_NOUNS = (("key", "keys"), ("dog", "dogs"), ("cat", "cats"), ("book", "books"), ("box", "boxes"),
                   ("car", "cars"), ("door", "doors"), ("table", "tables"), ("chair", "chairs"), ("lamp", "lamps"),
                   ("boy", "boys"), ("girl", "girls"), ("man", "men"), ("woman", "women"), ("child", "children"),
                   ("teacher", "teachers"), ("bird", "birds"), ("horse", "horses"), ("tree", "trees"),
                   ("house", "houses"), ("window", "windows"), ("bottle", "bottles"), ("letter", "letters"),
                   ("flower", "flowers"), ("student", "students"), ("doctor", "doctors"), ("king", "kings"),
                   ("cup", "cups"), ("bag", "bags"), ("picture", "pictures"))
MIN_AGREEMENT_EFFECT = 1.0  # logits: the gate's floor on the flip's effect (SmolLM2's interval starts above 4)
AGREEMENT_PREPOSITIONS = ("near", "behind", "beside", "under", "above", "by", "with", "of")


def agreement_prompts(model: TransformerBridge, *, n: int, seed: int) -> tasks.TaskBatch:
    """`n` prompts "The key near the cabinets" whose attractor (second noun) has the other number than the
    subject; ``answers`` is the verb form that agrees with the subject (" is"/" are"), ``wrong`` the other.
    ``corrupted`` flips only the subject's number (same attractor): the gate's null. Subjects alternate
    singular and plural, so a head that only shifts the is/are prior cancels out."""
    if n < 2:
        raise ValueError(f"n must be at least 2 (one singular and one plural subject); got {n}")
    nouns = [pair for pair in AGREEMENT_NOUNS if len(tasks.single_token_words(model, pair)) == 2]
    if len(nouns) < MIN_POOL:
        raise ValueError(f"only {len(nouns)} noun pairs are single tokens in both numbers for this tokenizer")
    forms = [tasks.require_single_token(model, v, why="the agreement readout compares two verb forms")
             for v in (" is", " are")]
    rng = random.Random(seed)
    clean, flipped, answers = [], [], []
    for i in range(n):
        plural = i % 2 == 1
        (subject, attractor), preposition = rng.sample(nouns, 2), rng.choice(AGREEMENT_PREPOSITIONS)
        tail = f" {preposition} the {attractor[0 if plural else 1]}"
        clean.append(f"The {subject[int(plural)]}{tail}")
        flipped.append(f"The {subject[int(not plural)]}{tail}")
        answers.append(forms[int(plural)])
    answers_t = torch.tensor(answers)
    wrong = torch.tensor([forms[1] if a == forms[0] else forms[0] for a in answers])
    return tasks.TaskBatch(name="agreement", tokens=tasks.tokenize_prompts(model, clean), prompts=tuple(clean),
                           answers=answers_t, wrong=wrong, corrupted=tasks.tokenize_prompts(model, flipped),
                           info={"flipped": tuple(flipped), "seed": seed})


@dataclass(frozen=True)
class Agreement:
    """The gate's reads: ``clean`` logit(agreeing form) - logit(other) per prompt, ``flipped`` the same
    difference with the subject's number flipped; ``ahead`` the share of prompts where the agreeing form beats
    the other, ``top1`` where it is the model's top token over the whole vocabulary."""

    gate: stats.GateResult
    clean: Float[Tensor, "prompt"]
    flipped: Float[Tensor, "prompt"]
    ahead: float
    top1: float


def agreement_gate(model: TransformerBridge, batch: tasks.TaskBatch, *, seed: int) -> Agreement:
    """Does the model track the subject's number past an attractor? Paired: the agreeing-minus-other logit
    difference must be larger with this subject than with the same prompt's subject of the other number, by
    at least `MIN_AGREEMENT_EFFECT` over the whole interval. Without that floor an untrained model passes: its
    random embeddings shift " is" against " are" by a few hundredths of a logit, the same way on every prompt."""
    final = capture.final_at(model, torch.cat([batch.tokens, batch.corrupted]))  # [2 * prompt, d_model]
    clean, flipped = final.chunk(2)
    clean_diff = readout.logit_difference(model, clean, batch.answers, batch.wrong)
    flipped_diff = readout.logit_difference(model, flipped, batch.answers, batch.wrong)
    top1 = (readout.logits(model, clean).argmax(-1) == batch.answers).float().mean().item()
    gate = stats.behaviour_gate(clean_diff, flipped_diff, paired=True, seed=seed, min_effect=MIN_AGREEMENT_EFFECT,
                                name="subject-verb agreement",
                                metric_name="logit(agreeing verb) - logit(other form)",
                                null_name="with the subject's number flipped")
    return Agreement(gate=gate, clean=clean_diff, flipped=flipped_diff, ahead=(clean_diff > 0).float().mean().item(),
                     top1=top1)


def agreement_ablation(model: TransformerBridge, found: Sequence[Head], *, prompts: int, n_random: int,
                       seed: int) -> controls.CausalCheck:
    """Mean-ablate `found`, and `n_random` sets of as many heads drawn from all heads, and measure the
    agreement logit difference at the last token (the one before the verb); a drop is the expected effect.

    Means are per position, over other agreement prompts (one template: the IOI convention), so an ablated
    head keeps what it writes on every such prompt and loses only what depends on this prompt's words."""
    found = [tuple(h) for h in found]
    batch = agreement_prompts(model, n=prompts, seed=seed)
    reference = agreement_prompts(model, n=prompts, seed=seed + 1)
    means = capture.mean_head_outputs(model, torch.cat([reference.tokens, reference.corrupted]), per_position=True)
    draws = controls.uniform_sets(model.cfg.n_layers, model.cfg.n_heads, len(found), n_random, seed=seed)

    ids, logit_difference = interventions.logit_difference_metric(batch.answers, batch.wrong)
    values = interventions.ablated_metric(model, batch.tokens, [[], found, *draws], logit_difference, mode="mean",
                                          means=means, last_position_only=True, ids=ids)  # [set, prompt]
    return controls.check_from_values(values, found, metric_name="agreement logit difference", mode="mean-ablated",
                                      null=f"{len(found)} heads drawn from all heads", seed=seed,
                                      larger_is_stronger=False)


# --------------------------------------------------------------------------------------------------
# The page's steps, in order.

@dataclass(frozen=True)
class Sizes:
    """How many prompts and draws each step uses (the page's parameters cell sets these)."""

    gate_prompts: int = 64
    screen_prompts: int = 48
    screen_len: int = 48
    heldout_prompts: int = 32
    ablation_prompts: int = 32
    top_k: int = 3
    n_random: int = 20
    n_boot: int = 2000

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Sizes.{name} must be a positive integer; got {value!r}")


def screen(model: TransformerBridge, *, sizes: Sizes, seed: int, family: str = "screen",
           margin: float = MARGIN) -> SyntaxScreen:
    """`score` on a fresh `sentence_batch` of `family` (one forward pass, patterns only)."""
    batch = sentence_batch(model, family=family, batch=sizes.screen_prompts if family == "screen" else
                           sizes.heldout_prompts, length=sizes.screen_len, seed=seed)
    return score(patterns_of(model, batch.tokens), batch, margin=margin, n_boot=sizes.n_boot, seed=seed)


def patterns_of(model: TransformerBridge, tokens: Int[Tensor, "batch pos"]
                ) -> Float[Tensor, "layer batch head query key"]:
    """`capture.capture_patterns` in chunks of prompts: the pass also computes every logit, 2.4 GB for 48
    prompts of 48 tokens with Gemma's 262k vocabulary, so each chunk keeps its logits near 256 MB."""
    rows = capture.rows_per_chunk(model, tokens.shape[1])
    return torch.cat([capture.capture_patterns(model, chunk) for chunk in tokens.split(rows)], dim=1)


@dataclass(frozen=True)
class HeldOutSyntax:
    """The screen re-run on the held-out family: its own `SyntaxScreen` (its own baselines); for the top nsubj
    heads a `heldout.HeldOut` ranking every head by its held-out nsubj advantage over the baseline, and the
    share of held-out nsubj arcs on which each top head's argmax lands on the relative clause's " that"."""

    screen: SyntaxScreen
    nsubj: heldout.HeldOut
    on_relativizer: dict[Head, float]

    def kept(self, found: dict[str, list[Head]]) -> dict[str, list[Head]]:
        """The heads that passed each relation on the screen and still pass it here."""
        return {r: [h for h in hs if h in self.screen.passing(r)] for r, hs in found.items()}


def held_out(model: TransformerBridge, top_nsubj: Sequence[Head], *, sizes: Sizes, seed: int) -> HeldOutSyntax:
    """The screen's score on `HELD_OUT_FAMILY` (relative clauses, other words: no sentence the screen saw)."""
    batch = sentence_batch(model, family="held-out", batch=sizes.heldout_prompts, length=sizes.screen_len, seed=seed)
    patterns = patterns_of(model, batch.tokens)
    found = score(patterns, batch, n_boot=sizes.n_boot, seed=seed)
    arcs = batch.arcs["nsubj"]
    landed = batch.tokens[arcs.prompt[None, None], strongest_keys(patterns, arcs)]  # [layer, head, arc] token ids
    that = tasks.require_single_token(model, " that", why="the held-out sentences use it")
    on_relativizer = {tuple(h): (landed[tuple(h)] == that).float().mean().item() for h in top_nsubj}
    return HeldOutSyntax(screen=found, nsubj=heldout.HeldOut(HELD_OUT_FAMILY, found=tuple(top_nsubj),
                                                            screen=found.advantage("nsubj")),
                         on_relativizer=on_relativizer)


@dataclass(frozen=True)
class Study:
    """The syntactic-head page on one model: agreement gate, screen, nsubj ablation, held-out screen."""

    model: str
    agreement: Agreement
    screen: SyntaxScreen
    check: controls.CausalCheck | None  # None when the gate failed: no head hunting without the behaviour
    held_out: HeldOutSyntax | None = None

    def row(self) -> dict[str, object]:
        """One row of a findings table."""
        gate = self.agreement.gate
        row: dict[str, object] = {"model": self.model, "agreement gate": f"{'pass' if gate.passed else 'fail'}: "
                                  f"{gate.metric} vs {gate.null} (flipped)"}
        for r in RELATIONS:
            best = self.screen.top(r, 1)[0]
            passing = len(self.screen.passing(r))
            row[f"{r}: baseline, best head"] = (f"{self.screen.baseline[r]:.2f}, {heads.label(best)} "
                                                f"{self.screen.accuracy[r][best]:.2f} ({passing} pass)")
        if self.check is None:
            return row | {"nsubj ablation": "not run (gate failed)"}
        k = len(self.check.heads)
        row[f"top-{k} nsubj ablation (agreement logit diff)"] = str(self.check.top)
        row[f"random-{k} (from all heads)"] = self.check.draws_summary()
        if self.held_out is not None:
            best = self.screen.top("nsubj", 1)[0]
            held = self.held_out.screen
            row["held-out nsubj: baseline, top head"] = (f"{held.baseline['nsubj']:.2f}, {heads.label(best)} "
                                                         f"{held.accuracy['nsubj'][best]:.2f}")
            kept = self.held_out.kept({r: self.screen.passing(r) for r in RELATIONS})
            row["held-out: heads still passing"] = ", ".join(
                f"{r} {len(kept[r])}/{len(self.screen.passing(r))}" for r in RELATIONS)
        return row


def study(model: TransformerBridge, *, sizes: Sizes = Sizes(), seed: int = 0) -> Study:
    """Gate, screen, ablation of the top nsubj heads and the held-out screen, as the page runs them.

    Seeds: gate `seed`, screen `seed + 10`, ablation `seed + 20`, held-out `seed + 40`."""
    name = models.spec_of(model).name
    agreement = agreement_gate(model, agreement_prompts(model, n=sizes.gate_prompts, seed=seed), seed=seed)
    found = screen(model, sizes=sizes, seed=seed + 10)
    if not agreement.gate.passed:
        return Study(model=name, agreement=agreement, screen=found, check=None)
    top = found.top("nsubj", sizes.top_k)
    check = agreement_ablation(model, top, prompts=sizes.ablation_prompts, n_random=sizes.n_random, seed=seed + 20)
    return Study(model=name, agreement=agreement, screen=found, check=check,
                 held_out=held_out(model, top, sizes=sizes, seed=seed + 40))
