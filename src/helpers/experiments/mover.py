"""Mover heads (Yao et al. 2024, *Knowledge Circuits*): heads that read the subject of a factual prompt
and write the attribute into the last position.

In "The official language of France is", the model has to bring what it knows about *France* to the
last token, where " French" is predicted. Yao et al. found, in the circuits of GPT-2 Medium and
TinyLLaMA, attention heads that attend from the last position to the subject and move its
attribute there ("mover heads"). This module runs the reproduction of the book's plan:

1. `relation_facts` / `fact_batch`: two relations (capital city, official language) whose answers are
   single tokens and whose subjects have one token length per tokenizer; each prompt has a *nonce twin*
   with the subject replaced by a made-up word of the same token length.
2. `recall_gate`: does the model pick the right answer among the relation's candidate answers, against
   a deranged null (the same predictions scored against another fact's answer)?
3. `screen_heads`: the pre-registered mover score of every head, attention END -> subject times the
   head's direct logit attribution (DLA) to ``logit[answer] - logit[another fact's answer]``, on the
   real prompts and on their nonce twins (the null).
4. `causal_check`: mean-ablate the top movers and random head sets of the same size, and measure the
   drop of the answer's lead over the other candidates.

5. `held_out`: the gate, the screen and the causal check again in other wordings of the two relations
   (`HELD_OUT_RELATIONS`).

`study` runs all of it on one model (the page's comparison model uses it).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from helpers import attribution, capture, controls, heldout, interventions, models, stats, tasks
from helpers.experiments import conflict
from helpers.heads import Head, label, top as top_heads
from helpers.tasks import tokenize_prompts

Fact = tuple[str, str]  # (subject, answer), e.g. ("France", "French")

# Written for this book from general knowledge: a country and its main official language, named as an
# English sentence would ("The official language of Spain is Spanish"). Countries that share a language
# are listed in order of how typical the answer is; `relation_facts` keeps the first country per answer.
COUNTRY_LANGUAGES: tuple[Fact, ...] = (
    ("France", "French"), ("Germany", "German"), ("Italy", "Italian"), ("Spain", "Spanish"),
    ("Portugal", "Portuguese"), ("Netherlands", "Dutch"), ("Greece", "Greek"), ("Poland", "Polish"),
    ("Russia", "Russian"), ("Japan", "Japanese"), ("China", "Chinese"), ("Turkey", "Turkish"),
    ("Sweden", "Swedish"), ("Norway", "Norwegian"), ("Denmark", "Danish"), ("Finland", "Finnish"),
    ("Hungary", "Hungarian"), ("Iran", "Persian"), ("Israel", "Hebrew"), ("Thailand", "Thai"),
    ("Vietnam", "Vietnamese"), ("Korea", "Korean"), ("Indonesia", "Indonesian"), ("Ukraine", "Ukrainian"),
    ("Romania", "Romanian"), ("Bulgaria", "Bulgarian"), ("Serbia", "Serbian"), ("Croatia", "Croatian"),
    ("Iceland", "Icelandic"), ("Ireland", "Irish"), ("Estonia", "Estonian"), ("Latvia", "Latvian"),
    ("Lithuania", "Lithuanian"), ("Albania", "Albanian"), ("Armenia", "Armenian"), ("Georgia", "Georgian"),
    ("Mongolia", "Mongolian"), ("Ethiopia", "Amharic"), ("Egypt", "Arabic"), ("Pakistan", "Urdu"),
    ("Bangladesh", "Bengali"), ("Nepal", "Nepali"), ("Cambodia", "Khmer"), ("Malaysia", "Malay"),
    ("Philippines", "Filipino"), ("Kenya", "Swahili"), ("Czechia", "Czech"), ("Slovakia", "Slovak"),
    ("Slovenia", "Slovenian"), ("England", "English"), ("Wales", "Welsh"), ("India", "Hindi"),
    ("Laos", "Lao"), ("Myanmar", "Burmese"), ("Somalia", "Somali"), ("Brazil", "Portuguese"),
    ("Mexico", "Spanish"), ("Austria", "German"),
)

# Made-up capitalised words that stand where a country stood. Not every one is a single token for every
# tokenizer; `nonce_words` keeps those of the subject's token length (both offline models keep several).
NONCE_WORDS: tuple[str, ...] = ("Vel", "Kor", "Nort", "Hask", "Tull", "Zeb", "Klim", "Varn", "Lom", "Pell",
                                "Zan", "Blick", "Zorv", "Brin", "Dask", "Morv", "Quor", "Grax", "Drenn",
                                "Sarn", "Thov", "Trel", "Gorm", "Rell", "Plim", "Wub", "Yalen", "Fendor")


@dataclass(frozen=True)
class Relation:
    """A factual relation: its name, a prompt template with a ``{subject}`` slot at the end, and its facts."""

    name: str
    template: str
    table: tuple[Fact, ...]


RELATIONS: tuple[Relation, ...] = (
    Relation("capital city", "The capital city of {subject} is", conflict.COUNTRY_CAPITALS),
    Relation("official language", "The official language of {subject} is", COUNTRY_LANGUAGES),
)

# The held-out family: the same relations in other words, never screened. Neither wording names the relation
# as the page's prompts do ("capital", "official language"); in the capital wording the subject sits five
# tokens before the last position instead of right before it.
HELD_OUT_RELATIONS: tuple[Relation, ...] = (
    Relation("capital city", "The government of {subject} sits in the city of", conflict.COUNTRY_CAPITALS),
    Relation("official language", "Most people who live in {subject} speak", COUNTRY_LANGUAGES),
)
HELD_OUT_FAMILY = "'The government of X sits in the city of', 'Most people who live in X speak'"


# --------------------------------------------------------------------------------------------------
# Prompts


def _length(model, word: str) -> int:
    return len(tasks.token_ids(model, " " + word))


def word_ids(model, words: Sequence[str]) -> Int[Tensor, "word"]:
    """Token id of each word with its leading space; every word must be a single token."""
    ids = [tasks.single_token_id(model, " " + word) for word in words]
    bad = [word for word, i in zip(words, ids) if i is None]
    if bad:
        raise ValueError(f"{bad} are not single tokens for this tokenizer; "
                         "filter the facts with relation_facts(model, relation)")
    return torch.tensor(ids)


def relation_facts(model, relation: Relation, *, min_facts: int = 10) -> list[Fact]:
    """The facts of `relation` this tokenizer can run as one batch.

    Kept: answers of one token (so one logit stands for each), subjects of the most common token length
    (one length per batch; ties go to the shorter) and one subject per answer (the first in the table), so
    that "right answer among the candidates" has exactly one right candidate.

    Raises:
        ValueError: if fewer than `min_facts` facts survive.
    """
    usable = [(subject, answer) for subject, answer in relation.table if _length(model, answer) == 1]
    lengths = [_length(model, subject) for subject, _ in usable]
    if usable:
        common = min(set(lengths), key=lambda n: (-lengths.count(n), n))
        usable = [fact for fact, n in zip(usable, lengths) if n == common]
    seen: set[str] = set()
    kept = []
    for subject, answer in usable:
        if answer not in seen:
            seen.add(answer)
            kept.append((subject, answer))
    if len(kept) < min_facts:
        raise ValueError(f"only {len(kept)} of {len(relation.table)} {relation.name!r} facts have a single-token "
                         f"answer and a subject of the common length for this tokenizer (need {min_facts})")
    return kept


def nonce_words(model, length: int, *, exclude: Sequence[str] = ()) -> list[str]:
    """The made-up words of `NONCE_WORDS` that are `length` tokens long here (never a word in `exclude`)."""
    words = [word for word in NONCE_WORDS if _length(model, word) == length and word not in set(exclude)]
    if not words:
        raise ValueError(f"no nonce word in NONCE_WORDS is {length} tokens long for this tokenizer; add some")
    return words


def subject_span(model, template: str, subject: str) -> tuple[int, int]:
    """[start, stop) token positions of the subject in ``template.format(subject=subject)``.

    The subject slot must follow a space, so the tokens before it are those of the text before the slot
    (with the model's BOS policy); the check below makes sure the tokenizer did not merge across the slot.
    """
    prefix, _, _ = template.partition("{subject}")
    if not prefix.endswith(" "):
        raise ValueError(f"template must have a space before {{subject}}; got {template!r}")
    start = model.to_tokens(prefix.rstrip(" "))[0].shape[0]
    stop = start + _length(model, subject)
    full = model.to_tokens(template.format(subject=subject))[0]
    if full[start:stop].tolist() != tasks.token_ids(model, " " + subject):
        raise ValueError(f"the subject {subject!r} does not tokenize on its own inside {template!r}")
    return start, stop


@dataclass(frozen=True)
class FactBatch:
    """Prompts of one relation, with their nonce twins and the candidate answers.

    Attributes:
        relation: the relation's name.
        facts: (subject, answer) of each prompt.
        tokens: ``[batch, pos]`` ``"The official language of France is"``.
        nonce: ``[batch, pos]`` the same with the subject replaced by a made-up word of equal token length.
        nonce_subjects: the made-up word of each row.
        answers: ``[batch]`` ids of the right answers.
        wrong: ``[batch]`` ids of a deranged fact's answer (never the row's own): the DLA's competitor.
        candidates: ``[candidate]`` ids of every answer of the relation's usable facts.
        answer_column / wrong_column: ``[batch]`` where the right and the deranged answer sit in `candidates`.
        subject: [start, stop) positions of the subject (one span for the whole batch).
    """

    relation: str
    template: str
    facts: tuple[Fact, ...]
    tokens: Int[Tensor, "batch pos"]
    nonce: Int[Tensor, "batch pos"]
    nonce_subjects: tuple[str, ...]
    answers: Int[Tensor, "batch"]
    wrong: Int[Tensor, "batch"]
    candidates: Int[Tensor, "candidate"]
    answer_column: Int[Tensor, "batch"]
    wrong_column: Int[Tensor, "batch"]
    subject: tuple[int, int]

    def __len__(self) -> int:
        return len(self.facts)

    def text(self, index: int = 0, *, nonce: bool = False) -> str:
        subject = self.nonce_subjects[index] if nonce else self.facts[index][0]
        return self.template.format(subject=subject)

    def subset(self, keep: Bool[Tensor, "batch"] | Sequence[int]) -> FactBatch:
        """The rows in `keep` (a mask or indices). Candidates are unchanged and each row keeps its competitor
        answer, which stays another fact's answer even if that fact is no longer in the batch."""
        index = torch.as_tensor(keep)
        index = index.nonzero().flatten() if index.dtype == torch.bool else index.long()
        rows = index.tolist()
        return FactBatch(relation=self.relation, template=self.template, facts=tuple(self.facts[i] for i in rows),
                         tokens=self.tokens[index], nonce=self.nonce[index],
                         nonce_subjects=tuple(self.nonce_subjects[i] for i in rows), answers=self.answers[index],
                         wrong=self.wrong[index], candidates=self.candidates, answer_column=self.answer_column[index],
                         wrong_column=self.wrong_column[index], subject=self.subject)


