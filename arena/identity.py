"""Whether an answer gave its model away: names and family words, however they are disguised.

A vote on an answer that named a model was not blind: the service flags it (it stays an anonymous
battle's vote) and the leaderboard leaves it out.
"""

from __future__ import annotations

import functools
import re
import unicodedata

from arena.text import as_read


def identity_leak(texts: list[str], terms: list[str]) -> str | None:
    """The first model name or family word found in the answers, if any.

    Texts are compared as read (`text.as_read`: markup, accents, look-alike letters, full-width forms
    and invisible characters do not hide a name). A term is split where it has separators or changes
    case ("SmolLM" is "Smol" + "LM", "Hugging Face" two words); it matches with any separators or none
    there ("Smol LM", "smol-lm", "HuggingFace"), or spelled out letter by letter ("S-m-o-l-L-M"), never
    run together from other words ("let me take" is not "Meta"). It must start a word and not run on
    into more letters ("metadata" is not "Meta"); digits may follow, so "SmolLM" catches "SmolLM2".
    """
    readable = [as_read(text) for text in texts]
    for term in sorted(set(terms), key=len, reverse=True):
        if any(pattern.search(text) for pattern in _term_patterns(term) for text in readable):
            return term
    return None


_TERM_PARTS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+|[^\W\d_]+")  # "SmolLM2" -> Smol, LM, 2


@functools.lru_cache(maxsize=1024)  # the same few terms at every vote
def _term_patterns(term: str) -> tuple[re.Pattern, re.Pattern]:
    parts = [as_read(part) for part in _TERM_PARTS.findall(unicodedata.normalize("NFKC", term))]
    start, end = r"(?<![0-9a-z])", r"(?![a-z])"
    as_written = start + r"[\W_]*".join(map(re.escape, parts)) + end
    spelled_out = start + r"[\W_]{1,5}".join(map(re.escape, "".join(parts))) + end
    return re.compile(as_written), re.compile(spelled_out)
