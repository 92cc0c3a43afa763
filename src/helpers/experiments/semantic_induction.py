"""Semantic induction heads (Ren et al. 2024): heads that, attending from the last token to a word mentioned
earlier (the *head* entity of a relation, "Paris"), raise the word it is related to (the *tail*, "France").

The page's steps, in order, each one function here:

- `relation_gate`: on prompts that mention the head entity twice and end where the tail fits, the model ranks
  the true tail first among the relation's tails; only pairs it gets right ("known") are scored further.
- `relation_read` + `relation_index`: Ren's relation index per head, from one forward pass: attention from END
  to the head-entity tokens times what the head writes from there (the real value vectors, through ``W_O`` and
  the frozen norm scales, `helpers.attribution`), projected on the tail's unembedding minus the mean of the
  relation's other tails.
- `repairing_test`: the control a head can fail: the same prompts scored against tails re-paired at random
  within each relation; a per-head permutation p-value, and one corrected for screening every head (max-z).
- `tail_ablation`: mean-ablate the top heads and as many heads drawn from all heads; the change of the tail's
  margin over the other tails.
- `held_out`: the index and the ablation again on a second template family.

`study(model, *, sizes, seed)` runs them all, as the page does, for the comparison model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from helpers import attribution, capture, controls, heads, heldout, interventions, models, readout, stats, tasks
from helpers.heads import Head

N_PERMUTATIONS = 999  # pre-registered: re-pairings per head; p can reach 1/1000
ALPHA = 0.01  # pre-registered: a head passes when its screen-corrected p < ALPHA and its index is positive
HELD_OUT_FAMILY = "other sentences around the same pairs (second template per relation)"


@dataclass(frozen=True)
class Relation:
    """One relation: (head entity, tail) word pairs and two templates with ``{h}`` twice, ending where the tail
    fits. Words are written without their leading space; the prompts put one before every slot."""

    name: str
    pairs: tuple[tuple[str, str], ...]
    template: str
    held_out: str


CITY_COUNTRY = Relation("city-country", (
    ("Paris", "France"), ("Berlin", "Germany"), ("Madrid", "Spain"), ("Rome", "Italy"), ("Tokyo", "Japan"),
    ("Moscow", "Russia"), ("Cairo", "Egypt"), ("Beijing", "China"), ("London", "England"), ("Dublin", "Ireland"),
    ("Athens", "Greece"), ("Lisbon", "Portugal"), ("Vienna", "Austria"), ("Warsaw", "Poland"), ("Oslo", "Norway"),
    ("Stockholm", "Sweden"), ("Helsinki", "Finland"), ("Budapest", "Hungary"), ("Ottawa", "Canada"),
    ("Toronto", "Canada"), ("Sydney", "Australia"), ("Melbourne", "Australia"), ("Delhi", "India"),
    ("Mumbai", "India"), ("Seoul", "Korea"), ("Havana", "Cuba"), ("Lima", "Peru"), ("Santiago", "Chile"),
    ("Nairobi", "Kenya"), ("Istanbul", "Turkey"), ("Tehran", "Iran"), ("Baghdad", "Iraq"), ("Manila", "Philippines"),
    ("Amsterdam", "Netherlands"), ("Brussels", "Belgium"), ("Copenhagen", "Denmark"), ("Munich", "Germany"),
    ("Barcelona", "Spain"), ("Milan", "Italy"), ("Shanghai", "China"), ("Zurich", "Switzerland"),
    ("Geneva", "Switzerland"), ("Kabul", "Afghanistan")),
    template="I read that {h} is a big city. Last year I visited {h} and loved the food of",
    held_out="Our hotel was in {h}. The streets of {h} are the most beautiful in all of")

PART_WHOLE = Relation("part-whole", (
    ("wheel", "car"), ("engine", "car"), ("leaf", "tree"), ("branch", "tree"), ("bark", "tree"), ("page", "book"),
    ("chapter", "book"), ("roof", "house"), ("chimney", "house"), ("pedal", "bicycle"), ("keyboard", "computer"),
    ("sleeve", "shirt"), ("collar", "shirt"), ("lace", "shoe"), ("sole", "shoe"), ("blade", "knife"),
    ("string", "guitar"), ("feather", "bird"), ("beak", "bird"), ("fin", "fish"), ("gill", "fish"), ("hull", "ship"),
    ("deck", "ship"), ("finger", "hand"), ("thumb", "hand"), ("palm", "hand"), ("toe", "foot"), ("nose", "face"),
    ("cheek", "face"), ("lens", "camera"), ("yolk", "egg"), ("hoof", "horse"), ("cork", "bottle"), ("bulb", "lamp"),
    ("lid", "box"), ("crust", "bread")),
    template="I cleaned the {h} yesterday. The {h} is part of the",
    held_out="She pointed at the {h}. That {h} belongs to the")

CATEGORY_INSTANCE = Relation("category-instance", (
    ("apple", "fruit"), ("banana", "fruit"), ("grape", "fruit"), ("carrot", "vegetable"), ("potato", "vegetable"),
    ("onion", "vegetable"), ("dog", "animal"), ("horse", "animal"), ("hammer", "tool"), ("wrench", "tool"),
    ("violin", "instrument"), ("piano", "instrument"), ("drum", "instrument"), ("truck", "vehicle"),
    ("bus", "vehicle"), ("sparrow", "bird"), ("eagle", "bird"), ("salmon", "fish"), ("shark", "fish"),
    ("rose", "flower"), ("oak", "tree"), ("pine", "tree"), ("gold", "metal"), ("iron", "metal"), ("copper", "metal"),
    ("tennis", "sport"), ("soccer", "sport"), ("coffee", "drink"), ("tea", "drink"), ("ant", "insect"),
    ("bee", "insect"), ("sword", "weapon"), ("chair", "furniture"), ("cotton", "fabric"), ("wool", "fabric"),
    ("diamond", "gem"), ("granite", "rock")),
    template="I saw the {h} today. The {h} is a kind of",
    held_out="Tom wrote about the {h}. He said the {h} is one type of")

RELATIONS = (CITY_COUNTRY, PART_WHOLE, CATEGORY_INSTANCE)


@dataclass(frozen=True)
class Sizes:
    """How many re-pairings, heads and draws each step uses (the notebook's parameters cell sets these)."""

    n_permutations: int = N_PERMUTATIONS
    top_k: int = 3
    n_random: int = 39  # rule: p <= 1 / 40 (no draw as strong)
    ablation_pairs: int = 5  # known prompts per relation in each ablation (seeded choice; time)
    heldout_draws: int = 19  # fresh draws for the held-out ablation; 0 skips it
    max_pairs: int | None = None  # the first pairs of each relation only (tests)


# --------------------------------------------------------------------------------------------------
# Prompts


@dataclass(frozen=True)
class RelationBatch:
    """One relation's prompts for one template, pairs that both ends of are single tokens for this model.

    ``tail_set``: the relation's distinct tail ids; ``column[i]``: which of them is prompt i's tail;
    ``entity[i]``: prompt i's head-entity id; ``at_entity``: True where a prompt holds its head entity.
    """

    relation: str
    pairs: tuple[tuple[str, str], ...]
    tokens: Int[Tensor, "batch pos"]
    entity: Int[Tensor, "batch"]
    tail_set: Int[Tensor, "tail"]
    column: Int[Tensor, "batch"]
    at_entity: Bool[Tensor, "batch pos"]

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def tails(self) -> Int[Tensor, "batch"]:
        return self.tail_set[self.column]

    def subset(self, keep: Bool[Tensor, "batch"]) -> RelationBatch:
        """The prompts where `keep` is True (the tail set stays the relation's)."""
        rows = keep.nonzero()[:, 0]
        return RelationBatch(self.relation, tuple(self.pairs[i] for i in rows.tolist()), self.tokens[rows],
                             self.entity[rows], self.tail_set, self.column[rows], self.at_entity[rows])


def relation_batch(model, relation: Relation, *, held_out: bool = False, pairs: Sequence[tuple[str, str]] | None = None
                   ) -> RelationBatch:
    """Prompts of `relation` (its second template with `held_out`) for the pairs whose head entity and tail are
    single tokens after a space for this tokenizer; every prompt of a batch then has the same length."""
    pairs = relation.pairs if pairs is None else tuple(pairs)
    kept = tuple((h, t) for h, t in pairs
                 if tasks.single_token_id(model, " " + h) is not None
                 and tasks.single_token_id(model, " " + t) is not None)
    if len(kept) < 2:
        raise ValueError(f"{relation.name}: only {len(kept)} pair(s) are single tokens for this tokenizer; need 2")
    template = relation.held_out if held_out else relation.template
    tokens = tasks.tokenize_prompts(model, [template.format(h=h) for h, _ in kept])
    entity = torch.tensor([tasks.single_token_id(model, " " + h) for h, _ in kept])
    tail_words = sorted({t for _, t in kept})
    tail_set = torch.tensor([tasks.single_token_id(model, " " + t) for t in tail_words])
    column = torch.tensor([tail_words.index(t) for _, t in kept])
    return RelationBatch(relation.name, kept, tokens, entity, tail_set, column, tokens == entity[:, None])


def relation_batches(model, *, held_out: bool = False, max_pairs: int | None = None) -> list[RelationBatch]:
    """One `relation_batch` per relation in `RELATIONS`."""
    return [relation_batch(model, r, held_out=held_out, pairs=r.pairs[:max_pairs] if max_pairs else None)
            for r in RELATIONS]


# --------------------------------------------------------------------------------------------------
# Behaviour gate: the model ranks the true tail first among the relation's tails.


def margins(logits: Float[Tensor, "batch tail"], column: Int[Tensor, "batch"]) -> Float[Tensor, "batch"]:
    """Each row's logit at `column` minus the mean of its other entries: how far the true tail stands above the
    relation's other tails (the unit of the relation index and of the causal check)."""
    if logits.ndim != 2 or column.shape != logits.shape[:1]:
        raise ValueError(f"logits must be [batch, tail] and column [batch]; got {tuple(logits.shape)} and "
                         f"{tuple(column.shape)}")
    if logits.shape[1] < 2:
        raise ValueError("need at least 2 tails to compare the true one with the others")
    own = logits.gather(1, column[:, None])[:, 0]
    return own - (logits.sum(1) - own) / (logits.shape[1] - 1)


@dataclass(frozen=True)
class GateRead:
    """Per prompt of every relation: tail top-1 among the relation's tails, top-1 over the whole vocabulary,
    the margin over the other tails, and chance (1 / number of tails)."""

    batches: tuple[RelationBatch, ...]
    among: Bool[Tensor, "prompt"]
    vocab_top1: Bool[Tensor, "prompt"]
    margin: Float[Tensor, "prompt"]
    chance: Float[Tensor, "prompt"]
    gate: stats.GateResult

    def known(self) -> list[RelationBatch]:
        """Each relation's prompts whose tail the model ranks first among the relation's tails."""
        out, start = [], 0
        for batch in self.batches:
            out.append(batch.subset(self.among[start:start + len(batch)]))
            start += len(batch)
        return out

    def summary(self) -> str:
        return (f"{self.gate.summary()}\ntail top-1 among its relation's tails on {int(self.among.sum())} of "
                f"{len(self.among)} prompts; top-1 over the whole vocabulary on {int(self.vocab_top1.sum())}")


def relation_gate(model, batches: Sequence[RelationBatch], *, seed: int) -> GateRead:
    """Accuracy among the relation's tails against chance (paired per prompt); passes when p < 0.01 and the
    interval of the gap clears 0.3. The strict top-1 over the vocabulary is reported beside it."""
    among, top1, margin, chance = [], [], [], []
    for batch in batches:
        final = capture.final_at(model, batch.tokens)  # [batch, d_model]
        logits = readout.logits(model, final, batch.tail_set)
        among.append(logits.argmax(-1) == batch.column)
        top1.append(readout.logits(model, final).argmax(-1) == batch.tails)
        margin.append(margins(logits, batch.column))
        chance.append(torch.full((len(batch),), 1.0 / len(batch.tail_set)))
    among_t, chance_t = torch.cat(among), torch.cat(chance)
    gate = stats.behaviour_gate(among_t.float(), chance_t, paired=True, min_effect=0.3, seed=seed,
                                name="relation recall", metric_name="tail top-1 among the relation's tails",
                                null_name="by chance")
    return GateRead(tuple(batches), among_t, torch.cat(top1), torch.cat(margin), chance_t, gate)


# --------------------------------------------------------------------------------------------------
# The relation index: what each head writes at END from the head-entity tokens, read on the tails.


@torch.no_grad()
def entity_writes(model, batch: RelationBatch) -> tuple[Float[Tensor, "layer batch head d_model"],
                                                         Float[Tensor, "layer batch head"]]:
    """Each head's output at END that comes from the head-entity positions, as the logits see it, and its
    attention there.

    One pass (`capture.read_end`) also keeps every layer's values; the part of ``z_END`` read from the entity is
    ``sum_s A[END, s] v_s`` over its positions s, which goes through ``W_O`` and the frozen norm scales exactly as
    the whole head's output does (`attribution.head_outputs_from_read`).
    """
    values: dict[int, Tensor] = {}

    def keep(layer: int):
        def hook(activation: Tensor, hook=None) -> None:
            values[layer] = activation.detach().float().cpu()  # [batch, pos, kv_head, d_head]
        return hook

    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    # TODO(integrator): a `capture.values` reader would keep hook names in the hook modules (STYLE §1)
    run = capture.read_end(model, batch.tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_v", keep(layer))
                                                           for layer in range(n_layers)])
    mask = batch.at_entity.float()  # [batch, pos]
    attention = torch.einsum("lbhk,bk->lbh", run.attention, mask)
    z = []
    for layer in range(n_layers):
        v = values[layer].repeat_interleave(n_heads // values[layer].shape[2], dim=2)  # [batch, pos, head, d_head]
        z.append(torch.einsum("bhk,bk,bkhd->bhd", run.attention[layer], mask, v))
    entity_run = capture.EndRead(attention=run.attention, z=z, final=run.final, final_scale=run.final_scale,
                                 post_scale=run.post_scale)
    return attribution.head_outputs_from_read(model, entity_run), attention


def readout_directions(model, ids: Int[Tensor, "n"]) -> Float[Tensor, "n d_model"]:
    """Unembedding columns of `ids` with the final norm's gain folded in (`attribution.final_read`)."""
    return attribution.final_read(model, model.W_U[:, ids.to(model.W_U.device)].T.detach().float().cpu())


def index_from_table(table: Float[Tensor, "... batch tail"],
                     column: Int[Tensor, "batch"]) -> Float[Tensor, "... batch"]:
    """Per prompt: the write's logit on its tail minus the mean over the relation's other tails."""
    own = table.gather(-1, column.expand(*table.shape[:-1])[..., None])[..., 0]
    return own - (table.sum(-1) - own) / (table.shape[-1] - 1)


@dataclass(frozen=True)
class RelationRead:
    """One relation's tables: ``tails[l, h, i, j]`` = what head (l, h) writes at END from prompt i's head entity,
    read on tail j; ``entities`` the same on the relation's head-entity tokens (copying); ``attention[l, h, i]``."""

    batch: RelationBatch
    tails: Float[Tensor, "layer head batch tail"]
    entities: Float[Tensor, "layer head batch entity"]
    entity_column: Int[Tensor, "batch"]
    attention: Float[Tensor, "layer head batch"]


def relation_read(model, batch: RelationBatch) -> RelationRead:
    """`entity_writes` read on the relation's tails and on its head entities."""
    writes, attention = entity_writes(model, batch)
    entity_set, entity_column = torch.unique(batch.entity, return_inverse=True)
    tails = torch.einsum("lbhm,tm->lhbt", writes, readout_directions(model, batch.tail_set))
    entities = torch.einsum("lbhm,tm->lhbt", writes, readout_directions(model, entity_set))
    return RelationRead(batch, tails, entities, entity_column, attention.permute(0, 2, 1))


def relation_index(reads: Sequence[RelationRead],
                   columns: Sequence[Tensor] | None = None) -> Float[Tensor, "layer head"]:
    """Ren-style relation index, mean over every prompt of every relation; `columns` replaces each relation's
    tail assignment (a re-pairing) when given."""
    columns = [r.batch.column for r in reads] if columns is None else columns
    per_prompt = torch.cat([index_from_table(r.tails, c) for r, c in zip(reads, columns)], dim=-1)
    return per_prompt.mean(-1)


def copy_index(reads: Sequence[RelationRead]) -> Float[Tensor, "layer head"]:
    """The same reading on the head entity itself (minus the other head entities): does the head copy the word
    it attends to rather than raise its tail?"""
    return torch.cat([index_from_table(r.entities, r.entity_column) for r in reads], dim=-1).mean(-1)


def copier_ratio(model, batches: Sequence[RelationBatch]) -> float:
    """Relation index over copy index of a pure copier: a head that writes exactly the head entity's readout
    direction. Its index on the tail comes only from how the unembedding already places each entity near its
    tail; a head whose ratio is well above this raises the tail more than copying the entity explains."""
    relation, copy = [], []
    for batch in batches:
        entity_set, entity_column = torch.unique(batch.entity, return_inverse=True)
        entities, tails = readout_directions(model, entity_set), readout_directions(model, batch.tail_set)
        written = entities[entity_column]  # [batch, d_model]: the copier's write on each prompt
        relation.append(index_from_table(written @ tails.T, batch.column))
        copy.append(index_from_table(written @ entities.T, entity_column))
    return float(torch.cat(relation).mean() / torch.cat(copy).mean())


# --------------------------------------------------------------------------------------------------
# The control: tails re-paired at random within each relation.


def permutation_p(observed: Float[Tensor, "..."], null: Float[Tensor, "draw ..."]) -> Float[Tensor, "..."]:
    """``(1 + #draws at least as large) / (N + 1)`` elementwise."""
    if null.shape[1:] != observed.shape:
        raise ValueError(f"null must be [draw, *observed.shape] = [N, {', '.join(map(str, observed.shape))}]; "
                         f"got {tuple(null.shape)}")
    return ((null >= observed).sum(0) + 1).float() / (null.shape[0] + 1)


def max_z_p(observed: Float[Tensor, "layer head"],
            null: Float[Tensor, "draw layer head"]) -> Float[Tensor, "layer head"]:
    """p-values corrected for screening every head (Westfall–Young max-statistic): standardise each head by its
    own null, then rank its observed z among the largest z over *all* heads in each re-pairing."""
    mean, sd = null.mean(0), null.std(0).clamp_min(1e-12)
    z_null = ((null - mean) / sd).flatten(1).max(1).values  # [draw]
    z_obs = (observed - mean) / sd
    return ((z_null[:, None, None] >= z_obs).sum(0) + 1).float() / (null.shape[0] + 1)


def repaired_columns(reads: Sequence[RelationRead], generator: torch.Generator) -> list[Tensor]:
    """One random re-pairing: each relation's tails shuffled among its pairs (same head entities, same tails)."""
    return [r.batch.column[torch.randperm(len(r.batch.column), generator=generator)] for r in reads]


@dataclass(frozen=True)
class RelationScreen:
    """Every head's relation index, its re-pairing null and the pass rule."""

    index: Float[Tensor, "layer head"]
    null: Float[Tensor, "draw layer head"]
    copy: Float[Tensor, "layer head"]
    attention: Float[Tensor, "layer head"]
    alpha: float = ALPHA

    @property
    def p_values(self) -> Float[Tensor, "layer head"]:
        return permutation_p(self.index, self.null)

    @property
    def corrected(self) -> Float[Tensor, "layer head"]:
        return max_z_p(self.index, self.null)

    @property
    def passing(self) -> list[Head]:
        """Heads with corrected p < alpha and a positive index, strongest index first."""
        return heads.top(self.index, where=(self.corrected < self.alpha) & (self.index > 0))

    @property
    def uncorrected(self) -> list[Head]:
        return heads.top(self.index, where=(self.p_values < self.alpha) & (self.index > 0))

    def top(self, k: int) -> list[Head]:
        return self.passing[:k]

    def expected_false(self) -> float:
        """Heads expected to pass the uncorrected rule by chance alone."""
        return self.alpha * self.index.numel()

    def summary(self) -> str:
        return (f"relation index: {len(self.passing)} of {self.index.numel()} heads pass (corrected p < "
                f"{self.alpha}, {self.null.shape[0]} re-pairings): {heads.labels(self.passing[:6], self.index)}; "
                f"uncorrected p < {self.alpha}: {len(self.uncorrected)} heads (chance alone: "
                f"{self.expected_false():.1f})")


def repairing_test(reads: Sequence[RelationRead], *, n_permutations: int, seed: int) -> RelationScreen:
    """`relation_index` on the true pairs and on `n_permutations` seeded re-pairings."""
    generator = torch.Generator().manual_seed(seed)
    null = torch.stack([relation_index(reads, repaired_columns(reads, generator)) for _ in range(n_permutations)])
    attention = torch.cat([r.attention for r in reads], dim=-1).mean(-1)
    return RelationScreen(relation_index(reads), null, copy_index(reads), attention)


def screen(model, batches: Sequence[RelationBatch], *, n_permutations: int, seed: int) -> RelationScreen:
    return repairing_test([relation_read(model, b) for b in batches], n_permutations=n_permutations, seed=seed)


# --------------------------------------------------------------------------------------------------
# Causal check: the tail's margin over the relation's other tails with the top heads mean-ablated.


def margin_metric(batch: RelationBatch):
    """The ids to unembed and the `ablated_metric` metric: each prompt's tail margin at END."""
    def metric(logits: Float[Tensor, "row 1 tail"], tokens: Tensor) -> Float[Tensor, "row"]:
        rows = torch.arange(len(tokens))
        column = batch.column[rows % len(batch)].to(logits.device)
        return margins(logits[:, -1], column)
    return batch.tail_set, metric


def sample(batch: RelationBatch, n: int, seed: int) -> RelationBatch:
    """`n` prompts of `batch` chosen at random (seeded), all of them if it has no more."""
    keep = torch.zeros(len(batch), dtype=torch.bool)
    keep[torch.randperm(len(batch), generator=torch.Generator().manual_seed(seed))[:n]] = True
    return batch.subset(keep)


def tail_ablation(model, batches: Sequence[RelationBatch], found: Sequence[Head], *, n_random: int, seed: int,
                  per_relation: int | None = None) -> controls.CausalCheck:
    """Mean-ablate `found` and `n_random` sets of as many heads drawn from all heads; the change of the tail
    margin, on `per_relation` prompts of each batch (all when None). Head means are over every prompt of the
    batches (the task's mean, as in IOI), so an ablated head still writes what it writes on such prompts."""
    found = [tuple(h) for h in found]
    if not found:
        raise ValueError("found is empty: pass the heads to ablate, e.g. screen.top(3)")
    draws = controls.uniform_sets(model.cfg.n_layers, model.cfg.n_heads, len(found), n_random, seed=seed)
    means = torch.stack([capture.mean_head_outputs(model, b.tokens) for b in batches]).mean(0)
    if per_relation is not None:
        batches = [sample(b, per_relation, seed + i) for i, b in enumerate(batches)]
    rows = []
    for batch in batches:
        ids, metric = margin_metric(batch)
        rows.append(interventions.ablated_metric(model, batch.tokens, [[], found, *draws], metric, mode="mean",
                                                 means=means, last_position_only=True, ids=ids))
    values = torch.cat(rows, dim=1)  # [set, prompt]
    null = f"{len(found)} heads drawn from all {model.cfg.n_layers * model.cfg.n_heads}"
    return controls.check_from_values(values, found, metric_name="tail margin over the other tails",
                                      mode="mean-ablated", null=null, seed=seed, larger_is_stronger=False)


# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Study:
    """Semantic induction measured on one model: gate, screen, ablation, held-out templates."""

    model: str
    gate: GateRead
    screen: RelationScreen | None = None
    ablation: controls.CausalCheck | None = None
    held_out: heldout.HeldOut | None = None

    def row(self) -> dict[str, object]:
        known = int(self.gate.among.sum())
        row: dict[str, object] = {"model": self.model, "behaviour gate": "pass" if self.gate.gate.passed else "fail",
                                  "known pairs": f"{known} of {len(self.gate.among)}"}
        if self.screen is None:
            return row
        row |= {"heads passing (corrected)": f"{len(self.screen.passing)} of {self.screen.index.numel()}",
                "top heads (relation index)": heads.labels(self.screen.passing[:3], self.screen.index)}
        if self.ablation is not None:
            row |= {"ablation: tail margin": str(self.ablation.top),
                    "random-k (from all heads)": self.ablation.draws_summary()}
        if self.held_out is not None:
            row["held-out ranks"] = self.held_out.ranks_text()
            if self.held_out.check is not None:
                row["held-out ablation (p)"] = f"{self.held_out.check.top} (p = {self.held_out.check.p_value:.3f})"
        return row


def held_out(model, gate: GateRead, found: Sequence[Head], *, sizes: Sizes, seed: int) -> heldout.HeldOut:
    """The index of every head on the second templates (the pairs the model knows there), and the ablation of
    `found` on them against fresh draws."""
    batches = relation_batches(model, held_out=True, max_pairs=sizes.max_pairs)
    known = relation_gate(model, batches, seed=seed).known()
    reads = [relation_read(model, b) for b in known]
    check = None
    if sizes.heldout_draws > 0:
        check = tail_ablation(model, known, found, n_random=sizes.heldout_draws, seed=seed + 1,
                              per_relation=sizes.ablation_pairs)
    return heldout.HeldOut(HELD_OUT_FAMILY, found=tuple(found), screen=relation_index(reads), check=check)


def study(model, *, sizes: Sizes = Sizes(), seed: int = 0) -> Study:
    """Gate, screen with the re-pairing control, ablation and held-out templates, as the page runs them.

    Seeds: the gate `seed`, the re-pairings `seed + 10`, the ablation draws `seed + 20`, held-out `seed + 40`.
    """
    name = models.spec_of(model).name
    gate = relation_gate(model, relation_batches(model, max_pairs=sizes.max_pairs), seed=seed)
    if not gate.gate.passed:
        return Study(model=name, gate=gate)
    known = gate.known()
    found = screen(model, known, n_permutations=sizes.n_permutations, seed=seed + 10)
    top = found.top(sizes.top_k)
    if not top:
        return Study(model=name, gate=gate, screen=found)
    ablation = tail_ablation(model, known, top, n_random=sizes.n_random, seed=seed + 20,
                             per_relation=sizes.ablation_pairs)
    held = held_out(model, gate, top, sizes=sizes, seed=seed + 40)
    return Study(model=name, gate=gate, screen=found, ablation=ablation, held_out=held)