def fact_batch(model, relation: Relation, facts: Sequence[Fact], *, seed: int,
               candidates: Sequence[Fact] | None = None) -> FactBatch:
    """Every fact of `facts` as a prompt, its nonce twin, and a deranged competitor answer.

    `candidates` (default `facts`) are the answers the gate chooses among. The nonce words are drawn
    with `seed` from `nonce_words` and never equal a real subject.
    """
    facts, pool = list(facts), list(candidates if candidates is not None else facts)
    if len(facts) < 2:
        raise ValueError(f"need at least two facts (a derangement pairs each with another); got {len(facts)}")
    answers_in_pool = [answer for _, answer in pool]
    missing = [answer for _, answer in facts if answer not in answers_in_pool]
    if missing:
        raise ValueError(f"answers {missing} are not among the candidates; pass candidates that include them")
    spans = {subject_span(model, relation.template, subject) for subject, _ in facts}
    if len(spans) != 1:
        raise ValueError(f"subjects of {relation.name!r} sit at different positions {sorted(spans)}; "
                         "filter the facts with relation_facts(model, relation)")
    subject = spans.pop()
    rng = random.Random(seed)
    words = nonce_words(model, subject[1] - subject[0], exclude=[s for s, _ in relation.table])
    nonce_subjects = tuple(rng.choice(words) for _ in facts)
    order = conflict.derangement(len(facts), seed=seed)
    answer_column = torch.tensor([answers_in_pool.index(answer) for _, answer in facts])
    wrong_column = answer_column[order]
    candidate_ids = word_ids(model, answers_in_pool)
    return FactBatch(
        relation=relation.name, template=relation.template, facts=tuple(facts),
        tokens=tokenize_prompts(model, [relation.template.format(subject=s) for s, _ in facts]),
        nonce=tokenize_prompts(model, [relation.template.format(subject=s) for s in nonce_subjects]),
        nonce_subjects=nonce_subjects, answers=candidate_ids[answer_column], wrong=candidate_ids[wrong_column],
        candidates=candidate_ids, answer_column=answer_column, wrong_column=wrong_column, subject=subject)


