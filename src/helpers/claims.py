"""What a page's assert cells share: when its claims apply, and how a claim in the text names its check.

A family page states findings for one configuration (the default model, its comparison model, the
sizes and seeds of its parameters cell) and pins each one with an ``assert``. A reader who changes a
parameter gets different numbers, not an ``AssertionError``: the assert cell compares what ran with
what the text describes and, where they differ, prints ``step_aside(ran, pinned)`` instead.

Claim ids tie the text to the checks. Each bold claim in a page's Findings carries a hidden marker
``<!-- claim: ID -->``, and at least one assert message of that page starts with ``claim ID:``;
``tests/test_notebook_claims.py`` fails when a bold claim has no marker, a marker no assert, or an
assert an id that the text does not carry.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

MARKER = re.compile(r"<!--\s*claim:\s*([\w-]+)\s*-->")
ASSERTED = re.compile(r"""["']claim ([\w-]+):""")


def step_aside(ran: Mapping[str, object], pinned: Mapping[str, object]) -> str:
    """The sentence an assert cell prints when this run is not the configuration its text describes."""
    if set(ran) != set(pinned):
        raise ValueError(f"ran and pinned must name the same parameters; got {sorted(ran)} and {sorted(pinned)}")
    differing = [name for name in pinned if ran[name] != pinned[name]]
    if not differing:
        return "This run is the configuration the text describes; its claims are checked."
    described = ", ".join(f"{name} = {pinned[name]!r}" for name in pinned)
    changed = ", ".join(f"{name} = {ran[name]!r}" for name in differing)
    return (f"The findings above describe {described}; this run has {changed}, so their checks are skipped: "
            f"compare the sentences with your own numbers.")


def markers(markdown: str) -> list[str]:
    """Claim ids marked in a page's text, in order."""
    return MARKER.findall(markdown)


def asserted(code: str) -> list[str]:
    """Claim ids named by assert messages (``"claim ID: ..."``) in a page's code."""
    return ASSERTED.findall(code)
