"""What a volunteer using a screen reader, the keyboard or a phone gets, in Chromium against a real server."""

from __future__ import annotations

import pytest

from arena.ui.leaderboard_tab import PHONE_CAPTIONS, PLOT_DESCRIPTIONS
from tests.conftest import record_announcements

pytestmark = pytest.mark.browser

SHARED_ARENA = """
    settings: {sampling: uniform, limits: {battles_per_hour: 1000}}
    models:
      - {name: echo-one, backend: scripted, script: echo}
      - {name: smollm2-storyteller-long-name, backend: scripted, script: "reply: A calm and steady answer."}
"""
NAMES = ("echo-one", "smollm2-storyteller-long-name")

# WCAG contrast of an element's text (or of a pseudo-element, or its outline) against the first opaque
# background behind it, with the opacity of every ancestor applied to the text.
CONTRAST = """([selector, pseudo, property]) => {
  const element = document.querySelector(selector);
  const rgba = (text) => { const v = text.match(/[\\d.]+/g).map(Number); return v.length > 3 ? v : [...v, 1]; };
  const luminance = (c) => 0.2126 * lin(c[0]) + 0.7152 * lin(c[1]) + 0.0722 * lin(c[2]);
  const lin = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
  let background = [255, 255, 255, 1], opacity = 1;
  for (let e = element; e; e = e.parentElement) {
    const c = rgba(getComputedStyle(e).backgroundColor);
    if (c[3] > 0.5) { background = c; break; }
  }
  for (let e = element; e; e = e.parentElement) opacity *= parseFloat(getComputedStyle(e).opacity);
  const fg = rgba(getComputedStyle(element, pseudo)[property]);
  const alpha = fg[3] * opacity;
  const seen = [0, 1, 2].map(i => fg[i] * alpha + background[i] * (1 - alpha));
  const [high, low] = [luminance(seen), luminance(background)].sort((x, y) => y - x);
  return (high + 0.05) / (low + 0.05);
}"""


def on_a_phone(browser_page, url: str):
    """A page of the browser's, as a phone of 390 x 844 px with a touch screen shows it."""
    phone = browser_page.context.browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                                                     has_touch=True)
    page = phone.new_page()
    page.goto(url)
    return page


def chat_names(page) -> list[tuple[str | None, str | None]]:
    return page.evaluate("""() => [...document.querySelectorAll('#battle-chat-a [role=log], #battle-chat-b [role=log]')]
                             .map(log => [log.getAttribute('aria-live'), log.getAttribute('aria-label')])""")


def test_a_screen_reader_hears_the_status_not_the_stream_and_no_name_before_the_vote(start_arena, browser_page):
    # A server of its own: its vote would change the leaderboard the other tests of this file look at.
    page = browser_page
    page.goto(start_arena(SHARED_ARENA).url)
    prompt = page.get_by_role("textbox", name="Prompt")  # not just "Textbox"
    prompt.wait_for()
    page.wait_for_function("document.querySelector('#battle-status').innerText.includes('Ask anything')", timeout=15_000)
    record_announcements(page)
    for _ in range(2):  # empty: refused, and the refusal is read out each time, though its words are the same
        prompt.press("Enter")
        page.wait_for_timeout(700)
    page.wait_for_function("window.said.filter(text => text.includes('type a prompt first')).length === 2",
                           timeout=10_000)
    prompt.fill("Tell me about rivers")
    prompt.press("Enter")
    page.wait_for_function("!document.querySelector('#battle-vote-a').disabled", timeout=20_000)
    page.wait_for_function("window.said.some(text => text.startsWith('Both answers are in'))", timeout=10_000)
    said = page.evaluate("window.said")
    assert not any("in line" in text for text in said), said  # passing through the queue is no wait
    # The answers are not live regions (each token would re-read them) and are named by their labels.
    assert chat_names(page) == [["off", "Model A"], ["off", "Model B"]]
    # Gradio's own announcer, which reads untranslated keys such as "common.complete", is quiet.
    assert page.evaluate("""() => { const gradios = [...document.querySelectorAll('.sr-only[role=status]')];
                                    return gradios.length > 0 && gradios.every(r => r.getAttribute('aria-live') === 'off'); }""")
    tree = page.locator("body").aria_snapshot()
    assert not any(name in tree or name in " ".join(page.evaluate("window.said")) for name in NAMES)
    page.locator("#battle-vote-a").click()
    page.wait_for_function("window.said.some(text => text.includes('vote is recorded'))", timeout=10_000)
    receipt = page.evaluate("window.said.find(text => text.includes('vote is recorded'))")
    assert all(name in receipt for name in NAMES)  # the receipt, with the reveal
    (live_a, label_a), (live_b, label_b) = chat_names(page)
    assert live_a == live_b == "off"
    assert label_a.startswith("Model A: ") and label_b.startswith("Model B: ")
    assert {label_a.removeprefix("Model A: "), label_b.removeprefix("Model B: ")} == set(NAMES)


