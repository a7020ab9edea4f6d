"""The chats' Markdown, with the HTML written in prompts and answers shown as the characters written.

The chats render Markdown, and raw HTML in it was rendered too: "what does the <b> tag do?" lost its tag
and turned the rest bold; a model explaining `<div>` outside backticks lost the word. Where a tag, comment
or entity would begin outside code, an invisible zero-width space now follows the `<` or `&`, so it begins
none. Code (fenced, indented, or in backticks) is shown as written by Markdown already and is left exactly
as it is, so code copied out of an answer is the code. Which lines are code is decided by a CommonMark
parser (markdown-it-py, the parser `rich` uses): code inside lists and quotes is not guessable line by line.
"""

from __future__ import annotations

import functools
import re

from markdown_it import MarkdownIt

_BLOCKS = MarkdownIt("commonmark").enable("table")  # the page's Markdown (Gradio's) draws tables too
# Left as they are: code spans (never across a blank line: each block is matched alone), autolinks and
# e-mail autolinks, and `<br>`, which models write in table cells for a line break. Then where markup begins.
_KEPT_OR_MARKUP = re.compile(
    r"(?P<kept>(?<![\\`])(`+)(?!`).+?(?<!`)\2(?!`)"
    r"|<[A-Za-z][A-Za-z0-9+.-]{1,31}:[^\s<>]*>"
    r"|<[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*>"
    r"|<br\s*/?>)"
    r"|<(?=[A-Za-z/!?])|&(?=#?\w+;)",
    re.S,
)


@functools.lru_cache(maxsize=1024)  # every update of a streaming battle shows its earlier messages again
def markup_shown_as_written(text: str) -> str:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")  # as the parser counts lines
    block_of: list[int | None] = list(range(len(lines)))  # lines of one block are matched together; None: code
    for token in _BLOCKS.parse("\n".join(lines)):
        if token.map is None:
            continue
        start, end = token.map
        if token.type in ("fence", "code_block"):
            block_of[start:end] = [None] * (end - start)
        elif token.type in ("inline", "html_block"):
            block_of[start:end] = [start] * (end - start)
    shown, index = [], 0
    while index < len(lines):
        block, end = block_of[index], index + 1
        while end < len(lines) and block_of[end] == block and block is not None:
            end += 1
        piece = "\n".join(lines[index:end])
        shown.append(piece if block is None else _KEPT_OR_MARKUP.sub(_inert, piece))
        index = end
    return "\n".join(shown)


def _inert(found: re.Match) -> str:
    return found[0] if found["kept"] else found[0] + "\u200b"
