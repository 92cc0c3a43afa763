"""Yes/no questions with ground truth, the Negative Attention Score (NAS) and the negative-bias metrics.

Yu et al. 2024 found that LLMs asked binary questions say "No" too often (*negative bias*), and traced
it to a few heads that, from the question onwards, attend to the "No" listed in the instruction more
than to the "Yes": their Negative Attention Score is high. This module holds what the Negative Head
page needs:

- `yes_no_questions`: seeded, balanced questions in mirror pairs (a true question and the same question
  made false), one batch per kind (arithmetic, comparison, capital cities), the instruction listing
  the candidates as "Yes or No" or "No or Yes".
- `negative_attention_score`: NAS from attention patterns (a pure function).
- `no_minus_yes`, `precision_recall_yes`, `mirror_gate`: the bias, restricted to the two answers.
- `nas_screen`, `bias_ablation`, `study`: the page's steps, so both models run the same code.
- `held_out`: the gate, the NAS screen and (with a bias) the ablation again in another instruction
  wording (`HELD_OUT_TEMPLATE`) with fresh questions.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from helpers import capture, controls, heldout, interventions, models, readout, stats, tasks
from helpers.heads import Head, labels, top as top_heads

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

ORDERS = ("Yes or No", "No or Yes")
KINDS = ("arithmetic", "comparison", "capital")
TEMPLATE = "Answer {order}. Is {question}? Answer:"
QUESTION_FIRST = "Is {question}? Answer {order}.\nAnswer:"  # the candidates come after the question
# The held-out wording: other instruction and answer words, the question introduced by "Question:".
HELD_OUT_TEMPLATE = "Reply {order}. Question: is {question}? Reply:"
HELD_OUT_FAMILY = "'Reply Yes or No. Question: is ...? Reply:', fresh questions"

# Capital cities and their countries; a false question pairs the city with another country of the list.
CAPITALS = (("Paris", "France"), ("Rome", "Italy"), ("Berlin", "Germany"), ("Madrid", "Spain"),
            ("London", "England"), ("Tokyo", "Japan"), ("Moscow", "Russia"), ("Beijing", "China"),
            ("Cairo", "Egypt"), ("Athens", "Greece"), ("Dublin", "Ireland"), ("Lisbon", "Portugal"),
            ("Vienna", "Austria"), ("Warsaw", "Poland"), ("Delhi", "India"), ("Ottawa", "Canada"),
            ("Stockholm", "Sweden"), ("Oslo", "Norway"), ("Helsinki", "Finland"), ("Bangkok", "Thailand"))


def answer_token_ids(model: TransformerBridge) -> tuple[int, int]:
    """Ids of " Yes" and " No" (with the leading space they have after "Answer:" and in the instruction).

    Raises:
        ValueError: if either word is not a single token for this tokenizer (the metrics compare two logits).
    """
    why = "the yes/no metrics need each answer to be one token. Use a model whose tokenizer keeps them whole"
    return tasks.require_single_token(model, " Yes", why=why), tasks.require_single_token(model, " No", why=why)


# --------------------------------------------------------------------------------------------------
# Questions


def _arithmetic(rng: random.Random, _capitals) -> tuple[str, str]:
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    while a + b < 10:  # a two-digit sum keeps every question the same number of tokens
        a, b = rng.randint(1, 9), rng.randint(1, 9)
    wrong = a + b + rng.choice([d for d in (-2, -1, 1, 2) if 10 <= a + b + d <= 99])
    return f"{a} + {b} = {a + b}", f"{a} + {b} = {wrong}"


def _comparison(rng: random.Random, _capitals) -> tuple[str, str]:
    a, b = rng.sample(range(1, 10), 2)
    big, small = max(a, b), min(a, b)
    return f"{big} greater than {small}", f"{small} greater than {big}"


def _capital(rng: random.Random, capitals) -> tuple[str, str]:
    (city, country), (_, other) = rng.sample(capitals, 2)
    return f"{city} in {country}", f"{city} in {other}"


_MAKERS = {"arithmetic": _arithmetic, "comparison": _comparison, "capital": _capital}


@dataclass(frozen=True)
class YesNoTask:
    """Balanced yes/no questions, one `TaskBatch` per kind (kinds differ in token length).

    Within each batch, row 2j is a true question (answer " Yes") and row 2j + 1 its mirror, the same
    question made false (answer " No"). ``answers`` / ``wrong`` hold the correct and the other answer's
    id; positions ``yes_key`` / ``no_key`` are the candidates in the instruction, ``question`` the first
    token of the question and ``end`` the answer slot ("Answer:").
    """

    batches: tuple[tasks.TaskBatch, ...]
    yes_id: int
    no_id: int
    order: str

    @property
    def truth(self) -> Bool[Tensor, "item"]:
        """True where the correct answer is " Yes", items in batch order."""
        return torch.cat([batch.answers == self.yes_id for batch in self.batches])

    def __len__(self) -> int:
        return sum(len(batch) for batch in self.batches)


def yes_no_questions(model: TransformerBridge, *, pairs_per_kind: int, seed: int, order: str = "Yes or No",
                     kinds: Sequence[str] = KINDS, template: str = TEMPLATE) -> YesNoTask:
    """`pairs_per_kind` mirror pairs of each kind, e.g. "Answer Yes or No. Is 7 + 5 = 12? Answer:" and "... = 13?".

    The same seed gives the same questions in either `order`, so the order swap changes nothing else.
    `template` must contain ``{order}`` and ``{question}`` and end where the answer goes; the
    position ``question`` is the first query NAS counts: two tokens after the later candidate, which is
    the question's first token when the instruction comes first (`TEMPLATE`) and the token after the
    instruction's full stop when it comes last (`QUESTION_FIRST`).

    Raises:
        ValueError: for an unknown order or kind, fewer than one pair, a template without both slots,
            or too few single-token capitals.
    """
    if "{order}" not in template or "{question}" not in template:
        raise ValueError(f"template must contain {{order}} and {{question}}; got {template!r}")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}; got {order!r}")
    unknown = [kind for kind in kinds if kind not in _MAKERS]
    if unknown or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {KINDS}; got {list(kinds)}")
    if pairs_per_kind < 1:
        raise ValueError(f"pairs_per_kind must be at least 1; got {pairs_per_kind}")
    yes_id, no_id = answer_token_ids(model)
    kept = set(tasks.single_token_words(model, [w for pair in CAPITALS for w in pair]))
    capitals = [(city, country) for city, country in CAPITALS if city in kept and country in kept]
    if "capital" in kinds and len(capitals) < 4:
        raise ValueError(f"only {len(capitals)} capital/country pairs are single tokens for this tokenizer; need 4")
    batches = []
    for index, kind in enumerate(kinds):
        rng = random.Random(seed * 1000 + index)
        prompts, answers = [], []
        for _ in range(pairs_per_kind):
            true_q, false_q = _MAKERS[kind](rng, capitals)
            prompts += [template.format(order=order, question=true_q), template.format(order=order, question=false_q)]
            answers += [yes_id, no_id]
        tokens = tasks.tokenize_prompts(model, prompts)
        answer_ids = torch.tensor(answers)
        batches.append(tasks.TaskBatch(
            name=f"yes_no_{kind}", tokens=tokens, prompts=tuple(prompts), answers=answer_ids,
            wrong=torch.where(answer_ids == yes_id, no_id, yes_id),
            positions=_positions(tokens, yes_id, no_id), info={"kind": kind, "order": order, "seed": seed}))
    return YesNoTask(batches=tuple(batches), yes_id=yes_id, no_id=no_id, order=order)


def _positions(tokens: Int[Tensor, "batch pos"], yes_id: int, no_id: int) -> dict[str, Tensor]:
    batch, seq_len = tokens.shape
    yes_at, no_at = (tokens == yes_id).nonzero(), (tokens == no_id).nonzero()
    if len(yes_at) != batch or len(no_at) != batch:  # exactly one candidate of each per prompt
        raise ValueError("every prompt must contain ' Yes' and ' No' exactly once (in the instruction); "
                         f"found {len(yes_at)} and {len(no_at)} in {batch} prompts")
    yes_key, no_key = yes_at[:, 1], no_at[:, 1]
    # the instruction ends "Yes or No." / "No or Yes."; the question starts after the full stop
    question = (torch.maximum(yes_key, no_key) + 2).clamp(max=seq_len - 1)  # clamped: a question-first template
    return {"yes_key": yes_key, "no_key": no_key, "question": question, "end": torch.full((batch,), seq_len - 1)}


# --------------------------------------------------------------------------------------------------
# The Negative Attention Score (pure)


def negative_attention_per_prompt(
    patterns: Float[Tensor, "layer batch head query key"],
    yes_key: Int[Tensor, "batch"],
    no_key: Int[Tensor, "batch"],
    first_query: Int[Tensor, "batch"],
    *,
    eps: float = 1e-6,
) -> Float[Tensor, "layer batch head"]:
    """NAS of every head on every prompt (Yu et al. 2024, as written in the survey):

    NAS = sum over queries i from `first_query` to the last position of
    (A[i, no] + A[i, yes]) * log(A[i, no] / A[i, yes]),

    so a head scores high when it attends to the two candidates at all *and* prefers "No". `eps` is added
    inside the log so a head that ignores one candidate gives a large finite score, not infinity.

    Raises:
        ValueError: for a shape mismatch, a key outside the sequence, equal keys, or a first query that
            does not come after both candidates (causal attention could not see them).
    """
    if patterns.ndim != 5:
        raise ValueError(f"patterns must be [layer, batch, head, query, key]; got shape {tuple(patterns.shape)}")
    _, batch, _, seq_len, _ = patterns.shape
    for name, where in (("yes_key", yes_key), ("no_key", no_key), ("first_query", first_query)):
        if tuple(where.shape) != (batch,) or where.min() < 0 or where.max() >= seq_len:
            raise ValueError(f"{name} must hold {batch} positions in [0, {seq_len}); got shape {tuple(where.shape)}, "
                             f"values {where.min().item()}..{where.max().item()}")
    if not eps > 0:
        raise ValueError(f"eps must be positive (it keeps log(0 / 0) out of the score); got {eps}")
    if (yes_key == no_key).any():
        raise ValueError("yes_key and no_key point at the same position; they must mark two different tokens")
    if (first_query <= torch.maximum(yes_key, no_key)).any():
        raise ValueError("first_query must come after both candidate keys (the question follows the instruction); "
                         f"got first_query {first_query.tolist()} with keys {yes_key.tolist()} / {no_key.tolist()}")
    rows = torch.arange(batch)
    on_yes = patterns[:, rows, :, :, yes_key]  # [batch, layer, head, query]: advanced indices move to the front
    on_no = patterns[:, rows, :, :, no_key]
    per_query = (on_no + on_yes) * torch.log((on_no + eps) / (on_yes + eps))
    counted = torch.arange(seq_len)[None, :] >= first_query[:, None]  # [batch, query]
    per_prompt = torch.where(counted[:, None, None, :], per_query, 0.0).sum(-1)  # [batch, layer, head]
    return per_prompt.permute(1, 0, 2)


def negative_attention_score(
    patterns: Float[Tensor, "layer batch head query key"],
    yes_key: Int[Tensor, "batch"],
    no_key: Int[Tensor, "batch"],
    first_query: Int[Tensor, "batch"],
    *,
    eps: float = 1e-6,
) -> Float[Tensor, "layer head"]:
    """`negative_attention_per_prompt` averaged over prompts: one NAS per head."""
    return negative_attention_per_prompt(patterns, yes_key, no_key, first_query, eps=eps).mean(dim=1)


# --------------------------------------------------------------------------------------------------
# Behaviour metrics (pure)


def no_minus_yes(logits: Float[Tensor, "batch pos vocab"], yes_id: int, no_id: int
                 ) -> Float[Tensor, "batch"]:
    """logit(No) - logit(Yes) at the answer slot (last position).

    Equal to log P(No) - log P(Yes) whether or not the softmax is restricted to the two answers, so it
    is the negative bias of one prompt: positive means the model prefers "No".
    """
    return logits[:, -1, no_id] - logits[:, -1, yes_id]


def precision_recall_yes(says_yes: Bool[Tensor, "item"], truth: Bool[Tensor, "item"]) -> tuple[float, float]:
    """Precision and recall of the answer "Yes". On a balanced set, recall < precision iff the model
    says "Yes" less often than the truth does: Yu et al.'s sign of negative bias.

    Raises:
        ValueError: if shapes differ or there is no true "Yes" item (recall undefined).
    """
    if says_yes.shape != truth.shape:
        raise ValueError(f"says_yes {tuple(says_yes.shape)} and truth {tuple(truth.shape)} must have one entry per item")
    if not truth.any():
        raise ValueError("no item has the answer Yes: recall of Yes is undefined")
    hits = (says_yes & truth).sum().item()
    precision = hits / says_yes.sum().item() if says_yes.any() else float("nan")  # nan: never says Yes
    return precision, hits / truth.sum().item()


def mirror_gate(bias: Float[Tensor, "item"], truth: Bool[Tensor, "item"], *, seed: int = 0,
                alpha: float = 0.01) -> stats.GateResult:
    """Is the model negatively biased? Paired over mirror pairs (true item, then its false twin).

    Metric: the pull towards "No" on the true item, ``bias[yes]``; null: the mirror error, the pull
    towards "Yes" on its false twin, ``-bias[no]``. An unbiased model, right or wrong, makes both errors
    equally; their difference is the pair's summed No-minus-Yes logit difference.

    Raises:
        ValueError: if items do not alternate true, false (build them with `yes_no_questions`).
    """
    if bias.shape != truth.shape or len(truth) % 2 or not (truth[0::2].all() and not truth[1::2].any()):
        raise ValueError("items must come in mirror pairs, a true item then its false twin, as yes_no_questions "
                         f"builds them; got {len(truth)} items with truth {truth.int().tolist()[:8]}...")
    return stats.behaviour_gate(bias[0::2], -bias[1::2], paired=True, higher_is_better=True, alpha=alpha, seed=seed,
                                name="negative bias", metric_name="logit(No) - logit(Yes) on true questions",
                                null_name="logit(Yes) - logit(No) on their false twins")


# --------------------------------------------------------------------------------------------------
# The page's steps on a model


@torch.no_grad()
def answer_bias(model: TransformerBridge, task: YesNoTask) -> Float[Tensor, "item"]:
    """logit(No) - logit(Yes) at the answer slot of every item (one pass per kind, stopped before the logits).

    Only the two answer columns of the unembedding are applied (`capture.final_at`, `readout.logits`):
    Gemma's 262k-token unembedding costs more than the rest of the model on prompts this short.
    """
    answer_ids = torch.tensor([task.yes_id, task.no_id])
    bias = []
    for batch in task.batches:
        logits = readout.logits(model, capture.final_at(model, batch.tokens), answer_ids)  # [batch, (yes, no)]
        bias.append(logits[:, 1] - logits[:, 0])
    return torch.cat(bias)


def task_nas(model: TransformerBridge, task: YesNoTask) -> Float[Tensor, "layer head"]:
    """NAS of every head, averaged over all items of all kinds (one pattern capture per kind)."""
    total = 0
    for batch in task.batches:
        patterns = capture.capture_patterns(model, batch.tokens)
        per_prompt = negative_attention_per_prompt(patterns, batch.positions["yes_key"], batch.positions["no_key"],
                                                   batch.positions["question"])
        total = total + per_prompt.sum(dim=1)
    return total / len(task)


@dataclass(frozen=True)
class NasScreen:
    """NAS of every head with the instruction in each order, and how well the two rankings agree."""

    scores: Float[Tensor, "layer head"]  # "Yes or No"
    swapped: Float[Tensor, "layer head"]  # "No or Yes", same questions
    top_k: int

    @property
    def rank_correlation(self) -> float:
        """Spearman correlation of the two orders' NAS over all heads."""
        a = np.argsort(np.argsort(self.scores.flatten().numpy()))
        b = np.argsort(np.argsort(self.swapped.flatten().numpy()))
        return float(np.corrcoef(a, b)[0, 1])

    def top(self, k: int) -> list[Head]:
        return top_heads(self.scores, k)

    @property
    def overlap(self) -> int:
        """How many of the top-k heads in one order are also top-k in the other."""
        return len(set(self.top(self.top_k)) & set(top_heads(self.swapped, self.top_k)))

    @property
    def stable(self) -> bool:
        """Half or more of the top-k heads survive the order swap."""
        return 2 * self.overlap >= self.top_k

    @property
    def content(self) -> Float[Tensor, "layer head"]:
        """Mean NAS of the two orders: the part that follows the word "No" wherever it is listed."""
        return (self.scores + self.swapped) / 2

    @property
    def positional(self) -> Float[Tensor, "layer head"]:
        """Half the difference: the part that follows the *second-listed* candidate, whichever word it is."""
        return (self.scores - self.swapped) / 2

    def zscores(self) -> Float[Tensor, "layer head"]:
        """Robust z-score of each head's NAS against all heads: (NAS - median) / (1.4826 * MAD)."""
        flat = self.scores.flatten()
        median = flat.median()
        mad = (flat - median).abs().median() * 1.4826
        return (self.scores - median) / mad.clamp(min=1e-12)

    def summary(self) -> str:
        labels = ", ".join(f"L{l}H{h} ({self.scores[l, h]:.2f})" for l, h in self.top(self.top_k))
        return (f"NAS top {self.top_k}: {labels}; order swap keeps {self.overlap} of {self.top_k}, "
                f"rank correlation {self.rank_correlation:.2f}")