def test_the_leaderboard_plots_are_described(shared_arena, browser_page):
    page = browser_page
    page.goto(shared_arena.url)
    page.get_by_role("tab", name="Leaderboard").click()
    for elem_id, description in PLOT_DESCRIPTIONS.items():
        image = page.locator(f"#{elem_id} img")
        image.wait_for(timeout=15_000)
        page.wait_for_function(f"document.querySelector('#{elem_id} img').alt === {description!r}", timeout=5_000)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_text_and_the_prompts_focus_are_readable(shared_arena, browser_page, scheme):
    page = browser_page
    page.emulate_media(color_scheme=scheme)
    page.goto(shared_arena.url)
    prompt = page.locator("#battle-prompt textarea")
    prompt.wait_for()
    text = {  # selector, pseudo-element, colour property
        "Send": ("#battle-send", None, "color"),
        "open tab": ('button[role="tab"][aria-selected="true"]', None, "color"),
        "data notice": ("#data-notice p", None, "color"),
        "placeholder": ("#battle-prompt textarea", "::placeholder", "color"),
        "footer links": ("footer .settings", None, "color"),
        "footer credit": ("footer .built-with", None, "color"),
    }
    for what, probe in text.items():
        page.locator(probe[0]).first.wait_for(state="attached")  # the footer and the notice can come after the prompt
        assert page.evaluate(CONTRAST, list(probe)) >= 4.5, what
    underline = ['button[role="tab"][aria-selected="true"]', "::after", "backgroundColor"]
    assert page.evaluate(CONTRAST, underline) >= 3.0  # which tab is open, for those who cannot tell by colour
    prompt.focus()
    assert page.evaluate(CONTRAST, ["#battle-prompt textarea", None, "outlineColor"]) >= 3.0  # a focus indicator


def font_size(page, selector: str) -> float:
    return page.locator(selector).evaluate("element => parseFloat(getComputedStyle(element).fontSize)")


def test_on_a_phone_the_pickers_show_whole_names_tabs_are_big_enough_to_tap_and_prompts_do_not_zoom(
        shared_arena, browser_page):
    page = on_a_phone(browser_page, shared_arena.url)
    page.locator("#battle-prompt textarea").wait_for()
    # iOS Safari zooms the page into a text field whose text is under 16 px when it gets the focus.
    assert font_size(page, "#battle-prompt textarea") >= 16
    page.get_by_role("tab", name="Side by side").click()
    picker = page.locator("#named-pick-b input")
    picker.wait_for()
    page.wait_for_function(f"document.querySelector('#named-pick-b input').value === {NAMES[1]!r}", timeout=10_000)
    assert picker.evaluate("input => input.scrollWidth <= input.clientWidth")  # the whole name, not under the arrow
    assert font_size(page, "#named-prompt textarea") >= 16
    heights = page.evaluate("() => [...document.querySelectorAll('button[role=tab]')].map(t => t.getBoundingClientRect().height)")
    assert heights and min(heights) >= 44


