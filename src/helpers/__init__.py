"""Shared code for *Attention Heads, Reproduced*.

Modules, in the order data flows through them:

- ``models``: load a pretrained model (offline GGUF packages or the Hub) as a TransformerBridge.
- ``tasks``: seeded prompt generators that return one validated ``TaskBatch``.
- ``capture`` / ``interventions``: the only modules that register hooks (read / change activations).
- ``scores``: pure per-head scores from attention patterns, ``[layer, head]`` tensors.
- ``stats``: bootstrap intervals, permutation nulls and the behaviour gate.
- ``plots``: book-style figures and the attention view.
- ``toy``: small transformers trained from scratch in a notebook.
- ``checks``: checkers for the exercises.

Importing ``helpers`` does nothing global: no environment variables, no plot style, no downloads.
"""

__version__ = "0.1.0"