# --------------------------------------------------------------------------------------------------
# Metrics (pure)


def answer_lead(candidate_logits: Float[Tensor, "batch candidate"], answer_column: Int[Tensor, "batch"]
                ) -> Float[Tensor, "batch"]:
    """``logit[answer]`` minus the mean logit of the *other* candidate answers: how far the model prefers the fact."""
    if candidate_logits.ndim != 2 or answer_column.shape != candidate_logits.shape[:1]:
        raise ValueError(f"need logits [batch, candidate] and one answer column per row; got "
                         f"{tuple(candidate_logits.shape)} and {tuple(answer_column.shape)}")
    n = candidate_logits.shape[1]
    if n < 2:
        raise ValueError("need at least two candidates to compare the answer with")
    rows = torch.arange(candidate_logits.shape[0])
    right = candidate_logits[rows, answer_column]
    others = (candidate_logits.sum(dim=1) - right) / (n - 1)
    return right - others


def subject_attention(attention: Float[Tensor, "layer batch head key"], subject: tuple[int, int]
                      ) -> Float[Tensor, "layer head batch"]:
    """Each head's attention from END summed over the subject's tokens."""
    start, stop = subject
    if not 0 <= start < stop <= attention.shape[-1]:
        raise ValueError(f"subject span {subject} lies outside the {attention.shape[-1]} key positions")
    return attention[..., start:stop].sum(dim=-1).permute(0, 2, 1)


