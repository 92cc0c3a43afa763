"""Factual recall split by source token (shared experiment E5): subject heads, relation heads, mixed heads.

Chughtai, Cooney and Nanda (2024, *Summing Up the Facts*) split each head's direct logit attribution
(DLA) at the last token by the position it reads from: a head's output there is ``sum_j A[END, j] v_j W_O``,
so the sum can be grouped into subject tokens ("Eiffel Tower") and relation tokens ("is in the city
of"). Heads that draw most of their push towards the right answer from the subject are *subject heads*;
from the relation, *relation heads*; from both, *mixed heads*. The two kinds add up ("additive motif").

1. `facts`: a table of (relation, subject, answer) with single-token answers, filtered per tokenizer;
   `prompts` words them "Fact: The Eiffel Tower is in the city of" and marks the subject and relation spans.
2. `study` runs the gate (facts the model gets right among its relation's answers), the source split
   (`attribution.head_source_attribution`) along the answer direction (answer minus the mean of the
   relation's other answers), two controls, a held-out wording, and mean ablation against random heads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from helpers import attribution, capture, controls, interventions, models, readout, stats, store, tasks
from helpers.experiments.conflict import COUNTRY_CAPITALS
from helpers.heads import Head, label, labels, top as top_heads


@dataclass(frozen=True)
class Relation:
    """How one relation is worded: ``prefix + " " + subject + suffix``, the answer following with a space.

    The subject always comes before the relation words, so "relation tokens" are the suffix and
    everything before the subject ("Fact: The", BOS) is "rest". `held_prefix` / `held_suffix` are the
    held-out wording, never used by the screen.
    """

    name: str
    prefix: str
    suffix: str
    held_prefix: str
    held_suffix: str


RELATIONS: tuple[Relation, ...] = (
    Relation("landmark city", "Fact: The", " is in the city of", "Travel note: the", " can be visited in the city of"),
    Relation("landmark country", "Fact: The", " is in the country of",
             "Travel note: the", " can be visited in the country of"),
    Relation("capital's country", "Fact:", " is the capital of", "Travel note:", " serves as the capital city of"),
    Relation("country's capital", "Fact:", " has its capital in the city of",
             "Travel note:", " is governed from the city of"),
    Relation("language", "Fact: In", ", the main language spoken is", "Travel note: in", ", most people speak"),
    Relation("continent", "Fact:", " is a country in the continent of", "Travel note:", " lies on the continent of"),
    Relation("city's country", "Fact:", " is a city in the country of", "Travel note:", " is located in the country of"),
)
RELATION_NAMES = tuple(relation.name for relation in RELATIONS)

# Written for this book from general knowledge: (landmark, city, country). Landmarks whose name
# contains their city or country are left out (copying would look like recall).
LANDMARKS: tuple[tuple[str, str, str], ...] = (
    ("Eiffel Tower", "Paris", "France"), ("Louvre", "Paris", "France"), ("Arc de Triomphe", "Paris", "France"),
    ("Notre Dame cathedral", "Paris", "France"), ("Colosseum", "Rome", "Italy"), ("Trevi Fountain", "Rome", "Italy"),
    ("Pantheon", "Rome", "Italy"), ("Rialto Bridge", "Venice", "Italy"), ("Uffizi Gallery", "Florence", "Italy"),
    ("Big Ben", "London", "England"), ("Tower Bridge", "London", "England"),
    ("Buckingham Palace", "London", "England"), ("Westminster Abbey", "London", "England"),
    ("Brandenburg Gate", "Berlin", "Germany"), ("Reichstag building", "Berlin", "Germany"),
    ("Marienplatz", "Munich", "Germany"), ("Acropolis", "Athens", "Greece"), ("Parthenon", "Athens", "Greece"),
    ("Kremlin", "Moscow", "Russia"), ("Red Square", "Moscow", "Russia"), ("Sagrada Familia", "Barcelona", "Spain"),
    ("Park Guell", "Barcelona", "Spain"), ("Prado Museum", "Madrid", "Spain"), ("Alhambra", "Granada", "Spain"),
    ("Hagia Sophia", "Istanbul", "Turkey"), ("Blue Mosque", "Istanbul", "Turkey"),
    ("Topkapi Palace", "Istanbul", "Turkey"), ("Forbidden City", "Beijing", "China"),
    ("Tiananmen Square", "Beijing", "China"), ("Summer Palace", "Beijing", "China"),
    ("Oriental Pearl Tower", "Shanghai", "China"), ("Taj Mahal", "Agra", "India"), ("CN Tower", "Toronto", "Canada"),
    ("Rijksmuseum", "Amsterdam", "Netherlands"), ("Anne Frank House", "Amsterdam", "Netherlands"),
    ("Atomium", "Brussels", "Belgium"), ("Manneken Pis", "Brussels", "Belgium"),
    ("Tivoli Gardens", "Copenhagen", "Denmark"), ("Vasa Museum", "Stockholm", "Sweden"),
    ("Schonbrunn Palace", "Vienna", "Austria"), ("Hofburg Palace", "Vienna", "Austria"),
    ("Charles Bridge", "Prague", "Czechia"), ("Wawel Castle", "Krakow", "Poland"),
    ("Belem Tower", "Lisbon", "Portugal"), ("Chain Bridge", "Budapest", "Hungary"),
    ("Western Wall", "Jerusalem", "Israel"), ("Grand Palace", "Bangkok", "Thailand"),
    ("Wat Arun temple", "Bangkok", "Thailand"), ("Kinkaku-ji temple", "Kyoto", "Japan"),
    ("Senso-ji temple", "Tokyo", "Japan"), ("Shwedagon Pagoda", "Yangon", "Myanmar"),
)

# (country, main language, continent or None where a one-word continent is wrong or ambiguous)
COUNTRIES: tuple[tuple[str, str, str | None], ...] = (
    ("France", "French", "Europe"), ("Germany", "German", "Europe"), ("Italy", "Italian", "Europe"),
    ("Spain", "Spanish", "Europe"), ("Portugal", "Portuguese", "Europe"), ("Netherlands", "Dutch", "Europe"),
    ("Greece", "Greek", "Europe"), ("Poland", "Polish", "Europe"), ("Sweden", "Swedish", "Europe"),
    ("Norway", "Norwegian", "Europe"), ("Denmark", "Danish", "Europe"), ("Finland", "Finnish", "Europe"),
    ("Hungary", "Hungarian", "Europe"), ("Romania", "Romanian", "Europe"), ("Ukraine", "Ukrainian", "Europe"),
    ("Austria", "German", "Europe"), ("Iceland", "Icelandic", "Europe"), ("Serbia", "Serbian", "Europe"),
    ("Croatia", "Croatian", "Europe"), ("Bulgaria", "Bulgarian", "Europe"), ("Russia", "Russian", None),
    ("Turkey", "Turkish", None), ("Japan", "Japanese", "Asia"), ("China", "Chinese", "Asia"),
    ("Vietnam", "Vietnamese", "Asia"), ("Thailand", "Thai", "Asia"), ("Indonesia", "Indonesian", "Asia"),
    ("Iran", "Persian", "Asia"), ("Israel", "Hebrew", "Asia"), ("Pakistan", "Urdu", "Asia"),
    ("India", "Hindi", "Asia"), ("Bangladesh", "Bengali", "Asia"), ("Mongolia", "Mongolian", "Asia"),
    ("Nepal", "Nepali", "Asia"), ("Malaysia", "Malay", "Asia"), ("Iraq", "Arabic", "Asia"),
    ("Syria", "Arabic", "Asia"), ("Jordan", "Arabic", "Asia"), ("Egypt", "Arabic", "Africa"),
    ("Morocco", "Arabic", "Africa"), ("Algeria", "Arabic", "Africa"), ("Tunisia", "Arabic", "Africa"),
    ("Libya", "Arabic", "Africa"), ("Sudan", "Arabic", "Africa"), ("Kenya", "Swahili", "Africa"),
    ("Tanzania", "Swahili", "Africa"), ("Ethiopia", "Amharic", "Africa"), ("Nigeria", "English", "Africa"),
    ("Ghana", "English", "Africa"), ("Senegal", "French", "Africa"), ("Mali", "French", "Africa"),
    ("Mexico", "Spanish", None), ("Argentina", "Spanish", None), ("Chile", "Spanish", None),
    ("Peru", "Spanish", None), ("Colombia", "Spanish", None), ("Brazil", "Portuguese", None),
)

# (city, country) for cities that are not capitals
CITIES: tuple[tuple[str, str], ...] = (
    ("Munich", "Germany"), ("Hamburg", "Germany"), ("Frankfurt", "Germany"), ("Barcelona", "Spain"),
    ("Seville", "Spain"), ("Valencia", "Spain"), ("Milan", "Italy"), ("Naples", "Italy"), ("Venice", "Italy"),
    ("Florence", "Italy"), ("Marseille", "France"), ("Lyon", "France"), ("Porto", "Portugal"),
    ("Krakow", "Poland"), ("Osaka", "Japan"), ("Kyoto", "Japan"), ("Shanghai", "China"), ("Mumbai", "India"),
    ("Toronto", "Canada"), ("Vancouver", "Canada"), ("Montreal", "Canada"), ("Sydney", "Australia"),
    ("Melbourne", "Australia"), ("Istanbul", "Turkey"), ("Rotterdam", "Netherlands"), ("Geneva", "Switzerland"),
    ("Zurich", "Switzerland"), ("Manchester", "England"), ("Liverpool", "England"), ("Glasgow", "Scotland"),
    ("Alexandria", "Egypt"), ("Casablanca", "Morocco"), ("Lagos", "Nigeria"), ("Karachi", "Pakistan"),
    ("Salzburg", "Austria"), ("Antwerp", "Belgium"), ("Bergen", "Norway"),
)

Fact = tuple[str, str, str]  # (relation name, subject, answer)


def fact_table() -> list[Fact]:
    """Every (relation, subject, answer) of the tables above; the capitals come from the conflict
    experiment's country–capital table (`conflict.COUNTRY_CAPITALS`), in both directions."""
    table: list[Fact] = []
    table += [("landmark city", landmark, city) for landmark, city, _ in LANDMARKS]
    table += [("landmark country", landmark, country) for landmark, _, country in LANDMARKS]
    table += [("capital's country", capital, country) for country, capital in COUNTRY_CAPITALS]
    table += [("country's capital", country, capital) for country, capital in COUNTRY_CAPITALS]
    table += [("language", country, language) for country, language, _ in COUNTRIES]
    table += [("continent", country, continent) for country, _, continent in COUNTRIES if continent]
    table += [("city's country", city, country) for city, country in CITIES]
    return table


