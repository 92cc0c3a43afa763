"""Formatted multiple-choice prompts for pretrained models: very easy questions, lettered options.

`mcq_task` builds seeded questions ("What color is a banana?") with 2 or 4 lettered options, the correct
letter balanced over positions, 0- or k-shot, labels A-D or other symbols (Q/Z/R/X); prompts are
grouped into batches of one token length, with the positions of every label and option. The reads, the
gate and the head signatures on these prompts are in `helpers.experiments.mcq`.

Two template families: `MAIN`, on which the pages screen every head, and `HELD_OUT`, which the screens
never see: other questions with their own facts ("What is the capital of France?", "What is a baby cat
called?"), no option word of the main family, and other option wording (``Q: ...`` and
``A) Paris`` instead of ``Question: ...`` and ``A. yellow``). Both end in ``Answer:`` with the same
labels, so the answer tokens and END are the same. ``mcq_task(..., family=HELD_OUT)`` builds it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Int
from torch import Tensor

from helpers import tasks

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

LETTERS = "ABCD"
SYMBOLS = "QZRX"  # Lieberum's random labels: no order, no link to "first", "second"

# Question templates with one single-token slot, and the facts that fill them. Every item names its
# answer and the pool its wrong options come from; `exclude` lists pool words that would also be right.
POOLS = {
    "color": ("red", "yellow", "blue", "green", "black", "white", "orange", "brown", "pink", "purple"),
    "animal": ("cow", "dog", "cat", "duck", "pig", "horse", "owl", "sheep", "lion", "frog"),
    "number": ("two", "four", "six", "eight"),
    "opposite": ("cold", "small", "down", "night", "slow", "dry", "sad", "right", "white", "late", "empty", "soft"),
    "thing": ("car", "chair", "book", "shoe", "rock", "table", "door", "cup", "spoon", "box"),
}
TEMPLATES = {
    "color": "What color is a{n} {x}?",
    "sound": "Which animal says {x}?",
    "legs": "How many legs does a {x} have?",
    "opposite": "What is the opposite of {x}?",
    "kind": "Which of these is a{n} {x}?",
}
# (template, slot, answer, pool of wrong options, pool words that are also right)
ITEMS = (
    ("color", "banana", "yellow", "color", ()), ("color", "lemon", "yellow", "color", ()),
    ("color", "tomato", "red", "color", ("green",)), ("color", "carrot", "orange", "color", ()),
    ("color", "frog", "green", "color", ("brown",)), ("color", "crow", "black", "color", ()),
    ("color", "cherry", "red", "color", ("black",)), ("color", "pumpkin", "orange", "color", ()),
    ("color", "swan", "white", "color", ("black",)), ("color", "leaf", "green", "color", ("yellow", "brown", "red", "orange")),
    ("sound", "moo", "cow", "animal", ()), ("sound", "woof", "dog", "animal", ()), ("sound", "meow", "cat", "animal", ()),
    ("sound", "quack", "duck", "animal", ()), ("sound", "oink", "pig", "animal", ()), ("sound", "neigh", "horse", "animal", ()),
    ("sound", "hoot", "owl", "animal", ()), ("sound", "roar", "lion", "animal", ()), ("sound", "croak", "frog", "animal", ()),
    ("legs", "dog", "four", "number", ()), ("legs", "bird", "two", "number", ()), ("legs", "spider", "eight", "number", ()),
    ("legs", "bee", "six", "number", ()), ("legs", "cat", "four", "number", ()), ("legs", "chicken", "two", "number", ()),
    ("legs", "ant", "six", "number", ()), ("legs", "horse", "four", "number", ()), ("legs", "duck", "two", "number", ()),
    ("opposite", "hot", "cold", "opposite", ()), ("opposite", "big", "small", "opposite", ()),
    ("opposite", "up", "down", "opposite", ()), ("opposite", "day", "night", "opposite", ()),
    ("opposite", "fast", "slow", "opposite", ()), ("opposite", "wet", "dry", "opposite", ()),
    ("opposite", "happy", "sad", "opposite", ()), ("opposite", "left", "right", "opposite", ()),
    ("opposite", "black", "white", "opposite", ()), ("opposite", "early", "late", "opposite", ()),
    ("opposite", "full", "empty", "opposite", ()), ("opposite", "hard", "soft", "opposite", ()),
    ("kind", "fruit", "apple", "thing", ()), ("kind", "fruit", "banana", "thing", ()), ("kind", "fruit", "grape", "thing", ()),
    ("kind", "fruit", "pear", "thing", ()), ("kind", "animal", "dog", "thing", ()), ("kind", "animal", "horse", "thing", ()),
    ("kind", "animal", "cat", "thing", ()), ("kind", "animal", "cow", "thing", ()), ("kind", "color", "red", "thing", ()),
    ("kind", "color", "blue", "thing", ()), ("kind", "color", "green", "thing", ()),
)


# The held-out family: questions, facts and option words the main family never uses.
HELD_OUT_POOLS = {
    "city": ("Paris", "London", "Rome", "Berlin", "Madrid", "Tokyo", "Moscow", "Cairo", "Athens", "Vienna"),
    "young": ("puppy", "kitten", "calf", "lamb", "foal", "chick", "cub", "piglet"),
    "organ": ("eyes", "ears", "nose", "tongue", "feet", "hands", "teeth"),
    "count": ("three", "five", "seven", "ten", "twelve"),
    "taste": ("sweet", "sour", "salty", "bitter", "spicy"),
}
HELD_OUT_TEMPLATES = {
    "capital": "What is the capital of {x}?",
    "baby": "What is a baby {x} called?",
    "sense": "Which body part do you {x} with?",
    "count": "How many {x} are there?",
    "taste": "How does {x} taste?",
}
HELD_OUT_ITEMS = (
    ("capital", "France", "Paris", "city", ()), ("capital", "England", "London", "city", ()),
    ("capital", "Italy", "Rome", "city", ()), ("capital", "Germany", "Berlin", "city", ()),
    ("capital", "Spain", "Madrid", "city", ()), ("capital", "Japan", "Tokyo", "city", ()),
    ("capital", "Russia", "Moscow", "city", ()), ("capital", "Egypt", "Cairo", "city", ()),
    ("capital", "Greece", "Athens", "city", ()), ("capital", "Austria", "Vienna", "city", ()),
    ("baby", "dog", "puppy", "young", ()), ("baby", "cat", "kitten", "young", ()), ("baby", "cow", "calf", "young", ()),
    ("baby", "sheep", "lamb", "young", ()), ("baby", "horse", "foal", "young", ()), ("baby", "hen", "chick", "young", ()),
    ("baby", "bear", "cub", "young", ("calf",)), ("baby", "pig", "piglet", "young", ()),
    ("sense", "see", "eyes", "organ", ()), ("sense", "hear", "ears", "organ", ()), ("sense", "smell", "nose", "organ", ()),
    ("sense", "taste", "tongue", "organ", ()), ("sense", "walk", "feet", "organ", ()), ("sense", "chew", "teeth", "organ", ()),
    ("count", "days in a week", "seven", "count", ()), ("count", "months in a year", "twelve", "count", ()),
    ("count", "fingers on one hand", "five", "count", ()), ("count", "sides on a triangle", "three", "count", ()),
    ("count", "toes on two feet", "ten", "count", ()),
    ("taste", "sugar", "sweet", "taste", ()), ("taste", "a lemon", "sour", "taste", ()),
    ("taste", "salt", "salty", "taste", ()), ("taste", "coffee", "bitter", "taste", ()),
    ("taste", "chili", "spicy", "taste", ()), ("taste", "honey", "sweet", "taste", ()),
)


@dataclass(frozen=True)
class Family:
    """A template family: question templates, their items and pools, and how a question is written.

    ``question``: the first line's prefix; ``separator``: the token between an option's label and its
    content (``"."`` gives ``A. yellow``, ``")"`` gives ``A) Paris``). ``slot_is_one_token``: whether the
    question's slot must be one token (the main family's slots are single words; held-out slots may be
    phrases such as "days in a week").
    """

    name: str
    templates: dict
    items: tuple
    pools: dict
    question: str = "Question:"
    separator: str = "."
    slot_is_one_token: bool = True


MAIN = Family("main", TEMPLATES, ITEMS, POOLS)
HELD_OUT = Family("held-out questions, facts and option wording ('Q: ...', 'A) Paris')", HELD_OUT_TEMPLATES,
                  HELD_OUT_ITEMS, HELD_OUT_POOLS, question="Q:", separator=")", slot_is_one_token=False)


def _question(template: str, slot: str, family: Family = MAIN) -> str:
    article = "n" if slot[0] in "aeiou" else ""
    return family.templates[template].format(x=slot, n=article)


@dataclass(frozen=True)
class MCQBatch:
    """Prompts of one template and one token length, with where each option sits.

    Attributes:
        tokens: ``[batch, pos]``; the last position (END) follows "Answer:".
        prompts: the text of each prompt.
        correct: ``[batch]`` index of the right option (0 = first label).
        label_pos / content_pos: ``[batch, option]`` positions of each option's label token ("B" in
            "\\nB. yellow") and content token (" yellow") in the last question.
        template: which question template the batch holds.
    """

    tokens: Int[Tensor, "batch pos"]
    prompts: tuple[str, ...]
    correct: Int[Tensor, "batch"]
    label_pos: Int[Tensor, "batch option"]
    content_pos: Int[Tensor, "batch option"]
    template: str


@dataclass(frozen=True)
class MCQTask:
    """A seeded set of MCQ prompts in batches of equal length; `answer_ids` are the tokens after "Answer:"."""

    batches: tuple[MCQBatch, ...]
    labels: str
    answer_ids: Int[Tensor, "option"]
    shots: int

    @property
    def n_options(self) -> int:
        return len(self.labels)

    @property
    def correct(self) -> Int[Tensor, "item"]:
        return torch.cat([batch.correct for batch in self.batches])

    def __len__(self) -> int:
        return sum(len(batch.prompts) for batch in self.batches)


SINGLE_TOKEN_RULE = "MCQ labels and answers must be single tokens. Pick other label symbols (e.g. labels='QZRX')"


def single_token_id(model: TransformerBridge, text: str) -> int:
    """The id of `text` if the tokenizer keeps it as one token, else a ValueError that says what to change."""
    return tasks.require_single_token(model, text, why=SINGLE_TOKEN_RULE)


def usable_items(model: TransformerBridge, n_options: int, family: Family = MAIN) -> dict[str, list[tuple]]:
    """Items whose answer and at least ``n_options - 1`` wrong options are single tokens (and the slot too,
    if the family asks), by template."""
    one = set(tasks.single_token_words(model, sorted({w for pool in family.pools.values() for w in pool}
                                                     | {item[1] for item in family.items}
                                                     | {item[2] for item in family.items})))
    kept: dict[str, list[tuple]] = {}
    for template, slot, answer, pool, also_right in family.items:
        wrong = [w for w in family.pools[pool] if w in one and w != answer and w not in also_right and w != slot]
        if (slot in one or not family.slot_is_one_token) and answer in one and len(wrong) >= n_options - 1:
            kept.setdefault(template, []).append((slot, answer, tuple(wrong)))
    return {template: items for template, items in kept.items() if len(items) >= 2}


def _render(question: str, options: Sequence[str], labels: str, answer: str | None, family: Family = MAIN) -> str:
    lines = [f"{family.question} {question}"] + [f"{label}{family.separator} {option}"
                                                   for label, option in zip(labels, options)]
    return "\n".join(lines) + "\nAnswer:" + (f" {answer}" if answer is not None else "")


def _draw(rng: random.Random, item: tuple, n_options: int, position: int) -> list[str]:
    slot, answer, wrong = item
    options = rng.sample(list(wrong), n_options - 1)
    options.insert(position, answer)
    return options


def _option_positions(tokens: Tensor, label_ids: Sequence[int], content_ids: Tensor, dot_id: int
                      ) -> tuple[Tensor, Tensor]:
    """Positions of each label token in the *last* question, checked against "label . content" (`dot_id`:
    the family's separator)."""
    labels, contents = [], []
    for j, label_id in enumerate(label_ids):
        where = (tokens == label_id).nonzero().flatten()
        if where.numel() == 0:
            raise ValueError(f"label token {label_id} not found in the prompt")
        pos = int(where[-1])
        if pos + 2 >= tokens.shape[0] or tokens[pos + 1] != dot_id or tokens[pos + 2] != content_ids[j]:
            raise ValueError("an option does not tokenize as 'label', separator, 'content': this tokenizer merges "
                             "the label with its neighbours; use other labels")
        labels.append(pos)
        contents.append(pos + 2)
    return torch.tensor(labels), torch.tensor(contents)


def mcq_task(model: TransformerBridge, *, n: int, seed: int, shots: int = 0, labels: str = LETTERS,
             n_options: int | None = None, templates: Sequence[str] | None = None, family: Family = MAIN) -> MCQTask:
    """`n` seeded MCQ prompts, the correct option's position balanced within every template.

    Args:
        n: number of prompts (the gate uses at least 50).
        shots: solved examples (same template, other facts) before each question, separated by a blank line.
        labels: one character per option, e.g. "ABCD", "AB" (2 options) or "QZRX".
        n_options: defaults to ``len(labels)``.
        templates: restrict to these question templates (default: every template this tokenizer can fill).
        family: `MAIN` (the screens' prompts) or `HELD_OUT` (other questions, facts and option wording).

    Raises:
        ValueError: if a label is not one token (with and without a leading space), `n` < 1, or too few
            items are left for this tokenizer.
    """
    n_options = n_options or len(labels)
    if n < 1 or shots < 0 or not 2 <= n_options <= len(labels):
        raise ValueError(f"need n >= 1, shots >= 0 and 2 <= n_options <= len(labels) = {len(labels)}; "
                         f"got n={n}, shots={shots}, n_options={n_options}")
    labels = labels[:n_options]
    answer_ids = [single_token_id(model, " " + label) for label in labels]
    label_ids = [single_token_id(model, label) for label in labels]
    dot_id = single_token_id(model, family.separator)
    items = usable_items(model, n_options, family)
    names = [t for t in (templates or family.templates) if t in items and len(items[t]) > shots]
    if not names:
        raise ValueError(f"no template has {shots + 1} usable items for this tokenizer and {n_options} options")
    rng = random.Random(seed)
    grouped: dict[str, list[tuple[str, int, list[str]]]] = {name: [] for name in names}
    for i in range(n):
        name = names[i % len(names)]
        position = (len(grouped[name]) + seed) % n_options  # balanced over positions within each template
        query, *examples = rng.sample(items[name], shots + 1)
        parts = []
        for example in examples:
            where = rng.randrange(n_options)
            parts.append(_render(_question(name, example[0], family), _draw(rng, example, n_options, where), labels,
                                 labels[where], family))
        options = _draw(rng, query, n_options, position)
        parts.append(_render(_question(name, query[0], family), options, labels, None, family))
        grouped[name].append(("\n\n".join(parts), position, options))
    batches = []
    for name in names:
        by_length: dict[int, list[tuple[str, int, list[str]]]] = {}
        for row in grouped[name]:  # one batch per token length (held-out slots may be phrases)
            by_length.setdefault(len(model.to_tokens(row[0])[0]), []).append(row)
        batches += [_batch(model, name, rows, label_ids, dot_id) for _, rows in sorted(by_length.items())]
    return MCQTask(batches=tuple(batches), labels=labels, answer_ids=torch.tensor(answer_ids), shots=shots)


def _batch(model: TransformerBridge, name: str, rows: list[tuple[str, int, list[str]]], label_ids: Sequence[int],
           dot_id: int) -> MCQBatch:
    """Prompts of one template and one token length, with every label's and content's position."""
    prompts = [text for text, _, _ in rows]
    tokens = tasks.tokenize_prompts(model, prompts)
    found = [_option_positions(row_tokens, label_ids,
                               torch.tensor([single_token_id(model, " " + word) for word in options]), dot_id)
             for row_tokens, (_, _, options) in zip(tokens, rows)]
    return MCQBatch(tokens=tokens, prompts=tuple(prompts), correct=torch.tensor([position for _, position, _ in rows]),
                    label_pos=torch.stack([f[0] for f in found]), content_pos=torch.stack([f[1] for f in found]),
                    template=name)
