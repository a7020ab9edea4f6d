import dataclasses
import io
import json
import warnings
from xml.etree import ElementTree

import numpy as np
import pytest
from matplotlib.figure import Figure

from arena import plots
from arena.leaderboard import compute_leaderboard
from tests.conftest import shared_file

FIGURES = [
    plots.ratings_with_intervals,
    plots.win_fraction_heatmap,
    plots.battle_count_heatmap,
    plots.predicted_win_probability_heatmap,
]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def texts(figure: Figure) -> str:
    return " ".join(text.get_text() for text in figure.findobj(lambda artist: hasattr(artist, "get_text")))


@pytest.fixture(scope="module")
def real_board():
    path = shared_file("chatbot_arena_2023_battles.jsonl")
    votes = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return compute_leaderboard(votes, bootstrap_rounds=100, seed=0)


@pytest.mark.parametrize("draw", FIGURES, ids=lambda draw: draw.__name__)
def test_figures_for_real_data_render_with_titles_and_names(real_board, draw):
    figure = draw(real_board)
    assert isinstance(figure, Figure)
    axes = figure.axes[0]
    assert axes.get_title() and axes.get_xlabel()
    labels = " ".join(label.get_text() for label in axes.get_yticklabels())
    assert "gpt-4" in labels and "llama-13b" in labels
    image = png(figure)
    assert image.startswith(PNG_MAGIC)
    assert 850 <= figure.get_figwidth() * figure.dpi <= 950


@pytest.mark.parametrize("draw", FIGURES, ids=lambda draw: draw.__name__)
def test_empty_leaderboard_says_no_votes_yet(draw):
    figure = draw(compute_leaderboard([]))
    assert "No votes yet" in texts(figure)
    assert png(figure).startswith(PNG_MAGIC)


HEATMAPS = FIGURES[1:]


@pytest.mark.parametrize("draw", HEATMAPS, ids=lambda draw: draw.__name__)
def test_heatmaps_say_rows_are_each_model_and_columns_its_opponent(real_board, draw):
    axes = draw(real_board).axes[0]
    assert (axes.get_ylabel(), axes.get_xlabel()) == ("Model", "Opponent")
    assert "model A" not in axes.get_title() and "model B" not in axes.get_title()
    # ... and they are: cell (row, column) holds the row model's number against the column model, in board order.
    assert [label.get_text() for label in axes.get_yticklabels()] == real_board.models
    assert [label.get_text() for label in axes.get_xticklabels()] == real_board.models
    shown = axes.images[0].get_array()
    expected = {plots.win_fraction_heatmap: real_board.win_fraction, plots.battle_count_heatmap: real_board.battle_counts,
                plots.predicted_win_probability_heatmap: real_board.predicted_win_probability}[draw].astype(float)
    visible = ~np.ma.getmaskarray(shown)
    assert np.array_equal(visible, np.isfinite(expected) & ~np.eye(len(expected), dtype=bool))
    assert np.allclose(np.ma.getdata(shown)[visible], expected[visible])
    if draw is not plots.battle_count_heatmap:  # counts are symmetric; the others would not pass transposed
        assert not np.allclose(expected[visible], expected.T[visible])


def test_ratings_plot_marks_models_whose_interval_could_not_be_measured():
    votes = [{"model_a": "solo", "model_b": "other", "winner": "model_a"}]
    votes += [{"model_a": a, "model_b": b, "winner": "model_a"} for a, b in [("x", "y"), ("y", "x")] * 10]
    board = compute_leaderboard(votes, bootstrap_rounds=50, seed=0)
    figure = plots.ratings_with_intervals(board)
    assert png(figure).startswith(PNG_MAGIC)
    # A filled dot is drawn only where an interval was measured: the unmeasured ones stay hollow.
    axes = figure.axes[0]
    filled = {round(float(y)) for line in axes.lines if line.get_markerfacecolor() != "white"
              for y in line.get_ydata() if line.get_marker() == "o"}
    hollow = {round(float(y)) for line in axes.lines if line.get_markerfacecolor() == "white" for y in line.get_ydata()}
    unmeasured = {index for index, row in enumerate(board.rows) if row.ci_lower is None}
    assert unmeasured and not filled & unmeasured and hollow == unmeasured
    labels = [label.get_text() for label in axes.get_yticklabels()]
    assert all(f"{board.rows[index].model} (no rank)" in labels[index] for index in unmeasured)


def test_a_rating_far_from_every_interval_is_drawn_at_the_edge_with_its_number():
    """One win gives 1681 and 319 (the `solo` pair) beside intervals around 1000: an axis reaching both
    squeezed those intervals into a sliver."""
    votes = [{"model_a": "solo", "model_b": "other", "winner": "model_a"}, {"model_a": "near", "model_b": "x", "winner": "tie"}]
    votes += [{"model_a": a, "model_b": b, "winner": "model_a"} for a, b in [("x", "y"), ("y", "x")] * 10]
    board = compute_leaderboard(votes, bootstrap_rounds=50, seed=0)
    rating = {row.model: row.rating for row in board.rows}
    axes = plots.ratings_with_intervals(board).axes[0]
    low, high = axes.get_xlim()
    assert rating["solo"] > high and rating["other"] < low
    assert all(low < bound < high for row in board.rows if row.ci_lower is not None for bound in (row.ci_lower, row.ci_upper))
    assert low < rating["near"] < high  # unmeasured but close to the others: drawn where it is, hollow
    written = {text.get_text() for text in axes.texts}
    assert {f"{rating['solo']:.0f}", f"{rating['other']:.0f}"} <= written
    legend = texts(axes.figure)
    assert "no interval, off the scale (its rating beside it)" in legend
    assert "no interval measured (the leaderboard's notes say why)" in legend


