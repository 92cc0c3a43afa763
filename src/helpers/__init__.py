"""Shared code for *Attention Heads, Reproduced*.

Modules, in the order data flows through them:

- ``models``: load a pretrained model (offline GGUF packages or the Hub) as a TransformerBridge.
- ``tasks``: seeded prompt generators that return one validated ``TaskBatch``.
- ``capture`` / ``interventions``: the only modules that register hooks (read / change activations).
- ``scores``: pure per-head scores from attention patterns, ``[layer, head]`` tensors.
- ``attribution``: direct logit attribution of every head (norm scales frozen).
- ``stats``: bootstrap intervals, permutation nulls and the behaviour gate.
- ``plots``: book-style figures and the attention view.
- ``families``: the protocol's steps (gate, screen, ablation check, findings) shared by the pages.
- Task modules, one per shared experiment: ``conflict`` (knowledge conflicts: memory and context
  heads), ``yesno`` (yes/no questions and the Negative Attention Score), ``mcq`` (formatted multiple
  choice on pretrained models).
- ``toy``: small transformers trained from scratch in a notebook, with ``associative`` (Bietti et
  al.'s trigger task and weight-product memories) and ``mcq_toy`` (a synthetic multiple-choice task).
- ``checks``: checkers for the exercises.

Importing ``helpers`` does nothing global: no environment variables, no plot style, no downloads.
"""

__version__ = "0.1.0"