# --------------------------------------------------------------------------------------------------
# Prompts with their source spans


@dataclass(frozen=True)
class FactPrompts:
    """Facts worded one way, each with its token ids and the spans of its subject and relation.

    Attributes:
        facts: (relation, subject, answer) per prompt.
        tokens: one id tensor per prompt (lengths differ: subjects have 1–4 tokens).
        subject / relation: ``(start, stop)`` token spans; everything before the subject is "rest".
        answer_ids: ``[fact]`` the answer's token (with its leading space).
        held_out: whether this is the held-out wording.
    """

    facts: tuple[Fact, ...]
    tokens: tuple[Tensor, ...]
    subject: tuple[tuple[int, int], ...]
    relation: tuple[tuple[int, int], ...]
    answer_ids: Int[Tensor, "fact"]
    held_out: bool = False

    def __len__(self) -> int:
        return len(self.facts)

    def text(self, index: int) -> str:
        relation, subject, _ = self.facts[index]
        return wording(relation, subject, held_out=self.held_out)

    def source_masks(self, index: int) -> Bool[Tensor, "3 pos"]:
        """Rows subject, relation, rest: which key positions of prompt `index` belong to each group."""
        n = len(self.tokens[index])
        masks = torch.zeros(3, n, dtype=torch.bool)
        masks[0, slice(*self.subject[index])] = True
        masks[1, slice(*self.relation[index])] = True
        masks[2] = ~(masks[0] | masks[1])
        return masks

    def groups(self) -> list[list[int]]:
        """Prompt indices grouped by token count (a batch needs one length; padding would move END)."""
        by_length: dict[int, list[int]] = {}
        for i, row in enumerate(self.tokens):
            by_length.setdefault(len(row), []).append(i)
        return [by_length[n] for n in sorted(by_length)]

    def subset(self, keep: Sequence[int]) -> FactPrompts:
        keep = list(keep)
        return FactPrompts(facts=tuple(self.facts[i] for i in keep), tokens=tuple(self.tokens[i] for i in keep),
                           subject=tuple(self.subject[i] for i in keep),
                           relation=tuple(self.relation[i] for i in keep),
                           answer_ids=self.answer_ids[keep], held_out=self.held_out)


