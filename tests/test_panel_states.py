"""What the battle panels offer, in Chromium against a real server with scripted models.

The page is built once, before the models load, and shown to every visitor
after: its status line and pickers must follow the server, and the buttons
that would leave a battle must wait while its answers stream.
"""

from __future__ import annotations

import sqlite3
import time

import pytest

from tests.conftest import open_and_ask

pytestmark = pytest.mark.browser

# `echo` repeats the prompt a word every 10 ms: a 300-word prompt streams for about 3 s.
SLOW_ECHO = """
    settings: {sampling: uniform, limits: {max_prompt_chars: 4000}}
    models:
      - {name: echo-one, backend: scripted, script: echo}
      - {name: echo-two, backend: scripted, script: echo}
      - {name: echo-three, backend: scripted, script: echo}
"""
LONG_PROMPT = " ".join(f"word{i}" for i in range(300))


def test_a_page_opened_after_loading_shows_the_intro_not_the_loading_notice(start_arena, browser_page):
    arena = start_arena(SLOW_ECHO)
    page = browser_page
    page.goto(arena.url)
    status = page.locator("#battle-status")
    status.wait_for()
    page.wait_for_function("document.querySelector('#battle-status').innerText.includes('Ask anything')",
                           timeout=15_000)
    assert "loading" not in status.inner_text().lower()


@pytest.mark.parametrize("tab, key, leaving", [
    (None, "battle", ["#battle-new-round"]),
    ("Side by side", "named", ["#named-new-round", "#named-pick-a input", "#named-pick-b input"]),
])
def test_nothing_can_leave_a_battle_while_its_answers_stream(start_arena, browser_page, tab, key, leaving):
    arena = start_arena(SLOW_ECHO)
    page = browser_page
    open_and_ask(page, arena.url, LONG_PROMPT, key, tab)
    vote = page.locator(f"#{key}-vote-a")
    page.wait_for_function(f"document.querySelector('#{key}-chat-a').innerText.includes('word5')", timeout=15_000)
    assert vote.is_disabled()  # still streaming
    for selector in leaving:
        assert page.locator(selector).is_disabled(), selector
    page.wait_for_function(f"!document.querySelector('#{key}-vote-a').disabled", timeout=30_000)
    for selector in leaving:
        assert page.locator(selector).is_enabled(), selector
    page.locator(f"#{key}-new-round").click()  # leave it unvoted
    page.wait_for_function(f"document.querySelector('#{key}-vote-a').disabled", timeout=15_000)
    with sqlite3.connect(arena.db) as db:
        assert db.execute("select status from battles").fetchall() == [("abandoned",)]


def test_closing_the_page_ends_its_unvoted_battle(start_arena, browser_page):
    # Gradio keeps a closed page's state for an hour in case it comes back; its end-to-end test mode
    # shortens that to a second, which is what lets this test see the battle end.
    arena = start_arena(SLOW_ECHO, env={"GRADIO_IS_E2E_TEST": "1"})
    page = browser_page
    open_and_ask(page, arena.url, "Hello there")
    page.wait_for_function("!document.querySelector('#battle-vote-a').disabled", timeout=30_000)
    with sqlite3.connect(arena.db) as db:
        assert db.execute("select status from battles").fetchall() == [("ready",)]
    page.close()
    deadline = time.monotonic() + 30
    status = None
    while time.monotonic() < deadline and status != "abandoned":
        time.sleep(0.5)
        with sqlite3.connect(arena.db) as db:
            (status,), = db.execute("select status from battles").fetchall()
    assert status == "abandoned"
