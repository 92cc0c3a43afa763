"""Needle-in-a-haystack prompts and Wu et al.'s retrieval score (Wu et al. 2024, arXiv 2404.15574).

A prompt is a haystack of filler tokens with a short *needle* inside it ("The secret passphrase is falcon copper
maple river."), then a question and an answer prefix ("... The secret passphrase is"); the model recalls the
needle when it continues with the code. Two families, which share no word, filler or wording:

- ``"passphrase"`` (the screen's): a code of four ordinary words, in a haystack of neutral synthetic sentences;
- ``"digits"`` (held out): a four-digit meeting code, in a window of the Python language reference.

`retrieval_scores` is the score of the authors' code (``nightdessert/Retrieval_Head``, ``retrieval_calculate``):
at each greedy decoding step, a head whose top-1 attended position lies inside the needle *and* holds the token
just generated gains ``1 / |needle|``; a run's score is the sum over its steps, and a head's score is the mean over
the runs in which the needle was recalled. It is a pure function of attention rows and tokens: the book gets
the rows from one teacher-forced pass over the prompt and the model's own greedy output (causal attention makes
that pass's rows those of step-by-step decoding), see `helpers.experiments.retrieval`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from helpers import tasks

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

# Words for the passphrase codes: concrete, neutral, never used by the filler sentences below.
CODE_WORDS = ("falcon", "copper", "maple", "river", "violet", "harbor", "lemon", "silver", "tiger", "cloud", "amber",
              "pepper", "canyon", "orbit", "willow", "marble", "rocket", "cotton", "dragon", "planet", "jungle",
              "velvet", "castle", "pencil", "monkey", "carpet", "anchor", "wizard", "button", "tunnel", "ginger",
              "saddle", "puzzle", "garlic", "helmet", "walnut", "island", "rabbit", "summer", "winter")
# Neutral filler: "The {subject} {verb} {place}." from word lists written for this book.
FILLER_SUBJECTS = ("The farmer", "The teacher", "A small dog", "The old man", "My neighbour", "The child", "A bird",
                   "The baker", "Our family", "The driver", "A young woman", "The students")
FILLER_VERBS = ("walked slowly", "waited quietly", "sat for a while", "looked around", "spent the morning",
                "talked for an hour", "rested", "worked all day", "stayed late", "read a book")
FILLER_PLACES = ("near the house", "in the park", "by the road", "at the station", "in the kitchen", "on the hill",
                 "behind the school", "at the market", "under the tree", "in the garden", "by the lake",
                 "in the small town")

FAMILIES = {  # name -> (needle before the code, after it, question with the answer prefix, haystack)
    "passphrase": (" The secret passphrase is", ".", "\nWhat is the secret passphrase? The secret passphrase is",
                   "synthetic"),
    "digits": (" Remember: the meeting code is", ".", "\nWhat is the meeting code? The meeting code is",
               "reference"),
}
FAMILY_NAMES = {"passphrase": "a four-word passphrase in neutral synthetic sentences",
                "digits": "a four-digit meeting code in the Python language reference"}
CODE_LENGTH = 4  # words or digits per code


@dataclass(frozen=True)
class Needles:
    """Needle-in-a-haystack prompts of one length, their codes and where the codes sit.

    Attributes:
        tokens: ``[batch, pos]`` the prompts: (BOS,) haystack with the needle, question, answer prefix.
        answers: ``[batch, n]`` the code's token ids: what a model that recalls the needle says next.
        needle_start: ``[batch]`` position of the code's first token in `tokens` (the code fills
            ``needle_start .. needle_start + n - 1``).
        family: ``"passphrase"`` or ``"digits"``.
        depth: ``[batch]`` where the needle sits, as a share of the haystack (0 = start).
    """

    tokens: Int[Tensor, "batch pos"]
    answers: Int[Tensor, "batch n"]
    needle_start: Int[Tensor, "batch"]
    family: str
    depth: Float[Tensor, "batch"]

    @property
    def n_answer(self) -> int:
        return self.answers.shape[1]

    @property
    def prompt_len(self) -> int:
        return self.tokens.shape[1]

    def teacher_forced(self, generated: Int[Tensor, "batch n"] | None = None) -> Int[Tensor, "batch pos_plus"]:
        """Prompt + the answer (or `generated`) without its last token: one pass over these gives, at the last
        ``n`` positions, the predictions and attention rows of the ``n`` greedy decoding steps."""
        follow = self.answers if generated is None else generated
        return torch.cat([self.tokens, follow[:, :-1]], dim=1)

    def needle_mask(self, length: int | None = None) -> Bool[Tensor, "batch key"]:
        """True at the code's positions, over `length` keys (default: the prompt's)."""
        keys = torch.arange(self.prompt_len if length is None else length)
        start = self.needle_start[:, None]
        return (keys >= start) & (keys < start + self.n_answer)


def _filler_sentences(generator: torch.Generator, count: int) -> list[str]:
    picks = [torch.randint(len(pool), (count,), generator=generator).tolist()
             for pool in (FILLER_SUBJECTS, FILLER_VERBS, FILLER_PLACES)]
    return [f" {FILLER_SUBJECTS[s]} {FILLER_VERBS[v]} {FILLER_PLACES[p]}." for s, v, p in zip(*picks)]


def _haystack(model: TransformerBridge, kind: str, length: int, generator: torch.Generator) -> list[int]:
    if kind == "synthetic":
        ids: list[int] = []
        while len(ids) < length:
            ids += tasks.token_ids(model, "".join(_filler_sentences(generator, 8)))
        return ids[:length]
    seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
    return tasks.natural_text(model, batch=1, length=length, seed=seed, corpus=kind).tokens[0, -length:].tolist()


def _code(model: TransformerBridge, family: str, generator: torch.Generator) -> list[int]:
    if family == "passphrase":
        words = tasks.single_token_words(model, CODE_WORDS)
        if len(words) < 2 * CODE_LENGTH:
            raise ValueError(f"this tokenizer keeps only {len(words)} code words as single tokens: {words}")
        picks = torch.randperm(len(words), generator=generator)[:CODE_LENGTH].tolist()
        return [tasks.single_token_id(model, " " + words[i]) for i in picks]
    digits = "".join(str(d) for d in (torch.randint(1, 10, (CODE_LENGTH,), generator=generator)).tolist())
    return tasks.token_ids(model, " " + digits)


def needle_prompts(model: TransformerBridge, *, batch: int, length: int, seed: int,
                   family: str = "passphrase", depth: tuple[float, float] = (0.1, 0.9)) -> Needles:
    """`batch` needle-in-a-haystack prompts, each with a haystack of `length` tokens and the needle at a seeded
    depth (uniform in `depth`, moved back to just after a full stop when one is within 24 tokens, so the needle
    starts a sentence).

    Raises:
        ValueError: for an unknown family, a length under 32, or codes that tokenize to different lengths
            (every prompt of a batch must have one length).
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {sorted(FAMILIES)}")
    if length < 32 or batch < 1:
        raise ValueError(f"need length >= 32 haystack tokens and batch >= 1; got length={length}, batch={batch}")
    before, after, question, kind = FAMILIES[family]
    before_ids, after_ids = tasks.token_ids(model, before), tasks.token_ids(model, after)
    question_ids = tasks.token_ids(model, question)
    stop = set(tasks.token_ids(model, "."))
    generator = torch.Generator().manual_seed(seed)
    rows, codes, starts, depths = [], [], [], []
    for _ in range(batch):
        hay = _haystack(model, kind, length, generator)
        share = depth[0] + (depth[1] - depth[0]) * float(torch.rand(1, generator=generator))
        cut = int(share * length)
        for back in range(min(24, cut)):
            if hay[cut - back - 1] in stop:
                cut -= back
                break
        code = _code(model, family, generator)
        rows.append(hay[:cut] + before_ids + code + after_ids + hay[cut:] + question_ids)
        codes.append(code)
        starts.append(cut + len(before_ids))
        depths.append(cut / length)
    if len({len(code) for code in codes}) > 1:
        raise ValueError(f"the {family} codes tokenize to different lengths {sorted({len(c) for c in codes})}; "
                         "this tokenizer merges digits: use the passphrase family")
    bos = tasks.bos_column(model, batch)
    tokens = torch.cat([bos, torch.tensor(rows)], dim=1)
    return Needles(tokens=tokens, answers=torch.tensor(codes), needle_start=torch.tensor(starts) + bos.shape[1],
                   family=family, depth=torch.tensor(depths))


