"""Re-check a finding on a held-out template family: do the found heads, and their effect, carry over?

A screen that picks heads on one prompt format can pick up that format's quirks. The held-out check
recomputes the page's own screen score on prompts from a template family the screen never saw (other
wording, other filler words) and asks two questions:

- do the found heads still rank among the strongest (`ranks`, `kept`)?
- does the causal check still come out the same way (`check`, a `controls.CausalCheck` run on the
  held-out prompts against fresh draws)?

Example::

    held = heldout.HeldOut("other wording and names", found=movers, screen=read.dla.mean(-1), check=path)
    held.ranks()        # [1, 2, 5]: where each found head ranks on the held-out prompts
    held.kept()         # 2: found heads still in the held-out top len(found)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from jaxtyping import Float
from torch import Tensor

from helpers import heads
from helpers.controls import CausalCheck
from helpers.heads import Head


@dataclass(frozen=True)
class HeldOut:
    """The page's screen score and causal check, recomputed on a held-out template family.

    Attributes:
        family: what the held-out prompts are, in words a reader understands.
        found: the heads the screen found on the page's own prompts.
        screen: ``[layer, head]`` the same score on the held-out prompts, larger = stronger (pass the
            negated score for a family whose heads are the most negative).
        check: the page's causal check run on the held-out prompts, or None when the page has none there.
    """

    family: str
    found: tuple[Head, ...]
    screen: Float[Tensor, "layer head"]
    check: CausalCheck | None = None

    def __post_init__(self) -> None:
        if self.screen.ndim != 2:
            raise ValueError(f"screen must be a [layer, head] score; got shape {tuple(self.screen.shape)}")
        if not self.found:
            raise ValueError("found is empty: pass the heads the screen found on the page's own prompts")
        heads.check(self.found, *self.screen.shape)
        object.__setattr__(self, "found", tuple(tuple(h) for h in self.found))

    def ranking(self) -> list[Head]:
        """Every head by its held-out score, strongest first."""
        return heads.top(self.screen)

    def ranks(self) -> list[int]:
        """Each found head's rank on the held-out prompts (1 = strongest of all heads)."""
        position = {head: i + 1 for i, head in enumerate(self.ranking())}
        return [position[head] for head in self.found]

    def kept(self, within: int | None = None) -> int:
        """How many found heads rank within the held-out top `within` (default: as many as were found)."""
        within = len(self.found) if within is None else within
        return sum(rank <= within for rank in self.ranks())

    def carries_over(self) -> bool:
        """The book's rule, fixed before looking: every found head ranks within the held-out top 2k (k =
        number found), and the held-out causal check has no draw as strong as the found heads
        (p = 1/(N+1) for N draws). False when there is no held-out check."""
        k = len(self.found)
        return self.kept(within=2 * k) == k and self.check is not None and self.check.as_strong == 0

    def top(self, k: int) -> list[Head]:
        """The held-out screen's own top `k`."""
        return heads.top(self.screen, k)

    def ranks_text(self) -> str:
        """``L23H1 #1, L23H4 #2, L24H4 #7 of 270``."""
        total = self.screen.numel()
        return ", ".join(f"{heads.label(h)} #{r}" for h, r in zip(self.found, self.ranks())) + f" of {total}"

    def row(self) -> dict[str, str]:
        """Cells for a findings table."""
        row = {"held-out format": self.family, "found heads' held-out ranks": self.ranks_text()}
        if self.check is not None:
            row["held-out check"] = str(self.check.top)
            row["held-out draws"] = self.check.draws_summary()
        return row

    def summary(self) -> str:
        text = (f"held-out ({self.family}): {self.kept()} of {len(self.found)} found heads stay in the top "
                f"{len(self.found)} ({self.ranks_text()}); held-out top {len(self.found)}: "
                f"{heads.labels(self.top(len(self.found)), self.screen)}")
        if self.check is not None:
            text += f"; {self.check.summary()}"
        return text


def overlap(found: Sequence[Head], other: Sequence[Head]) -> list[Head]:
    """The heads two lists share, in the order of `found`."""
    shared = {tuple(h) for h in other}
    return [tuple(h) for h in found if tuple(h) in shared]
