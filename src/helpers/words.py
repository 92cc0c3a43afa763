"""Words from a tokenizer's tokens: which tokens start a word, and each word's span of pieces.

A subword tokenizer cuts a rare word into several pieces (SmolLM2's byte-level BPE splits " unbelievableness"
into " unbelie" + "v" + "ab" + "leness"). The subword-merge page asks whether heads join those pieces back
together, so it needs to know, for every token, which word it belongs to. The two conventions the book meets
both mark the space *before* a word on the word's first piece: byte-level BPE (GPT-2, SmolLM2) writes it as
"Ġ" (a newline as "Ċ"), SentencePiece (Gemma) as "▁". Decoded, both are a leading space.

**The rule** (the same for every tokenizer, on each token's decoded text):

- a token *continues* the word of the token before it when its text begins with a letter (no leading space,
  newline, digit or punctuation) and the text of the token before it ends with a letter, and neither is a
  special token (BOS, padding);
- every other token *starts* something: a word if its text, leading whitespace stripped, begins with a letter;
  otherwise a one-token unit that is not a word (punctuation, digits, whitespace, special tokens).

So a word is a run of letter pieces with no space or punctuation inside: "(parenthesised)" holds the word
"parenthesised"; "don't" is the word "don", then "'t"; "foo_bar" is two words; numbers are not words (both
tokenizers split digits one per piece, so "1980" would be a four-piece "word" by construction, not a word the
model must assemble). A word-level tokenizer (every token one word, as in the tests' tiny fixture) makes every
token a start.

Example::

    >>> starts_from_pieces(["The", "Ġunbelie", "v", "ab", "leness", "Ġof", "."])
    [True, True, False, False, False, True, True]
    >>> spans_from_starts([True, True, False, False, False, True, True], [True] * 6 + [False])
    [(0, 1), (1, 5), (5, 6)]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Union

import torch
from jaxtyping import Bool, Int
from torch import Tensor

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import PreTrainedTokenizerBase

    Source = Union[TransformerBridge, PreTrainedTokenizerBase]

Span = tuple[int, int]  # [start, end): the word's pieces are tokens start .. end - 1

# How each convention writes whitespace at the start of a piece (raw pieces, before decoding).
MARKERS = {"Ġ": " ", "▁": " ", "Ċ": "\n", "ĉ": "\t"}


def marker_text(piece: str) -> str:
    """A raw piece as text: the whitespace markers of byte-level BPE ("Ġ", "Ċ", "ĉ") and SentencePiece ("▁")
    turned back into whitespace. Enough for ASCII pieces written by hand; real tokens are decoded by the
    tokenizer itself (`token_texts`), which also handles non-ASCII bytes."""
    if not isinstance(piece, str):
        raise ValueError(f"a piece is a string such as 'Ġunbelie' or '▁unbeliev'; got {piece!r}")
    return "".join(MARKERS.get(char, char) for char in piece)


def starts_from_texts(texts: Sequence[str], special: Sequence[bool] | None = None) -> list[bool]:
    """The module's rule on decoded token texts: True where a token does not continue the word before it.

    Args:
        texts: each token's text, a leading space included (" unbelie", "v", ".").
        special: True for special tokens (BOS, padding), which always stand alone.
    """
    special = [False] * len(texts) if special is None else list(special)
    if len(special) != len(texts):
        raise ValueError(f"special has {len(special)} flags for {len(texts)} texts; pass one per token")
    starts = []
    for i, text in enumerate(texts):
        continues = (i > 0 and text[:1].isalpha() and texts[i - 1][-1:].isalpha()
                     and not special[i] and not special[i - 1])
        starts.append(not continues)
    return starts


def starts_from_pieces(pieces: Sequence[str]) -> list[bool]:
    """`starts_from_texts` on raw pieces in either convention ("Ġ" or "▁" marks a space; see `marker_text`)."""
    return starts_from_texts([marker_text(piece) for piece in pieces])


def is_word_text(text: str) -> bool:
    """Whether a unit starting with this text is a word: its first non-space character is a letter."""
    return text.lstrip()[:1].isalpha()


def spans_from_starts(starts: Sequence[bool], is_word: Sequence[bool], *, min_pieces: int = 1) -> list[Span]:
    """The ``[start, end)`` span of every word, from one sequence's start flags.

    Args:
        starts: True where a token starts a unit (`starts_from_texts`); the first token always does.
        is_word: True where a token's text could open a word (`is_word_text`); only units whose first
            token has it are words.
        min_pieces: keep only words of at least this many pieces (3 for the page's score).
    """
    starts, is_word = [bool(s) for s in starts], [bool(w) for w in is_word]
    if len(starts) != len(is_word):
        raise ValueError(f"starts has {len(starts)} flags but is_word {len(is_word)}; pass one of each per token")
    if starts and not starts[0]:
        raise ValueError("starts[0] is False, but the first token of a sequence always starts a unit")
    if min_pieces < 1:
        raise ValueError(f"min_pieces must be at least 1; got {min_pieces}")
    bounds = [i for i, start in enumerate(starts) if start] + [len(starts)]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if is_word[a] and b - a >= min_pieces]


def _tokenizer(source: Source):
    tokenizer = getattr(source, "tokenizer", source)
    if not callable(getattr(tokenizer, "decode", None)) or not hasattr(tokenizer, "all_special_ids"):
        raise ValueError(f"pass a model (TransformerBridge) or a Hugging Face tokenizer; got {type(source).__name__}")
    return tokenizer


def convention(source: Source) -> str:
    """How the tokenizer marks a word boundary: ``"byte-level"`` (GPT-2, SmolLM2: "Ġ"), ``"sentencepiece"``
    (Gemma: "▁") or ``"word-level"`` (every token a word, the tests' fixture)."""
    tokenizer = _tokenizer(source)
    ids = tokenizer.encode("a a", add_special_tokens=False)
    pieces = tokenizer.convert_ids_to_tokens(ids)
    if len(pieces) == 2 and pieces[1].startswith("Ġ"):
        return "byte-level"
    if len(pieces) == 2 and pieces[1].startswith("▁"):
        return "sentencepiece"
    if len(pieces) == 2 and pieces[1] == "a" and " " in tokenizer.decode(ids):
        return "word-level"
    raise ValueError(f"cannot tell how this tokenizer marks words: 'a a' becomes {pieces}; expected a second piece "
                     "starting with 'Ġ' (byte-level BPE) or '▁' (SentencePiece), or two whole-word tokens")


def token_texts(source: Source, ids: Sequence[int]) -> list[str]:
    """Each token's decoded text with its leading space (" unbelie"), as the rule reads it. A word-level
    tokenizer's tokens get a leading space each: every one is a word of its own."""
    tokenizer = _tokenizer(source)
    space = " " if convention(tokenizer) == "word-level" else ""
    return [space + tokenizer.decode([int(i)]) for i in ids]


def _check_tokens(tokens: Tensor) -> None:
    if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.is_floating_point():
        shape = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
        raise ValueError(f"tokens must be an integer tensor [batch, pos]; got {shape}")


def _flags(source: Source, tokens: Tensor) -> tuple[Tensor, Tensor]:
    """``(starts, opens_word)`` as ``[batch, pos]`` booleans: the rule applied through a per-id table."""
    _check_tokens(tokens)
    tokenizer = _tokenizer(source)
    unique = tokens.unique().tolist()
    texts = dict(zip(unique, token_texts(tokenizer, unique)))
    special = set(tokenizer.all_special_ids)
    starts, opens = torch.ones(tokens.shape, dtype=torch.bool), torch.zeros(tokens.shape, dtype=torch.bool)
    for row, ids in enumerate(tokens.tolist()):
        row_texts = [texts[i] for i in ids]
        flags = [i in special for i in ids]
        starts[row] = torch.tensor(starts_from_texts(row_texts, flags), dtype=torch.bool)
        opens[row] = torch.tensor([is_word_text(t) and not s for t, s in zip(row_texts, flags)], dtype=torch.bool)
    return starts, opens


def word_starts(source: Source, tokens: Int[Tensor, "batch pos"]) -> Bool[Tensor, "batch pos"]:
    """True where a token starts a word or stands alone (punctuation, digits, whitespace, BOS); False where it
    continues the word of the token before it (the module's rule, on the tokenizer's decoded pieces).

    Args:
        source: a model (its ``.tokenizer``) or a Hugging Face tokenizer.
        tokens: token ids, e.g. ``tasks.natural_text(...).tokens``.
    """
    return _flags(source, tokens)[0]


def word_spans(source: Source, tokens: Int[Tensor, "batch pos"], *, min_pieces: int = 1) -> list[list[Span]]:
    """The ``[start, end)`` span of every word of each sequence (units that begin with a letter), in order.

    Words cut by the edges of a window are returned as they are; a page that needs whole words drops the
    first and last span itself (`inner_spans`).
    """
    starts, opens = _flags(source, tokens)
    return [spans_from_starts(s.tolist(), o.tolist(), min_pieces=min_pieces) for s, o in zip(starts, opens)]


def inner_spans(spans: Sequence[Span], *, first: int, length: int) -> list[Span]:
    """The spans that lie wholly inside a window cut from a longer text: a word that begins at the window's
    first text position `first` (after BOS) or ends at its last position may be a fragment of a longer one."""
    return [(a, b) for a, b in spans if a > first and b < length]


def spelled(source: Source, ids: Sequence[int]) -> str:
    """One sequence as the rule cuts it, for reading: units between " | ", pieces of one word joined by "·"
    ("The | unbelie·v·ab·leness | of | it | all | ."); spaces and newlines are shown as "␣" and "⏎" where a
    unit holds nothing else."""
    ids = [int(i) for i in ids]
    starts = word_starts(source, torch.tensor([ids]))[0].tolist()
    units: list[list[str]] = []
    for text, start in zip(token_texts(source, ids), starts):
        if start:
            units.append([])
        units[-1].append(text)
    shown = ["·".join(piece.strip() for piece in unit) or "".join(unit).replace(" ", "␣").replace("\n", "⏎")
             for unit in units]
    return " | ".join(shown)
