"""Tests for helpers.experiments.syntax: arcs known by construction land on the right tokens, the argmax score
and Voita's positional baseline agree with hand-built patterns, and bad inputs get errors that say what to do."""

from types import SimpleNamespace

import pytest
import torch

from helpers import tasks
from helpers.experiments import syntax
from synthetic import one_hot_pattern


class SplittingTokenizer:
    """Words in `vocab` (with their leading space) are one token; anything else splits into characters."""

    def __init__(self, vocab):
        self.ids = {word: i + 1000 for i, word in enumerate(vocab)}
        self.bos_token_id = 0

    def encode(self, text, add_special_tokens=False):
        return [self.ids[text]] if text in self.ids else [ord(c) for c in text]


def fake_model(vocab, *, bos=False):
    return SimpleNamespace(tokenizer=SplittingTokenizer(vocab), cfg=SimpleNamespace(default_prepend_bos=bos))


def every_template_word(words):
    pieces = {" The", " the", " A", " a", " that", "."}
    return pieces | {" " + w for pool in words.values() for w in pool}


HAND_CHECKED = syntax.main_clause("man", "opened", "door", subject_adjectives=["tall"], preposition="near",
                                  pp_noun="tree", pp_adjectives=["old"], adverb="quickly",
                                  object_adjectives=["heavy"])


# --- sentences and their arcs ---------------------------------------------------------------------------

def test_a_hand_checked_main_clause_has_the_arcs_a_grammar_book_gives():
    # 0 The, 1 tall, 2 man, 3 near, 4 the, 5 old, 6 tree, 7 quickly, 8 opened, 9 the, 10 heavy, 11 door, 12 .
    assert HAND_CHECKED.words == (" The", " tall", " man", " near", " the", " old", " tree", " quickly", " opened",
                                  " the", " heavy", " door", ".")
    assert sorted(HAND_CHECKED.arcs) == sorted([
        ("det", 2, (0,)), ("amod", 2, (1,)), ("det", 6, (4,)), ("amod", 6, (5,)), ("nsubj", 8, (2,)),
        ("det", 11, (9,)), ("amod", 11, (10,)), ("dobj", 11, (8,))])


def test_a_hand_checked_relative_clause_puts_the_subject_behind_the_clause():
    sentence = syntax.relative_clause("sailor", "saw", "lamp", "paid", "coat", subject_adjectives=["tired"],
                                      object_adjectives=["cheap", "gray"], adverb="often")
    # 0 A, 1 tired, 2 sailor, 3 that, 4 saw, 5 the, 6 lamp, 7 often, 8 paid, 9 a, 10 cheap, 11 gray, 12 coat, 13 .
    assert sentence.words[8] == " paid" and sentence.words[2] == " sailor"
    assert sorted(sentence.arcs) == sorted([
        ("det", 2, (0,)), ("amod", 2, (1,)), ("det", 6, (5,)), ("dobj", 6, (4,)), ("nsubj", 8, (2,)),
        ("det", 12, (9,)), ("amod", 12, (10, 11)), ("dobj", 12, (8,))])


def test_a_bare_sentence_has_no_amod_arc():
    sentence = syntax.main_clause("dog", "took", "cup")
    assert sentence.words == (" The", " dog", " took", " the", " cup", ".")
    assert {relation for relation, _, _ in sentence.arcs} == {"det", "nsubj", "dobj"}


@pytest.mark.parametrize("fixture", ["smollm2", "gemma3"])
def test_every_hand_checked_word_is_one_token_and_arcs_point_at_the_right_tokens(fixture, request):
    model = request.getfixturevalue(fixture)
    assert all(len(tasks.token_ids(model, word)) == 1 for word in HAND_CHECKED.words)
    batch = syntax.sentence_batch(model, family="screen", batch=4, length=40, seed=3)
    start = 1 if model.cfg.default_prepend_bos else 0
    words = [[model.tokenizer.decode(t) for t in row] for row in batch.tokens]
    first = batch.sentences[0][0]
    assert words[0][start:start + len(first.words)] == list(first.words)
    pools = syntax.SCREEN_WORDS
    for relation, (dependent, partner) in {"nsubj": ("verb", "subject"), "dobj": ("object", "verb")}.items():
        arcs = batch.arcs[relation]
        for prompt, query, targets in zip(arcs.prompt, arcs.query, arcs.targets):
            assert words[prompt][query].strip() in pools[dependent]
            assert [words[prompt][k].strip() for k in targets.nonzero().flatten()][0] in pools[partner]
    det = batch.arcs["det"]
    assert all(words[p][k].strip().lower() == "the" for p, row in zip(det.prompt, det.targets)
               for k in row.nonzero().flatten())


