"""A volunteer's whole battle in a real browser against a real server and the real model."""

from __future__ import annotations

import sqlite3
import threading

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.model]

BUNDLED_ARENA = """
    settings: {sampling: uniform}
    models:
      - {name: smol-greedy, backend: transformers, source: bundled:smollm2, temperature: 0, max_new_tokens: 24,
         system_prompt: Answer briefly.}
      - {name: smol-sampled, backend: transformers, source: bundled:smollm2, temperature: 0.8, max_new_tokens: 24}
"""
NAMES = ("smol-greedy", "smol-sampled")
# Streamed responses (server-sent events read through fetch) are not visible to Playwright's response
# events, so the page keeps a copy of every streamed chunk for the test to search.
CAPTURE_STREAMS = """
window.__arenaStreams = [];
const originalFetch = window.fetch;
window.fetch = async (...args) => {
  const response = await originalFetch(...args);
  if (response.body) {
    const reader = response.clone().body.getReader();
    const decoder = new TextDecoder();
    (async () => {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        window.__arenaStreams.push(decoder.decode(value, { stream: true }));
      }
    })();
  }
  return response;
};
"""


def greedy_reference(system_prompt: str, prompt: str, max_new_tokens: int) -> str:
    """The bundled model's greedy answer from `generate`, in this process: none of the arena's decoding or streaming."""
    import torch

    from arena.backends.transformers_local import TransformersBackend
    from arena.config import ModelEntry, bundled_model_path
    from tests.conftest import MODEL_CACHE

    gguf = bundled_model_path("smollm2")
    backend = TransformersBackend(ModelEntry(name="reference", backend="transformers", source=str(gguf.parent),
                                             gguf_file=gguf.name), cache_dir=MODEL_CACHE)
    backend.load(lambda message: None)
    try:
        chat = [{"role": "system", "content": system_prompt}, {"role": "user", "content": prompt}]
        tokens = backend.tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt",
                                                       return_dict=True)
        with torch.inference_mode():
            written = backend.model.generate(**tokens, max_new_tokens=max_new_tokens, do_sample=False, temperature=None,
                                             top_p=None, top_k=None, pad_token_id=backend.tokenizer.eos_token_id)
        return backend.tokenizer.decode(written[0, tokens["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    finally:
        backend.close()


# The page's markup with what its fields hold, which the markup does not show.
PAGE_TEXT = """() => document.documentElement.outerHTML + '\\n'
  + [...document.querySelectorAll('input, textarea')].map(field => field.value).join('\\n')"""
TABS = {"Side by side": "#named-pick-a input", "Leaderboard": "#leaderboard-table table", "Battle": "#battle-prompt textarea"}


def every_tab_text(page) -> str:
    """The page with each tab opened in turn (Gradio draws a tab's contents only once it is opened), back on Battle."""
    texts = []
    for tab, drawn in TABS.items():
        page.get_by_role("tab", name=tab).click()
        page.locator(drawn).wait_for(timeout=30_000)
        texts.append(page.evaluate(PAGE_TEXT))
    return "\n".join(texts)


def test_full_battle_in_chromium(start_arena, browser_page, tmp_path):
    arena = start_arena(BUNDLED_ARENA)
    # Its output is a pipe, as a log file would be: the loading lines, no progress-bar redraws.
    assert not [line for line in arena.output if "\r" in line or "it/s]" in line], arena.output
    page = browser_page
    payloads: list[str] = []
    asked_since_battle: set = set()  # requests sent once the battle began (the page's own may name models)
    battle_began = threading.Event()

    def note(request):
        if battle_began.is_set():
            asked_since_battle.add(request)

    def keep(response):
        if response.request in asked_since_battle and (
                "/gradio_api/" in response.url or response.url.rstrip("/") == arena.url):
            try:
                payloads.append(response.text())
            except Exception:  # a streamed body that closed early has nothing more to show
                pass

    page.on("request", note)
    page.on("response", keep)
    page.add_init_script(CAPTURE_STREAMS)
    page.goto(arena.url)
    prompt = page.locator("#battle-prompt textarea")
    prompt.wait_for()
    # The page's two load events (leaderboard, contestants for the side-by-side tab) name models in public:
    # their answers must be in before the battle's part of the streams begins.
    page.wait_for_function("() => window.__arenaStreams.join('').split('process_completed').length > 2")
    battle_began.set()
    streams_before_battle = page.evaluate("window.__arenaStreams.length")
    prompt.fill("What is the capital of France?")
    prompt.press("Enter")
    vote_a = page.locator("#battle-vote-a")
    page.wait_for_function("() => !document.querySelector('#battle-vote-a').disabled", timeout=120_000)

    # Before the vote: nothing on the battle tab, and nothing received since the battle began, names a model.
    battle_tab = page.locator("#battle-tab").inner_html()
    assert "What is the capital of France?" in battle_tab
    streamed = page.evaluate(f"window.__arenaStreams.slice({streams_before_battle}).join('')")
    assert "capital of France" in streamed and len(streamed) > 200  # the streamed updates were captured
    assert payloads, "no response to the battle's requests was seen"
    payloads.append(streamed)
    for name in NAMES:
        assert name not in battle_tab
        assert not [p for p in payloads if name in p], f"{name} leaked in a response before the vote"
    answers = [page.locator(f"#battle-chat-{side}").inner_text() for side in "ab"]
    assert all(len(text.strip()) > 0 for text in answers)
    # The whole page, every tab and field: it names each model as often as the page of a bystander with no battle
    # does (the side-by-side pickers and the leaderboard name them in public).
    whole_page = every_tab_text(page)
    bystander = page.context.browser.new_context()
    try:
        other = bystander.new_page()
        other.goto(arena.url)
        other.locator("#battle-prompt textarea").wait_for()
        theirs = every_tab_text(other)
    finally:
        bystander.close()
    assert "Not rated yet" in whole_page and 'id="named-pick-a"' in whole_page  # every tab was drawn
    for name in NAMES:
        assert whole_page.count(name) == theirs.count(name), f"the battle's page names {name} more often"

    vote_a.click()
    status = page.locator("#battle-status")
    status.get_by_text("your vote is recorded").wait_for(timeout=30_000)

    with sqlite3.connect(arena.db) as db:
        (winner, model_a, model_b, status_row) = db.execute(
            "select v.winner, b.model_a, b.model_b, b.status from votes v join battles b on b.id = v.battle_id"
        ).fetchone()
    assert winner == "model_a" and status_row == "voted" and {model_a, model_b} == set(NAMES)
    # The greedy side is deterministic: the page shows, whole, what transformers' own greedy decoding writes.
    greedy = answers[[model_a, model_b].index("smol-greedy")]
    reference = greedy_reference("Answer briefly.", "What is the capital of France?", 24)
    assert reference and reference in greedy, (reference, answers)
    shown = status.inner_text()
    assert f"Model A was {model_a}" in shown and f"Model B was {model_b}" in shown
    assert page.locator("#battle-vote-a").is_disabled()
    page.screenshot(path=str(tmp_path / "battle.png"), full_page=True)
