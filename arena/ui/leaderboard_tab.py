"""The leaderboard tab: the ranking as plots first, then as a table."""

from __future__ import annotations

import gradio as gr

from arena import plots
from arena.service import ArenaService

COLUMNS = ["rank", "model", "rating", "95% CI", "elo", "votes", "win_rate"]


class LeaderboardTab:
    def __init__(self, service: ArenaService):
        self.service = service

    def build(self) -> None:
        self.summary = gr.Markdown(elem_id="leaderboard-summary")
        self.ratings_plot = gr.Plot(label="Ratings with 95% confidence intervals", elem_id="leaderboard-ratings")
        self.table = gr.Dataframe(headers=COLUMNS, interactive=False, elem_id="leaderboard-table", wrap=True)
        with gr.Row():
            self.win_fraction = gr.Plot(label="Win fraction (row beat column)")
            self.predicted = gr.Plot(label="Predicted win probability")
        self.battle_counts = gr.Plot(label="Battles per pair")
        self.refresh_button = gr.Button("Refresh", elem_id="leaderboard-refresh")
        self.refresh_button.click(self.refresh, None, self.outputs, api_name="leaderboard", api_visibility="undocumented")

    @property
    def outputs(self) -> list:
        return [self.summary, self.ratings_plot, self.table, self.win_fraction, self.predicted, self.battle_counts]

    def refresh(self) -> tuple:
        board = self.service.leaderboard()
        rows = [
            [r.rank, r.model, round(r.rating, 1), f"{r.ci_lower:.0f} – {r.ci_upper:.0f}", round(r.elo, 1), r.votes,
             f"{r.win_rate:.1%}"]
            for r in board.rows
        ]
        summary = (
            f"**{board.votes_used:,} anonymous votes** on {len(board.rows)} models. Bradley–Terry ratings (Elo scale) "
            f"with 95% bootstrap intervals ({board.bootstrap_rounds} rounds); models whose intervals overlap share a rank. "
            "Votes from side-by-side mode and votes on answers that revealed a model's name are not counted."
        )
        if board.notes:
            summary += "\n\n" + "\n".join(f"- {note}" for note in board.notes)
        return (
            summary,
            plots.ratings_with_intervals(board),
            gr.update(value=rows, headers=COLUMNS),
            plots.win_fraction_heatmap(board),
            plots.predicted_win_probability_heatmap(board),
            plots.battle_count_heatmap(board),
        )