def test_the_first_position_is_never_a_target_so_the_first_sentences_det_arc_is_dropped_without_bos():
    model = fake_model(every_template_word(syntax.SCREEN_WORDS))
    batch = syntax.sentence_batch(model, family="screen", batch=3, length=30, seed=0)
    for arcs in batch.arcs.values():
        assert not arcs.targets[:, 0].any()
    det_queries = batch.arcs["det"].query[batch.arcs["det"].prompt == 0].tolist()
    subject_at = batch.sentences[0][0].arcs[0][1]  # the first arc is the subject's det
    assert subject_at not in det_queries
    with_bos = syntax.sentence_batch(fake_model(every_template_word(syntax.SCREEN_WORDS), bos=True),
                                     family="screen", batch=3, length=30, seed=0)
    assert (with_bos.tokens[:, 0] == 0).all() and subject_at + 1 in with_bos.arcs["det"].query.tolist()


def test_offsets_vary_for_every_relation_but_amod_whose_baseline_is_one():
    model = fake_model(every_template_word(syntax.SCREEN_WORDS) | every_template_word(syntax.HELD_OUT_WORDS))
    for family in ("screen", "held-out"):
        batch = syntax.sentence_batch(model, family=family, batch=40, length=48, seed=1)
        for relation in ("nsubj", "dobj", "det"):
            offsets = [o[0] for o in batch.arcs[relation].offsets()]
            assert len(set(offsets)) >= 3, (family, relation, sorted(set(offsets)))
            _, share = syntax.positional_baseline(batch.arcs[relation])
            assert share < 0.55, (family, relation, share)
        assert syntax.positional_baseline(batch.arcs["amod"]) == (1, 1.0)


def test_the_same_seed_gives_the_same_batch():
    model = fake_model(every_template_word(syntax.SCREEN_WORDS))
    a, b, c = (syntax.sentence_batch(model, family="screen", batch=2, length=20, seed=s) for s in (5, 5, 6))
    assert torch.equal(a.tokens, b.tokens) and not torch.equal(a.tokens, c.tokens)


# --- scores ------------------------------------------------------------------------------------------------

def arcs_of(seq_len, pairs):
    targets = torch.zeros(len(pairs), seq_len, dtype=torch.bool)
    for i, (_, _, keys) in enumerate(pairs):
        targets[i, keys] = True
    return syntax.Arcs(prompt=torch.tensor([p for p, _, _ in pairs]), query=torch.tensor([q for _, q, _ in pairs]),
                       targets=targets)


def test_an_oracle_head_hits_every_arc_and_a_previous_token_head_hits_the_offset_one_share():
    seq_len = 9
    arcs = arcs_of(seq_len, [(0, 4, [2]), (0, 6, [5]), (1, 8, [3]), (1, 3, [2]), (1, 7, [4])])
    patterns = one_hot_pattern(seq_len, 1).expand(1, 2, 2, seq_len, seq_len).clone()  # [layer, batch, head, q, k]
    for prompt, query, keys in zip(arcs.prompt, arcs.query, arcs.targets):
        patterns[0, prompt, 1, query] = keys.float()  # head 1 is an oracle
    hits = syntax.arc_hits(patterns, arcs)
    assert hits.shape == (1, 2, 5)
    assert hits[0, 1].all()
    assert hits[0, 0].float().mean().item() == pytest.approx(syntax.offset_hits(arcs, 1).float().mean().item())
    assert hits[0, 0].tolist() == [False, True, False, True, False]