def nas_screen(model: TransformerBridge, *, pairs_per_kind: int, seed: int, top_k: int,
               template: str = TEMPLATE) -> NasScreen:
    """NAS on the same questions with "Yes or No" and with "No or Yes" in the instruction."""
    return NasScreen(*(task_nas(model, yes_no_questions(model, pairs_per_kind=pairs_per_kind, seed=seed, order=order,
                                                        template=template))
                       for order in ORDERS), top_k=top_k)


def mean_outputs(model: TransformerBridge, task: YesNoTask) -> Float[Tensor, "layer head d_head"]:
    """Every head's mean output over all positions of all items (kinds weighted by their token counts)."""
    sizes = [batch.tokens.numel() for batch in task.batches]
    means = [capture.mean_head_outputs(model, batch.tokens) * size for batch, size in zip(task.batches, sizes)]
    return sum(means) / sum(sizes)


def bias_ablation(model: TransformerBridge, task: YesNoTask, heads: Sequence[Head], *, n_random: int, seed: int
                  ) -> controls.CausalCheck:
    """Mean-ablate `heads` together, and `n_random` sets of as many heads drawn from all heads (the top ones
    included, so a draw may hold one of them).

    The metric is the Yes-minus-No logit difference averaged over true and false items, so a positive
    change means the ablation *shrank* the negative bias.
    """
    heads = [tuple(head) for head in heads]
    means = mean_outputs(model, task)
    draws = controls.uniform_sets(model.cfg.n_layers, model.cfg.n_heads, len(heads), n_random, seed=seed)
    yes_id, no_id = task.yes_id, task.no_id

    def yes_minus_no(logits: Tensor, tokens: Tensor) -> Tensor:
        return -no_minus_yes(logits, yes_id, no_id)

    values = torch.cat([interventions.ablated_metric(model, batch.tokens, [[]] + [heads] + draws, yes_minus_no,
                                                     mode="mean", means=means) for batch in task.batches], dim=1)
    return controls.check_from_values(values, heads, metric_name="logit(Yes) - logit(No)", mode="mean-ablated",
                                      null=f"{len(heads)} heads drawn from all heads", seed=seed)