def test_choosing_a_model_by_keyboard_shows_where_the_arrows_are_and_goes_on_to_the_prompt(shared_arena, browser_page):
    page = browser_page
    page.goto(shared_arena.url)
    page.get_by_role("tab", name="Side by side").click()
    picker = page.locator("#named-pick-a input")
    picker.wait_for()
    picker.focus()
    page.keyboard.press("ArrowDown")
    on = page.locator('[role="option"].active')
    on.wait_for()
    page.wait_for_function("document.getAnimations().every(animation => animation.playState !== 'running')")
    assert on.evaluate("option => getComputedStyle(option).outlineStyle") != "none"
    assert page.evaluate(CONTRAST, ['[role="option"].active', None, "outlineColor"]) >= 3.0
    page.keyboard.press("Enter")
    page.wait_for_function("document.activeElement === document.querySelector('#named-prompt textarea')",
                           timeout=5_000)


def test_on_a_phone_the_leaderboard_says_its_table_scrolls_sideways(shared_arena, browser_page):
    for page, phone in ((browser_page, False), (on_a_phone(browser_page, shared_arena.url), True)):
        page.goto(shared_arena.url)
        page.get_by_role("tab", name="Leaderboard").click()
        table = page.locator("#leaderboard-table table")
        table.wait_for()
        wider = table.evaluate("table => table.scrollWidth > table.parentElement.clientWidth + 1")
        assert page.locator("#leaderboard-swipe").is_visible() == phone == wider


# Per leaderboard figure: its width as shown, its own width, the width of the box holding it and how far that
# box scrolls sideways; how wide the page itself is; and the text of the caption shown just above it, if any.
FIGURE_WIDTHS = """elemId => { const image = document.querySelector(`#${elemId} img`), box = image.parentElement;
  const figure = document.getElementById(elemId).getBoundingClientRect();
  const caption = [...document.querySelectorAll('.arena-phone-caption')].find(element => {
    const { bottom, height } = element.getBoundingClientRect();
    return height > 0 && bottom <= figure.top && bottom > figure.top - 40; });
  return {shown: image.getBoundingClientRect().width, natural: image.naturalWidth, box: box.clientWidth,
          scrolls: box.scrollWidth, page: document.documentElement.scrollWidth,
          caption: caption ? caption.textContent.trim() : null,
          unheard: caption ? caption.querySelector('[aria-hidden="true"]') !== null : null}; }"""


def test_on_a_phone_the_leaderboard_figures_are_shown_at_their_own_size_in_boxes_that_scroll_sideways(
        shared_arena, browser_page):
    """Shrunk to a phone's width (0.36 times), the figures' labels and numbers were 3 to 4 px tall."""
    for page, phone in ((browser_page, False), (on_a_phone(browser_page, shared_arena.url), True)):
        page.goto(shared_arena.url)
        page.get_by_role("tab", name="Leaderboard").click()
        for elem_id in PLOT_DESCRIPTIONS:
            page.locator(f"#{elem_id} img").wait_for(timeout=15_000)
            page.wait_for_function(f"document.querySelector('#{elem_id} img').naturalWidth > 0")
            widths = page.evaluate(FIGURE_WIDTHS, elem_id)
            assert widths["natural"] > 800, widths  # drawn about 900 px wide, with text of 9 to 10 points at 100 dpi
            if phone:  # as drawn (labels of 12 px and more), and the rest of it a swipe away; the page stays put
                assert widths["shown"] == pytest.approx(widths["natural"], abs=1), (elem_id, widths)
                assert widths["box"] < widths["natural"] <= widths["scrolls"] + 1, (elem_id, widths)
                assert widths["page"] <= 390, (elem_id, widths)
                # Its title, centred in the figure, is out of sight: a caption says what it shows (screen readers
                # have the image's description, so they do not hear it twice).
                assert widths["caption"] == PHONE_CAPTIONS[elem_id] and widths["unheard"] is True, (elem_id, widths)
            else:  # as before: shrunk to fit its box when wider, never enlarged, nothing to scroll, no caption
                assert widths["shown"] == pytest.approx(min(widths["natural"], widths["box"]), abs=1), (elem_id, widths)
                assert widths["scrolls"] <= widths["box"], (elem_id, widths)
                assert widths["caption"] is None, (elem_id, widths)
    assert page.locator("#leaderboard-swipe").is_visible()  # and the phone is told so


