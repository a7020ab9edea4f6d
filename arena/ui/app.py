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
    return app


def page_theme() -> gr.themes.Base:
    """Gradio's default look in the system's fonts: its bundled bold face lacks letters (the "A" of
    "A is better" fell back to another font), and a web font would make every volunteer's browser ask
    a third party for it."""
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "Consolas", "monospace"])


# The panels' "clear" icon would blank one answer on the page only, with the vote still open for it.
PAGE_CSS = """
.arena-chat button[aria-label="Clear"] { display: none; }
/* The scrolling answers start below the floating "Model A/B" label, which otherwise covers their top line. */
.arena-chat .bubble-wrap { margin-top: 2.2rem; height: calc(100% - 2.2rem) !important; }
#data-notice, #data-notice * { font-size: 0.85rem !important; opacity: 0.85; }
@media (max-width: 640px) {
  .arena-chat { height: 170px !important; }
  #data-notice, #data-notice * { font-size: 0.75rem !important; }
  .vote-button { font-size: 0.8rem !important; padding: 6px 2px !important; min-height: 44px; align-self: stretch; }
  #leaderboard-table * { font-size: 0.7rem !important; }
  #leaderboard-table th, #leaderboard-table td { padding: 3px 4px !important; min-width: 0 !important; }
}
"""
