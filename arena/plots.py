"""Leaderboard figures for the UI and for reports.

Built on `matplotlib.figure.Figure` rather than pyplot: no global figure state,
so concurrent requests in the web app cannot draw into each other's figures,
and nothing needs a display.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from matplotlib import colormaps, rc_context
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from arena.leaderboard import Leaderboard
from arena.reports import RenderedFigure
from arena.wording import counted

WIDTH_INCHES = 9.0  # about 900 px at the default 100 dpi
_ANNOTATE_UP_TO = 15  # models; beyond this cell labels get unreadable
# Model names drawn as written: matplotlib would read "$...$" in one as a formula, and fail on a lone "$^{".
_AS_WRITTEN = {"parse_math": False}
# Names may run to 200 characters; a label that long leaves the plot no room. The tables give them whole.
_LABEL_CHARACTERS = 40
# A heatmap's names run along two sides of a square, so each character narrows it twice: one name of 40
# took a third off a 20-model heatmap (531 px wide, 352 with it).
_HEATMAP_LABEL_CHARACTERS = 28


def _label(name: str, limit: int) -> str:
    """The name, or its start and end around an ellipsis: versions often differ only at the end."""
    if len(name) <= limit:
        return name
    head = (limit - 1) // 2
    return name[:head] + "…" + name[-(limit - 1 - head):]


def _labels(names: list[str], limit: int) -> list[str]:
    """Each name shortened to `limit`, or kept longer where that would give two models one label
    (Qwen2.5-7B-Instruct-GPTQ-Int4 and its 72B alike at 28 characters)."""
    labels = [_label(name, limit) for name in names]
    while len(set(labels)) < len(labels) and limit < max(map(len, names)):
        limit += 4
        clashing = {label for label in labels if labels.count(label) > 1}
        labels = [_label(name, limit) if label in clashing else label for name, label in zip(names, labels)]
    return labels


def _label_size(models: int) -> float:
    """Heatmap tick label size that still fits one name per cell for up to ~60 models."""
    return float(np.clip(14 - models / 6, 6, 10))


def _no_votes(title: str) -> Figure:
    figure = Figure(figsize=(WIDTH_INCHES, 3), layout="constrained")
    axes = figure.add_subplot()
    axes.set_axis_off()
    axes.set_title(title)
    axes.text(0.5, 0.5, "No votes yet", ha="center", va="center", fontsize=16, color="dimgray",
              transform=axes.transAxes)
    return figure


def ratings_with_intervals(leaderboard: Leaderboard) -> Figure:
    """Each model's rating with its 95% interval, best at the top; a hollow dot where none was measured, or
    an arrow at the edge, with the rating written, when that is far beyond the intervals (`_rating_axis`);
    dashed lines between groups of models never compared with each other."""
    if not leaderboard.rows:
        return _no_votes("Model ratings with 95% confidence intervals")
    if leaderboard.bootstrap_rounds:
        title = (f"Model ratings with 95% confidence intervals\n({counted(leaderboard.bootstrap_rounds, 'bootstrap round')} "
                 f"over {counted(leaderboard.votes_used, 'vote')})")
    else:
        title = "Model ratings (no bootstrap, so no intervals)"
    rows = leaderboard.rows
    count = len(rows)
    figure = Figure(figsize=(WIDTH_INCHES, max(3.0, 1.5 + 0.22 * count)), layout="constrained")
    axes = figure.add_subplot()
    positions = np.arange(count)
    ratings = np.array([row.rating for row in rows])
    # NaN where no interval was measured.
    lower = np.array([np.nan if row.ci_lower is None else row.ci_lower for row in rows])
    upper = np.array([np.nan if row.ci_upper is None else row.ci_upper for row in rows])
    # Without a bootstrap no model has an interval, and none is drawn apart for lacking one.
    unmeasured = np.isnan(lower) if leaderboard.bootstrap_rounds else np.zeros(count, dtype=bool)
    measured = ~unmeasured  # drawn apart: errorbar's filled dot would cover the hollow one
    axes.errorbar(ratings[measured], positions[measured],
                  xerr=np.nan_to_num(np.clip([ratings[measured] - lower[measured], upper[measured] - ratings[measured]], 0, None)),
                  fmt="o", color="tab:blue", ecolor="tab:gray", elinewidth=1.5, capsize=3, markersize=5)
    (low, high), pad = _rating_axis(ratings, lower, upper)
    _mark_unmeasured(axes, ratings[unmeasured], positions[unmeasured], low, high, pad)
    several_groups = _mark_groups(axes, [row.group for row in rows])
    if axes.get_legend_handles_labels()[0]:  # below the plot: inside it, it could hide a model's row
        figure.legend(loc="outside lower center", fontsize=8, ncols=2, frameon=False)
    axes.set_xlim(low - pad, high + pad)
    names = _labels([row.model for row in rows], _LABEL_CHARACTERS)
    axes.set_yticks(positions, [_rating_label(row, name, several_groups) for row, name in zip(rows, names)],
                    fontsize=9, **_AS_WRITTEN)
    axes.set_ylim(count - 0.5, -0.5)  # best at the top, no empty bands
    axes.grid(axis="x", alpha=0.3)
    axes.set_xlabel("Rating (Elo scale; +400 points = 10:1 odds of winning)")
    axes.set_title(title)
    return figure


def _mark_unmeasured(axes, ratings: np.ndarray, positions: np.ndarray, low: float, high: float, pad: float) -> None:
    """Hollow dots for ratings without an interval; those beyond the axis as arrows at its edge, numbered."""
    inside = (ratings >= low) & (ratings <= high)
    if inside.any():
        axes.plot(ratings[inside], positions[inside], "o", color="tab:blue", markerfacecolor="white",
                  markersize=5, label="no interval measured (the leaderboard's notes say why)")
    off_scale = "no interval, off the scale (its rating beside it)"
    for off, edge, marker, align in ((ratings < low, low - pad / 2, "<", "left"), (ratings > high, high + pad / 2, ">", "right")):
        if not off.any():
            continue
        axes.plot(np.full(off.sum(), edge), positions[off], marker, color="tab:blue", markerfacecolor="white",
                  markersize=6, label=off_scale)
        off_scale = None  # one legend entry for both edges
        for rating, position in zip(ratings[off], positions[off]):
            axes.annotate(f"{rating:.0f}", (edge, position), xytext=(7 if align == "left" else -7, 0),
                          textcoords="offset points", ha=align, va="center", fontsize=8, color="tab:blue")


def _mark_groups(axes, groups: list[int]) -> bool:
    """A dashed line where one group of compared models ends and the next begins; whether there are several."""
    for position in range(1, len(groups)):
        if groups[position] != groups[position - 1]:
            axes.axhline(position - 0.5, color="tab:gray", linestyle="--", linewidth=1)
    several = len(set(groups)) > 1
    if several:
        axes.plot([], [], color="tab:gray", linestyle="--", linewidth=1,
                  label="between groups never compared: ratings compare only within a group")
    return several


def _rating_label(row, name: str, several_groups: bool) -> str:
    label = f"{name} (no rank)" if row.rank is None else f"{row.rank}. {name}"
    return f"{label}, group {row.group}" if several_groups and row.group > 1 else label


def _rating_axis(ratings: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> tuple[tuple[float, float], float]:
    """The ratings the axis spans, and the margin around them: every measured interval, and unmeasured
    ratings near them.

    A newcomer's first few votes can give it a rating far from everyone's (1766 after three wins over a
    model it alone has met); stretched to reach it, the axis squeezed every interval into a sliver. Such a
    rating is drawn at the edge with its number instead.
    """
    finite = np.isfinite(ratings)  # a rating the fit could not give is drawn nowhere
    measured, unmeasured = finite & ~np.isnan(lower), finite & np.isnan(lower)
    if not measured.any():
        span = (ratings[finite].min(), ratings[finite].max()) if finite.any() else (1000.0, 1000.0)
    else:
        low, high = min(lower[measured].min(), ratings[measured].min()), max(upper[measured].max(), ratings[measured].max())
        reach = max(high - low, 50.0) / 2  # unmeasured ratings within half the measured span widen the axis
        near = ratings[unmeasured][(ratings[unmeasured] >= low - reach) & (ratings[unmeasured] <= high + reach)]
        span = (np.append(near, low).min(), np.append(near, high).max())
    middle, reach = (span[0] + span[1]) / 2, max(span[1] - span[0], 50.0) / 2  # equal ratings: not a 1-point axis
    return (middle - reach, middle + reach), reach * 0.12


def _heatmap(
    leaderboard: Leaderboard, values: np.ndarray, *, title: str, colour_label: str, cmap: str,
    vmin: float | None, vmax: float | None, cell_format: str, blank: str | None = None, counts: bool = False,
) -> Figure:
    """`blank`: what a grey cell off the diagonal means, said under the title when there is one; `counts`:
    whole numbers on the colour bar."""
    if not leaderboard.rows:
        return _no_votes(title)
    off_diagonal = ~np.eye(len(values), dtype=bool)
    blank_cells = ~np.isfinite(values) & off_diagonal
    if blank and blank_cells.any():  # in lines short enough for the axes a long model name narrows
        title += "\n" + "\n".join(textwrap.wrap(f"({blank})", 60))
    models = _labels(leaderboard.models, _HEATMAP_LABEL_CHARACTERS)
    count = len(models)
    figure = Figure(figsize=(WIDTH_INCHES, WIDTH_INCHES * 0.85), layout="constrained")
    axes = figure.add_subplot()
    colours = colormaps[cmap].with_extremes(bad="#d4d4d4")
    image = axes.imshow(np.ma.masked_invalid(values), cmap=colours, vmin=vmin, vmax=vmax, aspect="equal",
                        interpolation="nearest")
    size = _label_size(count)
    axes.set_xticks(np.arange(count), models, rotation=90, fontsize=size, **_AS_WRITTEN)
    axes.set_yticks(np.arange(count), models, fontsize=size, **_AS_WRITTEN)
    axes.set_xlabel("Opponent")
    axes.set_ylabel("Model")
    axes.set_title(title)
    figure.colorbar(image, ax=axes, label=colour_label, shrink=0.8,
                    ticks=MaxNLocator(integer=True) if counts else None)  # no "0.5 battles"
    if count <= _ANNOTATE_UP_TO:
        for (row, column), value in np.ndenumerate(values):
            if blank_cells[row, column]:  # as the head-to-head table has it: nothing to show, not a lost number
                axes.text(column, row, "–", ha="center", va="center", fontsize=size - 1, color="black")
            elif np.isfinite(value):
                red, green, blue, _ = image.cmap(image.norm(value))
                dark_cell = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
                axes.text(column, row, format(value, cell_format), ha="center", va="center", fontsize=size - 1,
                          color="white" if dark_cell else "black")
    return figure


def win_fraction_heatmap(leaderboard: Leaderboard) -> Figure:
    """Observed share of battles won by the row model (ties count half); grey where a pair never met."""
    return _heatmap(
        leaderboard, leaderboard.win_fraction, title="Observed win fraction against each opponent",
        colour_label="Share of battles won (ties count half)", cmap="RdBu", vmin=0.0, vmax=1.0, cell_format=".2f",
        blank="grey: never met",
    )


def battle_count_heatmap(leaderboard: Leaderboard) -> Figure:
    """How many battles each pair had: shows where the ratings rest on few votes."""
    counts = leaderboard.battle_counts.astype(float)
    counts[np.eye(len(counts), dtype=bool)] = np.nan
    return _heatmap(
        leaderboard, counts, title="Number of battles per model pair", colour_label="Battles",
        cmap="Blues", vmin=0.0, vmax=None, cell_format=".0f", counts=True,
    )


def predicted_win_probability_heatmap(leaderboard: Leaderboard) -> Figure:
    """Win probability the ratings predict for the row model, to compare with the observed fractions; grey
    where the ratings cannot say (see `Leaderboard`), and the figure says why."""
    return _heatmap(
        leaderboard, leaderboard.predicted_win_probability,
        title="Predicted chance of beating each opponent", colour_label="Predicted win probability",
        cmap="RdBu", vmin=0.0, vmax=1.0, cell_format=".2f",
        blank="grey: too few votes to predict (a model without an interval), or never compared",
    )


@dataclass(frozen=True)
class LeaderboardFigure:
    """One of the leaderboard's figures, with what it shows in words: the page's description of it for
    screen readers and an export's alt text say the same."""

    name: str  # the page's element id is leaderboard-<name>, an export's file <name>.svg
    kind: str  # "Plot" or "Heatmap"
    shows: str
    draw: Callable[[Leaderboard], Figure]

    @property
    def description(self) -> str:
        return f"{self.kind} of {self.shows}"


FIGURES = (
    LeaderboardFigure("ratings", "Plot", "each model's rating with its 95% confidence interval", ratings_with_intervals),
    LeaderboardFigure("win-fraction", "Heatmap", "the fraction of their battles each row's model won against each "
                      "column's model", win_fraction_heatmap),
    LeaderboardFigure("predicted", "Heatmap", "the chance the ratings give each row's model of beating each column's "
                      "model", predicted_win_probability_heatmap),
    LeaderboardFigure("battle-counts", "Heatmap", "the number of battles between each two models", battle_count_heatmap),
)


def as_svg(figure: Figure) -> str:
    """The figure as SVG text: sharp at any size, and the same bytes for the same leaderboard (no date inside)."""
    buffer = io.StringIO()
    # Text stays text (searchable, read aloud, smaller), and element ids come from a fixed salt, not a random one.
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "arena"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()


def rendered_figures(board: Leaderboard) -> list[RenderedFigure]:
    """Every figure of `FIGURES` as an export writes it (`reports.write_exports`): SVG, named and described."""
    return [RenderedFigure(f"{figure.name}.svg", figure.description, as_svg(figure.draw(board))) for figure in FIGURES]
