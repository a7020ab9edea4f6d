"""Text the arena shows or stores: model names, and what SQLite, JSON and a page cannot take.

One place, because a model is named both in `models.yaml` and in vote files, and the two must agree on
which spelling names which model.
"""

from __future__ import annotations

import html
import re
import unicodedata
from typing import Any

MAX_MODEL_NAME_LENGTH = 200

# Characters that break a table row or make two names look alike: controls (Cc), format characters
# such as direction overrides, zero-width spaces and soft hyphens (Cf), line and paragraph separators,
# and the few invisible letters Unicode counts as default-ignorable (Hangul fillers, the grapheme joiner).
_UNREADABLE_CATEGORIES = {"Cc", "Cf", "Zl", "Zp"}
_INVISIBLE_LETTERS = {0x034F, 0x115F, 0x1160, 0x3164, 0xFFA0}
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # half of a UTF-16 pair, as a \ud800-style JSON escape makes
# Characters a model name may hold that Markdown would read as a table cell's end, emphasis, code, a link
# or an HTML tag.
_MARKDOWN_SPECIAL = re.compile(r"[\\|*_`\[\]<]")


def unreadable_character(name: str) -> str | None:
    """Why a model name cannot be shown as it is (a control or invisible character), or None."""
    for character in name:
        if unicodedata.category(character) in _UNREADABLE_CATEGORIES or ord(character) in _INVISIBLE_LETTERS:
            return f"contains a control or invisible character (U+{ord(character):04X})"
    return None


def lone_surrogates_replaced(text: str) -> str:
    """`text` with each lone surrogate made U+FFFD: SQLite, JSON encoders and pages all need valid UTF-8."""
    return _LONE_SURROGATE.sub("\ufffd", text)


def too_long_or_broken(text: str, max_length: int) -> str | None:
    """Why SQLite or a reader cannot take `text` (over `max_length`, or a lone surrogate), or None."""
    if len(text) > max_length:
        return f"is longer than {max_length} characters"
    if lone_surrogates_replaced(text) != text:
        return "is not valid Unicode text"
    return None


def model_name(value: Any) -> tuple[str | None, str | None]:
    """(the name as stored, None) or (None, why not).

    Spaces around it are dropped and it is put in Unicode NFC, so "é" typed two ways is one model.
    """
    if not isinstance(value, str):
        return None, "must be a string"
    name = unicodedata.normalize("NFC", value.strip())
    if not name:
        return None, "is empty"
    problem = unreadable_character(name) or too_long_or_broken(name, MAX_MODEL_NAME_LENGTH)
    return (None, problem) if problem else (name, None)


# Letters of other scripts drawn like Latin ones (after case folding): "Qwеn" with a Cyrillic "е" reads as "Qwen".
_LOOK_ALIKES = str.maketrans({
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "х": "x", "у": "y", "і": "i", "ј": "j", "ѕ": "s",
    "һ": "h", "ԁ": "d", "ԛ": "q", "ԝ": "w", "к": "k", "м": "m", "т": "t", "ь": "b",
    "α": "a", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u", "χ": "x",
})
# Markdown emphasis and code marks: "**Smol**LM" shows as "SmolLM". An underscore separates words
# ("config_llama") more often than it emphasises, so it becomes a space.
_EMPHASIS = str.maketrans({"*": None, "~": None, "`": None, "_": " "})
_WORD = re.compile(r"\w+")
_LATIN = re.compile("[a-z]")
_TAG = re.compile(r"<[^<>]{0,300}>")  # HTML tags and comments render as nothing
_LINK = re.compile(r"\[([^\[\]]{0,300})\]\([^()]{0,300}\)")  # a Markdown link shows its text only


def _hidden(character: str) -> bool:
    """Shown as nothing, or as a mark on the letter before: zero-width and format characters, combining
    accents and strokes, variation selectors, invisible letters (Hangul fillers)."""
    return (unicodedata.category(character) in ("Cf", "Mn", "Me") or ord(character) in _INVISIBLE_LETTERS
            or 0xFE00 <= ord(character) <= 0xFE0F)


def as_read(text: str) -> str:
    """`text` as a reader sees the words in it: markup, entities, accents and invisible characters gone,
    width folded, in lower case, and look-alike letters folded in words that mix them with Latin ones
    ("Smоl" with a Cyrillic о; a Russian word stays Russian). For finding names, not for showing."""
    text = _LINK.sub(r"\1", _TAG.sub("", html.unescape(text)))
    text = unicodedata.normalize("NFKD", text)
    text = unicodedata.normalize("NFKC", "".join(c for c in text if not _hidden(c))).casefold()
    text = text.translate(_EMPHASIS)
    return _WORD.sub(lambda word: word[0].translate(_LOOK_ALIKES) if _LATIN.search(word[0]) else word[0], text)


def markdown_text(text: str) -> str:
    """Plain text (a model name, a note naming models) that Markdown shows as written."""
    return _MARKDOWN_SPECIAL.sub(r"\\\g<0>", text)


def display_width(text: str) -> int:
    """Columns a terminal gives `text`: a wide character (CJK, most emoji) takes two, a combining mark none."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def padded(text: str, width: int, *, right: bool = False) -> str:
    """`text` filled with spaces to `width` columns as displayed (str.ljust counts characters, not columns)."""
    gap = " " * max(0, width - display_width(text))
    return gap + text if right else text + gap
