"""What the battle panels offer, in Chromium against a real server with scripted models.

The page is built once, before the models load, and shown to every visitor
after: its status line and pickers must follow the server, and the buttons
that would leave a battle must wait while its answers stream.
"""

from __future__ import annotations

import socket
import sqlite3
import time

import pytest

from tests.conftest import open_and_ask, wait_until

pytestmark = pytest.mark.browser

# `echo` repeats the prompt a word every 10 ms: a 300-word prompt streams for about 3 s.
SLOW_ECHO = SHARED_ARENA = """
    settings: {sampling: uniform, limits: {max_prompt_chars: 4000}}
    models:
      - {name: echo-one, backend: scripted, script: echo}
      - {name: echo-two, backend: scripted, script: echo}
      - {name: echo-three, backend: scripted, script: echo}
"""
LONG_PROMPT = " ".join(f"word{i}" for i in range(300))


def test_while_the_models_load_send_waits_and_a_prompt_sent_early_is_told_why(start_arena, browser_page):
    """The page is up before the models: Enter says why nothing starts, and the next poll must not hide that."""
    # A remote endpoint that never answers holds loading until the test is done with it (a timeout would end it
    # early on a busy machine).
    with socket.create_server(("127.0.0.1", 0)) as silent:
        arena = start_arena(SLOW_ECHO.replace("sampling: uniform", "sampling: uniform, on_load_failure: disable") + f"""
      - {{name: far-away, backend: openai, base_url: "http://127.0.0.1:{silent.getsockname()[1]}/v1", model: m,
          request_timeout_s: 120}}
""", ready_line="Arena page:")
        page = browser_page
        page.goto(arena.url)
        banner, status = page.locator("#loading-banner"), page.locator("#battle-status")
        banner.get_by_text("The arena is starting").wait_for(timeout=5_000)
        assert "echo-one" not in banner.inner_text()  # a volunteer's page, not the operator's log
        page.wait_for_function("document.querySelector('#battle-send').disabled", timeout=5_000)
        prompt = page.locator("#battle-prompt textarea")
        prompt.fill("Too early")
        prompt.press("Enter")
        status.get_by_text("still loading").wait_for(timeout=5_000)
        time.sleep(4.5)  # two polls for loading news
        assert "still loading" in status.inner_text() and prompt.input_value() == "Too early"
        assert "loaded" not in status.inner_text()  # the banner counts; a refusal said once would fall behind
        silent.close()  # its waiting connection is refused: that model fails to load, and loading ends
        page.wait_for_function("!document.querySelector('#battle-send').disabled", timeout=30_000)
        assert status.inner_text().startswith("Ask anything") and banner.inner_text().strip() == ""


def test_a_page_opened_after_loading_shows_the_intro_not_the_loading_notice(shared_arena, browser_page):
    page = browser_page
    page.goto(shared_arena.url)
    status = page.locator("#battle-status")
    status.wait_for()
    page.wait_for_function("document.querySelector('#battle-status').innerText.includes('Ask anything')",
                           timeout=15_000)
    assert "loading" not in status.inner_text().lower()


@pytest.mark.parametrize("tab, key, pickers", [
    (None, "battle", []),
    ("Side by side", "named", ["#named-pick-a input", "#named-pick-b input"]),
])
def test_new_round_stops_a_battle_mid_answer_but_the_pickers_wait(shared_arena, browser_page, tab, key, pickers):
    """A slow or stalled model must not hold the page until its timeout; a new pair mid-answer is not offered."""
    page = browser_page
    with sqlite3.connect(shared_arena.db) as db:  # the file's shared server: battles of earlier tests are there
        earlier = db.execute("select count(*) from battles").fetchone()[0]
    open_and_ask(page, shared_arena.url, LONG_PROMPT, key, tab)
    page.wait_for_function(f"document.querySelector('#{key}-chat-a').innerText.includes('word5')", timeout=15_000)
    assert page.locator(f"#{key}-vote-a").is_disabled()  # still streaming
    for selector in pickers:
        assert page.locator(selector).is_disabled(), selector
    page.locator(f"#{key}-new-round").click()
    page.wait_for_function(f"!document.querySelector('#{key}-chat-a').innerText.includes('word5')", timeout=15_000)
    time.sleep(1)  # the stopped stream must not write its answer back over the fresh panel
    assert "word5" not in page.locator(f"#{key}-chat-a").inner_text()
    assert page.locator(f"#{key}-prompt textarea").is_enabled() and page.locator(f"#{key}-vote-a").is_disabled()
    assert page.locator(f"#{key}-status").inner_text().startswith("The last battle ended without a vote")
    assert page.locator(f"#{key}-prompt textarea").get_attribute("placeholder") == "Type a prompt and press Enter"
    assert page.locator(f"#{key}-prompt textarea").input_value() == LONG_PROMPT  # given back, to send again
    for selector in pickers:
        assert page.locator(selector).is_enabled(), selector
    with sqlite3.connect(shared_arena.db) as db:
        rows = db.execute("select status, failure from battles order by rowid").fetchall()[earlier:]
    assert len(rows) == 1 and rows[0][0] == "abandoned" and rows[0][1].startswith("left by the volunteer while answering")
    if pickers:  # answered and unvoted, the pair stays until the vote or New round
        page.locator(f"#{key}-prompt textarea").fill("Hello there")
        page.locator(f"#{key}-prompt textarea").press("Enter")
        page.wait_for_function(f"!document.querySelector('#{key}-vote-a').disabled", timeout=30_000)
        assert all(page.locator(selector).is_disabled() for selector in pickers)
        assert "To pick other models, vote or start a new round." in page.locator(f"#{key}-status").inner_text()
        page.locator(f"#{key}-vote-b").click()
        page.locator(f"#{key}-status").get_by_text("You chose: B is better.").wait_for(timeout=15_000)
        assert all(page.locator(selector).is_enabled() for selector in pickers)


