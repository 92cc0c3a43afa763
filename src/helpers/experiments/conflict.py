"""Knowledge conflicts (shared experiment E1): memory heads and context heads.

Jin et al. 2024 ask a model for a country's capital after a context sentence that states a wrong one
("The capital of France is Rome. Q: What is the capital of France? A:") and find heads that push the
remembered answer (*memory heads*) and heads that push the answer in the context (*context heads*).
This module builds the prompts, the metrics and the whole experiment, so that the Memory Head page,
the Context Head page and their comparison model all run the same code:

1. `capital_pairs`: the country–capital table, filtered to pairs a tokenizer can run as one batch.
2. `knowledge_gate`: does the model know capitals without any context (all usable pairs, against a
   shuffled-answer null)? Then `known_pairs` keeps the countries it knows, judged on a *different*
   phrasing ("Q: Which city is the capital of France? A:"), so the experiment's prompts did not select themselves.
3. `conflict_prompts`: seeded prompts in three forms: memory only, conflicting context and agreeing
   context (the control), each with the memory capital and a counterfactual capital drawn from
   another pair.
4. `screen_heads`: direct logit attribution of every head to ``logit[memory] - logit[context]``.
5. `causal_check`: mean-ablate the top memory heads, the top context heads and random head sets of
   the same size in one batched call, and measure how the answers move.

`run_conflict_study` runs all of it on one model and returns a `ConflictStudy`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from helpers import attribution, capture, controls, interventions, models, readout, stats, store, tasks
from helpers.heads import Head, label, labels, top as top_heads
from helpers.tasks import tokenize_prompts

Pair = tuple[str, str]

# Written for this book from general knowledge: (country, capital) as a newspaper would name them.
# Capitals that share their country's name (Mexico, Singapore, ...) are left out: a prompt would
# then contain the memory answer, and copying it would look like recall. Capitals of several words
# are kept whole, so the single-token filter drops them rather than cutting them to a first word.
COUNTRY_CAPITALS: tuple[Pair, ...] = (
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Portugal", "Lisbon"),
    ("England", "London"), ("Ireland", "Dublin"), ("Scotland", "Edinburgh"), ("Wales", "Cardiff"),
    ("Belgium", "Brussels"), ("Netherlands", "Amsterdam"), ("Austria", "Vienna"), ("Switzerland", "Bern"),
    ("Poland", "Warsaw"), ("Hungary", "Budapest"), ("Greece", "Athens"), ("Sweden", "Stockholm"),
    ("Norway", "Oslo"), ("Denmark", "Copenhagen"), ("Finland", "Helsinki"), ("Iceland", "Reykjavik"),
    ("Russia", "Moscow"), ("Ukraine", "Kyiv"), ("Romania", "Bucharest"), ("Bulgaria", "Sofia"),
    ("Serbia", "Belgrade"), ("Croatia", "Zagreb"), ("Slovenia", "Ljubljana"), ("Slovakia", "Bratislava"),
    ("Czechia", "Prague"), ("Lithuania", "Vilnius"), ("Latvia", "Riga"), ("Estonia", "Tallinn"),
    ("Belarus", "Minsk"), ("Moldova", "Chisinau"), ("Albania", "Tirana"), ("Malta", "Valletta"),
    ("Cyprus", "Nicosia"), ("Turkey", "Ankara"), ("Georgia", "Tbilisi"), ("Armenia", "Yerevan"),
    ("Azerbaijan", "Baku"), ("Kazakhstan", "Astana"), ("Uzbekistan", "Tashkent"), ("Iran", "Tehran"),
    ("Iraq", "Baghdad"), ("Syria", "Damascus"), ("Lebanon", "Beirut"), ("Jordan", "Amman"),
    ("Egypt", "Cairo"), ("Libya", "Tripoli"), ("Tunisia", "Tunis"), ("Algeria", "Algiers"),
    ("Morocco", "Rabat"), ("Sudan", "Khartoum"), ("Ethiopia", "Addis Ababa"), ("Kenya", "Nairobi"),
    ("Uganda", "Kampala"), ("Tanzania", "Dodoma"), ("Rwanda", "Kigali"), ("Nigeria", "Abuja"),
    ("Ghana", "Accra"), ("Senegal", "Dakar"), ("Mali", "Bamako"), ("Niger", "Niamey"),
    ("Cameroon", "Yaounde"), ("Angola", "Luanda"), ("Zambia", "Lusaka"), ("Zimbabwe", "Harare"),
    ("Mozambique", "Maputo"), ("Madagascar", "Antananarivo"), ("Namibia", "Windhoek"),
    ("Botswana", "Gaborone"), ("Somalia", "Mogadishu"), ("Eritrea", "Asmara"), ("Liberia", "Monrovia"),
    ("Guinea", "Conakry"), ("Gabon", "Libreville"), ("Malawi", "Lilongwe"), ("Saudi Arabia", "Riyadh"),
    ("Yemen", "Sanaa"), ("Oman", "Muscat"), ("Qatar", "Doha"), ("Bahrain", "Manama"),
    ("Afghanistan", "Kabul"), ("Pakistan", "Islamabad"), ("India", "New Delhi"), ("Nepal", "Kathmandu"),
    ("Bangladesh", "Dhaka"), ("Bhutan", "Thimphu"), ("Sri Lanka", "Colombo"), ("China", "Beijing"),
    ("Mongolia", "Ulaanbaatar"), ("Japan", "Tokyo"), ("South Korea", "Seoul"), ("North Korea", "Pyongyang"),
    ("Taiwan", "Taipei"), ("Vietnam", "Hanoi"), ("Thailand", "Bangkok"), ("Cambodia", "Phnom Penh"),
    ("Laos", "Vientiane"), ("Myanmar", "Naypyidaw"), ("Malaysia", "Kuala Lumpur"), ("Indonesia", "Jakarta"),
    ("Philippines", "Manila"), ("Australia", "Canberra"), ("New Zealand", "Wellington"), ("Fiji", "Suva"),
    ("Samoa", "Apia"), ("Canada", "Ottawa"), ("Cuba", "Havana"), ("Jamaica", "Kingston"),
    ("Honduras", "Tegucigalpa"), ("Nicaragua", "Managua"), ("Costa Rica", "San Jose"),
    ("Colombia", "Bogota"), ("Venezuela", "Caracas"), ("Ecuador", "Quito"), ("Peru", "Lima"),
    ("Chile", "Santiago"), ("Argentina", "Buenos Aires"), ("Uruguay", "Montevideo"),
    ("Paraguay", "Asuncion"), ("Brazil", "Brasilia"), ("Tajikistan", "Dushanbe"), ("Kyrgyzstan", "Bishkek"),
    ("Turkmenistan", "Ashgabat"), ("Barbados", "Bridgetown"), ("Bahamas", "Nassau"),
    ("Suriname", "Paramaribo"), ("Guyana", "Georgetown"), ("United States", "Washington"),
)

QUESTION = "Q: What is the capital of {country}? A:"
CONTEXT_SENTENCE = "The capital of {country} is {capital}. "
SELECTION = "Q: Which city is the capital of {country}? A:"  # another phrasing, used only to pick known pairs


@dataclass(frozen=True)
class PromptFormat:
    """How a conflict prompt is worded: ``preamble + context sentence + question``.

    Attributes:
        name: what a table calls it.
        question: ends where the capital comes (the capital follows with a leading space); a ``{country}`` slot.
        context: the context sentence, with ``{country}`` and ``{capital}``, ending with a space.
        preamble: text before the context sentence, e.g. one solved example, so the context stays next to
            the question.
        example: the (country, capital) the preamble uses; left out of the prompts.
    """

    name: str
    question: str
    context: str = CONTEXT_SENTENCE
    preamble: str = ""
    example: Pair | None = None

    def text(self, form: str, country: str, memory: str, context: str) -> str:
        """The prompt in `form` ("memory_only", "conflict" or "agreeing")."""
        prefix = {"memory_only": "", "conflict": self.context.format(country=country, capital=context),
                  "agreeing": self.context.format(country=country, capital=memory)}
        if form not in prefix:
            raise KeyError(f"form must be one of {sorted(prefix)}; got {form!r}")
        return self.preamble + prefix[form] + self.question.format(country=country)


QA = PromptFormat("Q/A", QUESTION)  # the pages' format


# --------------------------------------------------------------------------------------------------
# Prompts


def capital_pairs(model, table: Sequence[Pair] = COUNTRY_CAPITALS) -> list[Pair]:
    """The pairs this tokenizer can run as one batch: capital one token, country of the usual length.

    The answer must be a single token (with its leading space, as it follows "A:") so that one logit
    stands for it. Prompts must also have one length per batch (`tasks.tokenize_prompts`); the only
    slot whose length varies is the country, so we keep the countries whose token count is the most
    common one (one token for both offline models; ties go to the shorter). Padding would instead
    move the answer position and put pad tokens under attention.

    Raises:
        ValueError: if fewer than 10 pairs survive (too few for any experiment here).
    """
    usable = [(country, capital) for country, capital in table if tasks.single_token_id(model, " " + capital) is not None]
    lengths = [len(model.tokenizer.encode(" " + country, add_special_tokens=False)) for country, _ in usable]
    if usable:
        common = min(set(lengths), key=lambda n: (-lengths.count(n), n))
        usable = [pair for pair, n in zip(usable, lengths) if n == common]
    capitals = [capital for _, capital in usable]
    usable = [pair for pair in usable if capitals.count(pair[1]) == 1]  # one country per answer token
    if len(usable) < 10:
        raise ValueError(f"only {len(usable)} of {len(table)} country-capital pairs have a single-token capital "
                         "and a country of the common length for this tokenizer; pass a longer table")
    return usable


def capital_ids(model, pairs: Sequence[Pair]) -> Int[Tensor, "pair"]:
    """Token id of each pair's capital (with its leading space)."""
    ids = [tasks.single_token_id(model, " " + capital) for _, capital in pairs]
    if None in ids:
        bad = [capital for (_, capital), i in zip(pairs, ids) if i is None]
        raise ValueError(f"capitals {bad} are not single tokens here; filter the pairs with capital_pairs(model)")
    return torch.tensor(ids)


