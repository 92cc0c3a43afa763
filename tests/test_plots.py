"""Tests for helpers.plots: figures carry the titles, labels and marks they are given; the view stays small."""

import importlib
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from helpers import heads, plots  # noqa: E402
from helpers.stats import Estimate  # noqa: E402


@pytest.fixture
def close_figures():
    """Close the figures a test made (and only those), so pyplot does not accumulate them."""
    before = set(plt.get_fignums())
    yield
    for number in set(plt.get_fignums()) - before:
        plt.close(number)


def colorbar_label(fig) -> str:
    """The label of the figure's colourbar (the axes that is not the main one)."""
    return fig.axes[-1].get_ylabel()


def marked_boxes(ax) -> list[Rectangle]:
    return [p for p in ax.patches if isinstance(p, Rectangle) and not p.get_fill()]


# --- global state --------------------------------------------------------------------------------


def test_importing_plots_changes_no_rcparams():
    before = dict(matplotlib.rcParams)
    importlib.reload(plots)
    assert dict(matplotlib.rcParams) == before


def test_use_book_style_applies_the_book_rcparams():
    with matplotlib.rc_context():
        plots.use_book_style()
        assert matplotlib.rcParams["axes.spines.top"] is False
        assert matplotlib.rcParams["image.cmap"] == "viridis"


def test_head_label_names_layer_and_head():
    assert heads.label((9, 9)) == "L9H9"
    assert heads.label((0, 11)) == "L0H11"


# --- head_heatmap --------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(30, 9), (18, 4), (12, 12), (2, 4)])
def test_head_heatmap_labels_axes_colorbar_and_boxes_each_marked_head(shape, close_figures):
    n_layers, n_heads = shape
    scores = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    marked = [(0, 0), (n_layers - 1, n_heads - 1)]
    fig = plots.head_heatmap(scores, title="Induction score per head, tiny", colorbar_label="attention share",
                             marked=marked)
    ax = fig.axes[0]
    assert ax.get_title() == "Induction score per head, tiny"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("head", "layer")
    assert colorbar_label(fig) == "attention share"
    assert len(marked_boxes(ax)) == len(marked)
    assert [t.get_text() for t in ax.texts] == [f"{scores[h].item():.2f}" for h in marked]
    assert ax.images[0].get_clim() == (0.0, 1.0)
    width, height = fig.get_size_inches()
    assert height > width if n_layers > 2 * n_heads else True


def test_head_heatmap_diverging_is_centred_on_zero(close_figures):
    effects = torch.tensor([[-0.5, 2.0], [0.1, -1.0]])
    fig = plots.head_heatmap(effects, title="Ablation effect", colorbar_label="change in logit diff",
                             diverging=True)
    assert fig.axes[0].images[0].get_clim() == (-2.0, 2.0)
    fig = plots.head_heatmap(effects, title="Ablation effect", colorbar_label="change", diverging=True, vmax=3.0)
    assert fig.axes[0].images[0].get_clim() == (-3.0, 3.0)


def test_head_heatmap_draws_into_a_given_axes(close_figures):
    fig, (left, right) = plt.subplots(1, 2)
    assert plots.head_heatmap(np.zeros((2, 3)), title="a", colorbar_label="b", ax=right) is fig
    assert right.get_title() == "a" and left.get_title() == ""


def test_head_heatmap_rejects_a_marked_head_outside_the_grid(close_figures):
    with pytest.raises(ValueError, match=r"L5H0 is outside the 2 x 4 grid"):
        plots.head_heatmap(torch.zeros(2, 4), title="t", colorbar_label="c", marked=[(5, 0)])
    with pytest.raises(ValueError, match=r"must have 2 dims; got shape \(2, 3, 4\)"):
        plots.head_heatmap(torch.zeros(2, 3, 4), title="t", colorbar_label="c")


# --- other figures -------------------------------------------------------------------------------


def test_estimate_bars_draws_one_bar_per_estimate_and_the_reference(close_figures):
    estimates = {
        "full model": Estimate(2.0, 1.8, 2.2, 50, 0.95),
        "top-3 ablated": Estimate(0.5, 0.3, 0.7, 50, 0.95),
        "random-3 ablated": Estimate(1.9, 1.7, 2.1, 50, 0.95),
    }
    fig = plots.estimate_bars(estimates, title="Logit difference, tiny", ylabel="logit difference",
                              reference=0.0, reference_label="chance")
    ax = fig.axes[0]
    assert ax.get_title() == "Logit difference, tiny" and ax.get_ylabel() == "logit difference"
    assert [t.get_text() for t in ax.get_xticklabels()] == list(estimates)
    assert len(ax.containers[0]) == 3  # the bar container
    assert "chance" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_estimate_bars_rejects_mixed_levels(close_figures):
    with pytest.raises(ValueError, match=r"one interval level.*\[0.9, 0.95\]"):
        plots.estimate_bars({"a": Estimate(1, 0, 2, 5, 0.95), "b": Estimate(1, 0, 2, 5, 0.9)}, title="t", ylabel="y")


