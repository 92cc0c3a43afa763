"""Shared code for *Attention Heads, Reproduced*.

The core, flat, in the order data flows through it:

- ``models`` (the registry of models and ``load_model``) with ``model_cache`` (offline GGUF -> safetensors).
- ``tasks``: seeded prompt generators that return one validated ``TaskBatch``; single-token lookups.
- ``heads``: the ``(layer, head)`` type, its label ``L{layer}H{head}``, range checks, ranking, set masks.
- ``capture`` / ``interventions`` / ``patching``: the only modules that register hooks (reads that stop
  early with ``capture.run_until``; ablations; activation, path and attribution patching).
- ``readout``: the final norm's output -> the few logits a metric needs (bias and soft cap included).
- ``scores`` (pure per-head scores from attention patterns), ``attribution`` (direct logit attribution),
  ``ov`` (OV circuits from the weights).
- ``screens`` (every head scored against its control, with a pass rule) and ``controls`` (random-head
  draws from all heads, matched on layer or on a score, and the causal check's rank rule).
- ``stats`` (bootstrap intervals, permutation nulls, the behaviour gate), ``plots`` (book-style figures and
  the attention view), ``claims`` (when a page's asserts apply; claim ids), ``checks`` (exercise checkers).
- ``toy`` and ``toy_train``: small transformers trained from scratch in a notebook.
- ``store``: results computed once and reused, keyed on the code, the arguments and the float kernels.

On top, ``helpers.experiments``: one module per shared experiment, each with ``Sizes``, ``Study`` and
``study(model, *, sizes, seed)`` (copying, previous-token and induction heads; duplicate heads; IOI with
name movers, S-inhibition, the circuit, self-repair and copy suppression; knowledge conflicts; mover
heads; acronyms; yes/no questions; multiple choice on pretrained models and on toys; associative
memories and in-context recall). The core never imports an experiment.

Importing ``helpers`` does nothing global: no environment variables, no plot style, no downloads.
"""

__version__ = "0.1.0"