@dataclass(frozen=True)
class ConflictPrompts:
    """Prompts in three forms, aligned row by row, with the two candidate answers of each row.

    Attributes:
        rows: (country, memory capital, context capital) of each prompt.
        memory_only: ``"Q: What is the capital of France? A:"``.
        conflict: ``"The capital of France is Rome. Q: ... A:"``: the context names another pair's capital.
        agreeing: ``"The capital of France is Paris. Q: ... A:"``: the control, context and memory agree.
        memory_ids / context_ids: ``[batch]`` ids of " Paris" and " Rome".
    """

    rows: tuple[tuple[str, str, str], ...]
    memory_only: Int[Tensor, "batch pos"]
    conflict: Int[Tensor, "batch conflict_pos"]
    agreeing: Int[Tensor, "batch conflict_pos"]
    memory_ids: Int[Tensor, "batch"]
    context_ids: Int[Tensor, "batch"]
    fmt: PromptFormat = QA

    def __len__(self) -> int:
        return len(self.rows)

    def text(self, form: str, index: int = 0) -> str:
        """The prompt of row `index` in `form` ("memory_only", "conflict" or "agreeing"), as text."""
        return self.fmt.text(form, *self.rows[index])


def conflict_prompts(model, countries: Sequence[Pair], *, n: int, seed: int,
                     counterfactuals: Sequence[Pair] | None = None, fmt: PromptFormat = QA) -> ConflictPrompts:
    """`n` seeded prompts about `countries` (cycled in a shuffled order), each with a counterfactual capital,
    worded as `fmt` says.

    The counterfactual is drawn from the capitals of `counterfactuals` (default: `countries`), never
    the country's own, so that every context answer is a real capital the model could also produce.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1; got {n}")
    pool = list(counterfactuals if counterfactuals is not None else countries)
    if len({capital for _, capital in pool}) < 2:
        raise ValueError("need at least two distinct capitals to draw a counterfactual from")
    rng = random.Random(seed)
    order = list(countries)
    rows = []
    while len(rows) < n:
        rng.shuffle(order)
        for country, capital in order[:n - len(rows)]:
            context = rng.choice([other for _, other in pool if other != capital])
            rows.append((country, capital, context))
    forms = {form: tokenize_prompts(model, [fmt.text(form, *row) for row in rows])
             for form in ("memory_only", "conflict", "agreeing")}
    return ConflictPrompts(rows=tuple(rows), **forms, fmt=fmt,
                           memory_ids=capital_ids(model, [(c, m) for c, m, _ in rows]),
                           context_ids=capital_ids(model, [(c, x) for c, _, x in rows]))


# --------------------------------------------------------------------------------------------------
# Metrics (pure)

MEMORY, CONTEXT, OTHER = 0, 1, 2
ANSWER_KINDS = ("memory", "context", "other")


def answer_kinds(top1: Int[Tensor, "batch"], memory_ids: Int[Tensor, "batch"], context_ids: Int[Tensor, "batch"]
                 ) -> Int[Tensor, "batch"]:
    """What the model says, from its top-1 token: `MEMORY`, `CONTEXT` or `OTHER` (anything else)."""
    kinds = torch.full_like(top1, OTHER)
    kinds[top1 == context_ids] = CONTEXT
    kinds[top1 == memory_ids] = MEMORY
    return kinds


def answer_shares(kinds: Int[Tensor, "batch"], *, seed: int = 0) -> dict[str, stats.Estimate]:
    """Share of memory, context and other answers, each with a bootstrap interval."""
    return {name: stats.bootstrap_ci((kinds == code).float(), seed=seed) for code, name in enumerate(ANSWER_KINDS)}


def context_wins(memory_minus_context: Float[Tensor, "batch"]) -> Bool[Tensor, "batch"]:
    """Two-way answer: True where the context capital's logit beats the memory capital's."""
    return memory_minus_context < 0


def candidate_accuracy(candidate_logits: Float[Tensor, "batch candidate"], correct: Int[Tensor, "batch"]
                       ) -> Bool[Tensor, "batch"]:
    """Whether the highest logit among the candidate capitals is the correct one (`correct` indexes candidates)."""
    if candidate_logits.ndim != 2 or correct.shape != candidate_logits.shape[:1]:
        raise ValueError(f"need logits [batch, candidate] and one index per row; got {tuple(candidate_logits.shape)} "
                         f"and {tuple(correct.shape)}")
    return candidate_logits.argmax(dim=-1) == correct


def derangement(n: int, *, seed: int) -> Int[Tensor, "n"]:
    """A seeded permutation with no fixed point: row i is compared with another row's answer."""
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 items; got {n}")
    generator = torch.Generator().manual_seed(seed)
    shift = torch.randint(1, n, (1,), generator=generator).item()
    order = torch.randperm(n, generator=generator)
    out = torch.empty(n, dtype=torch.long)
    out[order] = order.roll(-shift)  # a cycle through a random order: nobody maps to themselves
    return out


