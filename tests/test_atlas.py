"""The atlas on a toy with heads planted by hand: it must find each planted head and nothing else, and lose
a head when its weights are removed."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import toy
from helpers.experiments import atlas, registry

VOCAB, HALF = 16, 12
N_CTX = 2 * HALF
TOK, POS, PREV = 0, VOCAB, VOCAB + N_CTX  # residual layout: token one-hot, position one-hot, previous token
D_MODEL, D_HEAD = 2 * VOCAB + N_CTX, VOCAB + N_CTX
SHARP = 12.0  # q.k of a match, before the 1/sqrt(d_head) scale: softmax puts ~all attention on it
PREVIOUS, DUPLICATE, INDUCTION = (0, 0), (0, 1), (1, 0)


def planted_toy() -> toy.AttentionOnlyTransformer:
    """Two layers of four heads; three heads built by hand, the other five zero (uniform attention).

    L0H0 attends from position p to p - 1 and writes the token it sees into PREV; L0H1 attends from a
    token to an earlier copy of it (and away from itself) and writes nothing; L1H0 matches its token
    against each key's PREV, so it attends to the token after an earlier copy (induction)."""
    model = toy.AttentionOnlyTransformer(toy.ToyConfig(vocab_size=VOCAB, n_ctx=N_CTX, d_model=D_MODEL,
                                                       d_head=D_HEAD, n_heads=4, n_layers=2))
    scale = (SHARP * D_HEAD ** 0.5) ** 0.5  # split over query and key
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.embed[:, TOK:TOK + VOCAB] = torch.eye(VOCAB)
        model.pos_embed[:, POS:POS + N_CTX] = torch.eye(N_CTX)
        model.unembed[TOK:TOK + VOCAB] = torch.eye(VOCAB)
        layer0, layer1 = model.blocks
        for p in range(N_CTX):  # previous-token head: query position p meets key position p - 1
            layer0.W_Q[0, POS + p, p] = scale
            if p + 1 < N_CTX:
                layer0.W_K[0, POS + p, p + 1] = scale
        layer0.W_V[0, TOK:TOK + VOCAB, :VOCAB] = torch.eye(VOCAB)
        layer0.W_O[0, :VOCAB, PREV:PREV + VOCAB] = torch.eye(VOCAB)
        for t in range(VOCAB):  # duplicate head: same token, never itself
            layer0.W_Q[1, TOK + t, t] = scale
            layer0.W_K[1, TOK + t, t] = scale
        for p in range(N_CTX):
            layer0.W_Q[1, POS + p, VOCAB + p] = scale
            layer0.W_K[1, POS + p, VOCAB + p] = -scale
        for t in range(VOCAB):  # induction head: the query's token against the key's previous token
            layer1.W_Q[0, TOK + t, t] = scale
            layer1.W_K[0, PREV + t, t] = scale
    return model


SIZES = atlas.Sizes(prompts=8, half_len=HALF)


def test_the_atlas_finds_each_planted_head_and_nothing_else():
    found = atlas.run(planted_toy(), sizes=SIZES, seed=0)
    assert found.passing("previous_token") == [PREVIOUS]
    assert found.passing("duplicate") == [DUPLICATE]
    assert found.passing("induction") == [INDUCTION]
    assert found.roles == {PREVIOUS: ["previous_token"], DUPLICATE: ["duplicate"], INDUCTION: ["induction"]}
    assert found.screens["induction"].scores[INDUCTION] > 0.9  # the planted head is sharp, not borderline


def test_a_removed_head_is_no_longer_found():
    model = planted_toy()
    with torch.no_grad():
        model.blocks[1].W_Q[0].zero_()  # the induction head now attends uniformly
    found = atlas.run(model, sizes=SIZES, seed=0)
    assert found.passing("induction") == []
    assert found.passing("previous_token") == [PREVIOUS] and found.passing("duplicate") == [DUPLICATE]


def test_the_induction_head_needs_the_previous_token_head():
    """K-composition: without L0H0 writing PREV, L1H0 has nothing to match, so the atlas must not find it."""
    model = planted_toy()
    with torch.no_grad():
        model.blocks[0].W_O[0].zero_()
    assert atlas.run(model, sizes=SIZES, seed=0).passing("induction") == []