@pytest.mark.parametrize("rounds", [200, 0], ids=["bootstrap", "no bootstrap"])
def test_after_one_vote_the_predicted_heatmap_shows_no_odds_and_says_why(rounds):
    """The ratings of one vote (about 1681 and 319) are the ridge's: no "1.00" and "0.00", no colour."""
    board = compute_leaderboard([{"model_a": "x", "model_b": "y", "winner": "model_a"}], bootstrap_rounds=rounds, seed=0)
    axes = plots.predicted_win_probability_heatmap(board).axes[0]
    assert np.ma.getmaskarray(axes.images[0].get_array()).all()
    assert [text.get_text() for text in axes.texts] == ["–", "–"]  # marked, as the head-to-head table has it
    assert "grey: too few votes to predict" in axes.get_title()


@pytest.mark.parametrize("pairs", [1, 3, 10])
def test_the_battle_count_colour_bar_counts_whole_battles(pairs):
    votes = [{"model_a": "x", "model_b": "y", "winner": "model_a"}] * pairs
    votes += [{"model_a": "y", "model_b": "z", "winner": "tie"}]
    figure = plots.battle_count_heatmap(compute_leaderboard(votes, bootstrap_rounds=0))
    png(figure)  # the ticks are placed as it is drawn
    colour_bar = figure.axes[1]
    low, high = colour_bar.get_ylim()
    labels = [label.get_text() for label, tick in zip(colour_bar.get_yticklabels(), colour_bar.get_yticks())
              if low <= tick <= high]
    assert len(labels) >= 2 and all(label.isdigit() for label in labels), labels  # not 0.2, 0.4 … of a battle


def test_small_heatmaps_are_annotated():
    pairs = [("x", "y"), ("y", "z"), ("z", "x"), ("x", "z")]
    votes = [{"model_a": a, "model_b": b, "winner": "model_a"} for a, b in pairs]
    small = plots.battle_count_heatmap(compute_leaderboard(votes, bootstrap_rounds=0))
    assert {"1", "2"} <= set(texts(small).split())


def test_large_heatmaps_are_not_annotated(real_board):
    large = plots.win_fraction_heatmap(real_board)
    assert not any(text.get_text().startswith("0.") for text in large.axes[0].texts)


def test_model_names_are_drawn_as_written():
    """A name is text, not a formula: "$…$" stays as written and a lone "$^{" does not break the figure."""
    names = ("cost $5 / $10 model", "odd$^{$name", "<tag> & co")
    votes = [{"model_a": a, "model_b": b, "winner": w} for a, b in zip(names, names[1:] + names[:1])
             for w in ("model_a", "model_b", "tie")] * 4
    board = compute_leaderboard(votes, bootstrap_rounds=50, seed=0)
    for figure in plots.FIGURES:
        svg = plots.as_svg(figure.draw(board))
        shown = " ".join(element.text or "" for element in ElementTree.fromstring(svg).iter())  # well-formed XML
        assert all(name in shown for name in names), figure.name


def test_exported_figures_are_the_same_bytes_for_the_same_leaderboard(real_board):
    for figure in plots.FIGURES:
        first, second = (plots.as_svg(figure.draw(real_board)) for _ in range(2))
        assert first == second, figure.name
        assert first.lstrip().startswith("<?xml") and "gpt-4" in first  # text stays text


def test_names_of_the_longest_allowed_length_leave_the_figures_room():
    """Names may run to 200 characters; labels keep their start and end, so versions stay apart."""
    names = ["x" * 196 + "-v1", "x" * 196 + "-v2", "short"]
    votes = [{"model_a": a, "model_b": b, "winner": w} for a in names for b in names if a != b
             for w in ("model_a", "model_b", "tie")] * 3
    board = compute_leaderboard(votes, bootstrap_rounds=50, seed=0)
    for figure in plots.FIGURES:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "constrained_layout not applied because axes sizes collapsed to zero"
            drawn = figure.draw(board)
            png(drawn)
        labels = [label.get_text() for label in drawn.axes[0].get_yticklabels()]
        assert len(set(labels)) == 3 and max(map(len, labels)) <= 45 and any(label.endswith("-v2") for label in labels)


