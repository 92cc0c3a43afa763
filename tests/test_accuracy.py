"""Accuracy helpers on hand-built cases: balancing, items, the answer margin, the gate and cross-fitting."""

import torch

from helpers import probes
from helpers.experiments import accuracy
from helpers.experiments.truthfulness import CAPITALS, Facts


def test_balanced_keeps_as_many_of_each_label_and_splits_each_label_over_both_folds():
    labels = [1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 0]
    for seed in range(5):
        kept, folds = accuracy.balanced(labels, seed=seed)
        assert len(set(kept)) == len(kept) == 8
        kept_labels = [labels[i] for i in kept]
        assert kept_labels.count(1) == kept_labels.count(0) == 4
        for fold in (0, 1):
            assert sorted(y for y, f in zip(kept_labels, folds) if f == fold) == [0, 0, 1, 1]
    assert accuracy.balanced([1, 1, 1], seed=0) == ([], [])


def _facts(known: list[bool]) -> Facts:
    table = CAPITALS.table[: len(known)]
    answers = tuple(sorted({a for _, a in table}))
    n = len(table)
    return Facts(domain=CAPITALS, facts=tuple(table), answers=answers, logits=torch.zeros(n, len(answers)),
                 known=torch.tensor(known), top1=torch.tensor(known))


def test_items_balance_each_domain_and_label_by_the_models_answer():
    facts = _facts([True] * 6 + [False] * 3)
    data = accuracy.items([facts], seed=0)
    assert len(data.labels) == 6 and int(data.labels.sum()) == 3
    for prefix, answer, label in zip(data.prefixes, data.true_answers, data.labels.tolist()):
        row = [s for s, a in facts.facts].index(prefix.removeprefix("The capital of ").removesuffix(" is"))
        assert facts.facts[row][1] == answer and bool(facts.known[row]) == bool(label)
    loose = accuracy.items([facts], seed=0, balance=False)
    assert len(loose.labels) == 9 and loose.answers == {"capitals": facts.answers}


def test_answer_margin_is_positive_exactly_when_the_true_answer_leads():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 4.0], [1.0, 1.0, 0.0]])
    margin = accuracy.answer_margin(logits, torch.tensor([0, 2, 1]))
    torch.testing.assert_close(margin, torch.tensor([1.0, -1.0, 0.0]))
    sets = torch.stack([logits, 2 * logits])  # a leading set axis keeps its shape
    torch.testing.assert_close(accuracy.answer_margin(sets, torch.tensor([0, 2, 1]))[1], 2 * margin)


def test_gate_needs_both_right_and_wrong_answers():
    always = accuracy.gate([_facts([True] * 20)], seed=0, min_pairs=2)
    assert always.test.passed and always.pairs == 0 and not always.passed
    mixed = accuracy.gate([_facts([True] * 16 + [False] * 4)], seed=0, min_pairs=2)
    assert mixed.pairs == 4 and mixed.passed
    assert mixed.right == {"capitals": (16, 20)}


def test_planted_direction_is_found_by_the_probe_and_recovered_on_the_other_fold():
    generator = torch.Generator().manual_seed(0)
    labels = torch.tensor([1, 0] * 20)
    folds = torch.tensor([0, 0, 1, 1] * 10)
    features = torch.randn(40, 2, 3, 4, generator=generator)
    features[:, 1, 2, 0] += 3.0 * labels  # head L1H2 reads the label along its first axis
    accuracy_by_head = probes.cross_validated_accuracy(features, labels, folds)
    assert tuple(divmod(int(accuracy_by_head.argmax()), 3)) == (1, 2)
    for fold in (0, 1):
        fit = folds != fold
        unit = probes.mass_mean(features[fit], labels[fit]).unit[1, 2]
        assert float(unit[0]) > 0.9


def test_clean_margins_of_the_steering_match_the_gates_logits(tiny_smol):
    facts = accuracy.truthfulness.known_facts(tiny_smol, CAPITALS)
    data = accuracy.items([facts], seed=0, balance=False)
    cfg = tiny_smol.cfg
    additions = torch.zeros(2, cfg.n_layers, cfg.n_heads, cfg.d_head)
    values = accuracy._margins(tiny_smol, data, list(range(len(data.prefixes))), additions)
    truth = torch.tensor([facts.answers.index(a) for _, a in facts.facts])
    expected = accuracy.answer_margin(facts.logits, truth)
    torch.testing.assert_close(values[0], expected, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(values[1], values[0])
    assert ((values[0] > 0) == facts.known).all()