def test_the_json_follows_the_schema_and_the_figure_is_written(tmp_path):
    found = atlas.run(planted_toy(), sizes=SIZES, seed=0)
    paths = atlas.write(found, tmp_path)
    assert [p.name for p in paths] == ["atlas_toy.json", "atlas_toy.png"] and all(p.exists() for p in paths)
    data = json.loads(paths[0].read_text())
    assert data["schema"] == "attention-heads-atlas" and data["version"] == atlas.SCHEMA_VERSION
    assert data["heads"] == {"L0H0": ["previous_token"], "L0H1": ["duplicate"], "L1H0": ["induction"]}
    family = data["families"]["induction"]
    assert family["passing"] == ["L1H0"] and family["stage"] == "Latent Reasoning"
    assert len(family["scores"]) == 2 and len(family["scores"][0]) == 4 and len(family["control"][1]) == 4


def test_two_runs_give_the_same_numbers_and_another_seed_other_prompts():
    first, second = atlas.run(planted_toy(), sizes=SIZES, seed=0), atlas.run(planted_toy(), sizes=SIZES, seed=0)
    for key in atlas.PATTERN_RULES:
        assert torch.equal(first.screens[key].scores, second.screens[key].scores)
    assert not torch.equal(atlas.probe(planted_toy(), sizes=SIZES, seed=1).repeated,
                           atlas.probe(planted_toy(), sizes=SIZES, seed=0).repeated)


def test_prompts_longer_than_the_toy_say_so():
    with pytest.raises(ValueError, match="n_ctx"):
        atlas.probe(planted_toy(), sizes=atlas.Sizes(prompts=2, half_len=HALF + 1))


def test_the_atlas_runs_on_a_bridge(tiny_smol):
    """Every family on a bridge; an untrained model fails every task's gate, so no task family lists heads."""
    found = atlas.run(tiny_smol, sizes=atlas.Sizes(prompts=2, half_len=6), seed=0, reuse=False)
    assert list(found.screens) == [*atlas.PATTERN_RULES, *atlas.TASK_FAMILIES] and found.skipped == atlas.NOT_SCREENED
    assert found.screens["previous_token"].scores.shape == (2, 4)
    for key in atlas.TASK_FAMILIES:
        screen = found.screens[key]
        assert screen.scores.shape == (2, 4) and screen.gate.startswith("FAIL") and screen.passing == []
    data = found.to_json()
    assert data["model"] == "tiny-smol" and data["families"]["memory"]["kind"] == "task"
    assert atlas.Atlas.from_json(json.loads(json.dumps(data))).to_json() == data


def test_a_toy_skips_the_task_families_and_says_why():
    found = atlas.run(planted_toy(), sizes=SIZES, seed=0)
    assert set(found.skipped) == {*atlas.TASK_FAMILIES, *atlas.NOT_SCREENED} and "vocabulary" in found.skipped["memory"]
    assert set(found.screens) == set(atlas.PATTERN_RULES)


def test_a_task_screen_lists_no_heads_when_its_gate_fails():
    class Gate:
        passed = False

        def summary(self):
            return "FAIL: behaviour absent"

    screen = atlas._gated("memory", torch.ones(2, 4), [(1, 2)], Gate())
    assert screen.passing == [] and screen.gate == "FAIL: behaviour absent"
    Gate.passed = True
    assert atlas._gated("memory", torch.ones(2, 4), [(1, 2)], Gate()).passing == [(1, 2)]


def test_an_atlas_of_another_schema_version_is_refused():
    data = atlas.run(planted_toy(), sizes=SIZES, seed=0).to_json() | {"version": 1}
    with pytest.raises(ValueError, match="schema version"):
        atlas.Atlas.from_json(data)


def test_transferability_counts_heads_and_depth_per_model():
    found = atlas.run(planted_toy(), sizes=SIZES, seed=0)
    table = atlas.transferability([found])
    row = table.loc[("Latent Reasoning", "Induction head")]
    assert row[("toy", "heads")] == "1" and row[("toy", "depth")] == "0.75"  # L1 of 2 layers: (1 + 0.5) / 2
    assert atlas.relative_depth((0, 3), 4) == 0.125
    assert table.loc[("Knowledge Recalling", "Memory head"), ("toy", "heads")] == "not screened"  # skipped
    assert table.loc[("Expression Preparation", "Correct head"), ("toy", "heads")] == "not screened"  # NOT_SCREENED
    by_hand = atlas.transferability([_hand_atlas({"memory": [(1, 1)]})])
    assert "Correct head" not in by_hand.index.get_level_values("family")  # neither screened nor skipped: no row


