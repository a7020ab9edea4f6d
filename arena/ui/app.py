"""Assembling the page: three tabs over one `ArenaService`."""

from __future__ import annotations

import gradio as gr

from arena.battle import Mode
from arena.service import ArenaService
from arena.ui.duel_panel import DuelPanel
from arena.ui.leaderboard_tab import LeaderboardTab


def build_app(service: ArenaService) -> gr.Blocks:
    settings = service.config.settings
    with gr.Blocks(title=settings.title, analytics_enabled=False) as app:
        gr.Markdown(f"# {settings.title}")
        loading = gr.Markdown(service.loading_message(), elem_id="loading-banner")
        leaderboard = LeaderboardTab(service)
        panels = []
        with gr.Tabs():
            with gr.Tab("Arena (battle)", id="battle", elem_id="battle-tab"):
                panels.append(DuelPanel(service, Mode.ANONYMOUS, "battle", settings.max_concurrent_battles))
                panels[-1].build()
            with gr.Tab("Side by side", id="side-by-side"):
                panels.append(DuelPanel(service, Mode.NAMED, "named", settings.max_concurrent_battles))
                panels[-1].build()
            with gr.Tab("Leaderboard", id="leaderboard") as leaderboard_tab:
                leaderboard.build()
        leaderboard_tab.select(leaderboard.refresh, None, leaderboard.outputs, api_visibility="private")
        for panel in panels:
            for event in panel.vote_events:
                event.then(leaderboard.refresh, None, leaderboard.outputs, api_visibility="private")
        app.load(leaderboard.refresh, None, leaderboard.outputs, api_visibility="private")
        pickers = [picker for panel in panels for picker in panel.pickers]
        idle_outputs = [component for panel in panels for component in panel.idle_outputs]

        def idle_state(*chosen: str | None) -> list:
            updates, start = [], 0
            for panel in panels:
                updates += panel.idle_state(*chosen[start:start + len(panel.pickers)])
                start += len(panel.pickers)
            return updates

        app.load(idle_state, pickers, idle_outputs, api_visibility="private")

        def poll_loading(*chosen: str | None) -> list:
            """While models load, the banner and the panels poll; they settle once the roster is known."""
            ready = service.ready
            return [service.loading_message(), gr.Timer(active=not ready), *idle_state(*chosen)]

        timer = gr.Timer(2.0, active=not service.ready)
        timer.tick(poll_loading, pickers, [loading, timer, *idle_outputs], api_visibility="private")
    return app