@torch.no_grad()
def last_logits(model, tokens: Int[Tensor, "batch pos"], ids: Int[Tensor, "candidate"]
                ) -> tuple[Float[Tensor, "batch candidate"], Int[Tensor, "batch"]]:
    """Logits of the candidate tokens and the top-1 token id at the last position, in mini-batches.

    Only the last position is unembedded: with Gemma's 262k vocabulary a full batch of logits would
    take gigabytes, and most of the forward pass's time.
    """
    rows = capture.rows_per_chunk(model, 1)
    picked, top1 = [], []
    for chunk in tokens.split(rows):
        last = readout.logits(model, capture.final_at(model, chunk))
        picked.append(last[:, ids])
        top1.append(last.argmax(dim=-1))
    return torch.cat(picked), torch.cat(top1)


# --------------------------------------------------------------------------------------------------
# Behaviour gate and the choice of known pairs


@dataclass(frozen=True)
class Knowledge:
    """What the model knows without context.

    Attributes:
        gate: memory-only accuracy among the candidate capitals on every usable pair, against the
            same model's answers scored as if each question had asked about another country.
        pairs: every usable pair (the gate's prompts), in table order.
        correct: ``[pair]`` whether the question prompt picked the right capital among the candidates.
        known: the pairs picked on the *selection* phrasing (`SELECTION`), which the
            experiment then asks about with the question phrasing.
    """

    gate: stats.GateResult
    pairs: tuple[Pair, ...]
    correct: Bool[Tensor, "pair"]
    known: tuple[Pair, ...]

    @property
    def chance(self) -> float:
        return 1 / len(self.pairs)