def mover_score(attention: Float[Tensor, "layer head batch"], dla: Float[Tensor, "layer head batch"]
                ) -> Float[Tensor, "layer head"]:
    """The pre-registered mover score: per prompt, attention END -> subject times DLA; mean over prompts.

    A head scores high only if it both reads the subject and writes the answer on the same prompts;
    a head that writes the answer from elsewhere (or reads the subject and writes nothing) scores near 0.
    """
    if attention.shape != dla.shape:
        raise ValueError(f"attention {tuple(attention.shape)} and DLA {tuple(dla.shape)} must have one shape")
    return (attention * dla).mean(dim=-1)


# --------------------------------------------------------------------------------------------------
# Behaviour gate


@dataclass(frozen=True)
class Recall:
    """What the model knows: the gate over all relations and, per relation, the facts it gets right.

    Attributes:
        gate: accuracy among the candidate answers vs the same predictions scored against a deranged fact.
        batches: every usable fact of each relation (the gate's prompts).
        correct: per relation ``[fact]`` whether the right answer had the highest candidate logit.
        lead: per relation ``[fact]`` the clean `answer_lead`.
    """

    gate: stats.GateResult
    batches: tuple[FactBatch, ...]
    correct: tuple[Bool[Tensor, "fact"], ...]
    lead: tuple[Float[Tensor, "fact"], ...]

    def known(self) -> tuple[FactBatch, ...]:
        """Each relation's batch cut to the facts the model got right."""
        return tuple(batch.subset(right) for batch, right in zip(self.batches, self.correct))

    def accuracy(self) -> dict[str, float]:
        return {batch.relation: right.float().mean().item() for batch, right in zip(self.batches, self.correct)}


def candidate_logits(model, tokens: Int[Tensor, "batch pos"], candidates: Int[Tensor, "candidate"]
                     ) -> Float[Tensor, "batch candidate"]:
    """Logits of the candidate answers at the last position (only that position is unembedded)."""
    return conflict.last_logits(model, tokens, candidates)[0]


