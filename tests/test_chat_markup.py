"""HTML written in a prompt or an answer is shown as written; code, autolinks and table line breaks are not touched.

The browser side (what Chromium draws) is in test_hostile_content.py; these are the cases a model's Markdown
brings, each checked against what the page's Markdown would otherwise have read as HTML.
"""

from __future__ import annotations

import pytest

from arena.ui.chat_markup import markup_shown_as_written

Z = "\u200b"  # after `<` or `&`, where a tag or an entity would begin


@pytest.mark.parametrize("written, shown", [
    ("What does the <b> tag do? And <!-- this -->?", f"What does the <{Z}b> tag do? And <{Z}!-- this -->?"),
    ("a & b &amp; c &#60;", f"a & b &{Z}amp; c &{Z}#60;"),
    ("x < y and 3 <= 4 & 5", "x < y and 3 <= 4 & 5"),  # no tag or entity can begin there: untouched
    ("use `<b>` and ``x<y>`` then <i>", f"use `<b>` and ``x<y>`` then <{Z}i>"),
    ("```html\n<b>x</b> &amp;\n```\nthen <i>", f"```html\n<b>x</b> &amp;\n```\nthen <{Z}i>"),
    ("```\nstill streaming <b>", "```\nstill streaming <b>"),  # an unclosed fence is code to the end
    ("text\n\n    if a <b:\n        x\nafter <p>", f"text\n\n    if a <b:\n        x\nafter <{Z}p>"),
    # Indented under a list item: a paragraph of the item, not code
    ("1. **Install**\n\n    Use the <b> tag.\n\n2. Next", f"1. **Install**\n\n    Use the <{Z}b> tag.\n\n2. Next"),
    ("- item\n\n    - nested about <div>", f"- item\n\n    - nested about <{Z}div>"),
    # ...and code inside a list or a quote stays code
    ("- item\n\n      ~~~\n      <div>hi</div>\n      ~~~", "- item\n\n      ~~~\n      <div>hi</div>\n      ~~~"),
    ("> ~~~\n> <div>hi</div>\n> ~~~", "> ~~~\n> <div>hi</div>\n> ~~~"),
    # A lone backtick pairs with none in another paragraph; an escaped one opens no code
    ("Press the ` key.\n\nThe <b> tag.\n\nRun `ls`.", f"Press the ` key.\n\nThe <{Z}b> tag.\n\nRun `ls`."),
    ("escaped \\` then <b> `x`", f"escaped \\` then <{Z}b> `x`"),
    ("See <https://example.com/docs> or <me@example.com>", "See <https://example.com/docs> or <me@example.com>"),
    ("| a | b |\n|---|---|\n| x<br>y | <i>z</i> |", f"| a | b |\n|---|---|\n| x<br>y | <{Z}i>z<{Z}/i> |"),
    ("line one\r\nline <b>two", f"line one\nline <{Z}b>two"),
])
def test_markup_outside_code_is_shown_as_written(written, shown):
    assert markup_shown_as_written(written) == shown