# --------------------------------------------------------------------------------------------------
# Recall and the retrieval score: pure functions of tokens and attention rows.


def recall(generated: Int[Tensor, "batch n"], answers: Int[Tensor, "batch n"]
           ) -> tuple[Bool[Tensor, "batch"], Float[Tensor, "batch"]]:
    """Exact match (every code token, in order) and per-token accuracy (share of positions right) per prompt."""
    if generated.shape != answers.shape:
        raise ValueError(f"generated {tuple(generated.shape)} and answers {tuple(answers.shape)} must match")
    right = generated == answers
    return right.all(dim=1), right.float().mean(dim=1)


def retrieval_hits(rows: Float[Tensor, "layer batch head step key"], tokens: Int[Tensor, "batch key"],
                   needle: Bool[Tensor, "batch key"], generated: Int[Tensor, "batch step"]
                   ) -> Float[Tensor, "layer batch head"]:
    """Each run's retrieval score per head: ``(1 / |needle|)`` times the number of decoding steps whose top-1
    attended key lies inside the needle and holds the token generated at that step.

    Args:
        rows: attention of each decoding step's query (the position that predicts ``generated[:, step]``).
        tokens: the tokens at the keys (prompt, then the tokens generated before the last step).
        needle: True at the needle's keys; ``|needle|`` is counted per run.
        generated: the token generated at each step.
    """
    n_layers, batch, n_heads, steps, n_keys = rows.shape
    if tokens.shape != (batch, n_keys) or needle.shape != (batch, n_keys) or generated.shape != (batch, steps):
        raise ValueError(f"rows {tuple(rows.shape)} need tokens and needle [{batch}, {n_keys}] and generated "
                         f"[{batch}, {steps}]; got {tuple(tokens.shape)}, {tuple(needle.shape)}, "
                         f"{tuple(generated.shape)}")
    size = needle.sum(dim=1)  # [batch]
    if (size == 0).any():
        raise ValueError("every run needs a needle: some rows of `needle` are all False")
    top = rows.argmax(dim=-1)  # [layer, batch, head, step]: the top-1 attended key
    index = torch.arange(batch)[None, :, None, None]
    inside = needle[index, top]  # [layer, batch, head, step]
    copies = tokens[index, top] == generated[None, :, None, :]
    return (inside & copies).float().sum(dim=-1) / size[None, :, None]