def recall_gate(model, batches: Sequence[FactBatch], *, seed: int = 0) -> Recall:
    """The behaviour gate, pooled over relations: right answer on top among the candidates, paired null.

    The null keeps the model's own predictions and scores each against another fact's answer (the
    batch's derangement), so a model that always says " French" gains nothing over it.
    """
    correct, null, leads = [], [], []
    for batch in batches:
        logits = candidate_logits(model, batch.tokens, batch.candidates)
        picked = logits.argmax(dim=-1)
        correct.append(picked == batch.answer_column)
        null.append(picked == batch.wrong_column)
        leads.append(answer_lead(logits, batch.answer_column))
    gate = stats.behaviour_gate(torch.cat(correct).float(), torch.cat(null).float(), paired=True, seed=seed,
                                name="factual recall", metric_name="accuracy among the candidate answers",
                                null_name="scored against another fact's answer")
    return Recall(gate=gate, batches=tuple(batches), correct=tuple(correct), lead=tuple(leads))


# --------------------------------------------------------------------------------------------------
# Screen


@dataclass(frozen=True)
class MoverScreen:
    """The mover score of every head on real prompts and on their nonce twins (the null).

    Attributes:
        score / nonce_score: ``[layer, head]`` mean of attention(END -> subject) x DLA.
        attention / nonce_attention: ``[layer, head, batch]`` attention END -> subject (or the nonce word).
        dla / nonce_dla: ``[layer, head, batch]`` direct effect on ``logit[answer] - logit[deranged answer]``;
            on the nonce twin the answer is still the real subject's (which the prompt no longer names).
    """

    score: Float[Tensor, "layer head"]
    nonce_score: Float[Tensor, "layer head"]
    attention: Float[Tensor, "layer head batch"]
    nonce_attention: Float[Tensor, "layer head batch"]
    dla: Float[Tensor, "layer head batch"]
    nonce_dla: Float[Tensor, "layer head batch"]

    def movers(self, k: int) -> list[Head]:
        """The `k` heads with the highest mover score, strongest first."""
        return top_heads(self.score, k)

    @property
    def null_cutoff(self) -> float:
        """95th percentile of every head's score on the nonce twins: how high a score gets without a subject."""
        return stats.null_threshold(self.nonce_score, 0.95)

    def passing(self) -> list[Head]:
        """Heads whose score beats the nonce null's cutoff, strongest first."""
        return top_heads(self.score, where=self.score > self.null_cutoff)

    def nonce_drop(self, head: Head, *, seed: int = 0) -> stats.Estimate:
        """Paired drop of `head`'s DLA for the answer when the subject becomes a nonce word (positive = vanishes)."""
        return stats.paired_difference(self.dla[head], self.nonce_dla[head], seed=seed)

    def table(self, shown: Sequence[Head]):
        """A DataFrame with each head's score, its parts and its nonce-twin values."""
        import pandas as pd

        return pd.DataFrame([{
            "head": label(h), "mover score": self.score[h].item(), "attention to subject": self.attention[h].mean().item(),
            "DLA": self.dla[h].mean().item(), "nonce: attention": self.nonce_attention[h].mean().item(),
            "nonce: score": self.nonce_score[h].item(), "nonce: DLA": self.nonce_dla[h].mean().item()} for h in shown
        ]).set_index("head").round(3)


def _screen_parts(model, batch: FactBatch, tokens: Tensor) -> tuple[Tensor, Tensor]:
    run = capture.read_end(model, tokens)  # one pass gives both the attention and the DLA
    return (subject_attention(run.attention, batch.subject),
            attribution.attribution_from_read(model, run, batch.answers, batch.wrong))


def screen_heads(model, batches: Sequence[FactBatch]) -> MoverScreen:
    """Attention END -> subject and DLA of every head, on the real prompts and their nonce twins, all relations."""
    parts = {"real": [], "nonce": []}
    for batch in batches:
        parts["real"].append(_screen_parts(model, batch, batch.tokens))
        parts["nonce"].append(_screen_parts(model, batch, batch.nonce))
    joined = {kind: [torch.cat([p[i] for p in parts[kind]], dim=-1) for i in range(2)] for kind in parts}
    (attention, dla), (nonce_attention, nonce_dla) = joined["real"], joined["nonce"]
    return MoverScreen(score=mover_score(attention, dla), nonce_score=mover_score(nonce_attention, nonce_dla),
                       attention=attention, nonce_attention=nonce_attention, dla=dla, nonce_dla=nonce_dla)


# --------------------------------------------------------------------------------------------------
# Causal check