def test_on_a_desktop_the_heatmaps_are_shown_at_their_own_size_side_by_side_only_where_both_fit(
        shared_arena, browser_page):
    """Side by side on a 1280 px page, each heatmap was shrunk to about 600 px: a 20-model heatmap's names 6 px tall."""
    heatmaps = ("leaderboard-win-fraction", "leaderboard-predicted")
    for width, side_by_side in ((1280, False), (1920, True)):
        browser_page.set_viewport_size({"width": width, "height": 1100})
        browser_page.goto(shared_arena.url)
        browser_page.get_by_role("tab", name="Leaderboard").click()
        for elem_id in heatmaps:
            browser_page.wait_for_function(f"document.querySelector('#{elem_id} img')?.naturalWidth > 0")
            widths = browser_page.evaluate(FIGURE_WIDTHS, elem_id)
            assert widths["shown"] == pytest.approx(widths["natural"], abs=1), (width, elem_id, widths)
        first, second = (browser_page.locator(f"#{elem_id} img").bounding_box() for elem_id in heatmaps)
        assert (first["y"] == second["y"] and first["x"] + first["width"] <= second["x"]) == side_by_side, (first, second)
        assert side_by_side or second["y"] >= first["y"] + first["height"], (first, second)


# Per header cell of a leaderboard table: its text, its size in px and on how many lines it is written.
TABLE_HEADERS = """selector => [...document.querySelectorAll(`${selector} th .header`)].map(header => {
  const text = document.createRange();
  text.selectNodeContents(header);
  return [header.textContent.trim(), parseFloat(getComputedStyle(header).fontSize), text.getClientRects().length]; })"""


def test_on_a_phone_both_leaderboard_tables_have_small_text_and_headers_on_one_line(shared_arena, browser_page):
    """Not "Ba/tt/le/s" down a narrow column in full-size text: the head-to-head table as the leaderboard's."""
    page = on_a_phone(browser_page, shared_arena.url)
    page.get_by_role("tab", name="Leaderboard").click()
    page.get_by_text("Head to head: the heatmaps' numbers").click()
    for table in ("#leaderboard-table", "#leaderboard-head-to-head"):
        page.locator(f"{table} table").wait_for()
        headers = page.evaluate(TABLE_HEADERS, table)
        assert len(headers) >= 5, (table, headers)
        assert all(size <= 0.7 * 16 and lines == 1 for _, size, lines in headers), (table, headers)


def test_on_a_phone_a_long_answer_is_shown_whole_from_its_start(shared_arena, browser_page):
    """Read in a fixed window, a phone showed three lines of each answer, scrolled to its end."""
    page = on_a_phone(browser_page, shared_arena.url)
    prompt = page.locator("#battle-prompt textarea")
    prompt.wait_for()
    box = prompt.bounding_box()
    assert box["y"] + box["height"] <= 844  # empty panels are short: the prompt is on the first screen
    prompt.fill(" ".join(f"word{i} is here" for i in range(60)))  # echoed back: a long answer
    prompt.press("Enter")
    page.wait_for_function("!document.querySelector('#battle-vote-a').disabled", timeout=20_000)
    for side in "ab":
        shown = page.locator(f"#battle-chat-{side} .bubble-wrap").evaluate(
            "wrap => [wrap.scrollHeight - wrap.clientHeight, wrap.scrollTop, wrap.getBoundingClientRect().height]")
        hidden, scrolled, height = shown
        assert hidden <= 1 and scrolled == 0 and height > 400, (side, shown)
    assert page.evaluate("window.scrollY") == 0  # the page stays where the volunteer starts reading