def retrieval_scores(hits: Float[Tensor, "layer batch head"], recalled: Bool[Tensor, "batch"]
                     ) -> Float[Tensor, "layer head"]:
    """Wu et al.'s retrieval score per head: the mean of `retrieval_hits` over the runs that recalled the needle
    (only successful retrievals count).

    Raises:
        ValueError: if no run recalled the needle (the score is undefined: the gate failed).
    """
    if recalled.shape != hits.shape[1:2]:
        raise ValueError(f"recalled must be [batch={hits.shape[1]}]; got {tuple(recalled.shape)}")
    if not recalled.any():
        raise ValueError("no run recalled the needle, so no run counts; pick haystacks the model can search")
    return hits[:, recalled].mean(dim=1)


def swapped_codes(prompts: Needles) -> Int[Tensor, "batch pos"]:
    """The control prompts: each needle holds the next prompt's code instead of its own (same haystack, same
    question), so nothing in the context supports the prompt's own answer. Needs two different codes."""
    rolled = prompts.answers.roll(1, dims=0)
    if (rolled == prompts.answers).all(dim=1).any():
        raise ValueError("a prompt would keep its own code after the swap; use a batch of at least two different codes")
    tokens = prompts.tokens.clone()
    columns = prompts.needle_start[:, None] + torch.arange(prompts.n_answer)  # [batch, n]
    tokens.scatter_(1, columns, rolled)
    return tokens


def shifted_control(needle: Bool[Tensor, "batch key"], query_tokens: Int[Tensor, "batch step"]
                    ) -> tuple[Bool[Tensor, "batch key"], Int[Tensor, "batch step"]]:
    """The screen's control, as inputs to `retrieval_hits`: the needle moved one key back and each step's own
    query token in place of the generated one. A head scores here when its top-1 key is the earlier copy of the
    token it is reading (a duplicate-token head), not the token after it, which a retrieval head copies."""
    shifted = torch.zeros_like(needle)
    shifted[:, :-1] = needle[:, 1:]  # key k is in the shifted needle when key k + 1 is in the needle
    return shifted, query_tokens