def order_biases(model: TransformerBridge, *, pairs_per_kind: int, seed: int, template: str = TEMPLATE
                 ) -> tuple[Bool[Tensor, "item"], dict[str, Float[Tensor, "item"]]]:
    """The same questions asked with "Yes or No" and with "No or Yes": truth and each order's `no_minus_yes`.

    Averaging the two orders item by item removes any preference for the first- or last-listed candidate,
    so what is left is a preference for the word "No" itself.
    """
    biases, truth = {}, None
    for order in ORDERS:
        task = yes_no_questions(model, pairs_per_kind=pairs_per_kind, seed=seed, order=order, template=template)
        biases[order], truth = answer_bias(model, task), task.truth
    return truth, biases


def balanced(biases: dict[str, Float[Tensor, "item"]]) -> Float[Tensor, "item"]:
    """Item-wise mean of the orders' biases (pure)."""
    return torch.stack(list(biases.values())).mean(dim=0)


@dataclass(frozen=True)
class Sizes:
    """Prompt counts for the page's steps (the parameters cell sets these)."""

    gate_pairs_per_kind: int = 12
    screen_pairs_per_kind: int = 4
    ablation_pairs_per_kind: int = 2
    top_k: int = 3
    n_random: int = 20


@dataclass(frozen=True)
class HeldOutCheck:
    """The page's steps again in the held-out wording: the order-balanced gate, each order's gate, the
    NAS screen in both orders and ``held`` (the found heads' ranks by held-out NAS; ``held.check`` is the
    ablation, run only where the held-out gate finds a bias)."""

    gate: stats.GateResult
    order_gates: dict[str, stats.GateResult]
    screen: NasScreen
    held: heldout.HeldOut

    def row(self) -> dict[str, str]:
        return {"held-out pull, both orders": f"{self.gate.difference} ({'pass' if self.gate.passed else 'fail'})",
                "held-out order swap: top-k kept, rank corr.": f"{self.screen.overlap}/{self.screen.top_k}, "
                                                               f"{self.screen.rank_correlation:.2f}",
                **self.held.row()}

    def summary(self) -> str:
        orders = "; ".join(f"{order}: {gate.difference}" for order, gate in self.order_gates.items())
        return (f"held-out gate: pull towards No {self.gate.difference} ({'pass' if self.gate.passed else 'fail'}); "
                f"by order {orders}\n{self.screen.summary()}\n{self.held.summary()}")


