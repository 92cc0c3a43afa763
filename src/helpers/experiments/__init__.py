"""The shared experiments, one module each, on top of the core modules of ``helpers``.

Each experiment module exposes ``Sizes`` (how many prompts and draws), ``Study`` (a frozen record with
``row()`` for a findings table) and ``study(model, *, sizes=Sizes(), seed=0) -> Study``, which runs the
steps its page shows, in order, so the comparison model (and the atlas) gets exactly the same treatment.
Task modules that several experiments share (``copying``, ``ioi``) hold the task and its reads.

Experiments import the core and the shared task modules, never each other's private names; the core
never imports an experiment (``tests/test_layering.py``).
"""

from __future__ import annotations


def findings_table(*studies):
    """A page's findings table: one row per study (model), a pandas DataFrame indexed by model."""
    import pandas as pd

    return pd.DataFrame([study.row() for study in studies]).set_index("model")