def test_score_vs_null_draws_both_histograms_and_the_threshold(close_figures):
    fig = plots.score_vs_null(torch.rand(4, 3), torch.rand(4, 3) * 0.2, title="Scores vs control, tiny",
                              xlabel="induction score", threshold=0.19)
    ax = fig.axes[0]
    assert ax.get_title() == "Scores vs control, tiny"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("induction score", "number of heads")
    assert any(tuple(line.get_xdata()) == (0.19, 0.19) for line in ax.lines)


def test_effect_vs_draws_puts_each_row_s_draws_and_observed_value_on_its_own_line(close_figures):
    fig = plots.effect_vs_draws({"seed 0": 0.9, "seed 1": 0.1}, {"seed 0": [0.0, 0.2, 0.3], "seed 1": [0.5]},
                                title="Carried vs all sets, tiny", xlabel="share carried", reference=0.0)
    ax = fig.axes[0]
    assert ax.get_title() == "Carried vs all sets, tiny" and ax.get_xlabel() == "share carried"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["seed 0", "seed 1"]
    grey, mark, _, _ = ax.collections
    assert grey.get_offsets().shape == (3, 2) and np.allclose(np.round(grey.get_offsets()[:, 1]), 0)
    assert tuple(mark.get_offsets()[0]) == (0.9, 0.0)
    with pytest.raises(ValueError, match=r"same, non-empty row names"):
        plots.effect_vs_draws({"a": 1.0}, {"b": [0.0]}, title="t", xlabel="x")
    with pytest.raises(ValueError, match=r"draws\['a'\] is empty"):
        plots.effect_vs_draws({"a": 1.0}, {"a": []}, title="t", xlabel="x")


def test_attention_pattern_puts_tokens_on_both_axes(close_figures):
    tokens = ["<bos>", "The", " cat", " costs", " $5", "$"]
    pattern = torch.tril(torch.ones(6, 6))
    pattern = pattern / pattern.sum(-1, keepdim=True)
    fig = plots.attention_pattern(pattern, tokens, title="L1H2 on one prompt, tiny")
    ax = fig.axes[0]
    assert ax.get_title() == "L1H2 on one prompt, tiny"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("key (attended to)", "query (attending)")
    assert len(ax.get_xticklabels()) == len(ax.get_yticklabels()) == 6
    assert ax.images[0].get_clim() == (0.0, 1.0)
    assert colorbar_label(fig) == "attention probability"
    fig.canvas.draw()  # "$" in tokens must not be parsed as mathtext


def test_attention_pattern_rejects_a_pattern_of_the_wrong_size(close_figures):
    with pytest.raises(ValueError, match=r"shape \(4, 4\) but there are 3 tokens"):
        plots.attention_pattern(torch.eye(4), ["a", "b", "c"], title="t")


def test_training_curves_draws_each_curve_and_the_marker(close_figures):
    steps = [0, 100, 200, 300]
    fig = plots.training_curves({"loss": [4.0, 3.0, 1.0, 0.9], "induction score": [0.1, 0.1, 0.8, 0.9]}, steps,
                                title="Phase change, toy 2-layer model", ylabel="value", marker_step=150,
                                marker_label="phase change")
    ax = fig.axes[0]
    assert ax.get_title() == "Phase change, toy 2-layer model"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("training step", "value")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["loss", "induction score", "phase change"]


def test_training_curves_rejects_a_curve_of_the_wrong_length(close_figures):
    with pytest.raises(ValueError, match=r"curve 'loss' has 2 values but there are 3 steps"):
        plots.training_curves({"loss": [1.0, 2.0]}, [0, 1, 2], title="t", ylabel="y")


# --- attention_view ------------------------------------------------------------------------------