def held_out(model: TransformerBridge, found: Sequence[Head], *, sizes: Sizes, seed: int,
             template: str = HELD_OUT_TEMPLATE) -> HeldOutCheck:
    """Gate, NAS screen and (only if the gate finds a bias) the ablation of `found` against fresh draws from
    all heads, in `template` with questions drawn from `seed` (pass a seed the page's steps did not use)."""
    truth, biases = order_biases(model, pairs_per_kind=sizes.gate_pairs_per_kind, seed=seed, template=template)
    gate = mirror_gate(balanced(biases), truth, seed=seed)
    order_gates = {order: mirror_gate(bias, truth, seed=seed) for order, bias in biases.items()}
    screen = nas_screen(model, pairs_per_kind=sizes.screen_pairs_per_kind, seed=seed + 10, top_k=sizes.top_k,
                        template=template)
    check = None
    if gate.passed:
        task = yes_no_questions(model, pairs_per_kind=sizes.ablation_pairs_per_kind, seed=seed + 20, template=template)
        check = bias_ablation(model, task, found, n_random=sizes.n_random, seed=seed + 20)
    return HeldOutCheck(gate=gate, order_gates=order_gates, screen=screen,
                        held=heldout.HeldOut(HELD_OUT_FAMILY, found=list(found), screen=screen.scores, check=check))