def _pick(model, template: str, pairs: Sequence[Pair]) -> Bool[Tensor, "pair"]:
    """Whether, for each pair's prompt, the right capital has the highest logit among all the pairs' capitals."""
    tokens = tokenize_prompts(model, [template.format(country=country) for country, _ in pairs])
    candidate_logits, _ = last_logits(model, tokens, capital_ids(model, pairs))
    return candidate_accuracy(candidate_logits, torch.arange(len(pairs)))


def knowledge(model, pairs: Sequence[Pair], *, seed: int = 0) -> Knowledge:
    """The behaviour gate (does the model know capitals?) and the pairs it knows.

    The gate asks every pair in two phrasings (`QUESTION` and `SELECTION`), so a table of 38 usable
    pairs gives 76 prompts. Accuracy is counted among the candidate capitals (every capital in
    `pairs`) rather than as top-1 over the vocabulary: after "A:" a small chat model's top token is
    usually a newline or " The", which says nothing about which capital it holds. The null is paired
    and keeps the model's own answers: the same prediction scored against a deranged pair's capital,
    so a model that always says " Paris" gains nothing over its null (chance is 1 / candidates).

    The known pairs are those answered right in the `SELECTION` phrasing only; the experiment asks
    in the `QUESTION` phrasing, so its prompts did not select themselves.
    """
    pairs = list(pairs)
    ids, n = capital_ids(model, pairs), len(pairs)
    picked = {}
    for template in (QUESTION, SELECTION):
        tokens = tokenize_prompts(model, [template.format(country=country) for country, _ in pairs])
        picked[template] = last_logits(model, tokens, ids)[0].argmax(dim=-1)  # [pair]
    both = torch.cat([picked[QUESTION], picked[SELECTION]])
    correct = both == torch.arange(n).repeat(2)
    shuffled = both == derangement(n, seed=seed).repeat(2)
    gate = stats.behaviour_gate(correct.float(), shuffled.float(), paired=True, seed=seed,
                                name="capital recall", metric_name="accuracy among the candidate capitals",
                                null_name="scored against another country's capital")
    selected = picked[SELECTION] == torch.arange(n)
    return Knowledge(gate=gate, pairs=tuple(pairs), correct=correct[:n],
                     known=tuple(pair for pair, ok in zip(pairs, selected.tolist()) if ok))