def test_head_scores_show_every_family_and_what_a_head_passes():
    found = atlas.run(planted_toy(), sizes=SIZES, seed=0)
    table = atlas.head_scores(found, [INDUCTION, (1, 3)])
    assert table.loc["L1H0", "passes"] == "Induction head" and table.loc["L1H3", "passes"] == "none"
    assert table.loc["L1H0", "Induction head"] > 0.9


def _hand_atlas(claimed: dict) -> atlas.Atlas:
    screens = {key: atlas.TaskScreen(key, torch.zeros(4, 4), members, "PASS") for key, members in claimed.items()}
    return atlas.Atlas(model="hand", n_layers=4, n_heads=4, seed=0, sizes=SIZES, screens=screens)


def test_pair_sharing_counts_shared_heads_against_both_expectations():
    found = _hand_atlas({"induction": [(2, 0), (2, 1), (3, 0)], "retrieval": [(2, 0), (2, 1)],
                         "memory": [(3, 0)], "context": [(3, 0)], "subject": [(0, 0)]})
    table = atlas.pair_sharing(found)
    assert list(table.index) == ["Induction head & Retrieval head", "Induction head & Memory head",
                                 "Induction head & Context head"]  # ties keep the screens' order
    row = table.loc["Induction head & Retrieval head"]
    # same layers: 2 x 2 heads of layer 2 / 4 heads per layer = 1.0; all heads: 3 x 2 / 16 = 0.375
    assert row["shared"] == 2 and row["expected, same layers"] == 1.0 and row["expected, all heads"] == 0.4
    assert row["excess"] == 1.0 and row["heads"] == "L2H0, L2H1"
    assert "Memory head & Context head" not in table.index  # one score's two signs: never a pair
    assert atlas.pair_sharing(_hand_atlas({"induction": [(0, 0)], "retrieval": [(1, 1)]})).empty


def test_overlap_tests_can_leave_families_out_and_name_unknown_ones():
    found = _hand_atlas({"induction": [(2, 0), (2, 1)], "retrieval": [(2, 0), (2, 1)], "subject": [(0, 0)]})
    full = atlas.overlap_tests(found, n_draws=50)
    left = atlas.overlap_tests(found, n_draws=50, leave_out=("retrieval",))
    assert full["all heads"].observed == 2 and left["all heads"].observed == 0
    with pytest.raises(KeyError, match="retreival"):
        atlas.overlap_tests(found, n_draws=50, leave_out=("retreival",))


def test_the_form_families_are_screened_families_and_include_every_pattern_family():
    assert set(atlas.PATTERN_RULES) <= set(atlas.FORM_FAMILIES)
    assert set(atlas.FORM_FAMILIES) <= {*atlas.PATTERN_RULES, *atlas.TASK_FAMILIES}
    assert all(registry.by_key(key).stage == "In-Context Identification" or key == "induction"
               for key in atlas.FORM_FAMILIES)


def test_every_registered_family_is_screened_or_skipped_with_a_reason():
    """A new family page must either join the atlas or say in NOT_SCREENED why it does not."""
    screened = [*atlas.PATTERN_RULES, *atlas.TASK_FAMILIES]
    keys = [family.key for family in registry.FAMILIES]
    assert sorted(keys) == sorted([*screened, *atlas.NOT_SCREENED]), (
        f"missing: {sorted(set(keys) - set(screened) - set(atlas.NOT_SCREENED))}; "
        f"both screened and skipped: {sorted(set(screened) & set(atlas.NOT_SCREENED))}")
    assert all(reason.strip() for reason in atlas.NOT_SCREENED.values())


# The probe and vulnerable families: the atlas lists heads only when the causal check in their rule passes.

class _Check:
    """A stand-in for a page's `Steering` / `Injection`: two causal checks' p values and a verdict."""

    def __init__(self, passed: bool):
        self.passed = passed
        self.same_heads = self.other_heads = _causal(0 if passed else 49)