def test_on_a_phone_a_follow_up_is_shown_from_its_prompt(shared_arena, browser_page):
    """Answers as long as their text make a long page: a follow-up's answers start where its prompt is."""
    page = on_a_phone(browser_page, shared_arena.url)
    prompt = page.locator("#battle-prompt textarea")
    prompt.wait_for()
    for turn in range(2):
        prompt.fill(" ".join(f"turn{turn} word{i} is here" for i in range(60)))
        prompt.press("Enter")
        page.wait_for_function("!document.querySelector('#battle-vote-a').disabled", timeout=20_000)
    asked = page.locator("#battle-chat-a .user-row").nth(1).evaluate("row => row.getBoundingClientRect().top")
    assert 0 <= asked < 844 / 3, asked  # the new prompt near the top of the screen, its answer below it


def test_a_long_answer_scrolls_from_the_keyboard_and_right_to_left_text_reads_from_the_right(shared_arena, browser_page):
    """Each answer is a window of its own on a desktop: without a tab stop its middle was out of a keyboard's
    reach. An Arabic prompt's question mark stood at its start (the page is left to right)."""
    page = browser_page
    page.goto(shared_arena.url)
    prompt = page.locator("#battle-prompt textarea")
    prompt.fill("كيف حالك اليوم? " + " ".join(f"word{i} is here" for i in range(80)))  # echoed back: a long answer
    prompt.press("Enter")
    page.wait_for_function("!document.querySelector('#battle-vote-a').disabled", timeout=20_000)
    first_prompt = page.locator("#battle-chat-a .user-row p").first
    assert first_prompt.evaluate("""p => { const range = document.createRange(), text = p.firstChild;
        const x = (at) => { range.setStart(text, at); range.setEnd(text, at + 1); return range.getBoundingClientRect().x; };
        return x(text.textContent.indexOf('?')) < x(0); }""")  # the sentence ends on the left
    echoed = next(side for side in "ab" if "word79" in page.locator(f"#battle-chat-{side} .bot-row").inner_text())
    window = page.locator(f"#battle-chat-{echoed} [role=log]")
    window.evaluate("log => log.scrollTo(0, 0)")
    assert window.evaluate("log => log.scrollHeight > log.clientHeight + 400")
    page.get_by_role("tab", name="Battle").focus()  # before both windows (the echo may be on either side)
    for _ in range(30):  # Tab on until the window has the keyboard: it is a stop of its own
        page.keyboard.press("Tab")
        if window.evaluate("log => document.activeElement === log"):
            break
    assert window.evaluate("log => document.activeElement === log")
    page.keyboard.press("PageDown")
    page.wait_for_timeout(300)
    assert window.evaluate("log => log.scrollTop") > 100


@pytest.mark.parametrize("height", [768, 800])
def test_on_a_laptop_screen_both_tabs_show_the_votes_the_prompt_and_new_round_without_scrolling(shared_arena, browser_page,
                                                                                               height):
    """At 420 px the answers' windows pushed New round below a 1280 x 800 screen, and Side by side's prompt."""
    laptop = browser_page.context.browser.new_context(viewport={"width": 1366, "height": height})
    page = laptop.new_page()
    page.goto(shared_arena.url)
    for key, tab in (("battle", "Battle"), ("named", "Side by side")):
        page.get_by_role("tab", name=tab).click()
        page.locator(f"#{key}-new-round").wait_for()
        bottom = page.locator(f"#{key}-new-round").bounding_box()
        window = page.locator(f"#{key}-chat-a").bounding_box()
        assert bottom["y"] + bottom["height"] <= height and window["height"] >= 240, (key, bottom, window)
    laptop.close()
    page = browser_page  # 1,100 px tall: the windows keep their full height
    page.goto(shared_arena.url)
    assert page.locator("#battle-chat-a").bounding_box()["height"] == 420