def test_new_round_waits_while_a_sent_prompt_has_no_battle_yet(start_arena, browser_page):
    """Queued behind another battle, the page holds no battle id yet: New round could not stop it."""
    # The first battle holds the only generation slot until the test ends it (a 30 s answer), so the second
    # prompt queues however slowly its page opens.
    arena = start_arena("""
    settings: {sampling: uniform, max_concurrent_battles: 1, limits: {max_prompt_chars: 20000}}
    models:
      - {name: echo-one, backend: scripted, script: echo, max_new_tokens: 3000}
      - {name: echo-two, backend: scripted, script: echo, max_new_tokens: 3000}
""")
    first = browser_page
    open_and_ask(first, arena.url, " ".join(f"w{i}" for i in range(3000)))
    first.wait_for_function("document.querySelector('#battle-chat-a').innerText.includes('w5')", timeout=15_000)
    second = first.context.browser.new_page()
    open_and_ask(second, arena.url, "Hello there")
    second.wait_for_function("document.querySelector('#battle-new-round').disabled", timeout=15_000)
    time.sleep(1)
    assert second.locator("#battle-new-round").is_disabled()  # still queued: nothing to stop yet
    first.locator("#battle-new-round").click()  # ends the first battle, which frees the slot
    second.wait_for_function("!document.querySelector('#battle-vote-a').disabled", timeout=60_000)
    assert second.locator("#battle-new-round").is_enabled()  # its battle arrived: New round works again
    prompt = second.locator("#battle-prompt textarea")
    prompt.fill("x" * 20_001)  # over max_prompt_chars: refused at once
    prompt.press("Enter")
    second.wait_for_function("document.querySelector('#battle-status').innerText.includes('limit here')", timeout=15_000)
    assert second.locator("#battle-new-round").is_enabled()  # nothing is starting: New round is not left waiting


def test_side_by_side_panels_are_labelled_with_the_picked_models(shared_arena, browser_page):
    page = browser_page
    page.goto(shared_arena.url)
    page.get_by_role("tab", name="Side by side").click()
    picked = page.locator("#named-pick-a input").input_value(), page.locator("#named-pick-b input").input_value()
    # labelled from the start, not only once a pick changes
    assert f"Model A: {picked[0]}" in page.locator("#named-chat-a").inner_text()
    assert f"Model B: {picked[1]}" in page.locator("#named-chat-b").inner_text()
    page.locator("#named-pick-b input").click()
    page.get_by_role("option", name="echo-three").click()
    page.wait_for_function("document.querySelector('#named-chat-b').innerText.includes('Model B: echo-three')",
                           timeout=15_000)
    assert f"Model A: {picked[0]}" in page.locator("#named-chat-a").inner_text()


# Every value the battle's prompt box shows, with the time, sampled every 20 ms.
TRACE_PROMPT_VALUES = """
window.promptValues = [];
setInterval(() => {
  const box = document.querySelector('#battle-prompt textarea');
  const last = window.promptValues[window.promptValues.length - 1];
  if (box && (!last || last[1] !== box.value)) window.promptValues.push([Math.round(performance.now()), box.value]);
}, 20);
"""


def test_an_answer_keeps_its_status_and_gives_the_keyboard_back(shared_arena, browser_page):
    """Asked within the first seconds of a page load, when the page polled for loading news and overwrote it."""
    page = browser_page
    page.add_init_script(TRACE_PROMPT_VALUES)
    open_and_ask(page, shared_arena.url, "Hello there")
    page.wait_for_function("!document.querySelector('#battle-vote-a').disabled", timeout=30_000)
    time.sleep(3)
    assert page.locator("#battle-status").inner_text().startswith("Both answers are in")
    assert page.locator("#loading-banner").inner_text().strip() == ""
    page.keyboard.type("A follow-up")  # no click: the prompt box has the focus again
    # Seen once in a fresh-clone run (not reproduced since): "Hello thereA follow-up", the sent prompt still
    # in the box. The trace of the box's values tells "never emptied" from "emptied, then put back".
    assert page.locator("#battle-prompt textarea").input_value() == "A follow-up", page.evaluate("window.promptValues")
    clear = page.locator("#battle-chat-a button[aria-label='Clear']")
    assert clear.count() == 1 and clear.is_hidden()  # it blanked one answer before the vote
    page.locator("#battle-new-round").click()  # answered, unvoted: its answers vanish, and the status says why
    page.wait_for_function("document.querySelector('#battle-status').innerText.startsWith('The last battle ended')",
                           timeout=15_000)