def test_groups_never_compared_are_set_apart_on_the_ratings_plot(real_board):
    """Three newcomers who only met each other rate about 1000 among themselves: beside the 2023 models,
    unmarked, they read as their equals."""
    votes = [json.loads(line) for line in shared_file("chatbot_arena_2023_battles.jsonl").read_text().splitlines()[:2000]]
    votes += [{"model_a": a, "model_b": b, "winner": w} for a, b, w in
              [("new-a", "new-b", "model_a"), ("new-b", "new-c", "model_a"), ("new-c", "new-a", "model_a"),
               ("new-b", "new-a", "model_a"), ("new-c", "new-b", "model_a"), ("new-a", "new-c", "model_a")] * 8]
    board = compute_leaderboard(votes, bootstrap_rounds=50, seed=0)
    axes = plots.ratings_with_intervals(board).axes[0]
    first_new = next(index for index, row in enumerate(board.rows) if row.group == 2)
    assert first_new > 0 and all(row.group == 2 for row in board.rows[first_new:])
    dashed = [line.get_ydata()[0] for line in axes.lines if line.get_linestyle() == "--" and len(line.get_ydata())]
    assert dashed == [first_new - 0.5]
    labels = [label.get_text() for label in axes.get_yticklabels()]
    assert all(label.endswith(", group 2") for label in labels[first_new:]) and "group" not in " ".join(labels[:first_new])
    assert "between groups never compared" in texts(axes.figure)
    assert "group" not in texts(plots.ratings_with_intervals(real_board))  # one group: nothing added


def test_without_a_bootstrap_the_ratings_plot_says_so_and_marks_no_model_apart(real_board):
    board = compute_leaderboard([json.loads(line) for line in
                                 shared_file("chatbot_arena_2023_battles.jsonl").read_text().splitlines()[:3000]],
                                bootstrap_rounds=0)
    axes = plots.ratings_with_intervals(board).axes[0]
    assert axes.get_title() == "Model ratings (no bootstrap, so no intervals)"
    assert not any(line.get_markerfacecolor() == "white" for line in axes.lines)
    assert "no interval measured" not in texts(axes.figure) and "off the scale" not in texts(axes.figure)


def test_equal_ratings_get_an_axis_of_ordinary_width_and_a_note_on_why_they_have_no_interval():
    votes = [{"model_a": a, "model_b": b, "winner": "tie"} for a, b in [("p", "q"), ("q", "r"), ("r", "p")] * 10]
    board = compute_leaderboard(votes, bootstrap_rounds=50, seed=0)
    low, high = plots.ratings_with_intervals(board).axes[0].get_xlim()
    assert high - low >= 50
    assert any("every resample of the votes rates them the same" in note and "p, q, r" in note for note in board.notes)
    # One resample rates every model alike: too few to say it of the votes.
    votes = [{"model_a": a, "model_b": b, "winner": "model_a"} for a, b in [("x", "y"), ("y", "x")] * 10]
    assert not any("every resample" in note for note in compute_leaderboard(votes, bootstrap_rounds=1, seed=0).notes)


def test_a_heatmap_title_explaining_grey_cells_fits_beside_a_long_name():
    """A newcomer with a long name narrows the heatmap; the title's second line ran past the figure's edge."""
    votes = [json.loads(line) for line in shared_file("chatbot_arena_2023_battles.jsonl").read_text().splitlines()]
    votes += [{"model_a": "meta-llama/Llama-2-70b-chat-hf-newcomer", "model_b": "gpt-4", "winner": "model_a"}] * 3
    figure = plots.predicted_win_probability_heatmap(compute_leaderboard(votes, bootstrap_rounds=50, seed=0))
    title = figure.axes[0].title
    assert "never compared" in title.get_text()
    png(figure)  # laid out as drawn
    box = title.get_window_extent()
    assert 0 <= box.x0 and box.x1 <= figure.bbox.width, (box, figure.bbox.width)
    # Its label is shortened more than the ratings plot's: running along two sides, it took a third of the square.
    assert figure.axes[0].get_window_extent().width > 0.45 * figure.bbox.width  # 531 px without it, 352 before


def test_shortened_names_never_give_two_models_one_label():
    names = ["Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4", "Qwen/Qwen2.5-72B-Instruct-GPTQ-Int4", "short"]
    votes = [{"model_a": a, "model_b": b, "winner": "model_a"} for a in names for b in names if a != b] * 3
    board = compute_leaderboard(votes, bootstrap_rounds=50, seed=0)
    for figure in plots.FIGURES:
        labels = [label.get_text() for label in figure.draw(board).axes[0].get_yticklabels()]
        assert len(set(labels)) == 3, (figure.name, labels)


@pytest.mark.parametrize("rounds", [50, 0])
def test_a_rating_the_fit_could_not_give_leaves_the_ratings_plot_drawable(rounds):
    votes = [{"model_a": a, "model_b": b, "winner": "model_a"} for a, b in [("x", "y"), ("y", "x"), ("x", "z"), ("z", "x")] * 10]
    board = compute_leaderboard(votes, bootstrap_rounds=rounds, seed=0)
    broken = dataclasses.replace(board.rows[0], rating=float("nan"), ci_lower=None, ci_upper=None)
    board = dataclasses.replace(board, rows=[broken, *board.rows[1:]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figure = plots.ratings_with_intervals(board)
        png(figure)
    low, high = figure.axes[0].get_xlim()
    assert np.isfinite(low) and np.isfinite(high)
