"""Book-style figures and the attention view: functions that take tensors and draw, never compute.

Every figure function returns its ``matplotlib.figure.Figure``, sets the title and axis labels it is
given, and draws into `ax` when one is passed (so figures can be combined). Figures are created through
``pyplot`` so that Jupyter's inline backend shows them; write ``fig = plots.head_heatmap(...)`` rather
than ending a cell with the call, or the figure appears twice. Nothing is closed globally: a test or a
loop that makes many figures closes its own with ``plt.close(fig)``.

Conventions (STYLE §2): attention shares on a fixed 0-1 scale, effects on a diverging map centred on
0, marked heads boxed, heads named ``L{layer}H{head}``. Importing this module changes no global
state; ``use_book_style()`` applies the book's rcParams when a notebook asks for them.

``attention_view`` emits a few kB of HTML for circuitsvis's ``AttentionPatterns`` widget and relies on
the page (the built book serves ``circuitsvis_bundle_path()`` from ``_static/``) or on unpkg for the
1.3 MB script, see toolchain.md §11.2.
"""

from __future__ import annotations

import hashlib
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Union

import circuitsvis
import matplotlib as mpl
import matplotlib.patheffects as path_effects
import matplotlib.pyplot as plt
import numpy as np
import torch
from circuitsvis.utils.convert_props import convert_props
from IPython.display import HTML
from jaxtyping import Float
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

from helpers import heads
from helpers.stats import Estimate

Array = Union[Tensor, np.ndarray]

# Figures are drawn for the book's text column: at 1280 px the column is about 730 CSS px wide, and a
# figure up to COLUMN_INCHES wide at FIGURE_DPI shows at its own size there, so its smallest text,
# MIN_FONT_PT, shows at MIN_FONT_PT * FIGURE_DPI / 72 px (13.75 px; 9 pt is 12 px). The browser check
# (tests/site/browser_check.py) fails a figure the page shrinks past that.
FIGURE_DPI = 110
MIN_FONT_PT = 9
COLUMN_INCHES = 6.6
TITLE_PT, LABEL_PT = 11, 10
BOOK_STYLE: dict[str, object] = {
    "figure.dpi": FIGURE_DPI,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "font.size": 10,
    "axes.titlesize": TITLE_PT,
    "axes.titleweight": "bold",
    "axes.labelsize": LABEL_PT,
    "xtick.labelsize": MIN_FONT_PT,
    "ytick.labelsize": MIN_FONT_PT,
    "legend.fontsize": MIN_FONT_PT,
    "legend.title_fontsize": MIN_FONT_PT,
    "figure.titlesize": 11,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "legend.frameon": False,
    "image.cmap": "viridis",
}
SEQUENTIAL_CMAP = "viridis"
DIVERGING_CMAP = "RdBu_r"
MARK_COLOR = "#e4572e"  # boxes around marked heads: visible on both viridis and RdBu


def use_book_style() -> None:
    """Apply the book's matplotlib rcParams (``BOOK_STYLE``) globally. Call it once per notebook.

    Use ``with matplotlib.rc_context(plots.BOOK_STYLE):`` instead to style a single block.
    """
    mpl.rcParams.update(BOOK_STYLE)


def _numpy(values: Array | Sequence[float], name: str, ndim: int | None) -> np.ndarray:
    """A float64 numpy copy; `ndim=None` accepts any shape."""
    array = (
        values.detach().to("cpu", torch.float64).numpy()
        if isinstance(values, Tensor)
        else np.asarray(values, dtype=np.float64)
    )
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dims; got shape {tuple(array.shape)}")
    return array


def fit_to_axes(ax: Axes, text: str, size_pt: float) -> str:
    """`text` wrapped to the width of `ax`, so a long title or label never widens the saved figure.

    The notebook's inline backend saves figures with ``bbox_inches="tight"``, which grows the image to hold
    a title wider than the figure; the page then shrinks the whole image, text and all, to the column.
    Characters per line assume an average glyph of 0.6 em (DejaVu Sans), with a little overhang allowed.
    """
    width_pt = ax.figure.get_figwidth() * ax.get_position().width * 72 * 1.15
    chars = max(16, int(width_pt / (0.6 * size_pt)))
    return "\n".join(textwrap.fill(line, chars) for line in text.split("\n"))