def test_argmax_skips_the_first_position_where_heads_rest():
    seq_len = 6
    resting = torch.zeros(seq_len, seq_len)
    resting[:, 0] = 0.8
    resting[torch.arange(1, seq_len), torch.arange(0, seq_len - 1)] += 0.2  # the rest on the previous token
    arcs = arcs_of(seq_len, [(0, 3, [2]), (0, 5, [1])])
    assert syntax.arc_hits(resting[None, None, None], arcs)[0, 0].tolist() == [True, False]


def test_argmax_accuracy_matches_a_naive_loop_on_random_patterns():
    generator = torch.Generator().manual_seed(0)
    seq_len = 10
    patterns = torch.rand(2, 3, 4, seq_len, seq_len, generator=generator).tril()
    patterns = patterns / patterns.sum(-1, keepdim=True)
    pairs = [(p, q, [k, k - 1] if k > 1 else [k]) for p in range(3) for q, k in ((5, 2), (9, 4), (7, 6))]
    arcs = arcs_of(seq_len, pairs)
    hits = syntax.arc_hits(patterns, arcs)
    for layer in range(2):
        for head in range(4):
            for i, (prompt, query, targets) in enumerate(zip(arcs.prompt, arcs.query, arcs.targets)):
                row = patterns[layer, prompt, head, query, 1:query + 1]
                assert hits[layer, head, i] == targets[1 + int(row.argmax())]


def test_the_baseline_is_the_most_common_offsets_share_and_no_fixed_offset_head_beats_it():
    seq_len = 12
    # offsets 2, 2, 3, 1 and {2, 1}
    arcs = arcs_of(seq_len, [(0, 5, [3]), (0, 9, [7]), (0, 11, [8]), (0, 7, [6]), (0, 10, [8, 9])])
    assert syntax.positional_baseline(arcs) == (2, 0.6)
    assert syntax.baseline_from_offsets([2, 2, 3, 1]) == 0.5
    for offset in range(1, 6):
        head = one_hot_pattern(seq_len, offset)[None, None, None]
        assert syntax.arc_hits(head, arcs).float().mean().item() <= 0.6 + 1e-6


def test_the_pass_rule_keeps_an_oracle_head_and_rejects_a_previous_token_head():
    model = fake_model(every_template_word(syntax.SCREEN_WORDS))
    batch = syntax.sentence_batch(model, family="screen", batch=24, length=32, seed=2)
    n_prompts, seq_len = batch.tokens.shape
    patterns = one_hot_pattern(seq_len, 1).expand(1, n_prompts, 2, seq_len, seq_len).clone()
    arcs = batch.arcs["nsubj"]
    for prompt, query, keys in zip(arcs.prompt, arcs.query, arcs.targets):
        patterns[0, prompt, 1, query] = keys.float()  # head 1 follows every nsubj arc
    found = syntax.score(patterns, batch, n_boot=200)
    assert found.accuracy["nsubj"][0, 1] == 1.0 and found.passing("nsubj") == [(0, 1)]
    assert found.accuracy["nsubj"][0, 0] <= found.baseline["nsubj"]
    assert found.passing("dobj") == [] and found.passing("amod") == []
    assert found.intervals["nsubj"][(0, 1)].lower > syntax.MARGIN


# --- agreement prompts ----------------------------------------------------------------------------------

def test_agreement_prompts_flip_only_the_subject_and_alternate_its_number(smollm2):
    batch = syntax.agreement_prompts(smollm2, n=6, seed=0)
    is_id, are_id = (tasks.single_token_id(smollm2, v) for v in (" is", " are"))
    assert batch.answers.tolist() == [is_id, are_id] * 3
    assert batch.wrong.tolist() == [are_id, is_id] * 3
    differs = (batch.tokens != batch.corrupted).nonzero()[:, 1]
    assert (differs == 1).all() and len(differs) == 6  # SmolLM2 has no BOS: "The" at 0, the subject at 1
    assert batch.prompts[0].startswith("The ") and " the " in batch.prompts[0]


# --- bad inputs ------------------------------------------------------------------------------------------

