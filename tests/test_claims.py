"""Tests for helpers.claims: the step-aside sentence and the claim-id markers that tie text to asserts."""

from __future__ import annotations

import pytest

from helpers import claims


def test_step_aside_names_what_the_text_describes_and_what_changed():
    note = claims.step_aside({"MODEL": "gemma3-270m", "SEED": 0}, {"MODEL": "smollm2-135m", "SEED": 0})
    assert "MODEL = 'smollm2-135m', SEED = 0" in note and "this run has MODEL = 'gemma3-270m'" in note
    assert "SEED = 0;" not in note.split("this run has")[1]  # unchanged parameters are not listed as changed
    assert "checked" in claims.step_aside({"SEED": 0}, {"SEED": 0})


def test_step_aside_refuses_different_parameter_names():
    with pytest.raises(ValueError, match=r"same parameters.*\['SEED'\].*\['TOY_SEEDS'\]"):
        claims.step_aside({"SEED": 0}, {"TOY_SEEDS": (0,)})


def test_markers_and_asserted_ids_are_read_from_text_and_code():
    text = "- **A claim.** words <!-- claim: gate -->\n- **Another.** <!--claim:toy-nothing-->"
    code = 'assert x, f"claim gate: {x}"\nassert y, "claim toy-nothing: y"\nprint("claims hold")'
    assert claims.markers(text) == ["gate", "toy-nothing"]
    assert claims.asserted(code) == ["gate", "toy-nothing"]
