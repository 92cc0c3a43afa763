"""Checkers for the subword-merge page's exercises: word starts from token pieces, and one head's score."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from helpers import words
from helpers.checks.patterns import random_causal_patterns
from helpers.experiments import subwords

# Hand-written pieces in both conventions: byte-level BPE ("Ġ" a space, "Ċ" a newline) and SentencePiece ("▁")
PIECES = {
    "byte-level, a four-piece word": ["The", "Ġunbelie", "v", "ab", "leness", "Ġof", "Ġit", "Ġall", "."],
    "SentencePiece, a two-piece word": ["The", "▁unbeliev", "ableness", "▁of", "▁it", "▁all", "."],
    "byte-level, punctuation and digits": ["He", "Ġvisited", "ĠCzech", "oslov", "akia", "Ġin", "Ġ", "1", "9", "8",
                                           "0", "."],
    "byte-level, brackets and a newline": ["Ġ(", "parent", "hes", "ised", ")", "Ċ", "Next", "Ġline"],
    "SentencePiece, double spaces and newlines": ["\n\n", "▁▁", "ind", "ented", "▁text", ",", "▁don", "'", "t"],
    "byte-level, an identifier": ["Ġfoo", "_", "bar", "Ġ=", "Ġsub", "word", "Ġmerge", "s"],
}


def check_word_starts(reader_fn: Callable[[list[str]], Sequence[bool]]) -> str:
    """Check `reader_fn(pieces) -> [bool per piece]` against `words.starts_from_pieces` on hand-written pieces."""
    for label, pieces in PIECES.items():
        expected = words.starts_from_pieces(pieces)
        got = [bool(flag) for flag in reader_fn(list(pieces))]
        assert len(got) == len(expected), f"on {label} you returned {len(got)} flags for {len(pieces)} pieces"
        wrong = [i for i, (g, e) in enumerate(zip(got, expected)) if g != e]
        assert not wrong, (f"on {label} {pieces}: piece {wrong[0]} ({pieces[wrong[0]]!r}) should "
                           f"{'start' if expected[wrong[0]] else 'continue'} a word; your flags {got}")
    return f"All {len(PIECES)} piece lists match the reference."


SEQ_LEN = 12
SPANS = [(1, 2), (2, 5), (5, 6), (6, 7), (7, 8), (8, 11)]  # a 3-piece word at 2-4, another at 8-10


def _one_hot(keys: Tensor) -> Float[Tensor, "query key"]:
    return torch.nn.functional.one_hot(keys, SEQ_LEN).float()


def _first_piece_pattern(spans: Sequence[tuple[int, int]], shift: int) -> Float[Tensor, "query key"]:
    """Each query attends to the first piece of the word `shift` words before its own (itself outside words)."""
    keys = torch.arange(SEQ_LEN)
    for i, (a, b) in enumerate(spans):
        keys[a:b] = spans[max(i - shift, 0)][0]
    return _one_hot(keys)


def score_cases() -> dict[str, tuple[Float[Tensor, "query key"], list[tuple[int, int]]]]:
    """Patterns with word spans whose scores are known, or follow from the reference."""
    uniform = torch.ones(SEQ_LEN, SEQ_LEN).tril() / torch.arange(1, SEQ_LEN + 1)[:, None]
    cases = {
        "a head that attends to the first piece of its own word (score 1)": (_first_piece_pattern(SPANS, 0), SPANS),
        "a head that attends to the first piece of the word before (score below 0)":
            (_first_piece_pattern(SPANS, 1), SPANS),
        "a previous-token head (score 0)": (_one_hot((torch.arange(SEQ_LEN) - 1).clamp(min=0)), SPANS),
        "a uniform causal head": (uniform, SPANS),
        "other words, the first-piece head": (_first_piece_pattern(SPANS[:4] + [(7, 11)], 0), SPANS[:4] + [(7, 11)]),
    }
    cases.update({f"random pattern (seed {seed})": (random_causal_patterns(seed, SEQ_LEN, SEQ_LEN), SPANS)
                  for seed in range(3)})
    return cases


def check_merge_score(reader_fn: Callable[[Float[Tensor, "query key"], list[tuple[int, int]]], float]) -> str:
    """Check `reader_fn(pattern, spans)`, one head's within-word minus offset-matched across-word attention,
    against `subwords.head_score`."""
    for label, (pattern, spans) in score_cases().items():
        expected = subwords.head_score(pattern, spans)
        got = float(reader_fn(pattern.clone(), list(spans)))
        assert abs(got - expected) < 1e-5, f"on {label} your score is {got:.4f}; expected {expected:.4f}"
    return f"All {len(score_cases())} patterns score as the reference does."
