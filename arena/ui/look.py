"""How the page looks and reads: theme, CSS, and a script for what assistive technology needs.

Gradio has no setting for live regions or image descriptions, so a small
script adds them to the page it draws. Nothing here may carry a model's
identity: the script copies only what the page already shows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

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


PAGE_CSS = (Path(__file__).parent / "page.css").read_text()

_SCRIPT = (Path(__file__).parent / "page.js").read_text()


def page_script(panels: list[Mapping], plot_descriptions: Mapping[str, str]) -> str:
    """The page's script (Gradio runs it once the page is drawn): announcements, quiet streams, plot descriptions.

    `panels`: each duel panel's key and the element ids of its status line, prompt, chats (also the first
    alone) and pickers.
    """
    return (_SCRIPT.replace("__PANELS__", json.dumps(list(panels)))
            .replace("__PLOT_DESCRIPTIONS__", json.dumps(dict(plot_descriptions))))