RELATION_BY_NAME = {relation.name: relation for relation in RELATIONS}


def wording(relation: str, subject: str, *, held_out: bool = False) -> str:
    """The prompt text, e.g. ``"Fact: The Eiffel Tower is in the city of"``."""
    if relation not in RELATION_BY_NAME:
        raise KeyError(f"relation must be one of {list(RELATION_BY_NAME)}; got {relation!r}")
    spec = RELATION_BY_NAME[relation]
    prefix, suffix = (spec.held_prefix, spec.held_suffix) if held_out else (spec.prefix, spec.suffix)
    return f"{prefix} {subject}{suffix}"


def prompts(model, table: Sequence[Fact], *, held_out: bool = False) -> FactPrompts:
    """The facts this tokenizer can score: single-token answer, subject and relation spans on token boundaries.

    A fact is dropped when its answer is not one token (with its leading space) or when the subject's
    last token merges with the next word, so that no token belongs to both spans.
    """
    kept, tokens, subject_spans, relation_spans, answers = [], [], [], [], []
    for fact in table:
        relation, subject, answer = fact
        answer_id = tasks.single_token_id(model, " " + answer)
        if answer_id is None:
            continue
        spec = RELATION_BY_NAME[relation]
        prefix = spec.held_prefix if held_out else spec.prefix
        head = model.to_tokens(prefix)[0]
        with_subject = model.to_tokens(f"{prefix} {subject}")[0]
        full = model.to_tokens(wording(relation, subject, held_out=held_out))[0]
        aligned = (torch.equal(full[:len(with_subject)], with_subject) and torch.equal(with_subject[:len(head)], head)
                   and len(full) > len(with_subject) > len(head))
        if not aligned:
            continue
        kept.append(fact)
        tokens.append(full.cpu())
        subject_spans.append((len(head), len(with_subject)))
        relation_spans.append((len(with_subject), len(full)))
        answers.append(answer_id)
    if len(kept) < 10:
        raise ValueError(f"only {len(kept)} of {len(table)} facts have a single-token answer and clean spans for "
                         "this tokenizer; pass a longer table")
    return FactPrompts(facts=tuple(kept), tokens=tuple(tokens), subject=tuple(subject_spans),
                       relation=tuple(relation_spans), answer_ids=torch.tensor(answers), held_out=held_out)