@dataclass(frozen=True)
class Answers:
    """How the model answers one set of conflict prompts.

    Attributes:
        top1: shares of memory / context / other among the top-1 tokens over the whole vocabulary.
        context_share: two-way share of prompts where the context capital's logit beats the memory
            capital's (conflict form); ``memory_only_share`` is the same comparison with no context
            (how often the counterfactual would win anyway).
        memory_minus_context: ``[batch]`` logit differences on the conflict form.
    """

    top1: dict[str, stats.Estimate]
    context_share: stats.Estimate
    memory_only_share: stats.Estimate
    memory_minus_context: Float[Tensor, "batch"]


def answers_under_conflict(model, prompts: ConflictPrompts, *, seed: int = 0) -> Answers:
    """Top-1 answer kinds and the two-way memory-vs-context comparison, with and without the context."""
    candidates = torch.unique(torch.cat([prompts.memory_ids, prompts.context_ids]))
    column = {token: i for i, token in enumerate(candidates.tolist())}
    memory_col = torch.tensor([column[t] for t in prompts.memory_ids.tolist()])
    context_col = torch.tensor([column[t] for t in prompts.context_ids.tolist()])
    rows = torch.arange(len(prompts))
    out = {}
    for form in ("conflict", "memory_only"):
        logits, top1 = last_logits(model, getattr(prompts, form), candidates)
        out[form] = (logits[rows, memory_col] - logits[rows, context_col], top1)
    difference, top1 = out["conflict"]
    return Answers(top1=answer_shares(answer_kinds(top1, prompts.memory_ids, prompts.context_ids), seed=seed),
                   context_share=stats.bootstrap_ci(context_wins(difference).float(), seed=seed),
                   memory_only_share=stats.bootstrap_ci(context_wins(out["memory_only"][0]).float(), seed=seed),
                   memory_minus_context=difference)


