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


# The panels' "clear" icon would blank one answer on the page only, with the vote still open for it.
PAGE_CSS = """
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
.dark button[role="tab"][aria-selected="true"] { color: #fb923c; }
/* Gradio's footer links are pale grey (1.9:1); they lead to its settings (language, theme). */
footer .built-with, footer .settings { color: #52525b !important; opacity: 1 !important; }
.dark footer .built-with, .dark footer .settings { color: #d4d4d8 !important; }
.arena-visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden; clip-path: inset(50%);
                         white-space: nowrap; }
@media (max-width: 640px) {
  /* Answers grow with their text and the page scrolls, read from the start; in a fixed window a phone
     showed three lines of each, scrolled to its end. Empty, they are short: the prompt is on the first screen. */
  .arena-chat { height: auto !important; min-height: 170px; }
  .arena-chat .bubble-wrap { height: auto !important; max-height: none !important; overflow: visible !important; }
  #data-notice, #data-notice * { font-size: 0.75rem !important; }
  .vote-button { font-size: 0.8rem !important; padding: 6px 2px !important; min-height: 44px; align-self: stretch; }
  button[role="tab"] { min-height: 44px; }
  /* Side by side, each picker takes the whole width: half of it cut model names short under the arrow. */
  .arena-picker { min-width: 100% !important; }
  #leaderboard-table * { font-size: 0.7rem !important; }
  #leaderboard-table th, #leaderboard-table td { padding: 3px 4px !important; min-width: 0 !important; }
  #leaderboard-table th * { white-space: nowrap; }  /* not "R/a/n/k" down a narrow column */
}
"""

_SCRIPT = """
() => {
  const statusIds = __STATUS_IDS__;
  const plotDescriptions = __PLOT_DESCRIPTIONS__;
  const announcer = document.createElement("div");
  announcer.id = "arena-announcer";
  announcer.className = "arena-visually-hidden";
  announcer.setAttribute("role", "status");
  announcer.setAttribute("aria-live", "polite");
  document.body.appendChild(announcer);
  const shown = {};
  const setAttribute = (element, name, value) => {
    if (element.getAttribute(name) !== value) element.setAttribute(name, value);
  };
  const mend = () => {
    // A status line that changes in the tab on screen is read out (a refusal, answers in, the receipt).
    for (const id of statusIds) {
      const status = document.getElementById(id);
      const prose = status && status.querySelector(".prose");
      if (!prose) continue;
      const text = prose.innerText.trim();
      if (id in shown && shown[id] !== text && text && status.offsetParent !== null) announcer.textContent = text;
      shown[id] = text;
    }
    // Answers stream a token at a time: read live, each would be re-read from its start on every token.
    // They are read when the status says they are in; each panel is named by its label ("Model A").
    for (const chat of document.querySelectorAll(".arena-chat")) {
      const log = chat.querySelector('[role="log"]');
      if (!log) continue;
      setAttribute(log, "aria-live", "off");
      const label = chat.querySelector('[data-testid="block-label"]');
      if (label && label.innerText.trim()) setAttribute(log, "aria-label", label.innerText.trim());
    }
    // Gradio 6.31's own announcer reads untranslated keys ("common.loading", "common.complete") at every
    // event; the status line above says what happened, in words.
    for (const region of document.querySelectorAll('.sr-only[role="status"]')) setAttribute(region, "aria-live", "off");
    for (const [id, description] of Object.entries(plotDescriptions)) {
      for (const image of document.querySelectorAll(`#${id} img`)) setAttribute(image, "alt", description);
    }
  };
  // Choosing a model with Enter closes the list and drops the keyboard focus on the page itself (Gradio
  // blurs the box); it goes on to the prompt, the next step, instead of back to the top of the page.
  document.addEventListener("keydown", (event) => {
    const picker = event.key === "Enter" && event.target.closest && event.target.closest(".arena-picker");
    if (!picker) return;
    const panel = picker.id.split("-pick-")[0];
    setTimeout(() => {
      if (document.activeElement === document.body) document.querySelector(`#${panel}-prompt textarea`)?.focus();
    }, 100);
  }, true);
  new MutationObserver(mend).observe(document.body,
    {childList: true, subtree: true, characterData: true, attributes: true, attributeFilter: ["alt"]});
  mend();
}
"""


def page_script(status_ids: list[str], plot_descriptions: Mapping[str, str]) -> str:
    """The page's script (Gradio runs it once the page is drawn): live status lines, quiet streams, plot descriptions."""
    return (_SCRIPT.replace("__STATUS_IDS__", json.dumps(status_ids))
            .replace("__PLOT_DESCRIPTIONS__", json.dumps(dict(plot_descriptions))))