def _causal(as_strong: int):
    """A causal check of 100 draws, `as_strong` of them as strong as the heads: p = (1 + as_strong) / 101."""
    from helpers import controls, stats

    n_strong = as_strong
    draws = torch.cat([torch.full((n_strong,), 2.0), torch.zeros(100 - n_strong)])
    estimate = stats.Estimate(1.0, 0.5, 1.5, n=20)
    return controls.CausalCheck("margin", ((1, 1),), "steered", "random", estimate, estimate, draws)


class _ProbeStudy:
    """A stand-in for a probe page's `Study`: a screen passing L1H1 and L0H0, the top two steered."""

    def __init__(self):
        from helpers import probes

        accuracy = torch.tensor([[0.80, 0.50, 0.50, 0.50], [0.50, 0.90, 0.75, 0.50]])
        self.screen = probes.Screen(accuracy=accuracy, shuffled=torch.full((3, 2, 4), 0.55), n_items=40)
        self.found = ((1, 1), (0, 0), (1, 2))[:2]

    class gate:
        @staticmethod
        def summary():
            return "PASS: facts known"


class _Model:
    class cfg:
        n_layers, n_heads = 2, 4


def test_a_probe_family_lists_its_steered_passing_heads_only_when_every_check_passes():
    passed = atlas._probe_family(_Model, "truthfulness", _ProbeStudy(), [("steering", _Check(True))])
    assert passed.passing == [(1, 1), (0, 0)] and passed.check.startswith("PASS")
    assert passed.scores[1, 1] == pytest.approx(0.90)
    failed = atlas._probe_family(_Model, "accuracy", _ProbeStudy(),
                                 [("steering", _Check(True)), ("held-out family", _Check(False))])
    assert failed.passing == [] and failed.check.startswith("FAIL") and "p = 0.495" in failed.check
    not_run = atlas._probe_family(_Model, "consistency", _ProbeStudy(), [("injection", None)])
    assert not_run.passing == [] and "injection: not run" in not_run.check


def test_a_failed_causal_check_reads_as_such_in_the_table_and_survives_json():
    screen = atlas._probe_family(_Model, "truthfulness", _ProbeStudy(), [("steering", _Check(False))])
    found = atlas.Atlas(model="hand", n_layers=2, n_heads=4, seed=0, sizes=SIZES, screens={"truthfulness": screen})
    again = atlas.Atlas.from_json(json.loads(json.dumps(found.to_json())))
    assert again.screens["truthfulness"].check == screen.check
    table = atlas.transferability([again])
    assert table.loc[("Latent Reasoning", "Truthfulness head"), ("hand", "heads")] == "0 (causal check fails)"


def test_vulnerable_heads_are_listed_only_when_both_checks_beat_every_draw(monkeypatch):
    from types import SimpleNamespace

    from helpers.experiments import vulnerable

    def study(concentration_draws, repair_strong):
        spread = vulnerable.Concentration(found=((1, 1),), share=0.5, draws=concentration_draws)
        flips = SimpleNamespace(score=torch.arange(8.0).reshape(2, 4))
        gate = SimpleNamespace(passed=True, summary=lambda: "PASS: acronyms\nline two")
        repair = SimpleNamespace(check=_causal(repair_strong))
        return SimpleNamespace(gate=gate, flips=flips, concentration=spread, repair=repair, found=[(1, 1)])

    monkeypatch.setattr(vulnerable, "study", lambda model, seed: study(torch.full((100,), 0.1), 0))
    found = atlas.vulnerable_screens(_Model, seed=0)["vulnerable"]
    assert found.passing == [(1, 1)] and found.check.startswith("PASS") and "\n" not in found.gate
    monkeypatch.setattr(vulnerable, "study", lambda model, seed: study(torch.full((100,), 0.6), 0))
    assert atlas.vulnerable_screens(_Model, seed=0)["vulnerable"].passing == []  # every draw carries more
    monkeypatch.setattr(vulnerable, "study", lambda model, seed: study(torch.full((100,), 0.1), 1))
    assert atlas.vulnerable_screens(_Model, seed=0)["vulnerable"].passing == []  # one draw repairs as much