# --------------------------------------------------------------------------------------------------
# Screen: direct logit attribution of every head


@dataclass(frozen=True)
class HeadScreen:
    """Mean direct effect of every head on ``logit[memory] - logit[context]``, in three prompt forms.

    The same answer pair (" Paris" vs " Rome") is scored in every form, so the forms differ only in
    the context sentence:

    - ``conflict``: the score. Most positive = *memory heads*, most negative = *context heads*.
    - ``memory_only``: no context. A context head has nothing to copy here, so it should sit near 0;
      a memory head should still push the remembered capital. This is the null for context heads.
    - ``agreeing``: the context names the memory capital. A context head now pushes it too (its sign
      flips from the conflict form); a memory head's sign stays.
    """

    conflict: Float[Tensor, "layer head"]
    memory_only: Float[Tensor, "layer head"]
    agreeing: Float[Tensor, "layer head"]
    per_prompt: Float[Tensor, "layer head batch"]

    def memory_heads(self, k: int) -> list[Head]:
        """The `k` heads with the most positive conflict score, strongest first."""
        return top_heads(self.conflict, k)

    def context_heads(self, k: int) -> list[Head]:
        """The `k` heads with the most negative conflict score, strongest first."""
        return top_heads(-self.conflict, k)

    @property
    def null_cutoff(self) -> float:
        """95th percentile of every head's |score| without a context: how far 'no context to copy' reaches."""
        return stats.null_threshold(self.memory_only.abs(), 0.95)

    def table(self, shown: Sequence[Head]):
        """A DataFrame with each head's score in the three forms."""
        import pandas as pd

        return pd.DataFrame([{"head": label(h), "conflict": self.conflict[h].item(),
                              "no context": self.memory_only[h].item(), "agreeing context": self.agreeing[h].item()}
                             for h in shown]).set_index("head").round(2)


def screen_heads(model, prompts: ConflictPrompts) -> HeadScreen:
    """Direct logit attribution (`attribution.head_logit_attribution`) in the three forms, mean over prompts."""
    def attribute(tokens: Tensor) -> Tensor:
        return attribution.head_logit_attribution(model, tokens, prompts.memory_ids, prompts.context_ids)

    per_prompt = attribute(prompts.conflict)
    return HeadScreen(conflict=per_prompt.mean(-1), memory_only=attribute(prompts.memory_only).mean(-1),
                      agreeing=attribute(prompts.agreeing).mean(-1), per_prompt=per_prompt)


# --------------------------------------------------------------------------------------------------
# Causal check


