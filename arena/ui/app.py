"""Assembling the page: three tabs over one `ArenaService`."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from arena.battle import Mode
from arena.service import ArenaService
from arena.ui.duel_panel import DuelPanel
from arena.ui.leaderboard_tab import PLOT_DESCRIPTIONS, LeaderboardTab
from arena.ui.look import page_script


@dataclass(frozen=True)
class Page:
    blocks: gr.Blocks
    script: str  # for `launch(js=...)`: Gradio 6 takes a page's script at launch, not with its blocks


def build_app(service: ArenaService) -> Page:
    settings = service.config.settings
    with gr.Blocks(title=settings.title, analytics_enabled=False) as app:
        gr.Markdown(f"# {settings.title}")
        if settings.notice.strip():
            gr.Markdown(settings.notice, elem_id="data-notice")
        # The page is built once, while the models load, and shown for days after: it starts as a ready
        # page, and each page load fills in the news of that moment (poll_loading below).
        loading = gr.Markdown("", elem_id="loading-banner")
        leaderboard = LeaderboardTab(service)
        panels = []
        with gr.Tabs():
            with gr.Tab("Battle", id="battle", elem_id="battle-tab"):
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

        battles = [panel.battle_id for panel in panels]

        def idle_state(*values) -> list:
            """Each panel's idle status and pickers; `values` are the panels' battle ids, then every picker."""
            updates, start = [], len(panels)
            for panel, battle_id in zip(panels, values[:len(panels)]):
                updates += panel.idle_state(battle_id, *values[start:start + len(panel.pickers)])
                start += len(panel.pickers)
            return updates

        def poll_loading(*values) -> list:
            """While models load, the banner and the panels poll; they settle once the roster is known."""
            return [service.loading_message(), gr.Timer(active=not service.ready), *idle_state(*values)]

        timer = gr.Timer(2.0, active=not service.ready)  # the page is built before the models load
        for trigger in (app.load, timer.tick):  # quietly: no progress timer over the status line
            trigger(poll_loading, [*battles, *pickers], [loading, timer, *idle_outputs], api_visibility="private",
                    show_progress="hidden")
    return Page(app, page_script([panel.page_parts for panel in panels], PLOT_DESCRIPTIONS))