def test_on_a_phone_the_prompt_is_on_the_first_screen(shared_arena, browser_page):
    page = browser_page
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(shared_arena.url)
    prompt = page.locator("#battle-prompt textarea")
    prompt.wait_for()
    box = prompt.bounding_box()
    assert box["y"] + box["height"] <= 844, box
    votes = [page.locator(f"#battle-vote-{short}").bounding_box()["y"] for short in ("a", "b", "tie", "bothbad")]
    assert max(votes) - min(votes) < 5  # one row of vote buttons, not four


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

    def ended() -> bool:
        with sqlite3.connect(arena.db) as db:
            return db.execute("select status from battles").fetchall() == [("abandoned",)]

    assert wait_until(ended, timeout_s=30, interval_s=0.5)


def test_a_reload_mid_answer_puts_the_prompt_back_and_says_why(shared_arena, browser_page):
    """Reloading ends the battle with the page that held it; the prompt went with it, and the page said nothing."""
    page = browser_page
    prompt = f"Keep this prompt, please: <b> & all. {LONG_PROMPT}"
    open_and_ask(page, shared_arena.url, prompt)
    page.wait_for_function("document.querySelector('#battle-status').innerText.includes('New round stops them')",
                           timeout=20_000)
    page.reload()
    box = page.locator("#battle-prompt textarea")
    box.wait_for()
    note = page.locator("#battle-status + .arena-status-note")
    note.wait_for()
    assert note.inner_text().startswith("The page was reloaded while the models were answering")
    assert box.input_value() == prompt
    box.press("Enter")  # the page's own value is the prompt: sent again, answered again
    page.wait_for_function("!document.querySelector('#battle-vote-a').disabled", timeout=30_000)
    assert "Keep this prompt, please" in page.locator("#battle-chat-a .user-row").first.inner_text()
    assert not note.is_visible()  # said once, gone with the next prompt
    page.reload()  # answered, then reloaded: nothing to put back
    box.wait_for()
    page.wait_for_timeout(500)
    assert box.input_value() == "" and not note.is_visible()


def test_picking_one_model_twice_is_said_at_once(make_service):
    """Not only after Send: the volunteer sees it while choosing."""
    import gradio as gr

    from arena.battle import Mode
    from arena.ui.duel_panel import DuelPanel

    service = make_service()
    panel = DuelPanel(service, Mode.NAMED, "named", 1)
    with gr.Blocks():
        panel.build()
    names = service.model_names()
    status = panel._outputs.index(panel.status)
    assert panel._leave(None, names[0], names[0])[status] == "⚠️ Pick two different models."
    assert panel._leave(None, names[0], names[1])[status].startswith("Pick two models and compare them.")


def test_long_answers_are_shown_from_their_newest_prompt_once_both_are_in(start_arena, browser_page):
    """A chat following its answer down as it streams leaves it showing its last lines; a reader starts at
    the top of the newest answer."""
    long_reply = " ".join(f"line{i}" for i in range(400))
    arena = start_arena(f"""
        settings: {{sampling: uniform}}
        models:
          - {{name: one, backend: scripted, script: "reply: {long_reply}"}}
          - {{name: two, backend: scripted, script: "reply: {long_reply}"}}
    """)
    page = browser_page
    offsets = """() => [...document.querySelectorAll('#battle-chat-a [role="log"], #battle-chat-b [role="log"]')].map(log => {
        const asked = log.querySelectorAll('.user-row');
        const box = asked[asked.length - 1].getBoundingClientRect(), top = log.getBoundingClientRect().top;
        // a long prompt's last lines in the window's top third, the answer's start below them
        return [Math.round(Math.max(box.top - top, box.bottom - top - log.clientHeight / 3)),
                log.scrollHeight > log.clientHeight + 200];
    })"""
    long_prompt = "\n".join(f"Point {n} of a long question." for n in range(40))  # taller than the chat's window
    for turn, prompt in enumerate(("First question", "A follow-up", long_prompt), start=1):
        if turn == 1:
            open_and_ask(page, arena.url, prompt)
        else:
            page.locator("#battle-prompt textarea").fill(prompt)
            page.locator("#battle-prompt textarea").press("Enter")
        page.wait_for_function(f"document.querySelectorAll('#battle-chat-a .user-row').length === {turn} && "
                               "!document.querySelector('#battle-vote-a').disabled", timeout=30_000)
        time.sleep(0.5)  # no later update may scroll it back down
        assert all(abs(top) <= 2 and overflowing for top, overflowing in page.evaluate(offsets)), (turn, page.evaluate(offsets))