def sample_per_relation(fact_prompts: FactPrompts, n: int, *, seed: int) -> FactPrompts:
    """At most `n` usable facts of each relation, drawn with `seed` (table order kept): the cost stays
    flat however long the tables grow, and no relation dominates the mean."""
    generator = torch.Generator().manual_seed(seed)
    by_relation: dict[str, list[int]] = {}
    for i, (relation, _, _) in enumerate(fact_prompts.facts):
        by_relation.setdefault(relation, []).append(i)
    keep = []
    for members in by_relation.values():
        order = torch.randperm(len(members), generator=generator)[:n].tolist()
        keep += [members[k] for k in order]
    return fact_prompts.subset(sorted(keep))


def candidate_ids(facts: Sequence[Fact], answer_ids: Tensor) -> dict[str, Int[Tensor, "n"]]:
    """Each relation's answer set: the distinct answer tokens of its facts."""
    out: dict[str, list[int]] = {}
    for (relation, _, _), token in zip(facts, answer_ids.tolist()):
        if token not in out.setdefault(relation, []):
            out[relation].append(token)
    return {relation: torch.tensor(ids) for relation, ids in out.items()}


# --------------------------------------------------------------------------------------------------
# Scores (pure)

SOURCES = ("subject", "relation", "rest")


def split_by_source(split: Float[Tensor, "layer head key"], masks: Bool[Tensor, "3 key"]
                    ) -> Float[Tensor, "layer head 3"]:
    """Sum one prompt's per-source attribution over the subject, relation and rest positions."""
    if split.shape[-1] != masks.shape[-1]:
        raise ValueError(f"split has {split.shape[-1]} key positions, masks {masks.shape[-1]}; use one prompt's masks")
    return torch.einsum("lhk,sk->lhs", split, masks.to(split.dtype))


@dataclass(frozen=True)
class Rule:
    """The pre-registered classification of a head from its mean answer-DLA parts (fixed before looking).

    A head counts only if its total answer-DLA (mean over facts) is at least `min_total` logits. Then:
    subject head if more than `share` of the total comes from subject tokens; relation head if more
    than `share` comes from relation tokens; mixed head if neither, while subject and relation parts
    are each positive and at least `mixed_share` of the total.
    """

    min_total: float = 0.25
    share: float = 0.7
    mixed_share: float = 0.25


def classify(parts: Float[Tensor, "layer head 3"], rule: Rule = Rule()) -> dict[str, Bool[Tensor, "layer head"]]:
    """Masks of subject, relation and mixed heads from mean parts ``[..., (subject, relation, rest)]``."""
    if parts.shape[-1] != 3:
        raise ValueError(f"parts must end in (subject, relation, rest); got shape {tuple(parts.shape)}")
    total = parts.sum(-1)
    counts = total >= rule.min_total
    subject, relation = parts[..., 0], parts[..., 1]
    is_subject = counts & (subject > rule.share * total)
    is_relation = counts & (relation > rule.share * total)
    is_mixed = (counts & ~is_subject & ~is_relation & (subject >= rule.mixed_share * total)
                & (relation >= rule.mixed_share * total) & (subject > 0) & (relation > 0))
    return {"subject": is_subject, "relation": is_relation, "mixed": is_mixed}


# --------------------------------------------------------------------------------------------------
# One pass per length group: logits, and the source split along several directions


def _directions(model, answer_ids: Tensor, others: Sequence[Tensor]) -> Float[Tensor, "batch d_model"]:
    """``W_U[:, answer] - mean(W_U[:, others])`` per row (the unembedding's bias cancels in DLA)."""
    unembed = model.W_U.detach().float().cpu()
    return torch.stack([unembed[:, a] - unembed[:, o].mean(-1) for a, o in zip(answer_ids.tolist(), others)])


def _select(run: capture.EndRead, rows: list[int]) -> capture.EndRead:
    """The same read restricted to some prompts (rows may repeat)."""
    return capture.EndRead(attention=run.attention[:, rows], z=[z[rows] for z in run.z], final=run.final[rows],
                           final_scale=run.final_scale[rows],
                           post_scale=None if run.post_scale is None else [s[rows] for s in run.post_scale])


def _others(answer: int, candidates: Tensor) -> Tensor:
    return candidates[candidates != answer]


