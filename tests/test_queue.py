"""More volunteers than generation slots: the extra ones wait in Gradio's queue and see their place.

A real server whose one slot is held by a battle that cannot finish (two
scripted models that hang); a second volunteer in Chromium asks meanwhile and
must be shown where they stand, then be served once the holder leaves its
battle and frees the slot.
"""

from __future__ import annotations

import pytest
from gradio_client import Client

from tests.conftest import record_announcements, wait_until


pytestmark = pytest.mark.browser

ONE_SLOT = """
    settings:
      sampling: uniform
      max_concurrent_battles: 1
      generation_timeout_s: 120  # the slot is freed by the test, not by a timeout racing a busy machine
      limits: {battles_per_hour: 1000}
    models:
      - {name: slow-one, backend: scripted, script: hang}
      - {name: slow-two, backend: scripted, script: hang}
"""


def test_a_waiting_volunteer_sees_their_place_then_gets_served(start_arena, browser_page):
    arena = start_arena(ONE_SLOT)
    holder = Client(arena.url, verbose=False)
    holding = holder.submit("Take the only slot.", api_name="/battle_ask")
    wait_until(holding.outputs, timeout_s=30)  # its first update: the battle holds the slot
    assert holding.outputs() and not holding.done(), "the first battle never started"

    page = browser_page
    page.goto(arena.url)
    prompt = page.locator("#battle-prompt textarea")
    prompt.wait_for()
    record_announcements(page)  # a screen reader hears the place too
    prompt.fill("Am I in a queue?")
    prompt.press("Enter")
    # Over the answers: the page's load event passes through the queue too, over the status, for a moment.
    shown = page.wait_for_function(
        "() => document.querySelector('#battle-chat-a').innerText.match(/queue:\\s*(\\d+)\\s*\\/\\s*(\\d+)/)",
        timeout=20_000).json_value()
    assert int(shown[1]) == 1 and int(shown[2]) >= 1
    assert not holding.done()  # the place was shown while the slot was still held
    page.wait_for_function("window.said.some(text => /Waiting for a free answering slot: you are 1 of \\d+ in line/.test(text))",
                           timeout=10_000)
    note = page.locator("#battle-status + .arena-status-note")  # and seen, under the status Gradio greys out
    assert note.is_visible() and note.inner_text().startswith("Waiting for a free answering slot: you are 1 of")

    holder.predict(api_name="/battle_new_round")  # the holder leaves its battle: the slot frees
    holding.result(timeout=30)
    # Served: the queue notice goes away and the battle starts (these models hang too: no answer comes).
    page.wait_for_function(
        "() => !/queue:\\s*\\d+/.test(document.querySelector('#battle-tab').innerText)", timeout=30_000)
    page.wait_for_function(
        "() => document.querySelector('#battle-chat-a').innerText.includes('Am I in a queue?')", timeout=30_000)
    assert not note.is_visible()  # served: no place in line is left on the page
    holder.close()
