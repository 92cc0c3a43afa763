"""Vulnerable heads (García-Carrasco, Maté, Trujillo 2024): where small input edits flip an acronym's
third letter, and which heads carry the flip.

The prompts are the letter-mover page's ("The C1 C2 C3 (A1A2" -> A3, `helpers.experiments.acronyms`).
The page's steps, in order, each one function here:

- `gate`: the acronym gate of `acronyms.acronym_gate` and, per answer letter, the accuracy among the 26
  capitals (which letters the model gets wrong before anything is edited).
- `search`: for each prompt the model gets right, replace each of the three words by up to
  `per_position` other single-token nouns with the *same* initial (seeded). The acronym and the answer
  are unchanged by construction, so a change of the top letter is a flip. Flip rates per letter and per
  word, and a permutation test over letters (`letter_permutation_p`): are flips spread evenly across the
  answer letters, with the prompt (all its edits together) as the unit?
- `drop`: per head and per flip, the direct logit attribution on ``logit[A3] - logit[takeover]`` (the
  letter that wins after the edit) on the clean prompt minus on the flipped one.
- `drop(..., steady=n)`: the same on edits that do *not* flip the answer, against the strongest other
  letter: the specificity control (do the heads lose as much on any edit?).
- `concentration`: top-k heads chosen on half of the flips; the share of the total head drop they carry
  on the other half, against k heads drawn from all heads (a selection on the same flips would beat
  any draw by construction).
- `repair`: the top-k heads' END outputs patched from the clean prompt into the flipped one
  (`patching.patched_final_at_end`); flips repaired and the logit difference regained, against k-sets
  drawn from all heads.
- `held_out`: search, drop and repair again on the letter-mover page's held-out family ("Welcome to
  the", nouns the screen never used).

`study(model, *, sizes, seed)` runs them all, as the page does, and keeps the result in the store.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from helpers import attribution, capture, controls, heads, heldout, models, patching, readout, stats, store
from helpers.experiments import acronyms
from helpers.heads import Head

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

WORDS: tuple[str, ...] = ("c1", "c2", "c3")  # the three words of the prompt, in order


@dataclass(frozen=True)
class Sizes:
    """Prompts, edits and draws per step (the page's parameters cell sets these)."""

    prompts: int = 200  # acronym prompts for the per-letter gate; the search edits the right ones
    per_position: int = 2  # same-initial substitutions per word of each right prompt
    top_k: int = 4
    n_perm: int = 2000  # letter-label permutations; p >= 1/2001
    n_random: int = 100  # k-sets drawn from all heads, concentration and repair; p >= 1/101
    check_flips: int = 48  # flips used by the repair check
    steady_edits: int = 120  # edits that keep the answer, for the specificity control
    heldout_prompts: int = 120
    heldout_draws: int = 40  # p >= 1/41
    mover_prompts: int = 30  # the letter-mover page's screen, for the comparison


# --------------------------------------------------------------------------------------------------
# Pure pieces (tested on hand-made inputs)


@dataclass(frozen=True)
class Substitutions:
    """Edited prompts: ``tokens[i]`` is prompt ``prompt[i]`` with word ``WORDS[word[i]]`` replaced."""

    tokens: Int[Tensor, "edit pos"]
    prompt: Int[Tensor, "edit"]
    word: Int[Tensor, "edit"]

    def __len__(self) -> int:
        return self.tokens.shape[0]


def substitute(tokens: Int[Tensor, "batch pos"], positions: Sequence[int], same_initial: Mapping[int, Sequence[int]],
               rows: Sequence[int], *, per_position: int, seed: int) -> Substitutions:
    """For each prompt in `rows` and each word position, up to `per_position` copies of the prompt with that
    word replaced by another token with the same initial (`same_initial[token]`: the tokens sharing its
    initial, itself included or not), drawn without replacement (seeded).

    Raises:
        ValueError: if `per_position` < 1, a position lies outside the prompt, or a word's token has no
            entry in `same_initial` (every word must come from the noun list).
    """
    if per_position < 1:
        raise ValueError(f"per_position must be at least 1; got {per_position}")
    if any(not 0 <= p < tokens.shape[1] for p in positions):
        raise ValueError(f"positions {list(positions)} must lie in [0, {tokens.shape[1]})")
    rng = random.Random(seed)
    out, prompt, word = [], [], []
    for row in rows:
        for index, position in enumerate(positions):
            token = int(tokens[row, position])
            if token not in same_initial:
                raise ValueError(f"token {token} at prompt {row}, position {position} is not in same_initial; "
                                 "build it from the nouns the prompts were made of")
            others = [t for t in same_initial[token] if t != token]
            for new in rng.sample(others, min(per_position, len(others))):
                edited = tokens[row].clone()
                edited[position] = new
                out.append(edited)
                prompt.append(row)
                word.append(index)
    if not out:
        return Substitutions(tokens=tokens[:0].clone(), prompt=torch.zeros(0, dtype=torch.long),
                             word=torch.zeros(0, dtype=torch.long))
    return Substitutions(tokens=torch.stack(out), prompt=torch.tensor(prompt), word=torch.tensor(word))


def flipped(letter_logits: Float[Tensor, "batch 26"], answer: Int[Tensor, "batch"]) -> Bool[Tensor, "batch"]:
    """True where the top letter is not the answer (`answer`: a column index into the 26 letters)."""
    if letter_logits.ndim != 2 or answer.shape != letter_logits.shape[:1]:
        raise ValueError(f"need letter_logits [batch, letters] and answer [batch]; got {tuple(letter_logits.shape)} "
                         f"and {tuple(answer.shape)}")
    return letter_logits.argmax(-1) != answer


def rates_by(flips: Bool[Tensor, "edit"], group: Int[Tensor, "edit"], n_groups: int
             ) -> tuple[Float[Tensor, "group"], Int[Tensor, "group"]]:
    """Flip rate and number of edits per group (NaN rate where a group has no edit)."""
    count = torch.bincount(group, minlength=n_groups)
    hits = torch.bincount(group, weights=flips.double(), minlength=n_groups)
    rate = torch.where(count > 0, hits / count.clamp(min=1), torch.full_like(hits, float("nan")))
    return rate.float(), count


def letter_spread(flips: Float[np.ndarray, "prompt"], edits: Float[np.ndarray, "prompt"],
                  letter: Int[np.ndarray, "prompt"]) -> float:
    """Chi-square statistic of flips against edits per letter: 0 when every letter flips at the overall
    rate, large when flips gather in a few letters. `flips` / `edits` are counts per prompt."""
    total_flips, total_edits = flips.sum(), edits.sum()
    rate = total_flips / total_edits
    if rate in (0.0, 1.0):
        return 0.0
    f = np.bincount(letter, weights=flips)
    e = np.bincount(letter, weights=edits)
    expected = e * rate
    keep = e > 0
    return float((((f - expected) ** 2)[keep] / (expected * (1 - rate))[keep]).sum())


def letter_permutation_p(flips: Int[Tensor, "prompt"], edits: Int[Tensor, "prompt"], letter: Int[Tensor, "prompt"],
                         *, n_perm: int, seed: int) -> tuple[float, float]:
    """`letter_spread` and its permutation p-value: the prompts' letters shuffled among prompts (each prompt
    keeps its own edits and flips, so within-prompt correlation stays in the null). p >= 1/(n_perm + 1)."""
    if not flips.shape == edits.shape == letter.shape:
        raise ValueError(f"flips, edits and letter need one value per prompt; got {tuple(flips.shape)}, "
                         f"{tuple(edits.shape)}, {tuple(letter.shape)}")
    f, e, g = flips.double().numpy(), edits.double().numpy(), letter.long().numpy()
    observed = letter_spread(f, e, g)
    rng = np.random.default_rng(seed)
    null = np.array([letter_spread(f, e, rng.permutation(g)) for _ in range(n_perm)])
    return observed, float((1 + np.count_nonzero(null >= observed - 1e-9)) / (n_perm + 1))


def shares(drop: Float[Tensor, "layer head"], head_sets: Sequence[Sequence[Head]]) -> Float[Tensor, "set"]:
    """Each set's summed drop over the summed size of every head's drop, ``sum(set) / sum(|all|)``: at most
    1, reached when the set holds every head that moved and all of them moved the same way."""
    total = float(drop.abs().sum())
    if total < 1e-9:
        raise ValueError("the heads' drops sum to zero; there is no drop to share out")
    return torch.tensor([float(sum(drop[h] for h in s)) / total for s in head_sets])


# --------------------------------------------------------------------------------------------------
# Gate


@dataclass(frozen=True)
class Gate:
    """The acronym gate (`acronyms.AcronymGate`), the strict top-1 over the whole vocabulary, and the
    accuracy among the 26 capitals per answer letter (``right`` / ``count`` per letter, A..Z)."""

    acronym: acronyms.AcronymGate
    strict: float
    right: Int[Tensor, "26"]
    count: Int[Tensor, "26"]

    @property
    def passed(self) -> bool:
        return self.acronym.gate.passed

    def by_letter(self) -> dict[str, tuple[int, int]]:
        """``{"A": (right, prompts)}`` for every letter some prompt answers."""
        return {letter: (int(r), int(c)) for letter, r, c in zip(acronyms.LETTERS, self.right, self.count) if c}

    def weak(self, below: float = 0.5, at_least: int = 5) -> list[str]:
        """Letters right on less than `below` of their prompts (among letters with `at_least` prompts)."""
        return [x for x, (r, c) in self.by_letter().items() if c >= at_least and r / c < below]

    def summary(self) -> str:
        return (f"{self.acronym.summary()}\ntop-1 over the whole vocabulary {self.strict:.0%}; letters right on "
                f"under half their prompts: {', '.join(self.weak()) or 'none'}")


def letter_columns(letters: Int[Tensor, "26"], ids: Int[Tensor, "batch"]) -> Int[Tensor, "batch"]:
    """Column of each id among the 26 letter ids (raises if one is not a letter)."""
    match = ids.cpu()[:, None] == letters.cpu()[None, :]
    if not bool(match.any(-1).all()):
        raise ValueError("every id must be one of the 26 letter ids")
    return match.float().argmax(-1)


@torch.no_grad()
def gate(model: TransformerBridge, data: acronyms.Acronyms, *, seed: int) -> Gate:
    """The acronym gate on every prompt of `data`, with accuracy per answer letter."""
    clean = acronyms.end_logits(model, data.clean.tokens)
    twin = acronyms.end_logits(model, data.clean.corrupted)
    result = acronyms.acronym_gate(clean, twin, data, seed=seed)
    correct = acronyms.letter_correct(clean, data.letters, data.clean.answers)
    column = letter_columns(data.letters, data.clean.answers)
    strict = float((clean.argmax(-1) == data.clean.answers).float().mean())
    right = torch.bincount(column, weights=correct.double(), minlength=26).long()
    return Gate(acronym=result, strict=strict, right=right, count=torch.bincount(column, minlength=26))


# --------------------------------------------------------------------------------------------------
# Search


@dataclass(frozen=True)
class Search:
    """The same-initial substitutions of the prompts the model gets right, and which of them flip.

    ``edits``: the edited prompts; ``answer``: per edit, the answer's column among the 26 letters;
    ``flips``: per edit; ``takeover``: per edit, the id of the top letter after the edit;
    ``letter_p``: permutation p of `letter_spread` (``spread`` observed) with ``n_perm`` shuffles;
    ``rival``: per edit, the id of the strongest letter other than the answer (the takeover on a flip).
    """

    edits: Substitutions
    answer: Int[Tensor, "edit"]
    flips: Bool[Tensor, "edit"]
    takeover: Int[Tensor, "edit"]
    right_prompts: int
    spread: float
    letter_p: float
    n_perm: int
    rival: Int[Tensor, "edit"] | None = None  # the strongest letter other than the answer after the edit

    @property
    def rate(self) -> float:
        return float(self.flips.float().mean())

    def by_letter(self) -> tuple[Float[Tensor, "26"], Int[Tensor, "26"]]:
        """Flip rate and number of edits per answer letter (A..Z)."""
        return rates_by(self.flips, self.answer, 26)

    def by_word(self) -> tuple[Float[Tensor, "3"], Int[Tensor, "3"]]:
        """Flip rate and number of edits per replaced word (C1, C2, C3)."""
        return rates_by(self.flips, self.edits.word, len(WORDS))

    def top_letters(self, k: int = 3, at_least: int = 10) -> list[tuple[str, float]]:
        """The `k` letters with the highest flip rates among letters with `at_least` edits."""
        rate, count = self.by_letter()
        order = [int(i) for i in torch.argsort(torch.nan_to_num(rate, nan=-1.0), descending=True) if count[i] >= at_least]
        return [(acronyms.LETTERS[i], float(rate[i])) for i in order[:k]]

    def summary(self) -> str:
        word_rate, _ = self.by_word()
        words = ", ".join(f"{w.upper()} {r:.0%}" for w, r in zip(WORDS, word_rate.tolist()))
        top = ", ".join(f"{x} {r:.0%}" for x, r in self.top_letters())
        return (f"{int(self.flips.sum())} flips in {len(self.edits)} same-initial edits of {self.right_prompts} "
                f"right prompts ({self.rate:.1%}); by word: {words}; highest letters: {top}; flips spread evenly "
                f"over letters? spread {self.spread:.1f}, p = {self.letter_p:.4f} ({self.n_perm} shuffles)")


@torch.no_grad()
def search(model: TransformerBridge, data: acronyms.Acronyms, *, per_position: int, n_perm: int, seed: int,
           nouns: Sequence[str] = acronyms.NOUNS) -> Search:
    """Substitute each word of every right prompt by same-initial nouns from `nouns` (the list the prompts
    were built from); read the 26 letters at END."""
    batch = data.clean
    groups = acronyms.nouns_by_initial(model, nouns)
    same = {token: [t for _, t in group] for group in groups.values() for _, token in group}
    clean = letter_logits(model, batch.tokens, data.letters)
    answer = letter_columns(data.letters, batch.answers)
    right = (~flipped(clean, answer)).nonzero()[:, 0].tolist()
    positions = [int(batch.positions[w][0]) for w in WORDS]
    edits = substitute(batch.tokens, positions, same, right, per_position=per_position, seed=seed)
    after = letter_logits(model, edits.tokens, data.letters)
    edit_answer = answer[edits.prompt]
    flips = flipped(after, edit_answer)
    per_prompt = torch.bincount(edits.prompt, weights=flips.double(), minlength=len(batch))[right]
    count = torch.bincount(edits.prompt, minlength=len(batch))[right]
    spread, p = letter_permutation_p(per_prompt, count, answer[right], n_perm=n_perm, seed=seed)
    others = after.scatter(1, edit_answer[:, None], float("-inf"))  # the answer's column masked out
    return Search(edits=edits, answer=edit_answer, flips=flips, takeover=data.letters[after.argmax(-1)],
                  right_prompts=len(right), spread=spread, letter_p=p, n_perm=n_perm,
                  rival=data.letters[others.argmax(-1)])


def letter_logits(model: TransformerBridge, tokens: Int[Tensor, "batch pos"], letters: Int[Tensor, "26"]
                  ) -> Float[Tensor, "batch 26"]:
    """The 26 capitals' END logits (only those unembedding columns: Gemma's vocabulary is 262k)."""
    return readout.logits(model, capture.final_at(model, tokens), letters)


# --------------------------------------------------------------------------------------------------
# Attribution of the flips to heads


@dataclass(frozen=True)
class Flips:
    """The flipped edits with their clean prompts: ``clean`` / ``edited`` ``[flip, pos]``, the answer and
    the takeover letter ids, and ``drop`` ``[layer, head, flip]``: each head's direct logit attribution on
    ``logit[answer] - logit[takeover]`` on the clean prompt minus on the flipped one."""

    clean: Int[Tensor, "flip pos"]
    edited: Int[Tensor, "flip pos"]
    answers: Int[Tensor, "flip"]
    takeover: Int[Tensor, "flip"]
    prompt: Int[Tensor, "flip"]
    drop: Float[Tensor, "layer head flip"]
    letters: Int[Tensor, "26"]

    @property
    def score(self) -> Float[Tensor, "layer head"]:
        """The screen score: each head's mean drop over the flips."""
        return self.drop.mean(-1)

    def top(self, k: int) -> list[Head]:
        return heads.top(self.score, k)


@torch.no_grad()
def drop(model: TransformerBridge, data: acronyms.Acronyms, found: Search, *, steady: int | None = None) -> Flips:
    """Direct logit attribution of every head at END on the clean and the flipped prompt of each flip.

    With `steady`, the same for the first `steady` edits that do *not* flip the answer instead (the
    specificity control), against each edit's rival letter (``Flips.takeover`` then holds the rival).
    """
    if steady is None:
        where = found.flips.nonzero()[:, 0]
    else:
        if found.rival is None:
            raise ValueError("this Search has no rival letters; run `search` again to get them")
        where = (~found.flips).nonzero()[:steady, 0]
    if len(where) == 0:
        raise ValueError("no edit to attribute (no flip, or no edit that keeps the answer)")
    prompt = found.edits.prompt[where]
    clean, edited = data.clean.tokens[prompt], found.edits.tokens[where]
    competitor = found.takeover if steady is None else found.rival
    answers, takeover = data.clean.answers[prompt], competitor[where]
    before = attribution.head_logit_attribution(model, clean, answers, takeover)
    after = attribution.head_logit_attribution(model, edited, answers, takeover)
    return Flips(clean=clean, edited=edited, answers=answers, takeover=takeover, prompt=prompt, drop=before - after,
                 letters=data.letters)


@dataclass(frozen=True)
class Concentration:
    """Top-k heads chosen on one half of the flips (``found``); ``share`` their share (`shares`) of the drop on
    the other half, ``draws`` the share of k-sets drawn from all heads there."""

    found: tuple[Head, ...]
    share: float
    draws: Float[Tensor, "draw"]

    @property
    def as_strong(self) -> int:
        return int((self.draws >= self.share).sum())

    @property
    def p_value(self) -> float:
        return (1 + self.as_strong) / (len(self.draws) + 1)

    def summary(self) -> str:
        return (f"top {len(self.found)} on half the flips ({heads.labels(list(self.found))}) carry {self.share:.0%} of "
                f"all heads' summed |drop| on the other half; {len(self.draws)} draws of {len(self.found)} heads: median "
                f"{float(self.draws.median()):.0%}, largest {float(self.draws.max()):.0%}; p = {self.p_value:.3f}")


def concentration(flips: Flips, *, k: int, n_random: int, seed: int) -> Concentration:
    """Split the flips by prompt parity (a prompt's flips stay together), pick the top-k heads on the even
    half, and measure their share of the drop on the odd half against `n_random` k-sets from all heads."""
    even = flips.prompt % 2 == 0
    if even.all() or (~even).all():
        raise ValueError("all flips come from prompts of one parity; need flips on both halves")
    pick, test = flips.drop[..., even].mean(-1), flips.drop[..., ~even].mean(-1)
    found = heads.top(pick, k)
    draws = controls.uniform_sets(*pick.shape, k, n_random, seed=seed)
    return Concentration(found=tuple(found), share=float(shares(test, [found])[0]), draws=shares(test, draws))


@dataclass(frozen=True)
class Repair:
    """The top-k heads' END outputs patched from the clean prompts into the flipped ones, against drawn
    k-sets. ``check``: the logit difference ``logit[answer] - logit[takeover]`` (change from the flipped
    run); ``repaired`` / ``draws_repaired``: share of flips whose top letter is the answer again."""

    check: controls.CausalCheck
    repaired: float
    draws_repaired: Float[Tensor, "draw"]
    gap: float  # mean clean-minus-flipped logit difference on these flips

    @property
    def regained(self) -> float:
        """Share of the clean-minus-flipped gap that the patch regains."""
        return self.check.top.mean / self.gap

    def summary(self) -> str:
        return (f"{self.check.summary()}; regains {self.regained:.0%} of the {self.gap:.2f}-logit gap; flips "
                f"repaired {self.repaired:.0%} (drawn sets: median {float(self.draws_repaired.median()):.0%}, "
                f"most {float(self.draws_repaired.max()):.0%})")


@torch.no_grad()
def repair(model: TransformerBridge, flips: Flips, found: Sequence[Head], *, n: int, n_random: int, seed: int
           ) -> Repair:
    """Patch `found` (END only) from clean into the first `n` flips, and `n_random` k-sets from all heads."""
    found = [tuple(h) for h in found]
    edited, clean = flips.edited[:n], flips.clean[:n]
    answers, takeover = flips.answers[:n], flips.takeover[:n]
    source = patching.head_outputs(model, edited)
    source[:, :, -1] = patching.head_outputs(model, clean)[:, :, -1]  # clean outputs at END only
    draws = controls.uniform_sets(model.cfg.n_layers, model.cfg.n_heads, len(found), n_random, seed=seed)
    finals = patching.patched_final_at_end(model, edited, source, [[], found, *draws])
    values = readout.logit_difference(model, finals, answers, takeover)  # [set, flip]
    gap = float((readout.logit_difference(model, capture.final_at(model, clean), answers, takeover)
                 - values[0]).mean())
    top = flips.letters[readout.logits(model, finals, flips.letters).argmax(-1)]  # [set, flip]
    fixed = (top == answers[None]).float().mean(-1)
    null = f"{len(found)} heads drawn from all {model.cfg.n_layers * model.cfg.n_heads}"
    check = controls.check_from_values(values, found, metric_name="logit[answer] - logit[takeover]",
                                       mode="patched from clean at END", null=null, seed=seed)
    return Repair(check=check, repaired=float(fixed[1]), draws_repaired=fixed[2:], gap=gap)


# --------------------------------------------------------------------------------------------------
# Held-out family and the study


@dataclass(frozen=True)
class HeldOut:
    """Gate, search, drop and repair on the held-out family; ``result`` ranks the found heads there."""

    gate: Gate
    search: Search
    flips: Flips
    repair: Repair
    result: heldout.HeldOut


def held_out(model: TransformerBridge, found: Sequence[Head], *, sizes: Sizes, seed: int) -> HeldOut:
    """The letter-mover page's held-out family (`acronyms.HELD_OUT_LEAD`, `acronyms.HELD_OUT_NOUNS`)."""
    data = acronyms.acronyms(model, n=sizes.heldout_prompts, seed=seed, nouns=acronyms.HELD_OUT_NOUNS,
                             lead=acronyms.HELD_OUT_LEAD)
    passed = gate(model, data, seed=seed)
    edits = search(model, data, per_position=sizes.per_position, n_perm=sizes.n_perm, seed=seed + 1,
                   nouns=acronyms.HELD_OUT_NOUNS)
    flips = drop(model, data, edits)
    fixed = repair(model, flips, found, n=sizes.check_flips, n_random=sizes.heldout_draws, seed=seed + 2)
    return HeldOut(gate=passed, search=edits, flips=flips, repair=fixed,
                   result=heldout.HeldOut(acronyms.HELD_OUT_FAMILY, found=tuple(found), screen=flips.score,
                                          check=fixed.check))


@dataclass(frozen=True)
class Study:
    """Vulnerable heads on one model: gate, search, flips' drop, concentration, repair, held-out family, and
    the letter-mover page's top heads (``movers``) for the comparison."""

    model: str
    gate: Gate
    search: Search | None = None
    flips: Flips | None = None
    concentration: Concentration | None = None
    repair: Repair | None = None
    held_out: HeldOut | None = None
    movers: tuple[Head, ...] = ()
    steady: Float[Tensor, "layer head"] | None = None  # mean drop over edits that keep the answer

    @property
    def found(self) -> list[Head]:
        return [] if self.repair is None else list(self.repair.check.heads)

    def row(self) -> dict[str, object]:
        """One row of the findings table."""
        row: dict[str, object] = {"model": self.model, "behaviour gate": "pass" if self.gate.passed else "fail",
                                  "accuracy (26 letters)": str(self.gate.acronym.accuracy)}
        if self.search is None or self.flips is None:
            return row
        row["flip rate"] = f"{self.search.rate:.1%} of {len(self.search.edits)}"
        row["letters (p)"] = (", ".join(f"{x} {r:.0%}" for x, r in self.search.top_letters(2))
                              + f" (p = {self.search.letter_p:.4f})")
        row["top heads (drop)"] = heads.labels(self.flips.top(4), self.flips.score)
        if self.concentration is not None:
            row["held-out half share (p)"] = f"{self.concentration.share:.0%} (p = {self.concentration.p_value:.3f})"
        if self.repair is not None:
            row["repair: flips fixed"] = f"{self.repair.repaired:.0%}"
            row["random-k (p)"] = self.repair.check.draws_summary()
        if self.held_out is not None:
            row["held-out ranks"] = self.held_out.result.ranks_text()
            row["held-out p"] = f"{self.held_out.result.check.p_value:.3f}"
        row["letter movers shared"] = heads.labels(heldout.overlap(self.found, self.movers)) or "none"
        return row


def study(model: TransformerBridge, *, sizes: Sizes = Sizes(), seed: int = 0) -> Study:
    """Every step, as the page runs them, kept in the results store (`steady`: the drop on edits that keep
    the answer, the specificity control). Seeds: prompts and gate `seed`,
    search `seed + 1`, concentration draws `seed + 2`, repair draws `seed + 3`, held-out `seed + 100`."""
    return store.cached("vulnerable-study", lambda: _study(model, sizes=sizes, seed=seed),
                        model=models.spec_of(model).name, weights=store.weights_digest(model), sizes=sizes, seed=seed)


def _study(model: TransformerBridge, *, sizes: Sizes, seed: int) -> Study:
    name = models.spec_of(model).name
    data = acronyms.acronyms(model, n=sizes.prompts, seed=seed)
    passed = gate(model, data, seed=seed)
    if not passed.passed:
        return Study(model=name, gate=passed)
    edits = search(model, data, per_position=sizes.per_position, n_perm=sizes.n_perm, seed=seed + 1)
    flips = drop(model, data, edits)
    steady = drop(model, data, edits, steady=sizes.steady_edits).score
    spread = concentration(flips, k=sizes.top_k, n_random=sizes.n_random, seed=seed + 2)
    top = flips.top(sizes.top_k)
    fixed = repair(model, flips, top, n=sizes.check_flips, n_random=sizes.n_random, seed=seed + 3)
    held = held_out(model, top, sizes=sizes, seed=seed + 100)
    # the letter-mover page's ranking: its first prompts are these (same seed), its score the carried difference
    movers = heads.top(acronyms.carried_logit_difference(model, data, prompts=sizes.mover_prompts), sizes.top_k)
    return Study(model=name, gate=passed, search=edits, flips=flips, concentration=spread, repair=fixed,
                 held_out=held, movers=tuple(movers), steady=steady)