@dataclass(frozen=True)
class Pass:
    """What the model does on a set of fact prompts.

    Attributes:
        correct: ``[fact]`` the answer beats every other answer of its relation (candidate accuracy).
        top1: ``[fact]`` the answer is the top token over the whole vocabulary.
        margin: ``[fact]`` answer logit minus the mean of the relation's other answers.
        null_correct: ``[fact]`` the same prediction scored against another fact's answer of the relation.
        parts: ``[layer, head, fact, source]`` answer-DLA split into subject / relation / rest.
        extra: named ``[layer, head, fact, source]`` splits along other directions, indexed by the fact whose
            direction was read (see `study`).
    """

    correct: Bool[Tensor, "fact"]
    top1: Bool[Tensor, "fact"]
    margin: Float[Tensor, "fact"]
    null_correct: Bool[Tensor, "fact"]
    parts: Float[Tensor, "layer head fact 3"]
    extra: dict[str, Tensor]


def run_pass(model, fact_prompts: FactPrompts, candidates: dict[str, Tensor], *, seed: int,
             guests: dict[str, tuple[Tensor, Tensor]] | None = None) -> Pass:
    """Logits and source-split answer-DLA for every prompt, one stopped pass per length group.

    `guests` maps a name to ``(host, directions)``: row i of `directions` is read on prompt ``host[i]``
    (-1 = none); this is how the controls read an old answer's direction on a new prompt.
    """
    n = len(fact_prompts)
    relations = [relation for relation, _, _ in fact_prompts.facts]
    others = [_others(a, candidates[r]) for a, r in zip(fact_prompts.answer_ids.tolist(), relations)]
    own = _directions(model, fact_prompts.answer_ids, others)
    guests = guests or {}
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    parts = torch.zeros(n_layers, n_heads, n, 3)
    extra = {name: torch.zeros(n_layers, n_heads, len(host), 3) for name, (host, _) in guests.items()}
    correct, top1, margin = torch.zeros(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool), torch.zeros(n)
    null_pick = torch.zeros(n, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    for group in fact_prompts.groups():
        tokens = torch.stack([fact_prompts.tokens[i] for i in group])
        run, values = attribution.read_end_with_values(model, tokens)
        logits = readout.logits(model, run.final)  # [batch, vocab]: one position, so Gemma's vocabulary is affordable
        for row, i in enumerate(group):
            answer, pool = fact_prompts.answer_ids[i].item(), candidates[relations[i]]
            best = pool[logits[row, pool].argmax()].item()
            correct[i], top1[i] = best == answer, logits[row].argmax().item() == answer
            margin[i] = logits[row, answer] - logits[row, others[i]].mean()
            decoy = others[i][torch.randint(len(others[i]), (1,), generator=generator)].item()
            null_pick[i] = best == decoy
        split = attribution.source_attribution_from_values(model, run, values, own[group])
        for row, i in enumerate(group):
            parts[:, :, i] = split_by_source(split[:, :, row], fact_prompts.source_masks(i))
        for name, (host, directions) in guests.items():
            rows = [(row, j) for row, i in enumerate(group) for j in (host == i).nonzero().flatten().tolist()]
            if not rows:
                continue
            picked = [row for row, _ in rows]
            guest_split = attribution.source_attribution_from_values(
                model, _select(run, picked), [v[picked] for v in values], torch.stack([directions[j] for _, j in rows]))
            for k, (row, j) in enumerate(rows):
                extra[name][:, :, j] = split_by_source(guest_split[:, :, k], fact_prompts.source_masks(group[row]))
    return Pass(correct=correct, top1=top1, margin=margin, null_correct=null_pick.bool(), parts=parts, extra=extra)


# --------------------------------------------------------------------------------------------------
# Controls: which prompt hosts which old answer


def subject_partners(facts: Sequence[Fact]) -> Int[Tensor, "fact"]:
    """For each fact, a prompt about the *same subject* under another relation (-1 if none).

    Facts sharing a subject are put in a cycle ("Eiffel Tower: city -> country -> city"), so each
    prompt hosts exactly one old answer.
    """
    by_subject: dict[str, list[int]] = {}
    for i, (_, subject, _) in enumerate(facts):
        by_subject.setdefault(subject, []).append(i)
    host = torch.full((len(facts),), -1)
    for members in by_subject.values():
        if len(members) > 1:
            for k, i in enumerate(members):
                host[i] = members[(k + 1) % len(members)]
    return host


def relation_partners(facts: Sequence[Fact], answer_ids: Tensor) -> Int[Tensor, "fact"]:
    """For each fact, a prompt of the *same relation* about another subject with another answer (-1 if none).

    Within a relation, the facts are put in a cycle in table order; a pair whose two answers are the same
    token (two landmarks in Paris) is dropped, since the old answer would then be the new one.
    """
    by_relation: dict[str, list[int]] = {}
    for i, (relation, _, _) in enumerate(facts):
        by_relation.setdefault(relation, []).append(i)
    host = torch.full((len(facts),), -1)
    for members in by_relation.values():
        for k, i in enumerate(members):
            j = members[(k + 1) % len(members)]
            if j != i and answer_ids[j] != answer_ids[i]:
                host[i] = j
    return host


def set_directions(model, facts: Sequence[Fact], candidates: dict[str, Tensor]) -> Float[Tensor, "fact d_model"]:
    """The relation's answer set against the other relations' answers: ``mean W_U[answers of r] - mean W_U[rest]``.

    A relation head should push this direction (say "some country") whatever the subject.
    """
    unembed = model.W_U.detach().float().cpu()
    everything = torch.unique(torch.cat(list(candidates.values())))
    out = {}
    for relation, ids in candidates.items():
        rest = everything[~torch.isin(everything, ids)]
        out[relation] = unembed[:, ids].mean(-1) - unembed[:, rest].mean(-1)
    return torch.stack([out[relation] for relation, _, _ in facts])


# --------------------------------------------------------------------------------------------------
# Causal check


def mean_outputs(model, fact_prompts: FactPrompts) -> Float[Tensor, "layer head d_head"]:
    """Every head's mean ``hook_z`` over all positions of all the prompts (length groups weighted by tokens)."""
    total, count = None, 0
    for group in fact_prompts.groups():
        tokens = torch.stack([fact_prompts.tokens[i] for i in group])
        mean = capture.mean_head_outputs(model, tokens).float().cpu()
        weight = tokens.numel()
        total = mean * weight if total is None else total + mean * weight
        count += weight
    return total / count


def ablation_margins(model, fact_prompts: FactPrompts, candidates: dict[str, Tensor], head_sets: list,
                     means: Tensor) -> Float[Tensor, "set fact"]:
    """Answer margin (answer logit minus the mean of the relation's other answers) with each head set
    mean-ablated, in batched passes per length group (`interventions.ablated_metric`)."""
    ids = torch.unique(torch.cat(list(candidates.values())))
    column = {token: c for c, token in enumerate(ids.tolist())}
    weights = torch.zeros(len(fact_prompts), len(ids))  # +1 on the answer, -1/n on each other answer
    for i, ((relation, _, _), answer) in enumerate(zip(fact_prompts.facts, fact_prompts.answer_ids.tolist())):
        others = _others(answer, candidates[relation]).tolist()
        weights[i, column[answer]] = 1.0
        for token in others:
            weights[i, column[token]] = -1.0 / len(others)
    out = torch.zeros(len(head_sets), len(fact_prompts))
    for group in fact_prompts.groups():
        tokens = torch.stack([fact_prompts.tokens[i] for i in group])
        group_weights = weights[group]

        def margin(logits: Tensor, rows: Tensor, group_weights=group_weights) -> Tensor:
            repeats = rows.shape[0] // len(group_weights)  # one copy of the prompts per head set
            return (logits[:, -1].float().cpu() * group_weights.repeat(repeats, 1)).sum(-1)

        out[:, group] = interventions.ablated_metric(model, tokens, head_sets, margin, mode="mean", means=means,
                                                     last_position_only=True, ids=ids)
    return out


# --------------------------------------------------------------------------------------------------
# The whole experiment on one model


@dataclass(frozen=True)
class Sizes:
    """How much of the experiment runs (the notebooks' parameters cell sets these)."""

    facts_per_relation: int = 16
    ablation_facts: int = 28
    top_k: int = 3
    n_random: int = 20
    rule: Rule = Rule()


@dataclass(frozen=True)
class Study:
    """E5 on one model.

    Attributes:
        prompts: every usable fact; ``clean``: what the model does on them.
        known: the facts it gets right (answer above its relation's other answers), which the rest uses.
        parts: ``[layer, head, fact, source]`` answer-DLA of the known facts split into subject / relation / rest.
        subject_host / subject_control: for each known fact, the prompt about the same subject under another
            relation, and the old answer's DLA split read there (keep the subject, change the relation).
        relation_host / relation_control: the same for a prompt of the same relation about another subject
            (keep the relation, change the subject).
        set_parts: the split along the relation's answer set (`set_directions`).
        held / held_pass: the known facts in the held-out wording and what the model does there.
        subject_ablation / relation_ablation: mean-ablating the top-k heads by subject-sourced and by
            relation-sourced DLA, against random heads drawn from all heads (answer margin), on a seeded
            sample of `sizes.ablation_facts` known facts.
        Everything after `known` is None when the gate fails (the page then says "behaviour absent").
    """

    model: str
    sizes: Sizes
    prompts: FactPrompts
    clean: Pass
    gate: stats.GateResult
    known: FactPrompts
    parts: Float[Tensor, "layer head fact 3"] | None = None
    subject_host: Int[Tensor, "fact"] | None = None
    subject_control: Float[Tensor, "layer head fact 3"] | None = None
    relation_host: Int[Tensor, "fact"] | None = None
    relation_control: Float[Tensor, "layer head fact 3"] | None = None
    set_parts: Float[Tensor, "layer head fact 3"] | None = None
    held: FactPrompts | None = None
    held_pass: Pass | None = None
    subject_ablation: controls.CausalCheck | None = None
    relation_ablation: controls.CausalCheck | None = None

    @property
    def screened(self) -> bool:
        """False when the gate failed (or too few facts were known): then nothing past the gate ran."""
        return self.parts is not None

    @property
    def mean_parts(self) -> Float[Tensor, "layer head 3"]:
        return self.parts.mean(dim=2)

    @property
    def held_mean_parts(self) -> Float[Tensor, "layer head 3"]:
        """Mean parts over the held-out prompts the model still gets right."""
        return self.held_pass.parts[:, :, self.held_pass.correct].mean(dim=2)

    def classes(self, held_out: bool = False) -> dict[str, Bool[Tensor, "layer head"]]:
        return classify(self.held_mean_parts if held_out else self.mean_parts, self.sizes.rule)

    def score(self, source: str, held_out: bool = False) -> Float[Tensor, "layer head"]:
        """Mean answer-DLA from one source ("subject", "relation", "rest" or "total")."""
        parts = self.held_mean_parts if held_out else self.mean_parts
        return parts.sum(-1) if source == "total" else parts[..., SOURCES.index(source)]

    def top(self, source: str, k: int | None = None) -> list[Head]:
        return top_heads(self.score(source), k or self.sizes.top_k)

    def sign_share(self, head: Head, source: str) -> stats.Estimate:
        """Share of known facts on which `head`'s push from `source` is positive (bootstrap interval)."""
        return stats.bootstrap_ci((self.parts[head][:, SOURCES.index(source)] > 0).float())

    def class_of(self, head: Head, held_out: bool = False) -> str:
        classes = self.classes(held_out)
        return next((name for name, mask in classes.items() if mask[head]), "none")

    def table(self, shown: Sequence[Head]):
        """Each head's mean answer-DLA, its parts, shares and class (and its class on the held-out wording)."""
        import pandas as pd

        rows = []
        for h in shown:
            subject, relation, rest = self.mean_parts[h].tolist()
            total = subject + relation + rest
            rows.append({"head": label(h), "total DLA": total, "from subject": subject, "from relation": relation,
                         "from rest": rest, "subject share": subject / total if total else float("nan"),
                         "class": self.class_of(h), "held-out class": self.class_of(h, held_out=True)})
        return pd.DataFrame(rows).set_index("head").round(2)

    def subject_control_means(self, head_set: Sequence[Head]) -> dict[str, stats.Estimate]:
        """Keep the subject, change the relation: the subject-sourced push of `head_set` (summed) on each fact
        with a partner, towards the old answer on its own prompt and on the new prompt, and how much more it pushes
        the new answer than the old one on the new prompt (paired over facts)."""
        has = self.subject_host >= 0
        rows = torch.nonzero(has).flatten()
        hosts = self.subject_host[has]
        own = sum(self.parts[h][rows, 0] for h in head_set)
        old_there = sum(self.subject_control[h][rows, 0] for h in head_set)
        new_there = sum(self.parts[h][hosts, 0] for h in head_set)
        return {"old answer, own prompt": stats.bootstrap_ci(own), "old answer, new relation": stats.bootstrap_ci(
            old_there), "new minus old answer, new relation": stats.paired_difference(new_there, old_there)}

    def relation_control_means(self, head_set: Sequence[Head]) -> dict[str, stats.Estimate]:
        """Keep the relation, change the subject: the relation-sourced push of `head_set` towards the old answer
        on its own prompt and on another subject's prompt, and towards the relation's answer set."""
        has = self.relation_host >= 0
        rows = torch.nonzero(has).flatten()
        own = sum(self.parts[h][rows, 1] for h in head_set)
        old_there = sum(self.relation_control[h][rows, 1] for h in head_set)
        answer_set = sum(self.set_parts[h][:, 1] for h in head_set)
        return {"old answer, own prompt": stats.bootstrap_ci(own), "old answer, other subject": stats.bootstrap_ci(
            old_there), "answer set": stats.bootstrap_ci(answer_set)}

    def row(self, kind: str = "subject") -> dict:
        """One findings-table row; `kind` is "subject" or "relation"."""
        if kind not in ("subject", "relation"):
            raise ValueError(f"kind must be 'subject' or 'relation'; got {kind!r}")
        row = {"model": self.model, "facts known (gate)": f"{len(self.known)} of {len(self.prompts)}; "
                                                         f"{'pass' if self.gate.passed else 'fail'}"}
        if not self.screened:
            return row | {"note": "gate failed: no head screen"}
        check = self.subject_ablation if kind == "subject" else self.relation_ablation
        classes = self.classes()
        return row | {
                "subject / relation / mixed heads": " / ".join(str(int(classes[c].sum())) for c in
                                                               ("subject", "relation", "mixed")),
                f"top heads by {kind}-sourced DLA": labels(self.top(kind), self.score(kind)),
                "their classes": ", ".join(self.class_of(h) for h in self.top(kind)),
                "ablation effect (answer margin)": str(check.top),
                "random heads (from all heads)": check.draws_summary()}


def study(model, *, sizes: Sizes = Sizes(), seed: int = 0) -> Study:
    """Run all of E5 on `model`: a seeded sample of `sizes.facts_per_relation` usable facts per relation, whose
    answers make up each relation's answer set. Both family pages (subject heads, relation heads) read it for both models,
    so it is kept in the results store. Seeds: the gate's null `seed`, the random head sets `seed + 1`, the ablated facts `seed + 2`."""
    return store.cached("fact-sources-study", lambda: _study(model, sizes=sizes, seed=seed),
                        model=models.spec_of(model).name, weights=store.weights_digest(model), sizes=sizes, seed=seed)


def _study(model, *, sizes: Sizes, seed: int) -> Study:
    name = models.spec_of(model).name
    everything = sample_per_relation(prompts(model, fact_table()), sizes.facts_per_relation, seed=seed)
    candidates = candidate_ids(everything.facts, everything.answer_ids)
    clean = run_pass(model, everything, candidates, seed=seed)
    gate = stats.behaviour_gate(clean.correct.float(), clean.null_correct.float(), paired=True, seed=seed,
                                name="factual recall", metric_name="accuracy among the relation's answers",
                                null_name="scored against another answer of the relation")
    known = everything.subset(torch.nonzero(clean.correct).flatten().tolist())
    if not gate.passed or len(known) < max(sizes.ablation_facts, 2 * sizes.top_k):
        return Study(model=name, sizes=sizes, prompts=everything, clean=clean, gate=gate, known=known)
    subject_host = subject_partners(known.facts)
    relation_host = relation_partners(known.facts, known.answer_ids)
    relations = [relation for relation, _, _ in known.facts]
    own = _directions(model, known.answer_ids, [_others(a, candidates[r])
                                                 for a, r in zip(known.answer_ids.tolist(), relations)])
    full = run_pass(model, known, candidates, seed=seed, guests={
        "subject": (subject_host, own), "relation": (relation_host, own),
        "set": (torch.arange(len(known)), set_directions(model, known.facts, candidates))})
    held_all = prompts(model, known.facts, held_out=True)
    held_pass = run_pass(model, held_all, candidates, seed=seed)
    parts = full.parts
    means = mean_outputs(model, known)
    mean_parts = parts.mean(dim=2)
    subject_top = top_heads(mean_parts[..., 0], sizes.top_k)
    relation_top = top_heads(mean_parts[..., 1], sizes.top_k)
    draws = controls.uniform_sets(model.cfg.n_layers, model.cfg.n_heads, sizes.top_k, sizes.n_random, seed=seed + 1)
    ablated = known.subset(sorted(torch.randperm(len(known), generator=torch.Generator().manual_seed(seed + 2))[
        :sizes.ablation_facts].tolist()))
    values = ablation_margins(model, ablated, candidates, [[], subject_top, relation_top, *draws], means)
    null = f"{sizes.top_k} heads drawn from all heads"

    def check(row: int, found: list[Head]) -> controls.CausalCheck:
        return controls.check_from_values(values[[0, row, *range(3, len(values))]], found, seed=seed, null=null,
                                          metric_name="answer margin (logit)", mode="mean-ablated",
                                          larger_is_stronger=False)

    return Study(model=name, sizes=sizes, prompts=everything, clean=clean, gate=gate, known=known, parts=parts,
                 subject_host=subject_host, subject_control=full.extra["subject"], relation_host=relation_host,
                 relation_control=full.extra["relation"], set_parts=full.extra["set"], held=held_all,
                 held_pass=held_pass, subject_ablation=check(1, subject_top), relation_ablation=check(2, relation_top))


def findings_table(kind: str, *studies: Study):
    """The findings table of the subject ("subject") or relation ("relation") page: one row per model."""
    import pandas as pd

    return pd.DataFrame([s.row(kind) for s in studies]).set_index("model")


def one_head_parts(pattern_row: Float[Tensor, "key"], values: Float[Tensor, "key d_head"],
                   w_o: Float[Tensor, "d_head d_model"], direction: Float[Tensor, "d_model"],
                   masks: Bool[Tensor, "3 key"]) -> Float[Tensor, "3"]:
    """One head's direct effect along `direction`, split into subject / relation / rest sources: the
    textbook form of `attribution.source_attribution_from_values` (norm scales already in `direction`)."""
    per_source = pattern_row * (values @ w_o @ direction)  # [key]: A[END, j] * (v_j W_O) . direction
    return masks.to(per_source.dtype) @ per_source