@dataclass(frozen=True)
class ConflictAblation:
    """Mean-ablating the top memory heads, the top context heads, and random heads of the same number.

    Attributes:
        memory: change of the *context preference* (``logit[context] - logit[memory]``) when the memory
            heads are ablated; positive means the answers moved towards the context.
        context: change of the *memory preference* when the context heads are ablated; positive means
            the answers moved towards memory.
        context_share: two-way share of prompts whose context capital beats the memory capital, for
            the clean model, memory heads ablated, and context heads ablated.
        share_change: paired change of that share, memory heads ablated and context heads ablated.
    """

    memory: controls.CausalCheck
    context: controls.CausalCheck
    context_share: dict[str, stats.Estimate]
    share_change: dict[str, stats.Estimate]

    def summary(self) -> str:
        return (f"memory heads: {self.memory.summary()}\ncontext heads: {self.context.summary()}\n"
                f"context share: clean {self.context_share['clean']}, memory heads ablated "
                f"{self.context_share['memory heads ablated']}, context heads ablated "
                f"{self.context_share['context heads ablated']}")


def causal_check(model, prompts: ConflictPrompts, reference: ConflictPrompts, memory_heads: Sequence[Head],
                 context_heads: Sequence[Head], *, n_random: int = 20, seed: int = 0) -> ConflictAblation:
    """Mean-ablate each head set on the conflict prompts, in one batched `interventions.ablated_metric` call.

    Means are per position, over the conflict prompts of `reference` (other countries and
    counterfactuals, same template): an ablated head keeps its average output at each position
    and loses what is specific to the country and the two capitals. Random sets are drawn from all heads.
    The p-values count the random draws that move the answers at least as far in the same direction.
    """
    memory_heads, context_heads = [tuple(h) for h in memory_heads], [tuple(h) for h in context_heads]
    if len(memory_heads) != len(context_heads) or not memory_heads:
        raise ValueError(f"pass two non-empty head lists of one size (the random sets match it); got "
                         f"{len(memory_heads)} memory and {len(context_heads)} context heads")
    if reference.conflict.shape[1] != prompts.conflict.shape[1]:
        raise ValueError(f"reference prompts have {reference.conflict.shape[1]} tokens, the prompts "
                         f"{prompts.conflict.shape[1]}: per-position means need one template")
    means = capture.mean_head_outputs(model, reference.conflict, per_position=True)
    draws = controls.uniform_sets(model.cfg.n_layers, model.cfg.n_heads, len(memory_heads), n_random, seed=seed)
    memory_ids, context_ids = prompts.memory_ids, prompts.context_ids

    def memory_preference(logits: Tensor, tokens: Tensor) -> Tensor:
        repeats = tokens.shape[0] // len(memory_ids)  # ablated_metric stacks the prompts once per head set
        return attribution.logit_difference(logits, memory_ids.repeat(repeats), context_ids.repeat(repeats))

    values = interventions.ablated_metric(model, prompts.conflict, [[], memory_heads, context_heads] + draws,
                                          memory_preference, mode="mean", means=means,
                                          last_position_only=True)  # [set, prompt]
    wins = context_wins(values[:3]).float()
    names = ("clean", "memory heads ablated", "context heads ablated")
    null = f"{len(memory_heads)} heads drawn from all heads"

    def check(rows: Tensor, found: list[Head], metric_name: str) -> controls.CausalCheck:
        return controls.check_from_values(rows, found, metric_name=metric_name, mode="mean-ablated", null=null,
                                          seed=seed)

    return ConflictAblation(
        memory=check(-values[[0, 1, *range(3, len(values))]], memory_heads, "context preference (logit difference)"),
        context=check(values[[0, 2, *range(3, len(values))]], context_heads, "memory preference (logit difference)"),
        context_share={name: stats.bootstrap_ci(row, seed=seed) for name, row in zip(names, wins)},
        share_change={names[1]: stats.paired_difference(wins[1], wins[0], seed=seed),
                      names[2]: stats.paired_difference(wins[2], wins[0], seed=seed)},
    )


# --------------------------------------------------------------------------------------------------
# The whole experiment on one model