@dataclass(frozen=True)
class Study:
    """The negative-head steps on one model: gate (order-balanced bias), NAS screen, causal check (only
    with a bias). ``order_gates`` holds the same gate for each instruction order on its own."""

    model: str
    gate: stats.GateResult
    order_gates: dict[str, stats.GateResult]
    precision_recall: tuple[float, float]
    screen: NasScreen
    check: controls.CausalCheck | None = None
    held_out: HeldOutCheck | None = None

    def row(self) -> dict[str, object]:
        precision, recall = self.precision_recall
        top = labels(self.screen.top(self.screen.top_k), self.screen.scores)
        by_order = "; ".join(f"{order}: {gate.difference}" for order, gate in self.order_gates.items())
        return {
            "model": self.model,
            "No-minus-Yes pull, both orders": str(self.gate.difference),
            "gate": "pass" if self.gate.passed else "fail",
            "pull by order": by_order,
            "precision / recall of Yes": f"{precision:.2f} / {recall:.2f}",
            "top NAS heads (Yes or No)": top,
            "order swap: top-k kept, rank corr.": f"{self.screen.overlap}/{self.screen.top_k}, "
                                                  f"{self.screen.rank_correlation:.2f}",
            "top-k ablation effect": str(self.check.top) if self.check else "not run (no negative bias)",
            "random-k effect": self.check.draws_summary() if self.check else "not run (no negative bias)",
            **(self.held_out.row() if self.held_out else {"held-out format": "not run"}),
        }


