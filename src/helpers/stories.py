"""ToyMoodStory prompts: two characters, one who loves an activity and one who hates it, and a last
sentence that names one of them before a mood word ("... John feels very").

Tigges et al. (2023) used stories of this shape to find heads that read a character's mood back from
the places where it was summarised (the comma and the period closing each character's sentence). The
book's summary-reader page (notebooks/summary_reader_heads.ipynb) draws its data from here.

Every story comes with the *swapped* story: the same names, activity and wording with the two
characters' sentiments exchanged, so the right mood at END flips and every token position stays put.
All fillers are single tokens, so one template gives one token length and one set of positions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Int
from torch import Tensor

from helpers import tasks

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


@dataclass(frozen=True)
class Template:
    """A story frame with slots {a} {b} (names), {x} (the name at the end), {act} (a plural activity),
    {one} (its singular), {feel_a} {feel_b} (love/hate verbs), {do_a} {do_b} (approach/avoid verbs).

    ``summary``: text pieces that close each character's sentence (their token is a summary position);
    ``words``: the slots whose token carries the sentiment itself.
    """

    name: str
    text: str
    summary: tuple[str, ...]
    words: tuple[str, ...] = ("feel_a", "do_a", "feel_b", "do_b")


MOOD_STORY = Template(
    "mood story",
    "{a} {feel_a} {act}, and {do_a} them whenever possible. {b} {feel_b} {act}, and {do_b} them whenever "
    "possible. One day, they were invited to a grand gala. {x} feels very",
    summary=("{act},", "possible.", "{act},", "possible."))
# Held out: other sentence structure and punctuation (a semicolon, no "whenever possible"), another ending.
DIARY_STORY = Template(
    "diary story",
    "{a} {feel_a} {act}; {a} {do_a} every {one}. {b} {feel_b} {act}; {b} {do_b} every {one}. Today "
    "they both went to a {one}. {x} was very",
    summary=("{act};", "{one}.", "{act};", "{one}."))

NAMES = ("John", "Mary", "Tom", "Anna", "Sam", "Lucy", "Paul", "Emma", "Jack", "Sara", "Ben", "Lily", "Mark",
         "Alice", "Kate", "David", "James", "Linda", "Peter", "Susan")
ACTIVITIES = (("parties", "party"), ("concerts", "concert"), ("weddings", "wedding"), ("dances", "dance"),
              ("festivals", "festival"), ("movies", "movie"), ("games", "game"), ("parades", "parade"))
LOVE_HATE = (("loved", "hated"), ("enjoyed", "hated"), ("loved", "feared"), ("liked", "hated"))
APPROACH_AVOID = (("attended", "avoided"), ("joined", "skipped"), ("attended", "missed"))
# The mood words read at END: (positive, negative); pairs that are not one token on both sides are dropped.
MOOD_PAIRS = (("happy", "sad"), ("excited", "upset"), ("glad", "angry"), ("thrilled", "nervous"))


@dataclass(frozen=True)
class Stories:
    """A batch of stories and their swapped twins.

    ``tokens`` / ``swapped``: ``[batch, pos]``; ``sign``: +1 where the name at the end is the character
    who loves the activity (the right mood is positive), -1 where it is the one who hates it (in the
    swapped stories the sign is ``-sign``). Prompts come in pairs, rows 2i and 2i + 1 the same story
    ending on the lover and on the hater. ``positions``: "summary", "words" and "names" token positions.
    """

    template: Template
    tokens: Int[Tensor, "batch pos"]
    swapped: Int[Tensor, "batch pos"]
    sign: Int[Tensor, "batch"]
    positions: dict[str, list[int]]
    prompts: tuple[str, ...]

    @property
    def end(self) -> int:
        return self.tokens.shape[1] - 1

    def other(self) -> list[int]:
        """Positions that are neither summary positions nor sentiment words (names, BOS, filler, END)."""
        taken = set(self.positions["summary"]) | set(self.positions["words"])
        return [p for p in range(self.tokens.shape[1]) if p not in taken]


def _single(model: TransformerBridge, words: tuple[str, ...], *, at_start: bool = False) -> list[str]:
    """Words that are one token after a space (and, with `at_start`, also at the start of the text)."""
    kept = [w for w in words if tasks.single_token_id(model, " " + w) is not None]
    if at_start:
        kept = [w for w in kept if len(tasks.token_ids(model, w)) == 1]
    return kept


def mood_pairs(model: TransformerBridge) -> list[tuple[str, str]]:
    """`MOOD_PAIRS` with a leading space, kept where both words are single tokens for this tokenizer."""
    return [(" " + good, " " + bad) for good, bad in MOOD_PAIRS
            if tasks.single_token_id(model, " " + good) is not None
            and tasks.single_token_id(model, " " + bad) is not None]


def char_positions(model: TransformerBridge, text: str, pieces: list[str]) -> list[int]:
    """Token position of the last token of each piece, found left to right in `text` (a piece that occurs
    twice is matched at its next occurrence). Assumes pieces end on a token boundary (single-token words).

    Raises:
        ValueError: if a piece is not found after the previous one.
    """
    found, start = [], 0
    for piece in pieces:
        at = text.find(piece, start)
        if at < 0:
            raise ValueError(f"piece {piece!r} not found in {text[start:]!r} (after position {start})")
        start = at + len(piece)
        found.append(len(tasks.token_ids(model, text[:start])) - 1)  # no BOS: the caller shifts
    return found


def story_pairs(model: TransformerBridge, *, n: int, seed: int, template: Template = MOOD_STORY) -> Stories:
    """`n` stories (2n prompts: each story ending on the lover and on the hater), seeded.

    Which character comes first, the names, activity and verbs are drawn per story. Stories whose token
    length differs from the first one are redrawn, so the batch shares one set of positions.

    Raises:
        ValueError: if n < 1, or too few fillers are single tokens for this tokenizer.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1 stories; got {n}")
    names = _single(model, NAMES, at_start=True)
    acts = [(p, s) for p, s in ACTIVITIES if _single(model, (p, s)) == [p, s]]
    feels = [(g, b) for g, b in LOVE_HATE if _single(model, (g, b)) == [g, b]]
    dos = [(g, b) for g, b in APPROACH_AVOID if _single(model, (g, b)) == [g, b]]
    if len(names) < 4 or not acts or not feels or not dos:
        raise ValueError(f"too few single-token fillers for this tokenizer: {len(names)} names, {len(acts)} "
                         f"activities, {len(feels)} love/hate and {len(dos)} approach/avoid pairs")
    rng = random.Random(seed)
    twins_text, signs, prompts, length, fill0 = [], [], [], None, None
    tries = 0
    while len(prompts) < 2 * n:
        tries += 1
        if tries > 50 * n:
            raise ValueError(f"could not draw {n} stories of one token length with template {template.name!r}")
        a, b = rng.sample(names, 2)
        act, one = rng.choice(acts)
        (love, hate), (go, avoid) = rng.choice(feels), rng.choice(dos)
        lover_first = rng.random() < 0.5
        fill = dict(a=a, b=b, act=act, one=one)
        first, second = ((love, go), (hate, avoid)) if lover_first else ((hate, avoid), (love, go))
        story = dict(fill, feel_a=first[0], do_a=first[1], feel_b=second[0], do_b=second[1])
        twin = dict(fill, feel_a=second[0], do_a=second[1], feel_b=first[0], do_b=first[1])
        lover, hater = (a, b) if lover_first else (b, a)
        texts = [template.text.format(**story, x=x) for x in (lover, hater)]
        twins = [template.text.format(**twin, x=x) for x in (lover, hater)]
        ids = [tasks.token_ids(model, t) for t in texts + twins]
        if length is None:
            length, fill0 = len(ids[0]), story
        if any(len(i) != length for i in ids):
            continue
        twins_text += twins
        signs += [1, -1]
        prompts += texts
    first_text = template.text.format(**fill0, x=fill0["a"])
    summary = char_positions(model, first_text, [p.format(**fill0) for p in template.summary])
    words = char_positions(model, first_text, [" " + fill0[slot] for slot in template.words])
    names_at = char_positions(model, first_text, [fill0["a"], " " + fill0["b"]])
    bos = tasks.bos_column(model, 1).shape[1]
    tokens, swapped = tasks.tokenize_prompts(model, prompts), tasks.tokenize_prompts(model, twins_text)
    positions = {"summary": [p + bos for p in summary], "words": [p + bos for p in words],
                 "names": [p + bos for p in names_at]}
    return Stories(template, tokens, swapped, torch.tensor(signs), positions, tuple(prompts))
