"""Seeded prompt generators; each returns one validated `TaskBatch`.

- `repeated_tokens`: random tokens repeated twice, the standard probe for induction heads.
- `random_tokens`: the same without a repeat, the control.
- `natural_text`: windows of real English prose (Python's own standard-library docstrings).
- `ioi`: indirect-object identification prompts ("When Mary and John went to the store, John gave a
  drink to" -> " Mary") in ABBA and BABA order, with ABC-corrupted counterparts.

Generators take the model only for its tokenizer and BOS policy, and a `seed` for their own
``random.Random`` / ``torch.Generator``: the same seed gives the same batch on every machine.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

import torch
from jaxtyping import Int
from torch import Tensor

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


@dataclass(frozen=True)
class TaskBatch:
    """Prompts for one experiment, tokenized, with everything a metric needs to know about them.

    Attributes:
        name: the task, e.g. ``"repeated_tokens"``.
        tokens: ``[batch, pos]`` token ids, one length for the whole batch.
        prompts: the text of each prompt (token strings joined, for random-token tasks).
        answers / wrong: ``[batch]`` ids of the correct and of the competing next token, if any.
        corrupted: ``[batch, pos]`` tokens of a matched control prompt (e.g. IOI's ABC version).
        positions: named ``[batch]`` positions, e.g. ``"end"`` or ``"s2"``.
        info: anything else a page wants to report (templates used, sizes).
    """

    name: str
    tokens: Int[Tensor, "batch pos"]
    prompts: tuple[str, ...]
    answers: Int[Tensor, "batch"] | None = None
    wrong: Int[Tensor, "batch"] | None = None
    corrupted: Int[Tensor, "batch pos"] | None = None
    positions: Mapping[str, Int[Tensor, "batch"]] = field(default_factory=dict)
    info: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        tokens = self.tokens
        if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.is_floating_point():
            raise ValueError(f"{self.name}: tokens must be an integer tensor [batch, pos]; got "
                             f"{getattr(tokens, 'shape', type(tokens).__name__)}")
        batch, seq_len = tokens.shape
        if len(self.prompts) != batch:
            raise ValueError(f"{self.name}: {len(self.prompts)} prompts for a batch of {batch}")
        for label, ids in (("answers", self.answers), ("wrong", self.wrong)):
            if ids is not None and tuple(ids.shape) != (batch,):
                raise ValueError(f"{self.name}: {label} must have shape ({batch},); got {tuple(ids.shape)}")
        if self.corrupted is not None and self.corrupted.shape != tokens.shape:
            raise ValueError(f"{self.name}: corrupted tokens {tuple(self.corrupted.shape)} must match "
                             f"tokens {tuple(tokens.shape)}: clean and corrupted prompts need equal lengths")
        for label, where in self.positions.items():
            if tuple(where.shape) != (batch,) or where.min() < 0 or where.max() >= seq_len:
                raise ValueError(f"{self.name}: position {label!r} must be {batch} indices in [0, {seq_len}); "
                                 f"got shape {tuple(where.shape)}, values {where.min().item()}..{where.max().item()}")

    def __len__(self) -> int:
        return self.tokens.shape[0]


def tokenize_prompts(model: TransformerBridge, prompts: Sequence[str]) -> Int[Tensor, "batch pos"]:
    """Tokenize prompts with the model's BOS policy, insisting that all have the same length.

    Padding would put pad tokens inside attention patterns and shift every named position, so the
    book's tasks are built from templates whose slots hold single tokens instead.

    Raises:
        ValueError: naming the two lengths and an example prompt of each.
    """
    if not prompts:
        raise ValueError("no prompts given")
    rows = [model.to_tokens(prompt)[0] for prompt in prompts]
    lengths = {}
    for prompt, row in zip(prompts, rows):
        lengths.setdefault(len(row), prompt)
    if len(lengths) > 1:
        examples = "; ".join(f"{n} tokens: {text!r}" for n, text in sorted(lengths.items()))
        raise ValueError(
            f"prompts tokenize to {len(lengths)} different lengths ({examples}). A batch needs one length: "
            "use slot fillers that are single tokens for this tokenizer, or split the batch by length."
        )
    return torch.stack(rows).cpu()


def _normalise_piece(piece: str) -> str:
    # GPT-2-style byte-level BPE marks a leading space with "Ġ", SentencePiece with "▁"
    return piece.replace("Ġ", " ").replace("▁", " ")


@lru_cache(maxsize=8)
def _ordinary_ids(tokenizer) -> tuple[int, ...]:
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    special = set(tokenizer.all_special_ids)
    word = re.compile(r"^ ?[A-Za-z]{2,12}$")
    return tuple(i for i, piece in enumerate(pieces)
                 if piece is not None and i not in special and word.match(_normalise_piece(piece)))


def ordinary_token_ids(model: TransformerBridge) -> Int[Tensor, "n"]:
    """Ids of plain word-piece tokens (2-12 ASCII letters, optional leading space), no special tokens.

    Sampling from these instead of the whole vocabulary keeps random sequences free of control,
    byte-fallback and unused tokens (Gemma's vocabulary has thousands of those).
    """
    return torch.tensor(_ordinary_ids(model.tokenizer))


def bos_column(model: TransformerBridge, batch: int) -> Int[Tensor, "batch bos"]:
    """The BOS token as a ``[batch, 1]`` column for models that prepend one, else ``[batch, 0]``."""
    if not model.cfg.default_prepend_bos:
        return torch.empty(batch, 0, dtype=torch.long)
    return torch.full((batch, 1), model.tokenizer.bos_token_id, dtype=torch.long)


def _check_sizes(**sizes: int) -> None:
    for label, value in sizes.items():
        if value < 1:
            raise ValueError(f"{label} must be at least 1; got {value}")


def repeated_tokens(model: TransformerBridge, *, batch: int, half_len: int, seed: int) -> TaskBatch:
    """`half_len` random ordinary tokens, then the same tokens again (after BOS if the model uses one).

    Positions: ``first_start`` and ``second_start`` (index of the first token of each copy). On the
    second copy every next token is predictable by copying from the first, and by nothing else.

    ``corrupted`` keeps each prompt's first half and replaces the second with fresh random tokens: the
    matched control, with the same positions and context length but nothing to copy.
    """
    _check_sizes(batch=batch, half_len=half_len)
    generator = torch.Generator().manual_seed(seed)
    pool = ordinary_token_ids(model)
    half = pool[torch.randint(len(pool), (batch, half_len), generator=generator)]
    fresh = pool[torch.randint(len(pool), (batch, half_len), generator=generator)]
    bos = bos_column(model, batch)
    tokens = torch.cat([bos, half, half], dim=1)
    offset = bos.shape[1]
    return TaskBatch(
        name="repeated_tokens", tokens=tokens, prompts=joined_text(model, tokens),
        corrupted=torch.cat([bos, half, fresh], dim=1),
        positions={"first_start": torch.full((batch,), offset), "second_start": torch.full((batch,), offset + half_len)},
        info={"half_len": half_len, "seed": seed},
    )


def random_tokens(model: TransformerBridge, *, batch: int, length: int, seed: int) -> TaskBatch:
    """`length` random ordinary tokens with no deliberate repeat: the control for `repeated_tokens`."""
    _check_sizes(batch=batch, length=length)
    generator = torch.Generator().manual_seed(seed)
    pool = ordinary_token_ids(model)
    body = pool[torch.randint(len(pool), (batch, length), generator=generator)]
    tokens = torch.cat([bos_column(model, batch), body], dim=1)
    return TaskBatch(name="random_tokens", tokens=tokens, prompts=joined_text(model, tokens),
                     info={"length": length, "seed": seed})


# Real English that ships with Python itself: the docstrings of standard-library modules. Nothing is
# downloaded, and the text is prose written by people, unlike random tokens.
STDLIB_DOC_MODULES = (
    "argparse", "asyncio", "bisect", "calendar", "cmd", "codecs", "collections", "colorsys", "configparser",
    "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "doctest", "email", "enum",
    "fileinput", "fractions", "ftplib", "functools", "getopt", "gettext", "glob", "heapq", "hmac", "html",
    "http", "imaplib", "inspect", "ipaddress", "itertools", "json", "locale", "logging", "mailbox", "numbers",
    "operator", "optparse", "pathlib", "pdb", "pickle", "pprint", "queue", "random", "sched", "secrets",
    "shelve", "shlex", "shutil", "smtplib", "socket", "sqlite3", "statistics", "string", "subprocess",
    "tarfile", "tempfile", "textwrap", "threading", "timeit", "tokenize", "trace", "typing", "unittest",
    "urllib", "uuid", "warnings", "wave", "weakref", "zipfile",
)


def _prose_paragraphs(documents: list[str]) -> str:
    """The paragraphs of `documents` that read as prose: at least 12 words, at least 93 % letters and plain
    punctuation, no doctest prompts (code, tables and grammar rules are dropped), de-duplicated in order."""
    paragraphs = []
    for doc in documents:
        for paragraph in doc.split("\n\n"):
            text = " ".join(paragraph.split())
            letters = sum(ch.isalpha() or ch in " ,.;'" for ch in text)
            if len(text.split()) >= 12 and letters >= 0.93 * len(text) and ">>>" not in text:
                paragraphs.append(text)
    return "\n\n".join(dict.fromkeys(paragraphs))


@lru_cache(maxsize=1)
def stdlib_prose() -> str:
    """Paragraphs of plain prose from standard-library docstrings (module, class and function docs).

    Paragraphs that look like code or tables (under 93 % letters and plain punctuation, fewer than 12
    words, or doctest prompts) are dropped; bulleted prose is kept.
    """
    import importlib
    import inspect

    docs = []
    for name in STDLIB_DOC_MODULES:
        module = importlib.import_module(name)
        docs.append(inspect.getdoc(module) or "")
        docs += [inspect.getdoc(obj) or "" for _, obj in sorted(vars(module).items())
                 if (inspect.isclass(obj) or inspect.isfunction(obj)) and getattr(obj, "__module__", "") == name]
    return _prose_paragraphs(docs)


@lru_cache(maxsize=1)
def reference_prose() -> str:
    """Paragraphs of plain prose from the Python language reference that ships with Python
    (``pydoc_data.topics``: the help pages of statements and data model topics), filtered as
    `stdlib_prose`. Other authors and another register than the docstrings: the held-out text family, so
    the few paragraphs the two share are left out here."""
    from pydoc_data.topics import topics

    seen = set(stdlib_prose().split("\n\n"))
    kept = [p for p in _prose_paragraphs([topics[name] for name in sorted(topics)]).split("\n\n") if p not in seen]
    return "\n\n".join(kept)


CORPORA = {"docstrings": (stdlib_prose, "Python standard-library docstrings"),
           "reference": (reference_prose, "the Python language reference (pydoc_data.topics)")}


@lru_cache(maxsize=8)
def _encoded_prose(tokenizer, corpus: str = "docstrings") -> Int[Tensor, "n"]:
    # encoding the ~200k-character corpus takes ~0.15 s; a page cuts windows from it several times
    return torch.tensor(tokenizer.encode(CORPORA[corpus][0](), add_special_tokens=False))


def natural_text(model: TransformerBridge, *, batch: int, length: int, seed: int,
                 corpus: str = "docstrings") -> TaskBatch:
    """Windows of `length` tokens cut at random from a prose corpus (after BOS if the model uses one):
    ``"docstrings"`` (`stdlib_prose`, what screens read) or ``"reference"`` (`reference_prose`, held out)."""
    _check_sizes(batch=batch, length=length)
    if corpus not in CORPORA:
        raise ValueError(f"unknown corpus {corpus!r}; the book ships {sorted(CORPORA)}")
    stream = _encoded_prose(model.tokenizer, corpus)
    if len(stream) < length + 1:
        raise ValueError(f"the corpus has {len(stream)} tokens, too few for windows of {length}")
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(len(stream) - length, (batch,), generator=generator)
    body = torch.stack([stream[start:start + length] for start in starts.tolist()])
    tokens = torch.cat([bos_column(model, batch), body], dim=1)
    return TaskBatch(name="natural_text", tokens=tokens, prompts=joined_text(model, tokens),
                     info={"length": length, "seed": seed, "corpus": CORPORA[corpus][1]})


def joined_text(model: TransformerBridge, tokens: Tensor) -> tuple[str, ...]:
    return tuple(model.tokenizer.decode(row) for row in tokens)


# --------------------------------------------------------------------------------------------------
# Indirect object identification (Wang et al. 2023); templates and word lists written for this book.

IOI_TEMPLATES = (
    "When {A} and {B} went to the {PLACE}, {S} gave a {OBJECT} to",
    "After {A} and {B} arrived at the {PLACE}, {S} handed a {OBJECT} to",
    "While {A} and {B} were at the {PLACE}, {S} passed a {OBJECT} to",
    "Once {A} and {B} got to the {PLACE}, {S} offered a {OBJECT} to",
    "As {A} and {B} walked into the {PLACE}, {S} threw a {OBJECT} to",
)
IOI_NAMES = (
    "Mary", "John", "Anna", "James", "Sarah", "David", "Laura", "Michael", "Emma", "Paul", "Lisa", "Mark",
    "Kate", "Peter", "Amy", "Robert", "Julia", "Thomas", "Alice", "George", "Rachel", "Daniel", "Helen",
    "Steven", "Grace", "Richard", "Emily", "Andrew", "Sophie", "Kevin", "Claire", "Brian", "Hannah",
    "Jack", "Lucy", "Adam", "Jane", "Ryan", "Susan", "Eric",
)
IOI_NAME_RULE = "IOI names must be single tokens (filter them with single_token_words)"
IOI_PLACES = ("store", "park", "school", "office", "station", "garden", "hospital", "restaurant", "beach",
              "library", "market", "church", "house", "kitchen", "hotel")
IOI_OBJECTS = ("drink", "book", "ring", "letter", "ball", "bag", "key", "bottle", "gift", "pen", "coin",
               "ticket", "box", "flower", "cake")

# A held-out IOI family: other wording (two sentences, the subject's second mention after a time word),
# other verbs, and names, places and objects the main family never uses. Pages re-check their findings
# on it; no screen reads it.
IOI_HELD_OUT_TEMPLATES = (
    "Then, {A} and {B} spent the day at the {PLACE}. Later {S} lent a {OBJECT} to",
    "Today, {A} and {B} did some work at the {PLACE}. Then {S} showed a {OBJECT} to",
    "Today, {A} and {B} went for lunch at the {PLACE}. Then {S} sent a {OBJECT} to",
    "Today, {A} and {B} took a walk in the {PLACE}. Then {S} sold a {OBJECT} to",
)
IOI_HELD_OUT_NAMES = (
    "Oliver", "Chloe", "Henry", "Olivia", "Samuel", "Zoe", "Victor", "Nina", "Oscar", "Ruth", "Frank", "Diana",
    "Leo", "Wendy", "Carl", "Fiona", "Simon", "Megan", "Tony", "Irene", "Harry", "Ella", "Max", "Kim", "Sam",
    "Joe", "Ben", "Tom", "Eva", "Dan",
)
IOI_HELD_OUT_PLACES = ("farm", "museum", "airport", "cafe", "zoo", "bank", "theater", "gym", "lake", "mall",
                       "bakery", "harbor")
IOI_HELD_OUT_OBJECTS = ("hat", "map", "cup", "card", "phone", "lamp", "toy", "watch", "shirt", "basket", "note",
                        "photo")


def token_ids(model: TransformerBridge, text: str) -> list[int]:
    """The tokenizer's ids for `text`, exactly as written (no BOS; a leading space is part of `text`)."""
    return model.tokenizer.encode(text, add_special_tokens=False)


def single_token_id(model: TransformerBridge, text: str) -> int | None:
    """The id of `text` if this tokenizer keeps it as one token, else None. Write the leading space
    yourself where the token follows a word (``" Mary"``, not ``"Mary"``)."""
    ids = token_ids(model, text)
    return ids[0] if len(ids) == 1 else None


def require_single_token(model: TransformerBridge, text: str, *, why: str) -> int:
    """`single_token_id`, or a ValueError that names the pieces and says why one token is needed."""
    ids = token_ids(model, text)
    if len(ids) != 1:
        raise ValueError(f"{text!r} is {len(ids)} tokens ({ids}) for this tokenizer; {why}")
    return ids[0]


def single_token_words(model: TransformerBridge, words: Sequence[str], *, leading_space: bool = True) -> list[str]:
    """The words that are one token for this model's tokenizer (with a leading space by default)."""
    space = " " if leading_space else ""
    return [word for word in words if single_token_id(model, space + word) is not None]


def ioi(model: TransformerBridge, *, n: int, seed: int, templates: Sequence[str] = IOI_TEMPLATES,
        names: Sequence[str] = IOI_NAMES, places: Sequence[str] = IOI_PLACES, objects: Sequence[str] = IOI_OBJECTS,
        name: str = "ioi") -> TaskBatch:
    """`n` IOI prompts alternating ABBA and BABA order, each with an ABC-corrupted twin.

    ABBA: "When Mary and John went to the store, John gave a drink to" -> " Mary" (the indirect object);
    BABA swaps the first two names. The corrupted twin replaces all three name slots with three other,
    distinct names, so it carries no information about which name is the answer.

    Names, places and objects are kept only if they are single tokens for this tokenizer, and only the
    templates whose token length equals the first template's are used, so the batch has one length.

    Positions: ``io`` and ``s1`` (first mentions), ``s2`` (second subject mention), ``end`` (last token).
    `ioi_held_out` is the same task in other words with other fillers.
    """
    _check_sizes(n=n)
    names = single_token_words(model, names)
    places = single_token_words(model, places)
    objects = single_token_words(model, objects)
    if len(names) < 5 or not places or not objects:
        raise ValueError(f"this tokenizer keeps too few single-token fillers: {len(names)} names, "
                         f"{len(places)} places, {len(objects)} objects (need >= 5, 1, 1)")
    probe = dict(A=names[0], B=names[1], S=names[1], PLACE=places[0], OBJECT=objects[0])
    length = {t: model.to_tokens(t.format(**probe)).shape[1] for t in templates}
    usable = [t for t in templates if length[t] == length[templates[0]]]

    rng = random.Random(seed)
    prompts, corrupted, answers, wrong, used = [], [], [], [], []
    for i in range(n):
        template = usable[i % len(usable)]
        io_name, s_name, c1, c2, c3 = rng.sample(names, 5)
        fill = dict(PLACE=rng.choice(places), OBJECT=rng.choice(objects))
        first, second = (io_name, s_name) if i % 2 == 0 else (s_name, io_name)  # ABBA, then BABA
        prompts.append(template.format(A=first, B=second, S=s_name, **fill))
        corrupted.append(template.format(A=c1, B=c2, S=c3, **fill))
        answers.append(require_single_token(model, " " + io_name, why=IOI_NAME_RULE))
        wrong.append(require_single_token(model, " " + s_name, why=IOI_NAME_RULE))
        used.append(template)
    tokens = tokenize_prompts(model, prompts)
    corrupted_tokens = tokenize_prompts(model, corrupted)
    answer_ids, wrong_ids = torch.tensor(answers), torch.tensor(wrong)
    return TaskBatch(
        name=name, tokens=tokens, prompts=tuple(prompts), answers=answer_ids, wrong=wrong_ids,
        corrupted=corrupted_tokens, positions=_ioi_positions(tokens, answer_ids, wrong_ids),
        info={"templates": tuple(dict.fromkeys(used)), "orders": ("ABBA", "BABA"), "seed": seed},
    )


def ioi_held_out(model: TransformerBridge, *, n: int, seed: int) -> TaskBatch:
    """IOI prompts from the held-out family (`IOI_HELD_OUT_TEMPLATES` and its own names, places and
    objects), built like `ioi`: "Today, Oliver and Chloe went for lunch at the cafe. Then Chloe sent a
    map to" -> " Oliver"."""
    return ioi(model, n=n, seed=seed, templates=IOI_HELD_OUT_TEMPLATES, names=IOI_HELD_OUT_NAMES,
               places=IOI_HELD_OUT_PLACES, objects=IOI_HELD_OUT_OBJECTS, name="ioi-held-out")


def _ioi_positions(tokens: Tensor, io_ids: Tensor, s_ids: Tensor) -> dict[str, Tensor]:
    batch, seq_len = tokens.shape
    io, s1, s2 = [], [], []
    for row, io_id, s_id in zip(tokens, io_ids, s_ids):
        io_at = (row == io_id).nonzero().flatten()
        s_at = (row == s_id).nonzero().flatten()
        if len(io_at) != 1 or len(s_at) != 2:  # a filler equal to a name would break the positions
            raise ValueError(f"expected the indirect object once and the subject twice; found {len(io_at)} and {len(s_at)}")
        io.append(io_at[0]); s1.append(s_at[0]); s2.append(s_at[1])
    return {"io": torch.stack(io), "s1": torch.stack(s1), "s2": torch.stack(s2),
            "end": torch.full((batch,), seq_len - 1)}
