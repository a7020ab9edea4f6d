"""The leaderboard tab over a running server: real imported votes plus a fresh one."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys

import pytest
from gradio_client import Client
from PIL import Image

from arena.battle import Mode
from tests.conftest import ROOT, SHARED_DATA, shared_file

ARENA_2023 = SHARED_DATA / "chatbot_arena_2023_battles.jsonl"
MODELS = """
    settings: {sampling: uniform, leaderboard_interval_s: 0}
    models:
      - {name: lark-model, backend: scripted, script: "reply: One answer."}
      - {name: wren-model, backend: scripted, script: "reply: Another answer."}
"""


def image_of(plot: dict) -> Image.Image:
    assert plot["type"] == "matplotlib"
    header, encoded = plot["plot"].split(",", 1)
    assert header.startswith("data:image/") and header.endswith(";base64")
    return Image.open(io.BytesIO(base64.b64decode(encoded)))


def table_of(outputs) -> list[list]:
    summary, ratings_plot, table, *heatmaps, head_to_head = outputs
    rows = table["value"]["data"]
    # Plots are rendered, not just the table: decodable figures about 900 px wide (plots.WIDTH_INCHES at 100 dpi),
    # the ratings plot one line (0.22 in) per model listed in the table, not a "No votes yet" placeholder.
    ratings, *maps = [image_of(plot) for plot in (ratings_plot, *heatmaps)]
    assert len(maps) == 3 and all(850 <= image.width <= 950 for image in (ratings, *maps))
    assert ratings.height == pytest.approx(100 * (1.5 + 0.22 * len(rows)), abs=2)
    # The heatmaps' numbers as a table: every pair once, the better-rated model first.
    pairs = head_to_head["value"]["data"]
    assert len(pairs) == len(rows) * (len(rows) - 1) // 2
    rank_of = {row[1]: place for place, row in enumerate(rows)}
    assert all(rank_of[model] < rank_of[opponent] for model, opponent, *_ in pairs)
    return rows


def pairs_of(outputs) -> dict[tuple[str, str], list]:
    return {(model, opponent): numbers for model, opponent, *numbers in outputs[-1]["value"]["data"]}


def test_leaderboard_shows_imported_votes_and_moves_after_a_vote(start_arena, tmp_path):
    shared_file(ARENA_2023.name)
    db = tmp_path / "arena.db"
    subprocess.run([sys.executable, "-m", "arena", "import", str(ARENA_2023), "--db", str(db)], cwd=ROOT, check=True,
                   capture_output=True)
    arena = start_arena(MODELS)
    assert arena.db == db
    assert f"Database: {db.resolve()} (25,938 votes)\n" in arena.output  # says which database, and what it holds
    client = Client(arena.url, verbose=False)
    before = table_of(client.predict(api_name="/leaderboard"))
    assert len(before) == 20 and before[0][1] == "gpt-4"
    # The next visitor gets the same board from the cache, rows included.
    assert table_of(Client(arena.url, verbose=False).predict(api_name="/leaderboard")) == before
    assert "lark-model" not in str(before)

    client.submit("Hello", api_name="/battle_ask").result()
    client.predict(api_name="/battle_vote_a")
    after = table_of(client.predict(api_name="/leaderboard"))
    assert len(after) == 22
    # The vote's winner is rated about 1681 by the ridge, above gpt-4: its group of two is still listed second.
    assert after[0][1] == "gpt-4" and after[0][7] == 1 and {row[1] for row in after[-2:]} == {"lark-model", "wren-model"}
    rows = {row[1]: row for row in after}
    assert rows["lark-model"][5] == 1 and rows["wren-model"][5] == 1  # one vote each
    winner, loser = (("lark-model", "wren-model") if rows["lark-model"][2] > rows["wren-model"][2]
                     else ("wren-model", "lark-model"))
    pairs = pairs_of(client.predict(api_name="/leaderboard"))
    # One vote does not place either model (no interval): no prediction, as their ratings would say a sure win.
    assert pairs[(winner, loser)] == [1, 100.0, "–"]
    # Never compared: no prediction across groups, whichever group is listed first.
    assert pairs.get(("gpt-4", winner), pairs.get((winner, "gpt-4"))) == [0, "–", "–"]
    met = [r for r in map(json.loads, ARENA_2023.open()) if {r["model_a"], r["model_b"]} == {"gpt-4", "claude-v1"}]
    counted = [r for r in met if r.get("anony", True) and not r.get("flagged", False)]
    gpt_4_won = sum(r["winner"] == ("model_a" if r["model_a"] == "gpt-4" else "model_b") for r in counted)
    ties = sum(r["winner"].startswith("tie") for r in counted)
    assert pairs[("gpt-4", "claude-v1")][:2] == [len(counted), round(100 * (gpt_4_won + ties / 2) / len(counted), 1)]


def test_plots_are_drawn_once_per_leaderboard_not_per_visitor(make_service):
    import gradio as gr
    from gradio.components.plot import PlotData

    from arena.ui.leaderboard_tab import LeaderboardTab

    service = make_service(MODELS)
    tab = LeaderboardTab(service)
    with gr.Blocks():
        tab.build()
    first = tab.refresh()
    assert isinstance(first[1], PlotData) and first[1].type == "matplotlib"
    second = tab.refresh()
    assert all(second[i] is first[i] for i in (1, 3, 4, 5))  # a second visitor gets the same encoded plots
    assert second[2]["value"] == first[2]["value"]  # and the rows, in an update of its own
    view = None
    for view in service.ask(None, "Hello", "10.0.0.9", Mode.ANONYMOUS):
        pass
    service.vote(view.battle_id, "10.0.0.9", "model_a")
    after = tab.refresh()
    assert after is not first and "**1 anonymous vote**" in after[0]
    assert "Not rated yet" in first[0] and "Not rated yet" not in after[0]  # both served models have a vote now
    assert [row[3] for row in after[2]["value"]] == ["–"] * 2  # one vote: the bootstrap cannot vary


@pytest.mark.parametrize("counted", [False, True])
def test_the_page_says_whether_side_by_side_votes_count(make_service, counted):
    import gradio as gr

    from arena.ui.duel_panel import DuelPanel
    from arena.ui.leaderboard_tab import LeaderboardTab

    service = make_service(MODELS.replace("leaderboard_interval_s: 0", f"leaderboard_interval_s: 0, count_named_votes: {str(counted).lower()}"))
    view = None
    for view in service.ask(None, "Hello", "10.0.0.9", Mode.NAMED, ("lark-model", "wren-model")):
        pass
    service.vote(view.battle_id, "10.0.0.9", "model_a")
    tab, panel = LeaderboardTab(service), DuelPanel(service, Mode.NAMED, "named", 1)
    with gr.Blocks():
        tab.build()
        panel.build()
    summary = tab.refresh()[0]
    assert ("**1 vote**" in summary) is counted and ("**0 anonymous votes**" in summary) is not counted
    assert ("side-by-side votes are." in summary) is counted
    assert ("are counted on the leaderboard" in panel._intro()) is counted


def test_a_board_within_its_interval_says_when_it_was_computed(make_service):
    import gradio as gr

    from arena.ui.leaderboard_tab import LeaderboardTab

    service = make_service(MODELS.replace("leaderboard_interval_s: 0", "leaderboard_interval_s: 3600"))
    tab = LeaderboardTab(service)
    with gr.Blocks():
        tab.build()
    before = tab.refresh()[0]
    view = None
    for view in service.ask(None, "Hello", "10.0.0.9", Mode.ANONYMOUS):
        pass
    service.vote(view.battle_id, "10.0.0.9", "model_a")
    after = tab.refresh()[0]
    assert after == before and "**0 anonymous votes**" in after  # batched: the new vote waits for the interval
    assert "Computed at" in after and "appear within 3600 s" in after
