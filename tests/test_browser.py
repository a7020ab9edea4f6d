"""A volunteer's whole battle in a real browser against a real server and the real model."""

from __future__ import annotations

import sqlite3

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


def test_full_battle_in_chromium(start_arena, browser_page, tmp_path):
    arena = start_arena(BUNDLED_ARENA)
    page = browser_page
    payloads: list[str] = []

    def keep(response):
        if "/gradio_api/" in response.url or response.url.rstrip("/") == arena.url:
            try:
                payloads.append(response.text())
            except Exception:  # a streamed body that closed early has nothing more to show
                pass

    page.on("response", keep)
    page.goto(arena.url)
    prompt = page.locator("#battle-prompt textarea")
    prompt.fill("What is the capital of France?")
    prompt.press("Enter")
    vote_a = page.locator("#battle-vote-a")
    page.wait_for_function("() => !document.querySelector('#battle-vote-a').disabled", timeout=120_000)

    # Before the vote: neither the page nor anything the browser received names a model.
    html = page.content()
    for name in NAMES:
        assert name not in html
        assert not [p for p in payloads if name in p], f"{name} leaked in a response before the vote"
    answers = page.locator("#battle-chat-a, #battle-chat-b").all_inner_texts()
    assert all(len(text.strip()) > 0 for text in answers)

    vote_a.click()
    status = page.locator("#battle-status")
    status.get_by_text("your vote is recorded").wait_for(timeout=30_000)

    with sqlite3.connect(arena.db) as db:
        (winner, model_a, model_b, status_row) = db.execute(
            "select v.winner, b.model_a, b.model_b, b.status from votes v join battles b on b.id = v.battle_id"
        ).fetchone()
    assert winner == "model_a" and status_row == "voted" and {model_a, model_b} == set(NAMES)
    shown = status.inner_text()
    assert f"Model A was {model_a}" in shown and f"Model B was {model_b}" in shown
    assert page.locator("#battle-vote-a").is_disabled()
    page.screenshot(path=str(tmp_path / "battle.png"), full_page=True)