@dataclass(frozen=True)
class Sizes:
    """How many prompts each step uses (the notebooks' parameters cell sets these).

    The gate uses every usable pair once; the conflict prompts cycle through the known pairs.
    """

    screen_prompts: int = 60
    ablation_prompts: int = 16
    reference_prompts: int = 32
    top_k: int = 3
    n_random: int = 20


@dataclass(frozen=True)
class Study:
    """E1 on one model: knowledge gate, answer shares under conflict, head screen, causal check."""

    model: str
    knowledge: Knowledge
    prompts: ConflictPrompts | None
    answers: Answers | None
    screen: HeadScreen | None
    ablation: ConflictAblation | None

    def row(self, kind: str = "memory") -> dict:
        """One findings-table row; `kind` is "memory" or "context" (which heads and which direction)."""
        if kind not in ("memory", "context"):
            raise ValueError(f"kind must be 'memory' or 'context'; got {kind!r}")
        gate = self.knowledge.gate
        row = {"model": self.model, "knows capitals (gate)": f"{'pass' if gate.passed else 'fail'}: {gate.metric} "
               f"vs {gate.null}", "known pairs": f"{len(self.knowledge.known)} of {len(self.knowledge.pairs)}"}
        if self.screen is None or self.ablation is None or self.answers is None:
            return row | {"note": "gate failed: no head screen"}
        top = self.screen.memory_heads(3) if kind == "memory" else self.screen.context_heads(3)
        check = self.ablation.memory if kind == "memory" else self.ablation.context
        ablated = "memory heads ablated" if kind == "memory" else "context heads ablated"
        return row | {
            "context beats memory (no context / conflict)":
                f"{self.answers.memory_only_share.mean:.0%} / {self.answers.context_share}",
            f"top {kind} heads (DLA)": labels(top, self.screen.conflict),
            "ablation effect (logit diff)": str(check.top),
            "random heads (from all heads)": check.draws_summary(),
            "context share change": str(self.ablation.share_change[ablated]),
        }


def study(model, *, sizes: Sizes = Sizes(), seed: int = 0) -> Study:
    """Run all of E1 on `model`: the exact steps both family pages show, for the comparison model too.

    Seeds: the gate uses `seed`, the screen prompts `seed + 10`, the ablation prompts `seed + 20` and
    the reference prompts for the means `seed + 30`. If the gate fails, the study stops there. The memory
    and context pages both read it for both models, so it is kept in the results store.
    """
    return store.cached("conflict-study", lambda: _study(model, sizes=sizes, seed=seed),
                        model=models.spec_of(model).name, weights=store.weights_digest(model), sizes=sizes, seed=seed)


def _study(model, *, sizes: Sizes, seed: int) -> Study:
    name = models.spec_of(model).name
    pairs = capital_pairs(model)
    known = knowledge(model, pairs, seed=seed)
    if not known.gate.passed or len(known.known) < 2:
        return Study(model=name, knowledge=known, prompts=None, answers=None, screen=None, ablation=None)
    prompts = conflict_prompts(model, known.known, n=sizes.screen_prompts, seed=seed + 10, counterfactuals=pairs)
    answers = answers_under_conflict(model, prompts, seed=seed)
    screen = screen_heads(model, prompts)
    ablation = causal_check(
        model, conflict_prompts(model, known.known, n=sizes.ablation_prompts, seed=seed + 20, counterfactuals=pairs),
        conflict_prompts(model, pairs, n=sizes.reference_prompts, seed=seed + 30),
        screen.memory_heads(sizes.top_k), screen.context_heads(sizes.top_k), n_random=sizes.n_random, seed=seed)
    return Study(model=name, knowledge=known, prompts=prompts, answers=answers, screen=screen,
                         ablation=ablation)


def findings_table(kind: str, *studies: Study):
    """The findings table of the memory ("memory") or context ("context") page: one row per model."""
    import pandas as pd

    return pd.DataFrame([study.row(kind) for study in studies]).set_index("model")
