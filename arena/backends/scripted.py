"""A deterministic backend for tests only: no weights, behaviour chosen by `script`.

It exists to exercise paths a real model reaches only by chance (a crash, a
hang, an empty answer, hostile markup), like httpx's mock transport.
`script` is one of:
  echo          repeat the volunteer's last message
  reply: TEXT   answer TEXT
  replies: A | B
                answer A the first time, B the next time and every time after
  error         raise an exception mid-answer
  hang          produce nothing until cancelled
  empty         finish without a word
  after S: SCRIPT
                wait S seconds, then do SCRIPT (a model slow to start)
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Hashable, Iterator

from arena.backends.base import Backend, Delta, GenerationError, Message
from arena.config import GenerationSettings, ModelEntry

STEP_SECONDS = 0.01


class ScriptedBackend(Backend):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._calls = itertools.count()  # next() is atomic, so parallel battles count each call once

    @staticmethod
    def sharing_key(entry: ModelEntry) -> Hashable:
        return ("scripted", entry.name)

    def prompt_tokens(self, messages: list[Message]) -> int | None:
        """A token a word, as its answers count them."""
        return sum(len(m["content"].split()) for m in messages)

    @staticmethod
    def preflight_problem(entry: ModelEntry) -> str | None:
        try:
            _parsed(entry.script)
        except GenerationError as problem:
            return str(problem)
        return None

    def stream(self, messages: list[Message], settings: GenerationSettings, cancel: threading.Event,
               group: Hashable | None = None) -> Iterator[Delta]:
        seconds, script = _parsed(self.entry.script)
        if seconds and cancel.wait(seconds):
            return
        if script == "hang":
            cancel.wait()
            return
        if script == "empty":
            return
        if script == "echo":
            text = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        elif script.startswith("reply:"):
            text = script[len("reply:"):].strip()
        elif script.startswith("replies:"):
            replies = [reply.strip() for reply in script[len("replies:"):].split("|")]
            text = replies[min(next(self._calls), len(replies) - 1)]
        else:  # "error"
            yield Delta("Starting to", 2)
            raise GenerationError("the scripted model failed on purpose")
        words = text.split(" ")
        for index, word in enumerate(words[: settings.max_new_tokens]):
            if cancel.is_set():
                return
            time.sleep(STEP_SECONDS)
            yield Delta(word if index == 0 else " " + word, 1)
        if len(words) > settings.max_new_tokens:
            yield Delta("", 0, cut=True)


_PLAIN_SCRIPTS = ("echo", "error", "hang", "empty")


def _parsed(text: str | None) -> tuple[float, str]:
    """(seconds to wait first, the script): a script models.yaml misspells fails at start, not mid-battle."""
    script, seconds = (text or "").strip(), 0.0
    if script.startswith("after "):
        delay, _, script = script[len("after "):].partition(":")
        try:
            seconds = float(delay)
        except ValueError:
            raise GenerationError(f"unknown script {text!r}: 'after' needs seconds, as in 'after 2: echo'") from None
        script = script.strip()
    if script not in _PLAIN_SCRIPTS and not script.startswith(("reply:", "replies:")):
        raise GenerationError(f"unknown script {text!r}: one of {', '.join(_PLAIN_SCRIPTS)}, 'reply: TEXT', "
                              "'replies: A | B', or 'after S: SCRIPT'")
    return seconds, script
