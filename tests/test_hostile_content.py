"""Hostile markup in answers and prompts stays inert in a real browser."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import open_and_ask

pytestmark = pytest.mark.browser

PAYLOAD = (
    "Hello <script>window.__pwned='script'</script> <img src=x onerror=\"window.__pwned='img'\"> "
    "[click me](javascript:window.__pwned='md-link') <a href=\"javascript:window.__pwned='a-link'\">link</a> "
    "<svg onload=\"window.__pwned='svg'\"></svg> <iframe src=\"javascript:window.__pwned='iframe'\"></iframe>"
)
SHARED_ARENA = yaml.safe_dump({  # one server for the tests that use these models
    "settings": {"sampling": "uniform"},
    "models": [
        {"name": "hostile-one", "backend": "scripted", "script": f"reply: {PAYLOAD}"},
        {"name": "hostile-two", "backend": "scripted", "script": "echo"},
    ],
})
INERT_CHECK = """() => {
  const chats = [...document.querySelectorAll('#battle-chat-a, #battle-chat-b')];
  return {
    pwned: window.__pwned ?? null,
    scripts: chats.flatMap(c => [...c.querySelectorAll('script')]).length,
    handlers: chats.flatMap(c => [...c.querySelectorAll('*')])
      .filter(e => [...e.attributes].some(a => a.name.startsWith('on'))).length,
    jsLinks: chats.flatMap(c => [...c.querySelectorAll('[href], [src]')])
      .filter(e => /^\\s*javascript:/i.test(e.getAttribute('href') || e.getAttribute('src') || '')).length,
    text: chats.map(c => c.innerText).join(' '),
  };
}"""


def test_hostile_answers_and_prompts_are_inert(shared_arena, browser_page):
    arena = shared_arena
    page = browser_page
    page.goto(arena.url)
    prompt = page.locator("#battle-prompt textarea")
    prompt.fill("Echo <img src=x onerror=\"window.__pwned='prompt'\"> and <script>window.__pwned='prompt-script'</script>")
    prompt.press("Enter")
    page.wait_for_function("() => !document.querySelector('#battle-vote-a').disabled", timeout=60_000)
    page.wait_for_timeout(500)  # let images fail to load and handlers (if any survived) fire
    for link in page.locator("#battle-chat-a a, #battle-chat-b a").all():
        link.click(force=True, no_wait_after=True)
    page.wait_for_timeout(300)
    result = page.evaluate(INERT_CHECK)
    assert "Hello" in result["text"] and "click me" in result["text"]  # the content is shown, as text
    assert result == {**result, "pwned": None, "scripts": 0, "handlers": 0, "jsLinks": 0}


def test_an_answer_cannot_make_the_browser_fetch_media_from_elsewhere(start_arena, browser_page):
    """A remote image, sound or video in an answer would hand each volunteer's address to a server of the
    model's choosing."""
    import http.server
    import threading

    fetched: list[str] = []

    class Pixel(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            fetched.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/gif")
            self.end_headers()
            self.wfile.write(b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,"
                             b"\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")

        def log_message(self, *args):
            pass

    elsewhere = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Pixel)
    threading.Thread(target=elsewhere.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{elsewhere.server_address[1]}"
    try:
        answer = (f"Look: ![tracker]({url}/markdown.gif) and <img src=\"{url}/tag.gif\"> "
                  f"<audio src=\"{url}/audio.mp3\" preload=\"auto\" autoplay></audio> "
                  f"<video src=\"{url}/video.mp4\" preload=\"auto\"></video> "
                  f"<video preload=\"auto\"><source src=\"{url}/source.mp4\"></video>")
        arena = start_arena(yaml.safe_dump({"settings": {"sampling": "uniform"}, "models": [
            {"name": "tracking-one", "backend": "scripted", "script": f"reply: {answer}"},
            {"name": "tracking-two", "backend": "scripted", "script": f"reply: {answer}"},
        ]}))
        page = browser_page
        open_and_ask(page, arena.url, "Show me a picture")
        page.wait_for_function("() => !document.querySelector('#battle-vote-a').disabled", timeout=60_000)
        page.wait_for_timeout(1000)  # time enough for a browser to fetch what it was allowed to
        assert "Look:" in page.locator("#battle-chat-a").inner_text()
        assert fetched == []
    finally:
        elsewhere.shutdown()


def test_html_in_a_prompt_or_an_answer_shows_as_written(shared_arena, browser_page):
    """A question about HTML keeps its tags: rendered, "what does the <b> tag do?" lost the tag and turned the
    rest bold. Code is shown as written too, and stays exactly as written (what its copy button takes)."""
    arena = shared_arena  # hostile-two echoes the prompt: the same text as a prompt and as an answer
    question = "What does the <b> tag do? And &amp; or <!-- this -->?"
    code = "<b>bold</b> &amp;"
    page = browser_page
    page.goto(arena.url)
    page.locator("#battle-prompt textarea").fill(f"{question} Like `<i>x</i>`:\n```html\n{code}\n```\nThanks")
    page.locator("#battle-prompt textarea").press("Enter")
    page.wait_for_function("() => !document.querySelector('#battle-vote-a').disabled", timeout=60_000)
    shown = page.evaluate("""() => [...document.querySelectorAll('#battle-chat-a .message, #battle-chat-b .message')]
        .filter(m => m.innerText.includes('What does the')).map(m => ({
          text: m.innerText.replaceAll('\\u200b', ''),
          bold: m.querySelectorAll('b, strong').length,
          code: [...m.querySelectorAll('code')].map(c => c.textContent.trim()),
        }))""")
    assert len(shown) >= 3  # the prompt in both panels, and the echoing model's answer
    for message in shown:
        assert question in message["text"] and "Thanks" in message["text"]
        assert message["bold"] == 0
        assert message["code"] == ["<i>x</i>", code]