def study(model: TransformerBridge, *, sizes: Sizes = Sizes(), seed: int = 0) -> Study:
    """Gate, screen and (if the gate passes) causal check, as the page runs them on its default model."""
    truth, biases = order_biases(model, pairs_per_kind=sizes.gate_pairs_per_kind, seed=seed)
    gate = mirror_gate(balanced(biases), truth, seed=seed)
    order_gates = {order: mirror_gate(bias, truth, seed=seed) for order, bias in biases.items()}
    says_yes = torch.cat([bias < 0 for bias in biases.values()])
    found = nas_screen(model, pairs_per_kind=sizes.screen_pairs_per_kind, seed=seed + 10, top_k=sizes.top_k)
    check = None
    if gate.passed:
        ablation_task = yes_no_questions(model, pairs_per_kind=sizes.ablation_pairs_per_kind, seed=seed + 20)
        check = bias_ablation(model, ablation_task, found.top(sizes.top_k), n_random=sizes.n_random, seed=seed + 20)
    held = held_out(model, found.top(sizes.top_k), sizes=sizes, seed=seed + 50)
    return Study(model=models.spec_of(model).name, gate=gate, order_gates=order_gates,
                 precision_recall=precision_recall_yes(says_yes, truth.repeat(len(biases))),
                 screen=found, check=check, held_out=held)