def causal_check(model, batches: Sequence[FactBatch], references: Sequence[FactBatch], heads: Sequence[Head], *,
                 n_random: int = 20, seed: int = 0) -> controls.CausalCheck:
    """Mean-ablate `heads` together and `n_random` random sets of the same size; the drop of the answer's lead.

    The metric is `answer_lead` (answer logit minus the mean logit of the other candidates) at END. Means are
    per position over each relation's `references` batch (other facts, same template), so an ablated head
    keeps its average output and loses what is specific to the subject. Reported values are *drops*
    as changes (ablated minus clean; negative = the model loses the fact); the random sets are drawn from all
    heads, so a draw may hold a mover.
    """
    heads = [tuple(head) for head in heads]
    if not heads or len(set(heads)) != len(heads):
        raise ValueError(f"pass distinct (layer, head) pairs to ablate; got {heads}")
    if len(batches) != len(references):
        raise ValueError(f"one reference batch per relation: got {len(batches)} batches, {len(references)} references")
    draws = controls.uniform_sets(model.cfg.n_layers, model.cfg.n_heads, len(heads), n_random, seed=seed)
    values = []
    for batch, reference in zip(batches, references):
        if reference.tokens.shape[1] != batch.tokens.shape[1]:
            raise ValueError(f"{batch.relation}: reference prompts must share the template (per-position means)")
        means = capture.mean_head_outputs(model, reference.tokens, per_position=True)

        def lead(logits: Tensor, tokens: Tensor, batch: FactBatch = batch) -> Tensor:
            repeats = tokens.shape[0] // len(batch)  # ablated_metric stacks the prompts once per head set
            picked = logits[:, -1][:, batch.candidates.to(logits.device)].float().cpu()
            return answer_lead(picked, batch.answer_column.repeat(repeats))

        values.append(interventions.ablated_metric(model, batch.tokens, [[], heads] + draws, lead, mode="mean",
                                                   means=means, last_position_only=True))  # [set, prompt]
    values = torch.cat(values, dim=1)  # [set, prompt] answer leads
    return controls.check_from_values(values, heads, metric_name="answer's lead over the other candidates (logits)",
                                      mode="mean-ablated", null=f"{len(heads)} heads drawn from all heads", seed=seed,
                                      larger_is_stronger=False)


def role_present(screen: MoverScreen, check: controls.CausalCheck, found: Sequence[Head], *, seed: int = 0,
                 alpha: float = 0.05) -> bool:
    """The plan's pass rule: heads that read the subject and write the answer exist, and ablating them drops
    the answer more than random heads do.

    Concretely: every top head scores above the nonce null's cutoff and its DLA drops on the nonce twin
    (paired interval above 0); ablating the top set lowers the answer's lead (interval below 0), and
    its rank among the random draws gives p < `alpha`.
    """
    exist = all(screen.score[h].item() > screen.null_cutoff and screen.nonce_drop(h, seed=seed).lower > 0
                for h in found)
    causal = check.top.upper < 0 and check.p_value < alpha
    return bool(exist and causal)


# --------------------------------------------------------------------------------------------------
# The whole experiment on one model


@dataclass(frozen=True)
class Sizes:
    """How many prompts each step uses (the notebook's parameters cell sets these).

    The gate uses every usable fact once; the screen the first `screen_prompts` known facts of each
    relation (and their nonce twins); the causal check the first `ablation_prompts` of those.
    """

    screen_prompts: int = 30
    ablation_prompts: int = 12
    top_k: int = 3
    n_random: int = 20


@dataclass(frozen=True)
class Study:
    """The whole page on one model: recall gate, screen, causal check and the pass rule."""

    model: str
    recall: Recall
    screen: MoverScreen | None
    ablation: controls.CausalCheck | None
    present: bool
    held_out: HeldOutCheck | None = None

    def row(self) -> dict:
        """One findings-table row."""
        gate = self.recall.gate
        known = self.recall.known()
        verdict = f"{'pass' if gate.passed else 'fail'}: {gate.metric} vs {gate.null}"
        row = {"model": self.model, "recall (gate)": verdict,
               "known facts": ", ".join(f"{b.relation} {len(k)}/{len(b)}" for b, k in zip(self.recall.batches, known))}
        if self.screen is None or self.ablation is None:
            return row | {"mover heads": "gate failed: no head screen"}
        return row | {
            "top movers (score; nonce score)": ", ".join(
                f"{label(h)} ({self.screen.score[h]:.2f}; {self.screen.nonce_score[h]:.2f})" for h in self.ablation.heads),
            "nonce null cutoff": round(self.screen.null_cutoff, 3),
            "change when ablated (top)": str(self.ablation.top),
            "change (random sets)": self.ablation.draws_summary(),
            "p vs random": round(self.ablation.p_value, 3),
            "mover role": "present" if self.present else "absent",
            **(self.held_out.row() if self.held_out else {"held-out format": "not run"}),
        }


