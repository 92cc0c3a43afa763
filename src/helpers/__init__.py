"""Shared code for *Attention Heads, Reproduced*.

Modules, in the order data flows through them:

- ``models``: load a pretrained model (offline GGUF packages or the Hub) as a TransformerBridge.
- ``tasks``: seeded prompt generators that return one validated ``TaskBatch``.
- ``capture`` / ``interventions`` / ``patching``: the only modules that register hooks (read activations;
  ablate heads; activation, path and attribution patching).
- ``scores``: pure per-head scores from attention patterns, ``[layer, head]`` tensors.
- ``attribution``: direct logit attribution of every head (norm scales frozen); ``ov``: what a head's
  OV circuit does to tokens, read from the weights (copying, noun -> initial).
- ``stats``: bootstrap intervals, permutation nulls and the behaviour gate.
- ``plots``: book-style figures and the attention view.
- ``families``: the protocol's steps (gate, screen, ablation check, findings) shared by the pages.
- Task modules, one per shared experiment: ``conflict`` (knowledge conflicts: memory and context
  heads), ``yesno`` (yes/no questions and the Negative Attention Score), ``mcq`` (formatted multiple
  choice on pretrained models), ``ioi`` with ``ioi_roles`` and ``self_repair`` (the IOI circuit: name
  movers, S-inhibition, backups, the whole circuit), ``duplicate`` (duplicate-token heads),
  ``copy_suppression`` (negative name movers on IOI and prose), ``acronyms`` (letter movers),
  ``mover`` (knowledge-circuit mover heads).
- ``toy``: small transformers trained from scratch in a notebook, with ``associative`` (Bietti et
  al.'s trigger task and weight-product memories) and ``mcq_toy`` (a synthetic multiple-choice task).
- ``checks``: checkers for the exercises.

Importing ``helpers`` does nothing global: no environment variables, no plot style, no downloads.
"""

__version__ = "0.1.0"