def _figure(ax: Axes | None, size: tuple[float, float]) -> tuple[Figure, Axes]:
    """A new figure at most `COLUMN_INCHES` wide (so the page never shrinks its text), or `ax`'s."""
    if ax is not None:
        return ax.figure, ax
    fig, new_ax = plt.subplots(figsize=(min(size[0], COLUMN_INCHES), size[1]), layout="constrained")
    return fig, new_ax


def _ticks(count: int, most: int = 32) -> np.ndarray:
    """Every index when it fits, else every k-th, so 30 layers stay readable."""
    return np.arange(0, count, max(1, -(-count // most)))


def _token_label(token: str) -> str:
    # "$" would start mathtext in a tick label; newlines would break the axis layout.
    return token.replace("$", r"\$").replace("\n", "\\n")


def _extend(values: np.ndarray, vmin: float, vmax: float) -> str:
    """Colourbar arrows that show values were clipped by the fixed scale, instead of hiding it."""
    finite = values[np.isfinite(values)]
    low = finite.size > 0 and finite.min() < vmin
    high = finite.size > 0 and finite.max() > vmax
    return {(False, False): "neither", (True, False): "min", (False, True): "max", (True, True): "both"}[(low, high)]


def head_heatmap(
    scores: Float[Tensor, "layer head"] | Float[np.ndarray, "layer head"],
    *,
    title: str,
    colorbar_label: str,
    marked: Sequence[tuple[int, int]] = (),
    vmin: float | None = None,
    vmax: float | None = None,
    diverging: bool = False,
    ax: Axes | None = None,
) -> Figure:
    """A layers × heads grid of one score, layer 0 at the top, with marked heads boxed and annotated.

    Args:
        scores: one value per head, e.g. ``scores.attention_on_targets(...)``.
        title: what and which model, e.g. ``f"Induction score per head, {MODEL}"``.
        colorbar_label: what the colour means, with units.
        marked: heads to box, as ``(layer, head)``; each box shows the head's value.
        vmin, vmax: colour limits. Default: 0 and 1 (attention shares). With `diverging`, the limits
            are symmetric around 0 at ``max(|vmin|, |vmax|)``, or the largest ``|score|`` when not given.
        diverging: use a diverging map centred on 0 (effects, logit differences).
        ax: draw into this axes instead of a new figure.

    Raises:
        ValueError: if `scores` is not 2-D, a marked head is outside the grid, or vmin >= vmax.
    """
    grid = _numpy(scores, "scores [layer, head]", 2)
    n_layers, n_heads = grid.shape
    for layer, head in marked:
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            raise ValueError(
                f"marked head {heads.label((layer, head))} is outside the {n_layers} x {n_heads} grid of scores; "
                "mark heads as (layer, head) with 0-based indices"
            )
    if diverging:
        given = [abs(v) for v in (vmin, vmax) if v is not None]
        finite = np.abs(grid[np.isfinite(grid)])
        limit = max(given) if given else (float(finite.max()) if finite.size else 1.0)
        low, high, cmap = -(limit or 1.0), (limit or 1.0), DIVERGING_CMAP
    else:
        low = 0.0 if vmin is None else vmin
        high = 1.0 if vmax is None else vmax
        cmap = SEQUENTIAL_CMAP
    if low >= high:
        raise ValueError(f"vmin must be below vmax; got vmin={low}, vmax={high}")

    fig, ax = _figure(ax, (min(2.2 + 0.5 * n_heads, 12.0), min(1.3 + 0.26 * n_layers, 12.0)))
    image = ax.imshow(grid, cmap=cmap, vmin=low, vmax=high, aspect="auto", interpolation="nearest")
    colorbar = fig.colorbar(image, ax=ax, extend=_extend(grid, low, high))
    colorbar.set_label(colorbar_label)
    ax.set_xticks(_ticks(n_heads))
    ax.set_yticks(_ticks(n_layers))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(fit_to_axes(ax, title, TITLE_PT))
    for layer, head in marked:
        ax.add_patch(Rectangle((head - 0.5, layer - 0.5), 1, 1, fill=False, edgecolor=MARK_COLOR, linewidth=2))
        ax.text(head, layer, f"{grid[layer, head]:.2f}", ha="center", va="center", fontsize=MIN_FONT_PT, color="white",
                path_effects=[path_effects.withStroke(linewidth=2, foreground="black")])
    return fig


def estimate_bars(
    estimates: Mapping[str, Estimate],
    *,
    title: str,
    ylabel: str,
    reference: float | None = None,
    reference_label: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """One bar per estimate (e.g. "full model", "top-3 ablated", "random-3 ablated") with its CI.

    Args:
        estimates: label -> ``Estimate``; bars keep the mapping's order. All must share one `level`.
        reference: optional horizontal line, e.g. chance accuracy or the clean metric.
        reference_label: legend text for the line.

    Raises:
        ValueError: if `estimates` is empty or the estimates have different levels.
    """
    if not estimates:
        raise ValueError("estimates is empty; expected a mapping like {'full model': Estimate, ...}")
    levels = {e.level for e in estimates.values()}
    if len(levels) != 1:
        raise ValueError(f"all estimates must share one interval level to share error bars; got {sorted(levels)}")
    labels = list(estimates)
    means = np.array([estimates[k].mean for k in labels])
    errors = np.array([[estimates[k].mean - estimates[k].lower for k in labels],
                       [estimates[k].upper - estimates[k].mean for k in labels]])  # [2, bar]

    fig, ax = _figure(ax, (max(4.5, 2.0 * len(labels) + 1.5), 3.8))
    positions = np.arange(len(labels))
    ax.bar(positions, means, color="#4c72b0", width=0.6)
    ax.errorbar(positions, means, yerr=np.clip(errors, 0, None), fmt="none", ecolor="black", capsize=4,
                label=f"{levels.pop():.0%} bootstrap CI")
    ax.set_xticks(positions, [textwrap.fill(label, 22) for label in labels])  # long labels must not collide
    if reference is not None:
        ax.axhline(reference, color="grey", linestyle="--", linewidth=1, label=reference_label)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_ylabel(ylabel)
    ax.set_title(fit_to_axes(ax, title, TITLE_PT))
    ax.legend(loc="best")
    return fig


def score_vs_null(
    scores: Float[Tensor, "layer head"] | Float[np.ndarray, "layer head"],
    null_scores: Float[Tensor, "layer head"] | Float[np.ndarray, "layer head"],
    *,
    title: str,
    xlabel: str,
    threshold: float | None,
    labels: tuple[str, str] = ("real prompts", "control prompts"),
    ax: Axes | None = None,
) -> Figure:
    """Histograms of every head's score on real prompts and on control prompts, with the cut-off.

    Args:
        scores, null_scores: per-head scores (any shape; all entries are pooled), e.g. ``[layer, head]``.
        threshold: e.g. ``stats.null_threshold(null_scores)``; drawn as a vertical line when given.
        labels: legend names of the two distributions (the score, then its control).
    """
    real = _numpy(scores, "scores", None).ravel()
    null = _numpy(null_scores, "null_scores", None).ravel()
    both = np.concatenate([real, null])
    both = both[np.isfinite(both)]
    edges = np.histogram_bin_edges(both if both.size else [0.0, 1.0], bins=30)  # shared bins: bars compare

    fig, ax = _figure(ax, (5.5, 3.4))
    ax.hist(null, bins=edges, color="grey", alpha=0.6, label=f"{labels[1]} ({null.size} heads)")
    ax.hist(real, bins=edges, color="#4c72b0", alpha=0.6, label=f"{labels[0]} ({real.size} heads)")
    if threshold is not None:
        ax.axvline(threshold, color=MARK_COLOR, linestyle="--", label=f"threshold {threshold:.3g}")
    ax.set_xlabel(fit_to_axes(ax, xlabel, LABEL_PT))
    ax.set_ylabel("number of heads")
    ax.set_title(fit_to_axes(ax, title, TITLE_PT))
    ax.legend(loc="best")
    return fig


def effect_vs_draws(
    observed: Mapping[str, float],
    draws: Mapping[str, Sequence[float] | Array],
    *,
    title: str,
    xlabel: str,
    observed_label: str = "observed",
    draws_label: str = "random draws",
    reference: float | None = None,
    ax: Axes | None = None,
) -> Figure:
    """One row per condition (a model, a seed): every random draw as a grey dot, the observed value as a
    mark. The way a causal check is read: where does the observed effect fall among the draws?

    Args:
        observed: row name -> the observed effect (e.g. the top heads' ablation effect).
        draws: row name -> the null's values (one per draw), same row names as `observed`.
        reference: drawn as a vertical line (e.g. 0, no effect).

    Raises:
        ValueError: if the row names differ or a row has no draws.
    """
    if not observed or set(observed) != set(draws):
        raise ValueError(f"observed and draws need the same, non-empty row names; got {sorted(observed)} and "
                         f"{sorted(draws)}")
    rows = list(observed)
    fig, ax = _figure(ax, (5.5, 0.9 + 0.45 * len(rows)))
    jitter = np.random.default_rng(0)  # fixed: the same figure every run
    for y, name in enumerate(rows):
        values = _numpy(draws[name], f"draws[{name!r}]", None).ravel()
        if values.size == 0:
            raise ValueError(f"draws[{name!r}] is empty; pass the null's values, one per draw")
        ax.scatter(values, y + jitter.uniform(-0.15, 0.15, values.size), s=10, color="grey", alpha=0.6,
                   label=draws_label if y == 0 else None, zorder=2)
        ax.scatter([observed[name]], [y], s=90, marker="D", color=MARK_COLOR, label=observed_label if y == 0 else None,
                   zorder=3)
    if reference is not None:
        ax.axvline(reference, color="black", linewidth=0.8, linestyle=":")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel(fit_to_axes(ax, xlabel, LABEL_PT))
    ax.set_title(fit_to_axes(ax, title, TITLE_PT))
    ax.legend(loc="best")
    return fig


def attention_pattern(
    pattern: Float[Tensor, "query key"] | Float[np.ndarray, "query key"],
    tokens: Sequence[str],
    *,
    title: str,
    ax: Axes | None = None,
) -> Figure:
    """One head's attention on one prompt as a 0-1 heatmap; the static fallback for ``attention_view``.

    Raises:
        ValueError: if `pattern` is not ``[len(tokens), len(tokens)]``.
    """
    grid = _numpy(pattern, "pattern [query, key]", 2)
    if grid.shape != (len(tokens), len(tokens)):
        raise ValueError(
            f"pattern has shape {tuple(grid.shape)} but there are {len(tokens)} tokens; expected "
            f"({len(tokens)}, {len(tokens)}). Pass one prompt's pattern for one head, e.g. patterns[layer, 0, head]"
        )
    side = min(2.5 + 0.28 * len(tokens), COLUMN_INCHES - 1.0)
    fig, ax = _figure(ax, (side + 1.0, side))
    image = ax.imshow(grid, cmap=SEQUENTIAL_CMAP, vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8).set_label("attention probability")
    labels = [_token_label(t) for t in tokens]
    ax.set_xticks(np.arange(len(tokens)), labels, rotation=90, fontsize=MIN_FONT_PT)
    ax.set_yticks(np.arange(len(tokens)), labels, fontsize=MIN_FONT_PT)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    ax.set_title(fit_to_axes(ax, title, TITLE_PT))
    return fig


def training_curves(
    history: Mapping[str, Sequence[float]],
    steps: Sequence[int],
    *,
    title: str,
    ylabel: str,
    xlabel: str = "training step",
    marker_step: int | None = None,
    marker_label: str | None = None,
    log_y: bool = False,
    ax: Axes | None = None,
) -> Figure:
    """Curves over training steps (loss, a head's score), one per entry of `history`.

    Args:
        history: curve name -> one value per step, e.g. ``{"train loss": [...], "induction score": [...]}``.
        steps: the step of each value.
        marker_step: draws a vertical line there, e.g. where the phase change starts.

    Raises:
        ValueError: if `history` is empty or a curve's length differs from ``len(steps)``.
    """
    if not history:
        raise ValueError("history is empty; expected {curve name: values per step}")
    for name, values in history.items():
        if len(values) != len(steps):
            raise ValueError(f"curve {name!r} has {len(values)} values but there are {len(steps)} steps; "
                             "record one value per logged step")
    fig, ax = _figure(ax, (5.5, 3.4))
    for name, values in history.items():
        ax.plot(list(steps), list(values), label=name)
    if marker_step is not None:
        ax.axvline(marker_step, color="grey", linestyle="--", linewidth=1, label=marker_label)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(fit_to_axes(ax, xlabel, LABEL_PT))
    ax.set_ylabel(ylabel)
    ax.set_title(fit_to_axes(ax, title, TITLE_PT))
    ax.legend(loc="best")
    return fig


def circuitsvis_bundle_path() -> Path:
    """The browser bundle shipped in the circuitsvis wheel (``dist/cdn/iife.js``, defines ``CircuitsVis``).

    The Makefile copies it into the book's ``_static/`` so pages load it once instead of once per widget.

    Raises:
        RuntimeError: if the installed circuitsvis has no bundle there.
    """
    path = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
    if not path.is_file():
        raise RuntimeError(f"no circuitsvis bundle at {path}; reinstall circuitsvis=={circuitsvis.__version__} from PyPI")
    return path


def attention_view(
    tokens: Sequence[str],
    patterns: Float[Tensor, "head query key"] | Float[np.ndarray, "head query key"],
    head_names: Sequence[str],
    *,
    key: str = "",
) -> HTML:
    """Interactive circuitsvis ``AttentionPatterns`` widget for several heads on one prompt, as small HTML.

    Uses ``window.CircuitsVis`` when the page provides it (the built book) and otherwise imports the
    ES module from unpkg (Colab, Jupyter). Values are rounded to 3 decimals, finer than the widget's
    colours can show, which keeps a 10-token, 4-head view under 5 kB. The div id is a hash of the
    content, so re-executing a notebook gives identical output; pass a different `key` to show the same
    input twice on one page.

    Args:
        tokens: the prompt's tokens as strings.
        patterns: ``[head, query, key]`` attention probabilities, e.g. ``torch.stack([...])`` of heads.
        head_names: one label per head, e.g. ``[heads.label(h) for h in found]``.

    Raises:
        ValueError: if the shapes of `patterns`, `tokens` and `head_names` disagree.
    """
    grid = _numpy(patterns, "patterns [head, query, key]", 3)
    n = len(tokens)
    if grid.shape[1:] != (n, n):
        raise ValueError(f"patterns has shape {tuple(grid.shape)} but there are {n} tokens; expected (head, {n}, {n})")
    if len(head_names) != grid.shape[0]:
        raise ValueError(f"got {len(head_names)} head_names for {grid.shape[0]} heads in patterns; pass one name per head")
    # AttentionPatterns (1.43.3) takes headLabels although the Python wrapper does not expose it.
    props = convert_props({"tokens": list(tokens), "attention": np.round(grid, 3), "headLabels": list(head_names)})
    props = props.replace("<", "\\u003c")  # a token like "</script>" must not end the script early
    version = circuitsvis.__version__
    digest = hashlib.sha256(f"{version}|{key}|{props}".encode()).hexdigest()[:12]
    div = f"circuits-vis-{digest}"
    cdn = f"https://unpkg.com/circuitsvis@{version}/dist/cdn/esm.js"
    return HTML(
        f'<div id="{div}" style="margin: 15px 0;"></div>\n'
        f'<script type="module">\n'
        f'const CV = window.CircuitsVis ?? await import("{cdn}");\n'
        f'CV.render("{div}", CV.AttentionPatterns, {props});\n'
        f"</script>"
    )


def head_scatter(
    x: Float[Tensor, "layer head"] | Float[np.ndarray, "layer head"],
    y: Float[Tensor, "layer head"] | Float[np.ndarray, "layer head"],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    marked: Sequence[tuple[int, int]] = (),
    ax: Axes | None = None,
) -> Figure:
    """One dot per head at two scores (e.g. attention to a token vs direct effect), marked heads labelled."""
    xs, ys = _numpy(x, "x [layer, head]", 2), _numpy(y, "y [layer, head]", 2)
    if xs.shape != ys.shape:
        raise ValueError(f"x and y must both be [layer, head]; got {xs.shape} and {ys.shape}")
    fig, ax = _figure(ax, (5.5, 4.0))
    ax.scatter(xs.ravel(), ys.ravel(), s=14, color="#4c72b0", alpha=0.6, label=f"all {xs.size} heads")
    for layer, head in marked:
        ax.scatter([xs[layer, head]], [ys[layer, head]], s=40, facecolors="none", edgecolors=MARK_COLOR)
        ax.annotate(heads.label((layer, head)), (xs[layer, head], ys[layer, head]), textcoords="offset points",
                    xytext=(4, 4), fontsize=MIN_FONT_PT, color=MARK_COLOR)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel(fit_to_axes(ax, xlabel, LABEL_PT))
    ax.set_ylabel(ylabel)
    ax.set_title(fit_to_axes(ax, title, TITLE_PT))
    ax.legend(loc="best")
    return fig


def family_map(
    roles: Mapping[tuple[int, int], Sequence[str]],
    n_layers: int,
    n_heads: int,
    *,
    colors: Mapping[str, str],
    title: str,
    ax: Axes | None = None,
) -> Figure:
    """A layers × heads grid with each head's families as coloured stripes: a head in two families is split
    in two, so heads with several roles stand out. `colors` maps every family (as `roles` names it) to a
    colour; the legend is left to the caller, which knows which families to list.

    Raises:
        ValueError: if a head is outside the grid or a family has no colour.
    """
    missing = sorted({family for families in roles.values() for family in families} - set(colors))
    if missing:
        raise ValueError(f"no colour for the families {missing}; give every family in roles a colour")
    for head in roles:
        heads.check([head], n_layers, n_heads)
    fig, ax = _figure(ax, (min(1.6 + 0.4 * n_heads, 12.0), min(1.3 + 0.2 * n_layers, 12.0)))
    ax.add_patch(Rectangle((-0.5, -0.5), n_heads, n_layers, facecolor="#f2f2f2", edgecolor="none"))
    for (layer, head), families in roles.items():
        width = 1 / len(families)
        for i, family in enumerate(families):
            ax.add_patch(Rectangle((head - 0.5 + i * width, layer - 0.5), width, 1, facecolor=colors[family],
                                   edgecolor="white", linewidth=0.5))
    ax.set_xlim(-0.5, n_heads - 0.5)
    ax.set_ylim(n_layers - 0.5, -0.5)  # layer 0 at the top, as in head_heatmap
    ax.set_xticks(_ticks(n_heads))
    ax.set_yticks(_ticks(n_layers))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(fit_to_axes(ax, title, TITLE_PT))
    return fig


ROLE_COLORS = {"previous token": "#8172b3", "duplicate token": "#937860", "induction": "#da8bc3",
               "S-inhibition": "#dd8452", "name mover": "#55a868", "negative name mover": "#c44e52",
               "subject suppressor": "#64b5cd"}


def circuit_diagram(
    roles: Mapping[str, Sequence[tuple[int, int]]],
    edges: Sequence[tuple[str, str]],
    *,
    n_layers: int,
    title: str,
    ax: Axes | None = None,
) -> Figure:
    """Heads placed by layer (top to bottom) and grouped by role, with arrows between roles.

    Args:
        roles: role name -> its heads; a role may be empty (drawn as "not found").
        edges: (from role, to role) arrows, e.g. ``("S-inhibition", "name mover")``; "logits" is a sink.
    """
    names = list(roles)
    height = 6.0
    fig, ax = _figure(ax, (COLUMN_INCHES, height))
    # A label box is about 0.22 in tall; in layer units that is the gap two labels of a column need.
    gap = 0.22 / ((height - 1.4) / (n_layers + 1.8))
    centre: dict[str, tuple[float, float]] = {}
    lowest = float(n_layers)
    for column, role in enumerate(names):
        members = sorted(roles[role])
        color = ROLE_COLORS.get(role, "#4c72b0")
        if not members:
            ax.text(column, n_layers / 2, "not found", ha="center", va="center", fontsize=MIN_FONT_PT, color="grey")
            centre[role] = (column, n_layers / 2)
            continue
        placed: list[float] = []
        for layer, head in members:  # at its layer, or pushed just below the label above it
            y = float(layer) if not placed else max(float(layer), placed[-1] + gap)
            placed.append(y)
            ax.text(column, y, heads.label((layer, head)), ha="center", va="center", fontsize=MIN_FONT_PT,
                    bbox=dict(boxstyle="round,pad=0.2", facecolor=color, edgecolor="none", alpha=0.85))
        centre[role] = (column, float(np.mean(placed)))
        lowest = max(lowest, placed[-1])
    centre["logits"] = (len(names), n_layers)
    ax.text(len(names), n_layers, "logits", ha="center", va="center", fontsize=MIN_FONT_PT,
            bbox=dict(boxstyle="round,pad=0.3", facecolor="white", edgecolor="black"))
    for source, target in edges:
        if source in centre and target in centre:
            ax.annotate("", xy=centre[target], xytext=centre[source],
                        arrowprops=dict(arrowstyle="->", color="grey", shrinkA=14, shrinkB=14, linewidth=1))
    ax.set_xticks(np.arange(len(names)), [textwrap.fill(n, 9) for n in names], fontsize=MIN_FONT_PT)
    ax.set_xlim(-0.7, len(names) + 0.7)
    ax.set_ylim(lowest + 0.8, -1)
    ax.set_ylabel("layer")
    ax.set_xlabel("role in the circuit")
    ax.set_title(fit_to_axes(ax, title, TITLE_PT))
    return fig
