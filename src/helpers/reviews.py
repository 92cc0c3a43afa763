"""Sentiment prompts: Tigges et al.'s ToyMovieReview and a held-out frame, with every named position.

Tigges, Hollinsworth, Geiger and Nanda (2023) found a linear sentiment direction in GPT-2 and Pythia with
prompts such as "I thought this movie was fantastic, I loved it. Conclusion: This movie is", where the
adjective and the verb carry the whole sentiment and the answer word must carry it on. This module builds
such prompts for any tokenizer:

- `Template`: a frame with ``{adj}`` and ``{verb}`` slots and the positions a page reads (the adjective, the
  verb, the comma, the period, the "Conclusion" tokens, END). `MOVIE_REVIEW` is Tigges et al.'s frame;
  `FILM_VERDICT` is a held-out family with other wording, no comma after the adjective, and its own
  summary tokens ("Overall,").
- `lexicon`: the positive, negative and neutral adjectives and verbs (about 40 valenced ones of each kind
  before filtering) that stay one token in the frame, so that every prompt of a frame has the same length
  and a flipped twin of the same length (patching needs both).
- `review_pairs`: n positive prompts, then n negative ones, each with its flipped twin; `neutral_reviews`
  the same frame with neutral words, a control with no sentiment to move.
- `answer_ids`: single-token positive / negative answer words (" great" / " terrible", ...), for the logit
  difference at END.

A later page (the ToyMoodStory summary readers) reuses `Template`, `lexicon` and `review_pairs` with its own
frame: a frame only needs its slots and its named prefixes.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
from jaxtyping import Int
from torch import Tensor

from helpers import tasks

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

POSITIVE_ADJECTIVES = (
    "good", "great", "excellent", "amazing", "wonderful", "fantastic", "brilliant", "superb", "perfect", "lovely",
    "beautiful", "awesome", "outstanding", "delightful", "charming", "enjoyable", "incredible", "fabulous",
    "marvelous", "terrific", "splendid", "magnificent", "stunning", "impressive", "fun", "nice", "pleasant",
    "remarkable", "exceptional", "exciting", "engaging", "inspiring", "funny", "refreshing", "clever", "moving",
    "powerful", "sweet", "gorgeous", "glorious",
)
NEGATIVE_ADJECTIVES = (
    "bad", "terrible", "awful", "horrible", "dreadful", "boring", "dull", "poor", "weak", "stupid", "lame",
    "disappointing", "annoying", "ugly", "painful", "pathetic", "mediocre", "atrocious", "abysmal", "lousy",
    "miserable", "disgusting", "tedious", "bland", "silly", "pointless", "worthless", "horrendous", "appalling",
    "sloppy", "messy", "dumb", "shallow", "forgettable", "unpleasant", "nasty", "gross", "tiresome", "clumsy",
    "ridiculous",
)
POSITIVE_VERBS = (  # past tense, transitive: "I loved it"
    "loved", "enjoyed", "liked", "adored", "cherished", "appreciated", "admired", "relished", "savored",
    "treasured", "praised", "celebrated", "valued", "welcomed", "embraced", "devoured", "recommended",
    "applauded", "savoured", "fancied",
)
NEGATIVE_VERBS = (
    "hated", "disliked", "loathed", "despised", "detested", "resented", "abhorred", "regretted", "dreaded",
    "scorned", "mocked", "condemned", "cursed", "deplored", "endured", "ridiculed", "rejected", "suffered",
    "criticized", "slammed",
)
NEUTRAL_ADJECTIVES = (  # describe a film without judging it
    "long", "short", "new", "old", "French", "black", "silent", "recent", "foreign", "modern", "animated",
    "American", "British", "German", "Italian", "historical", "local", "small", "big", "early", "late",
    "colour", "Japanese", "Spanish", "independent", "original", "first", "second", "final", "green", "blue",
    "red", "white", "dark", "quiet", "typical", "ordinary", "standard", "average", "normal",
)
NEUTRAL_VERBS = ("watched", "saw", "viewed", "rented", "streamed", "reviewed", "recorded", "described", "noticed",
                 "mentioned")
ANSWER_PAIRS = ((" great", " terrible"), (" good", " bad"), (" amazing", " awful"), (" excellent", " horrible"),
                (" wonderful", " dreadful"), (" fantastic", " boring"))


@dataclass(frozen=True)
class Template:
    """A prompt frame with ``{adj}`` and ``{verb}`` slots and the positions a page reads.

    Attributes:
        name: e.g. ``"movie review"``.
        text: the prompt, e.g. ``"I thought this movie was {adj}, I {verb} it. Conclusion: This movie is"``.
        marks: position name -> the prefix of `text` whose last token is that position (``"comma"`` ->
            ``"I thought this movie was {adj},"``). ``"adj"``, ``"verb"`` and ``"end"`` are required.
        summary: the names of the positions after the valenced words where a summary can be written
            (Tigges et al.'s commas, periods and "Conclusion" tokens), in prompt order.
    """

    name: str
    text: str
    marks: Mapping[str, str]
    summary: tuple[str, ...]

    def __post_init__(self) -> None:
        missing = {"adj", "verb", "end"} - set(self.marks)
        if missing or "{adj}" not in self.text or "{verb}" not in self.text:
            raise ValueError(f"template {self.name!r} needs {{adj}} and {{verb}} slots and marks for adj, verb and "
                             f"end; missing marks {sorted(missing)}")
        for name, prefix in self.marks.items():
            if not self.text.startswith(prefix):
                raise ValueError(f"template {self.name!r}: mark {name!r} = {prefix!r} is not a prefix of the text")
        unknown = set(self.summary) - set(self.marks)
        if unknown:
            raise ValueError(f"template {self.name!r}: summary positions {sorted(unknown)} have no mark")

    def fill(self, adj: str, verb: str) -> str:
        return self.text.format(adj=adj, verb=verb)


def _marks(text: str, ends: Mapping[str, str]) -> dict[str, str]:
    """Prefixes of `text` that end with each given piece (first occurrence after the previous mark)."""
    out, start = {}, 0
    for name, piece in ends.items():
        at = text.index(piece, start) + len(piece)
        out[name], start = text[:at], at
    return out


MOVIE_REVIEW_TEXT = "I thought this movie was {adj}, I {verb} it. Conclusion: This movie is"
MOVIE_REVIEW = Template(
    "movie review", MOVIE_REVIEW_TEXT,
    _marks(MOVIE_REVIEW_TEXT, {"adj": "{adj}", "comma": ",", "verb": "{verb}", "period": ".",
                               "conclusion": " Conclusion", "colon": ":", "end": " is"}),
    summary=("comma", "period", "conclusion", "colon"),
)
FILM_VERDICT_TEXT = "The film was {adj} and I {verb} every minute of it. Overall, the film was"
FILM_VERDICT = Template(
    "film verdict", FILM_VERDICT_TEXT,
    _marks(FILM_VERDICT_TEXT, {"adj": "{adj}", "verb": "{verb}", "period": ".", "overall": " Overall",
                               "comma": ",", "end": " was"}),
    summary=("period", "overall", "comma"),
)


@dataclass(frozen=True)
class Lexicon:
    """Slot fillers that keep a frame's token length: each is one token where the frame puts it."""

    positive_adjectives: tuple[str, ...]
    negative_adjectives: tuple[str, ...]
    positive_verbs: tuple[str, ...]
    negative_verbs: tuple[str, ...]
    neutral_adjectives: tuple[str, ...]
    neutral_verbs: tuple[str, ...]

    def halves(self, seed: int) -> tuple[Lexicon, Lexicon]:
        """Two lexicons with disjoint adjectives (each valence split in half at random, seeded) and the same
        verbs: fit a direction on the first, test it on adjectives it never saw."""
        rng = random.Random(seed)
        split = {}
        for name in ("positive_adjectives", "negative_adjectives", "neutral_adjectives"):
            words = list(getattr(self, name))
            rng.shuffle(words)
            half = len(words) // 2
            split[name] = (tuple(words[:half]), tuple(words[half:]))
        return (replace(self, **{name: pair[0] for name, pair in split.items()}),
                replace(self, **{name: pair[1] for name, pair in split.items()}))


@dataclass(frozen=True)
class Reviews:
    """A batch of prompts from one frame, one length, with their sentiment and named positions.

    Attributes:
        template: the frame.
        tokens: ``[batch, pos]``.
        flipped: ``[batch, pos]`` each prompt with the opposite valence's words (row i of a positive prompt holds
            its negative twin), or None for neutral prompts.
        sentiment: ``[batch]`` +1 positive, -1 negative, 0 neutral.
        positions: position name -> index, the same for every prompt of the batch.
        prompts, adjectives, verbs: the text and the slot fillers of each row.
    """

    template: Template
    tokens: Int[Tensor, "batch pos"]
    flipped: Int[Tensor, "batch pos"] | None
    sentiment: Int[Tensor, "batch"]
    positions: Mapping[str, int]
    prompts: tuple[str, ...]
    adjectives: tuple[str, ...]
    verbs: tuple[str, ...]

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def summary_positions(self) -> list[int]:
        return [self.positions[name] for name in self.template.summary]


def positions(model: TransformerBridge, template: Template, adj: str, verb: str) -> dict[str, int]:
    """The index of each marked position in the tokenized prompt (BOS included where the model adds one).

    Raises:
        ValueError: if a prefix does not tokenize as a prefix of the whole prompt (a merge across the mark),
            naming the mark: choose other fillers or move the mark.
    """
    full = model.to_tokens(template.fill(adj, verb))[0].tolist()
    found = {}
    for name, prefix in template.marks.items():
        part = model.to_tokens(prefix.format(adj=adj, verb=verb))[0].tolist()
        if full[:len(part)] != part:
            raise ValueError(f"{template.name!r} with {adj!r}/{verb!r}: the prefix for {name!r} tokenizes differently "
                             "inside the prompt (a merge across the mark)")
        found[name] = len(part) - 1
    return found


def _fits(model: TransformerBridge, template: Template, adj: str, verb: str, reference: Mapping[str, int]) -> bool:
    try:
        return positions(model, template, adj, verb) == reference
    except ValueError:
        return False


def lexicon(model: TransformerBridge, template: Template = MOVIE_REVIEW) -> Lexicon:
    """The words of the module's lists that are single tokens after a space and keep `template`'s positions
    (the frame filled with " good" / " loved" fixes them).

    Raises:
        ValueError: if a list keeps fewer than 4 words for this tokenizer.
    """
    reference = positions(model, template, "good", "loved")

    def keep(words: Sequence[str], slot: str) -> tuple[str, ...]:
        single = tasks.single_token_words(model, words)
        if slot == "adj":
            return tuple(w for w in single if _fits(model, template, w, "loved", reference))
        return tuple(w for w in single if _fits(model, template, "good", w, reference))

    found = Lexicon(keep(POSITIVE_ADJECTIVES, "adj"), keep(NEGATIVE_ADJECTIVES, "adj"), keep(POSITIVE_VERBS, "verb"),
                    keep(NEGATIVE_VERBS, "verb"), keep(NEUTRAL_ADJECTIVES, "adj"), keep(NEUTRAL_VERBS, "verb"))
    short = {name: len(words) for name, words in vars(found).items() if len(words) < 4}
    if short:
        raise ValueError(f"too few single-token words for {template.name!r} with this tokenizer: {short}")
    return found


def _draw(rng: random.Random, words: Sequence[str], n: int) -> list[str]:
    """n words, each used as evenly as n allows (a shuffled cycle of the list)."""
    out: list[str] = []
    while len(out) < n:
        cycle = list(words)
        rng.shuffle(cycle)
        out += cycle
    return out[:n]


def _batch(model: TransformerBridge, template: Template, adjectives: Sequence[str], verbs: Sequence[str]
           ) -> tuple[Tensor, tuple[str, ...]]:
    prompts = tuple(template.fill(a, v) for a, v in zip(adjectives, verbs))
    return tasks.tokenize_prompts(model, prompts), prompts


def review_pairs(model: TransformerBridge, *, n: int, seed: int, template: Template = MOVIE_REVIEW,
                 words: Lexicon | None = None) -> Reviews:
    """`n` positive prompts then `n` negative ones (batch 2n), words drawn evenly from `words` (default: the
    whole `lexicon` of `template`). Row i and row n + i are twins: ``flipped`` holds each prompt's twin, so
    patching from ``flipped`` swaps the sentiment and nothing else of the frame."""
    if n < 1:
        raise ValueError(f"n must be >= 1 pairs; got {n}")
    words = words or lexicon(model, template)
    rng = random.Random(seed)
    adjectives = _draw(rng, words.positive_adjectives, n) + _draw(rng, words.negative_adjectives, n)
    verbs = _draw(rng, words.positive_verbs, n) + _draw(rng, words.negative_verbs, n)
    tokens, prompts = _batch(model, template, adjectives, verbs)
    flipped = torch.cat([tokens[n:], tokens[:n]])
    sentiment = torch.cat([torch.ones(n, dtype=torch.long), -torch.ones(n, dtype=torch.long)])
    return Reviews(template, tokens, flipped, sentiment, positions(model, template, adjectives[0], verbs[0]),
                   prompts, tuple(adjectives), tuple(verbs))


def neutral_reviews(model: TransformerBridge, *, n: int, seed: int, template: Template = MOVIE_REVIEW,
                    words: Lexicon | None = None) -> Reviews:
    """`n` prompts of the frame with a neutral adjective and a neutral verb ("I thought this movie was French,
    I watched it."): the control in which no word carries a sentiment to summarise."""
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}")
    words = words or lexicon(model, template)
    rng = random.Random(seed)
    adjectives, verbs = _draw(rng, words.neutral_adjectives, n), _draw(rng, words.neutral_verbs, n)
    tokens, prompts = _batch(model, template, adjectives, verbs)
    return Reviews(template, tokens, None, torch.zeros(n, dtype=torch.long),
                   positions(model, template, adjectives[0], verbs[0]), prompts, tuple(adjectives), tuple(verbs))


def answer_ids(model: TransformerBridge, pairs: Sequence[tuple[str, str]] = ANSWER_PAIRS
               ) -> tuple[Int[Tensor, "pair"], Int[Tensor, "pair"]]:
    """Ids of the positive and the negative word of each pair that is one token on both sides for this
    tokenizer (the logit difference at END averages over them).

    Raises:
        ValueError: if fewer than two pairs survive.
    """
    kept = [(tasks.single_token_id(model, good), tasks.single_token_id(model, bad)) for good, bad in pairs]
    kept = [(good, bad) for good, bad in kept if good is not None and bad is not None]
    if len(kept) < 2:
        raise ValueError(f"only {len(kept)} of the answer pairs {list(pairs)} are single tokens for this tokenizer")
    return torch.tensor([g for g, _ in kept]), torch.tensor([b for _, b in kept])