def view_inputs(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    tokens = [f" tok{i}" for i in range(10)]
    logits = torch.randn(4, 10, 10, generator=generator).masked_fill(~torch.tril(torch.ones(10, 10, dtype=torch.bool)),
                                                                     float("-inf"))
    return tokens, logits.softmax(-1), [heads.label((1, h)) for h in range(4)]


def test_attention_view_is_small_self_hosting_html():
    tokens, patterns, names = view_inputs()
    html = plots.attention_view(tokens, patterns, names).data
    assert len(html.encode()) < 5000
    assert "https://unpkg.com/circuitsvis@" in html and "/dist/cdn/esm.js" in html
    assert "window.CircuitsVis" in html and "AttentionPatterns" in html
    assert '"headLabels": ["L1H0", "L1H1", "L1H2", "L1H3"]' in html


def test_attention_view_is_identical_for_identical_inputs_and_differs_otherwise():
    first = plots.attention_view(*view_inputs(0)).data
    assert first == plots.attention_view(*view_inputs(0)).data
    assert first != plots.attention_view(*view_inputs(1)).data
    assert first != plots.attention_view(*view_inputs(0), key="second copy").data


def test_attention_view_escapes_a_closing_script_tag_in_tokens():
    tokens, patterns, names = view_inputs()
    tokens[3] = "</script>"
    assert plots.attention_view(tokens, patterns, names).data.count("</script>") == 1


def test_attention_view_rejects_mismatched_shapes():
    tokens, patterns, names = view_inputs()
    with pytest.raises(ValueError, match=r"shape \(4, 10, 10\) but there are 9 tokens"):
        plots.attention_view(tokens[:9], patterns, names)
    with pytest.raises(ValueError, match=r"3 head_names for 4 heads"):
        plots.attention_view(tokens, patterns, names[:3])


def test_circuitsvis_bundle_path_points_at_the_shipped_bundle():
    path = plots.circuitsvis_bundle_path()
    assert path.is_file() and path.name == "iife.js"
    assert path.stat().st_size > 100_000


def test_circuit_figures_draw_every_role_and_label_heads():
    roles = {"S-inhibition": [(2, 1)], "name mover": [(3, 0), (3, 2)], "induction": []}
    fig = plots.circuit_diagram(roles, [("S-inhibition", "name mover"), ("name mover", "logits")], n_layers=4,
                                title="t")
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert {"L2H1", "L3H0", "L3H2", "logits", "not found"} <= texts
    scatter = plots.head_scatter(torch.rand(4, 3), torch.rand(4, 3), title="t", xlabel="x", ylabel="y",
                                 marked=[(1, 2)])
    assert "L1H2" in {t.get_text() for t in scatter.axes[0].texts}
    with pytest.raises(ValueError, match="both be"):
        plots.head_scatter(torch.rand(4, 3), torch.rand(3, 3), title="t", xlabel="x", ylabel="y")


FIGURE_SOURCES = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb")) + sorted(
    (Path(__file__).parents[1] / "src" / "helpers").rglob("*.py"))
FIGSIZE_WIDTH = re.compile(r"figsize=\(\s*([0-9.]+)")
FONTSIZE = re.compile(r"fontsize=([0-9.]+|\"[a-z-]+\"|'[a-z-]+')")


def figure_code(path: Path) -> str:
    if path.suffix == ".ipynb":
        notebook = nbformat.read(path, as_version=4)
        return "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    return path.read_text()


@pytest.mark.parametrize("path", FIGURE_SOURCES, ids=lambda p: p.name)
def test_no_figure_is_wider_than_the_column_or_has_text_below_the_minimum(path):
    """A literal figure width over the column makes the page shrink the figure (and its text) to fit."""
    code = figure_code(path)
    too_wide = [float(width) for width in FIGSIZE_WIDTH.findall(code) if float(width) > plots.COLUMN_INCHES]
    assert not too_wide, f"{path.name}: figsize widths {too_wide} in; use at most plots.COLUMN_INCHES"
    too_small = [size for size in FONTSIZE.findall(code) if not size.replace(".", "").isdigit()
                 or float(size) < plots.MIN_FONT_PT]
    assert not too_small, f"{path.name}: fontsize {too_small}; use plots.MIN_FONT_PT or larger (in points)"


def test_the_figure_source_check_catches_a_wide_figure_and_small_text():
    code = 'fig, ax = plt.subplots(figsize=(11, 5))\nax.set_title("t", fontsize=7)'
    assert [float(w) for w in FIGSIZE_WIDTH.findall(code)] == [11.0]
    assert FONTSIZE.findall(code) == ["7"]
    assert FONTSIZE.findall('ax.text(0, 0, "t", fontsize="small")') == ['"small"']


LONG = "a title long enough to be wider than any figure in the book's column, as some pages' titles are"


def _saved_width_inches(fig) -> float:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=plots.FIGURE_DPI, bbox_inches="tight")  # as the notebook saves it
    return Image.open(io.BytesIO(buffer.getvalue())).size[0] / plots.FIGURE_DPI


@pytest.mark.parametrize("draw", [
    lambda: plots.head_heatmap(torch.rand(30, 9), title=LONG, colorbar_label="score"),
    lambda: plots.score_vs_null(torch.rand(30, 9), torch.rand(30, 9), title=LONG, xlabel=LONG, threshold=0.5),
    lambda: plots.effect_vs_draws({"SmolLM2-135M": 1.0}, {"SmolLM2-135M": [0.1, 0.2]}, title=LONG, xlabel=LONG),
    lambda: plots.estimate_bars({"a": Estimate(0.5, 0.4, 0.6, 50, 0.95)}, title=LONG, ylabel="share"),
], ids=["head_heatmap", "score_vs_null", "effect_vs_draws", "estimate_bars"])
def test_a_long_title_or_label_never_widens_the_saved_figure(draw, close_figures):
    """The inline backend grows the image to hold a title wider than the figure; the page then shrinks it."""
    with plt.rc_context(plots.BOOK_STYLE):
        assert _saved_width_inches(draw()) <= plots.COLUMN_INCHES + 0.3


def test_fit_to_axes_wraps_long_text_and_keeps_short_text(close_figures):
    fig, ax = plt.subplots(figsize=(3, 2))
    assert plots.fit_to_axes(ax, "short", 11) == "short"
    wrapped = plots.fit_to_axes(ax, LONG, 11)
    assert "\n" in wrapped and wrapped.replace("\n", " ") == LONG
