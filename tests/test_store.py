"""Tests for helpers.store: results computed once, reused only under the same name, key, code and kernels."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch

from helpers import store


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("ATTENTION_HEADS_CACHE", str(tmp_path))
    monkeypatch.delenv(store.SWITCH_ENV, raising=False)
    return tmp_path


def counting(value):
    calls = []

    def compute():
        calls.append(1)
        return value

    return compute, calls


def test_a_result_is_computed_once_and_then_read_back():
    compute, calls = counting({"weights": torch.arange(3.0), "steps": [1, 2]})
    first = store.cached("demo", compute, seed=0)
    second = store.cached("demo", compute, seed=0)
    assert len(calls) == 1
    assert torch.equal(second["weights"], first["weights"]) and second["steps"] == [1, 2]


def test_another_key_or_name_recomputes():
    compute, calls = counting([1.0])
    store.cached("demo", compute, seed=0)
    store.cached("demo", compute, seed=1)
    store.cached("other", compute, seed=0)
    assert len(calls) == 3


def test_the_key_covers_code_and_float_kernels(monkeypatch):
    path = store.entry_path("demo", {"seed": 0})
    monkeypatch.setattr(store, "kernel_stamp", lambda: "torch x, DEFAULT, 1 threads")
    assert store.entry_path("demo", {"seed": 0}) != path
    monkeypatch.undo()
    monkeypatch.setattr(store, "code_digest", lambda: "0" * 64)
    assert store.entry_path("demo", {"seed": 0}) != path


def test_a_corrupt_entry_is_recomputed_and_replaced():
    compute, calls = counting([2.0])
    path = store.entry_path("demo", {"seed": 0})
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a torch file")
    assert store.cached("demo", compute, seed=0) == [2.0] and len(calls) == 1
    assert store.cached("demo", compute, seed=0) == [2.0] and len(calls) == 1


def test_switching_the_store_off_recomputes(monkeypatch):
    compute, calls = counting([3.0])
    store.cached("demo", compute, seed=0)
    monkeypatch.setenv(store.SWITCH_ENV, "off")
    store.cached("demo", compute, seed=0)
    assert len(calls) == 2


def test_names_that_are_not_file_names_are_refused():
    with pytest.raises(ValueError, match=r"letters, digits.*'../x'"):
        store.cached("../x", lambda: 1)


def test_the_exercise_checkers_and_the_head_index_are_not_in_the_code_digest(tmp_path):
    """Editing an exercise's checker or a head's naming must not invalidate (and retrain) every stored result; editing any
    other helper must."""
    package = tmp_path / "helpers"
    shutil.copytree(Path(store.__file__).resolve().parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    before = store.package_digest(package)
    assert before == store.code_digest()
    (package / "checks" / "patterns.py").write_text("# a learner-facing edit\n", encoding="utf-8")
    assert store.package_digest(package) == before
    (package / "experiments" / "head_index.py").write_text("# a head's naming\n", encoding="utf-8")
    assert store.package_digest(package) == before
    (package / "experiments" / "head_index_extra.py").write_text("# not the index\n", encoding="utf-8")
    assert store.package_digest(package) != before
    (package / "experiments" / "head_index_extra.py").unlink()
    (package / "heads.py").write_text("# an edit to the code results come from\n", encoding="utf-8")
    assert store.package_digest(package) != before


def test_helpers_dataclasses_are_stored_and_read_back_as_themselves():
    from helpers.stats import Estimate

    value = {"estimate": Estimate(mean=0.5, lower=0.25, upper=0.75, n=8), "scores": torch.arange(3.0)}
    compute, calls = counting(value)
    store.cached("with-a-dataclass", compute, seed=0)
    again = store.cached("with-a-dataclass", compute, seed=0)
    assert calls == [1] and again["estimate"] == value["estimate"] and type(again["estimate"]) is Estimate
    assert torch.equal(again["scores"], value["scores"])


@dataclasses.dataclass(frozen=True)
class NotOurs:
    value: int


def test_a_class_from_outside_helpers_is_refused_when_saved(private_cache):
    with pytest.raises(store.Unstorable, match="NotOurs is not a dataclass of the helpers package"):
        store.cached("foreign", lambda: NotOurs(3), seed=0)
    assert not list((private_cache / "results").glob("foreign-*"))  # nothing left behind


def test_the_weights_digest_tells_models_apart():
    from helpers import toy

    def built(seed):
        return toy.AttentionOnlyTransformer(toy.ToyConfig(vocab_size=8, n_ctx=4, d_model=8, d_head=4, n_heads=2,
                                                          n_layers=1, seed=seed))

    first, same, other = built(0), built(0), built(1)
    assert store.weights_digest(first) == store.weights_digest(same) != store.weights_digest(other)