def test_words_that_split_are_skipped_and_too_few_single_tokens_are_refused():
    model = fake_model({" man", " dog", " cat", " boy", " girl"})
    assert syntax.single_token_pools(model, {"subject": ["man", "dog", "hippopotamus", "cat", "boy"]}) == {
        "subject": ("man", "dog", "cat", "boy")}
    with pytest.raises(ValueError, match=r"only 2 of the 3 subject words.*\['hippopotamus'\]"):
        syntax.single_token_pools(model, {"subject": ["man", "dog", "hippopotamus"]})


def test_a_template_family_whose_words_split_is_refused_with_the_words_named():
    with pytest.raises(ValueError, match="adjective words are one token"):
        syntax.sentence_batch(fake_model({" The", " the", "."}), family="screen", batch=2, length=20, seed=0)


@pytest.mark.parametrize("field", ["gate_prompts", "screen_prompts", "screen_len", "top_k", "n_random"])
def test_sizes_must_be_positive(field):
    with pytest.raises(ValueError, match=rf"Sizes\.{field} must be a positive integer; got 0"):
        syntax.Sizes(**{field: 0})


def test_other_bad_inputs_say_what_was_expected():
    model = fake_model(every_template_word(syntax.SCREEN_WORDS))
    with pytest.raises(ValueError, match="batch must be positive"):
        syntax.sentence_batch(model, family="screen", batch=0, length=20, seed=0)
    with pytest.raises(ValueError, match="family must be 'screen' or 'held-out'"):
        syntax.sentence_batch(model, family="questions", batch=2, length=20, seed=0)
    with pytest.raises(ValueError, match="both a preposition and a noun"):
        syntax.main_clause("man", "took", "cup", preposition="near")
    with pytest.raises(ValueError, match="offsets is empty"):
        syntax.baseline_from_offsets([])
    with pytest.raises(ValueError, match=r"with 12 keys"):
        syntax.arc_hits(torch.rand(1, 1, 1, 8, 8), arcs_of(12, [(0, 5, [3])]))
    with pytest.raises(ValueError, match="at least 2"):
        syntax.agreement_prompts(model, n=1, seed=0)


# --- the page's steps on a tiny random model ---------------------------------------------------------------

SMALL = syntax.Sizes(gate_prompts=6, screen_prompts=3, screen_len=24, heldout_prompts=3, ablation_prompts=4,
                     top_k=2, n_random=3, n_boot=50)


def test_study_runs_on_a_tiny_model_and_stops_at_a_failed_gate(tiny_smol):
    done = syntax.study(tiny_smol, sizes=SMALL, seed=0)
    assert done.model == "tiny-smol" and set(done.screen.accuracy) == set(syntax.RELATIONS)
    assert not done.agreement.gate.passed and done.check is None and done.held_out is None
    assert done.row()["nsubj ablation"] == "not run (gate failed)"


def test_an_untrained_models_consistent_small_shift_does_not_pass_the_agreement_gate(tiny_smol):
    """With 64 prompts the tiny model's flip moves the logit difference by a few hundredths, the same way on
    every prompt, so p is small; the effect floor is what fails it."""
    agreement = syntax.agreement_gate(tiny_smol, syntax.agreement_prompts(tiny_smol, n=64, seed=0), seed=0)
    assert agreement.gate.p_value < 0.05 and abs(agreement.gate.difference.mean) < 0.1
    assert not agreement.gate.passed


def test_the_causal_and_held_out_steps_run_on_a_tiny_model(tiny_smol):
    found = [(1, 0), (0, 3)]
    check = syntax.agreement_ablation(tiny_smol, found, prompts=4, n_random=3, seed=0)
    assert check.heads == tuple(found) and check.n_draws == 3 and not check.larger_is_stronger
    held = syntax.held_out(tiny_smol, found, sizes=SMALL, seed=1)
    assert held.nsubj.found == tuple(found) and set(held.on_relativizer) == set(found)
    assert all(0.0 <= share <= 1.0 for share in held.on_relativizer.values())
    done = syntax.Study(model="tiny-smol", agreement=syntax.agreement_gate(
        tiny_smol, syntax.agreement_prompts(tiny_smol, n=4, seed=0), seed=0),
        screen=held.screen, check=check, held_out=held)
    row = done.row()
    assert "held-out: heads still passing" in row
    assert row["random-2 (from all heads)"].endswith(f"p = {check.p_value:.3f}")
