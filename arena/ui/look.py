"""How the page looks and reads: theme, CSS, and a script for what assistive technology needs.

Gradio has no setting for live regions or image descriptions, so a small
script adds them to the page it draws. Nothing here may carry a model's
identity: the script copies only what the page already shows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import gradio as gr


def page_theme() -> gr.themes.Base:
    """Gradio's default look in the system's fonts, with text and focus colours readable by everyone.

    System fonts: Gradio's bundled bold face lacks letters (the "A" of "A is better" fell back to another
    font), and a web font would make every volunteer's browser ask a third party for it. Colours: the
    default white-on-orange "Send" (2.8:1), grey placeholders (1.9:1) and pale focus border (1.9:1) are
    below the 4.5:1 (3:1 for borders) that low-vision readers need.
    """
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "Consolas", "monospace"]).set(
        button_primary_background_fill="*primary_700",
        button_primary_background_fill_dark="*primary_700",
        button_primary_background_fill_hover="*primary_800",
        button_primary_background_fill_hover_dark="*primary_800",
        button_primary_border_color="*primary_700",
        button_primary_border_color_dark="*primary_700",
        button_primary_border_color_hover="*primary_800",
        button_primary_border_color_hover_dark="*primary_800",
        input_placeholder_color="*neutral_500",
        input_placeholder_color_dark="*neutral_400",
        input_border_color_focus="*secondary_600",
        input_border_color_focus_dark="*secondary_400",
    )


PAGE_CSS = """
/* The panels' "clear" icon would blank one answer on the page only, with the vote still open for it. */
.arena-chat button[aria-label="Clear"] { display: none; }
/* The scrolling answers start below the floating "Model A/B" label, which otherwise covers their top line. */
.arena-chat .bubble-wrap { margin-top: 2.2rem; height: calc(100% - 2.2rem) !important; }
#data-notice, #data-notice * { font-size: 0.85rem !important; }
/* The prompt gets the keyboard back after every answer and vote: where it is must be plain to see. */
.arena-prompt textarea:focus { outline: 3px solid #1d4ed8 !important; outline-offset: 1px; }
.dark .arena-prompt textarea:focus { outline-color: #93c5fd !important; }
/* The option the arrow keys are on: Gradio marks it with a grey barely different from white. */
[role="listbox"] [role="option"].active { outline: 2px solid #1d4ed8; outline-offset: -2px; }
.dark [role="listbox"] [role="option"].active { outline-color: #93c5fd; }
/* The open tab's name is in the accent colour, orange-500 by default: 2.8:1 on white. */
button[role="tab"][aria-selected="true"] { color: #c2410c; }
button[role="tab"][aria-selected="true"]::after { background-color: #c2410c !important; }
.dark button[role="tab"][aria-selected="true"] { color: #fb923c; }
.dark button[role="tab"][aria-selected="true"]::after { background-color: #fb923c !important; }
/* Gradio's footer links are pale grey (1.9:1); they lead to its settings (language, theme). */
footer .built-with, footer .settings { color: #52525b !important; opacity: 1 !important; }
.dark footer .built-with, .dark footer .settings { color: #d4d4d8 !important; }
#leaderboard-swipe, .arena-phone-caption { display: none !important; }
.arena-visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden; clip-path: inset(50%);
                         white-space: nowrap; }
@media (max-width: 640px) {
  /* Answers grow with their text and the page scrolls, read from the start; in a fixed window a phone
     showed three lines of each, scrolled to its end. Empty, they are short: the prompt is on the first screen. */
  .arena-chat { height: auto !important; min-height: 170px; }
  .arena-chat .bubble-wrap { height: auto !important; max-height: none !important; overflow: visible !important; }
  #data-notice, #data-notice * { font-size: 0.75rem !important; }
  /* iOS Safari zooms the page into a text field under 16 px when it gets the focus, and stays zoomed. */
  .arena-prompt textarea { font-size: 16px !important; }
  .vote-button { font-size: 0.8rem !important; padding: 6px 2px !important; min-height: 44px; align-self: stretch; }
  button[role="tab"] { min-height: 44px; }
  /* Side by side, each picker takes the whole width: half of it cut model names short under the arrow. */
  .arena-picker { min-width: 100% !important; }
  #leaderboard-swipe { display: block !important; }
  /* The figures as drawn, about 900 px wide with labels of 12 px and more, in boxes that scroll sideways as
     the table does: shrunk to the screen, their labels and numbers were 3 to 4 px tall. */
  .arena-figure .matplotlib { overflow-x: auto; align-items: flex-start !important; }
  .arena-figure .matplotlib img { max-width: none !important; width: auto !important; height: auto !important; }
  .arena-phone-caption { display: block !important; font-size: 0.85rem; }
  .arena-phone-caption .html-container { padding: 0 !important; }  /* in line with the text around it */
  #leaderboard-table *, #leaderboard-head-to-head * { font-size: 0.7rem !important; }
  #leaderboard-table th, #leaderboard-table td, #leaderboard-head-to-head th, #leaderboard-head-to-head td {
    padding: 3px 4px !important; min-width: 0 !important; }
  /* not "R/a/n/k" or "Ba/tt/le/s" down a narrow column */
  #leaderboard-table th *, #leaderboard-head-to-head th * { white-space: nowrap; }
}
"""

_SCRIPT = """
() => {
  const panels = __PANELS__;
  const plotDescriptions = __PLOT_DESCRIPTIONS__;
  const touch = matchMedia("(pointer: coarse)").matches;
  const announcer = document.createElement("div");
  announcer.id = "arena-announcer";
  announcer.className = "arena-visually-hidden";
  announcer.setAttribute("role", "status");
  announcer.setAttribute("aria-live", "polite");
  document.body.appendChild(announcer);
  let announced = {text: "", at: 0};
  const announce = (text) => {
    // Emptied first, so that the same words said again (a second refusal) are read again; emptied after,
    // so that the last receipt is not left lying in the page.
    announcer.textContent = "";
    announced = {text, at: Date.now()};
    requestAnimationFrame(() => { announcer.textContent = text; });
    setTimeout(() => { if (announced.text === text) announcer.textContent = ""; }, 5000);
  };
  const setIfChanged = (element, name, value) => {
    if (element.getAttribute(name) !== value) element.setAttribute(name, value);
  };
  const statusOf = (panel) => {  // its text, and whether its tab is on screen (asked only when needed: layout)
    const status = document.getElementById(panel.status);
    const prose = status && status.querySelector(".prose");
    return {text: prose ? prose.textContent.trim() : "",
            onScreen: () => status !== null && status.offsetParent !== null};
  };
  const shown = {}, queued = {}, turns = {}, prompted = {}, rising = {};
  const mend = () => {
    for (const panel of panels) {
      // A status line that changes in the tab on screen is read out (answering, answers in, the receipt).
      const {text, onScreen} = statusOf(panel);
      if (panel.status in shown && shown[panel.status] !== text && text && onScreen()) announce(text);
      shown[panel.status] = text;
      // Waiting for a free answering slot, Gradio shows the place in line over the event's outputs ("queue:
      // 2/5"). Not always over the status: with the page-load event still queued there when the prompt was
      // sent, the status's tracker was seen to stay empty while the ask waited, so the prompt's is read too.
      // Every event passes through the queue for a moment: only a wait of over a second is said.
      const trackers = document.querySelectorAll(
        `#${panel.status} [data-testid="status-tracker"], #${panel.prompt} [data-testid="status-tracker"]`);
      const place = [...trackers].map((tracker) => tracker.textContent.match(/queue:\\s*(\\d+)\\s*\\/\\s*(\\d+)/))
        .find(Boolean);
      const line = place ? `Waiting for a free answering slot: you are ${place[1]} of ${place[2]} in line.` : "";
      if (line && line !== queued[panel.status]) {
        setTimeout(() => { if (queued[panel.status] === line && statusOf(panel).onScreen()) announce(line); }, 1200);
      }
      queued[panel.status] = line;
      // On a phone the answers are as long as their text: a follow-up starts where its prompt is, not
      // wherever the earlier turns left the page.
      const prompts = document.querySelectorAll(`#${panel.chat} .user-row`);
      if (touch && prompts.length > (turns[panel.chat] || 0) && prompts.length > 1) {
        prompts[prompts.length - 1].scrollIntoView({block: "start"});
      }
      turns[panel.chat] = prompts.length;
      // Elsewhere each chat is a window of its own, which does not follow the answer down as it streams (a
      // long one would be left showing its last lines): a new prompt is brought to its top as soon as the
      // answer below it is long enough, unless the reader scrolls first, and the answer is read from its start.
      for (const id of touch ? [] : panel.chats) {
        const log = document.querySelector(`#${id} [role="log"]`);
        if (!log) continue;
        if (!log.dataset.arenaReader) {
          log.dataset.arenaReader = "1";
          for (const kind of ["wheel", "pointerdown", "keydown"]) log.addEventListener(kind, () => { delete rising[id]; });
        }
        const asked = log.querySelectorAll(".user-row");
        if (asked.length > (prompted[id] || 0)) rising[id] = asked.length;
        prompted[id] = asked.length;
        const row = rising[id] && asked[rising[id] - 1];
        if (!row) continue;
        const below = row.getBoundingClientRect().top - log.getBoundingClientRect().top;
        if (below > 1) log.scrollTop += below;
        if (row.getBoundingClientRect().top - log.getBoundingClientRect().top <= 1) delete rising[id];
      }
    }
    // Answers stream a token at a time: read live, each would be re-read from its start on every token.
    // They are read when the status says they are in; each panel is named by its label ("Model A").
    for (const chat of document.querySelectorAll(".arena-chat")) {
      const log = chat.querySelector('[role="log"]');
      if (!log) continue;
      setIfChanged(log, "aria-live", "off");
      const label = chat.querySelector('[data-testid="block-label"]');
      if (label && label.textContent.trim()) setIfChanged(log, "aria-label", label.textContent.trim());
    }
    // Gradio 6.31's own announcer reads untranslated keys ("common.loading", "common.complete") at every
    // event; the status line says what happened, in words.
    for (const region of document.querySelectorAll('.sr-only[role="status"]')) setIfChanged(region, "aria-live", "off");
    for (const [id, description] of Object.entries(plotDescriptions)) {
      for (const image of document.querySelectorAll(`#${id} img`)) setIfChanged(image, "alt", description);
    }
  };
  let pending = false;  // streamed tokens change the page many times a frame: mend once per frame
  new MutationObserver(() => {
    if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; mend(); }); }
  }).observe(document.body, {childList: true, subtree: true, characterData: true, attributes: true,
                             attributeFilter: ["alt"]});
  mend();
  // After each of a panel's events: a status the event left unchanged (the same refusal again) is read
  // out too, and the prompt gets the keyboard back, except on touch screens, where it would pop up the
  // keyboard over the answers.
  let lastEventDone = 0;
  window.arenaEventDone = (key, refocus) => {
    const panel = panels.find((candidate) => candidate.key === key);
    setTimeout(() => {
      const {text, onScreen} = statusOf(panel);
      if (text && onScreen() && announced.at <= lastEventDone) announce(text);  // nothing read out since the last event
      lastEventDone = Date.now();
      if (refocus && !touch) document.querySelector(`#${panel.prompt} textarea`)?.focus();
    }, 100);
  };
  // Leaving the page (reload, close, a link) drops a battle still answering or answered and unvoted, and
  // phones reload tabs left in the background: the browser asks first.
  window.addEventListener("beforeunload", (event) => {
    const open = panels.some((panel) => {
      const vote = document.getElementById(panel.vote), prompt = document.querySelector(`#${panel.prompt} textarea`);
      return (vote && !vote.disabled) || (prompt && prompt.disabled);  // answered and unvoted, or answering
    });
    if (open) { event.preventDefault(); event.returnValue = ""; }
  });
  // Choosing a model with Enter closes the list and drops the keyboard focus on the page itself (Gradio
  // blurs the box); it goes on to the prompt, the next step, instead of back to the top of the page.
  document.addEventListener("keydown", (event) => {
    const picker = event.key === "Enter" && event.target.closest && event.target.closest(".arena-picker");
    const panel = picker && panels.find((candidate) => candidate.pickers.includes(picker.id));
    if (!panel) return;
    setTimeout(() => {
      if (document.activeElement === document.body) document.querySelector(`#${panel.prompt} textarea`)?.focus();
    }, 100);
  }, true);
}
"""


def page_script(panels: list[Mapping], plot_descriptions: Mapping[str, str]) -> str:
    """The page's script (Gradio runs it once the page is drawn): announcements, quiet streams, plot descriptions.

    `panels`: each duel panel's key and the element ids of its status line, prompt, chats (also the first
    alone), first vote button and pickers.
    """
    return (_SCRIPT.replace("__PANELS__", json.dumps(list(panels)))
            .replace("__PLOT_DESCRIPTIONS__", json.dumps(dict(plot_descriptions))))
