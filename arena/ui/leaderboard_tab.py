"""The leaderboard tab: the ranking as plots first, then as a table.

Every page load and every vote refreshes it, so the plots are drawn and
encoded once per leaderboard the service computes, not once per visitor:
encoding four figures costs about half a second of CPU.
"""

from __future__ import annotations

import html
import threading
import time

import gradio as gr

from arena import plots
from arena.reports import DISPLAY_HEADER, HEAD_TO_HEAD_HEADER, display_rows, head_to_head_rows
from arena.service import ArenaService
from arena.text import markdown_text
from arena.wording import counted


# Each plot's element id and what it shows, in words: its label, and its description for screen readers.
_WHERE_THE_NUMBERS_ARE = {"ratings": "the table below has the same numbers"}
PLOT_DESCRIPTIONS = {
    f"leaderboard-{figure.name}":
        f"{figure.description}; {_WHERE_THE_NUMBERS_ARE.get(figure.name, 'the head-to-head table below has the numbers')}."
    for figure in plots.FIGURES
}
# On phones each figure opens at its left edge, its title (centred in the figure) out of sight: a caption over it
# says what it shows. Hidden from screen readers, which read the image's description.
PHONE_CAPTIONS = {f"leaderboard-{figure.name}": f"{figure.kind}: {figure.shows}" for figure in plots.FIGURES}


# A column that shows a heatmap at its drawn width (inches at matplotlib's 100 dpi), with the block's padding.
_SIDE_BY_SIDE_MIN_WIDTH = round(plots.WIDTH_INCHES * 100) + 20  # px


def _plot(name: str) -> gr.Plot:
    """One of `plots.FIGURES`, with its phone caption above it."""
    elem_id = f"leaderboard-{name}"
    gr.HTML(f'<p aria-hidden="true">{html.escape(PHONE_CAPTIONS[elem_id])}</p>', padding=False,
            elem_classes=["arena-phone-caption"])
    # arena-figure: on phones shown as drawn, in a box that scrolls sideways (see arena/ui/page.css).
    return gr.Plot(label=PLOT_DESCRIPTIONS[elem_id], show_label=False, elem_id=elem_id, elem_classes=["arena-figure"])


class LeaderboardTab:
    def __init__(self, service: ArenaService):
        self.service = service
        self._rendered: tuple[object, tuple] | None = None  # (the leaderboard, what the components show)
        self._render_lock = threading.Lock()
        self.figures: dict[str, gr.Plot] = {}  # by `plots.FIGURES` name, in the order the outputs give them

    def build(self) -> None:
        # The figures carry their own titles: Gradio's label chips would cover them.
        self.summary = gr.Markdown(elem_id="leaderboard-summary")
        # Shown on phones only (see arena/ui/page.css), where the figures and the table are wider than the screen.
        gr.Markdown("Swipe the figures and the table sideways to see the rest of them.", elem_id="leaderboard-swipe")
        self.figures["ratings"] = _plot("ratings")
        # Tall enough for every row of a typical arena: a table scrolling inside the page hides its last models.
        self.table = gr.Dataframe(headers=list(DISPLAY_HEADER), interactive=False, elem_id="leaderboard-table",
                                  wrap=True, max_height=2400)
        # Side by side where both fit at a readable size (a 20-model heatmap's names are 6 px tall at half of a
        # 1280 px page), one above the other elsewhere.
        with gr.Row():
            with gr.Column(min_width=_SIDE_BY_SIDE_MIN_WIDTH):  # each figure with its caption
                self.figures["win-fraction"] = _plot("win-fraction")
            with gr.Column(min_width=_SIDE_BY_SIDE_MIN_WIDTH):
                self.figures["predicted"] = _plot("predicted")
        self.figures["battle-counts"] = _plot("battle-counts")
        placed, drawn = list(self.figures), [figure.name for figure in plots.FIGURES]
        if placed != drawn:  # a figure the export draws but the page would not show
            raise RuntimeError(f"the leaderboard tab places figures {placed}, plots.FIGURES draws {drawn}")
        with gr.Accordion("Head to head: the heatmaps' numbers", open=False, elem_id="leaderboard-head-to-head-box"):
            self.head_to_head = gr.Dataframe(headers=list(HEAD_TO_HEAD_HEADER), interactive=False,
                                             elem_id="leaderboard-head-to-head", wrap=True, max_height=600)
        self.refresh_button = gr.Button("Refresh", elem_id="leaderboard-refresh")
        self.refresh_button.click(self.refresh, None, self.outputs, api_name="leaderboard", api_visibility="undocumented")

    @property
    def outputs(self) -> list:
        ratings, *heatmaps = self.figures.values()
        return [self.summary, ratings, self.table, *heatmaps, self.head_to_head]

    def refresh(self) -> tuple:
        board = self.service.leaderboard()
        with self._render_lock:
            if self._rendered is None or self._rendered[0] is not board:
                self._rendered = (board, self._render(board))
            summary, ratings_plot, (header, rows), *heatmaps, pairs = self._rendered[1]
        # Fresh updates each time: Gradio takes the value out of an update dict it is given, so a cached
        # one would reach the next visitor without its rows.
        return (summary, ratings_plot, gr.update(value=rows, headers=header), *heatmaps,
                gr.update(value=pairs, headers=list(HEAD_TO_HEAD_HEADER)))

    def _render(self, board) -> tuple:
        named_counted = self.service.config.settings.count_named_votes
        kind = "" if named_counted else "anonymous "
        left_out = (
            "Votes on answers that revealed a model's name are not counted; side-by-side votes are."
            if named_counted
            else "Votes from side-by-side mode and votes on answers that revealed a model's name are not counted."
        )
        summary = (
            f"**{counted(board.votes_used, kind + 'vote')}** on {counted(len(board.rows), 'model')}. "
            "**Rating**: the Bradley–Terry fit of all counted votes (400 points more = 10:1 odds of winning), "
            f"with its 95% interval from {board.bootstrap_rounds} bootstrap rounds. **Rank**: 1 + the number of "
            "models (of the same group) whose whole interval lies above this one's, so close models share a rank "
            "and some numbers are skipped; a model without an interval has no rank. **Elo**: the online Elo "
            "replayed in vote order, as early arenas showed it; it depends on that order, the Rating does not. "
            + left_out
        )
        unrated = [name for name in self.service.model_names() if name not in board.models]
        if unrated:
            summary += f" Not rated yet (no counted votes): {markdown_text(', '.join(unrated))}."
        interval = self.service.config.settings.leaderboard_interval_s
        computed_at = self.service.leaderboard_computed_at(board)
        if interval > 0 and computed_at is not None:
            # A crowd's votes are batched into one refit per interval: say so, or a fresh vote seems lost.
            clock = time.strftime("%H:%M:%S UTC", time.gmtime(computed_at))
            summary += f" Computed at {clock}; votes cast since then appear within {interval:g} s (press Refresh)."
        if board.notes:
            summary += "\n\n" + "\n".join(f"- {markdown_text(note)}" for note in board.notes)
        # Encoded once per leaderboard, reused as is.
        ratings, *heatmaps = [self.figures[figure.name].postprocess(figure.draw(board)) for figure in plots.FIGURES]
        return summary, ratings, display_rows(board), *heatmaps, head_to_head_rows(board)