def relation_batches(model, *, seed: int, relations: Sequence[Relation] = RELATIONS) -> tuple[FactBatch, ...]:
    """Every usable fact of each relation in `relations`, as one batch per relation (seeded nonce words)."""
    out = []
    for offset, relation in enumerate(relations):
        facts = relation_facts(model, relation)
        out.append(fact_batch(model, relation, facts, seed=seed + offset))
    return tuple(out)


def first(batches: Sequence[FactBatch], n: int) -> tuple[FactBatch, ...]:
    """Each batch cut to its first `n` rows (all of them if it has fewer)."""
    if n < 2:
        raise ValueError(f"n must be at least 2; got {n}")
    return tuple(batch.subset(range(min(len(batch), n))) for batch in batches)


@dataclass(frozen=True)
class HeldOutCheck:
    """The page's steps again in the held-out wordings: the recall gate, the mover screen and ``held`` (the
    found movers' ranks by held-out mover score, and the ablation against fresh draws from all heads)."""

    recall: Recall
    screen: MoverScreen
    held: heldout.HeldOut

    @property
    def carried_over(self) -> bool:
        """The gate passes and `HeldOut.carries_over`: every found mover ranks within the held-out top 2k
        by mover score, and no draw drops the answer's lead as much as the movers do."""
        return bool(self.recall.gate.passed and self.held.carries_over())

    def row(self) -> dict[str, str]:
        return {"held-out recall (gate)": f"{'pass' if self.recall.gate.passed else 'fail'}: {self.recall.gate.metric}",
                **self.held.row()}

    def summary(self) -> str:
        known = ", ".join(f"{b.relation} {int(r.sum())}/{len(b)}" for b, r in zip(self.recall.batches, self.recall.correct))
        return f"held-out gate {self.recall.gate.metric} ({known}); {self.held.summary()}"


def held_out(model, found: Sequence[Head], *, sizes: Sizes, seed: int) -> HeldOutCheck:
    """Gate, screen and the ablation of `found` against `sizes.n_random` fresh draws from all heads, in the
    `HELD_OUT_RELATIONS` wordings (the same countries: the tables hold no others)."""
    recall = recall_gate(model, relation_batches(model, seed=seed, relations=HELD_OUT_RELATIONS), seed=seed)
    known = recall.known()
    if any(len(batch) < 2 for batch in known):
        raise ValueError(f"the model knows fewer than two facts of a relation in the held-out wording: "
                         f"{recall.accuracy()}")
    screen = screen_heads(model, first(known, sizes.screen_prompts))
    check = causal_check(model, first(known, sizes.ablation_prompts), recall.batches, found,
                         n_random=sizes.n_random, seed=seed)
    return HeldOutCheck(recall=recall, screen=screen,
                        held=heldout.HeldOut(HELD_OUT_FAMILY, found=list(found), screen=screen.score, check=check))


def study(model, *, sizes: Sizes = Sizes(), seed: int = 0) -> Study:
    """Run the page's steps on `model`. If the gate fails, the study stops there."""
    name = models.spec_of(model).name
    recall = recall_gate(model, relation_batches(model, seed=seed), seed=seed)
    known = recall.known()
    if not recall.gate.passed or any(len(batch) < 2 for batch in known):
        return Study(model=name, recall=recall, screen=None, ablation=None, present=False)
    screen = screen_heads(model, first(known, sizes.screen_prompts))
    top = screen.movers(sizes.top_k)
    ablation = causal_check(model, first(known, sizes.ablation_prompts),
                            recall.batches, top, n_random=sizes.n_random, seed=seed)
    return Study(model=name, recall=recall, screen=screen, ablation=ablation,
                 present=role_present(screen, ablation, top, seed=seed),
                 held_out=held_out(model, top, sizes=sizes, seed=seed + 100))
