"""The one interface every model backend implements.

A backend owns loaded weights (or a connection) and turns a chat into a
stream of text. Contestants that share weights share one backend instance,
so the per-contestant settings (system prompt, decoding) travel with each
call instead of living in the backend.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path

from arena.config import GenerationSettings, ModelEntry

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}
ProgressReport = Callable[[str], None]


class GenerationError(RuntimeError):
    """A model could not answer. The message is for the operator's log: it may name the model, its source or
    its server, so a volunteer never sees it (the battle's status says only that a side failed)."""


def cause_text(exc: BaseException) -> str:
    """Our own errors say what happened in words; anything else keeps its type, which may be all it says."""
    return str(exc) if isinstance(exc, GenerationError) else f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class Delta:
    """A piece of an answer as it streams in."""

    text: str
    tokens: int = 0
    cut: bool = False  # the answer stopped at max_new_tokens, not because the model had finished


class Backend(ABC):
    """Loaded weights or a remote endpoint that can answer chats."""

    def __init__(self, entry: ModelEntry, *, cache_dir: Path | None = None):
        self.entry = entry
        self.cache_dir = cache_dir  # where a backend may keep files derived from its weights

    @staticmethod
    @abstractmethod
    def sharing_key(entry: ModelEntry) -> Hashable:
        """Entries of this backend with equal keys are served by one instance (one copy in memory).

        That instance is built from the first such entry, so `self.entry` may be read only for fields the
        key includes; what differs between them (system prompt, decoding) comes with each `stream` call.
        """

    # Loads in a moment (a remote check, no weights): loaded first, so its failure shows before minutes of loading.
    loads_quickly = False

    @staticmethod
    def preflight_problem(entry: ModelEntry) -> str | None:
        """Why `entry` cannot load, found without loading anything (a missing environment variable), or None."""
        return None

    def load(self, report: ProgressReport) -> None:
        """Prepare for generation; slow work reports progress through `report`."""

    def prompt_tokens(self, messages: list[Message]) -> int | None:
        """How many tokens the model reads for `messages`, or None where only the server knows.

        None leaves this model out of `limits.max_conversation_tokens` and `limits.prompt_tokens_per_hour`
        (in an anonymous battle the other side's count still applies), except that the budget then charges a
        guess from the text's length where that is more than the counted models' count.
        """
        return None

    def context_length(self) -> int | None:
        """The most tokens the model reads in all, prompt and answer, or None where unknown."""
        return None

    def settings_problem(self, settings: GenerationSettings) -> str | None:
        """Once loaded: why a contestant's decoding settings cannot work with this model, or None.

        Caught at start-up, a setting the model cannot honour fails every battle otherwise.
        """
        return None

    @abstractmethod
    def stream(self, messages: list[Message], settings: GenerationSettings, cancel: threading.Event,
               group: Hashable | None = None) -> Iterator[Delta]:
        """Yield the answer to `messages` piece by piece until done or `cancel` is set.

        What callers rely on:
        - one instance streams for many battles at once, from as many threads;
        - each `Delta` carries the tokens its text took (0 where unknown); after `settings.max_new_tokens`
          of them the answer stops with `Delta("", 0, cut=True)`. Anonymous battles cap both sides at the
          smallest `max_new_tokens` served, so that an answer's length names no model;
        - `cancel` is checked between pieces: once it is set, return without raising; later pieces are dropped;
        - a side with no new text for `generation_timeout_s` fails its battle, as does an answer that is
          only whitespace.
        Answers sharing a `group` (the two sides of a battle) are to start together: a backend that
        schedules prompts (the batched decoder) reads them one after the other. Others may ignore it.
        Raises GenerationError (or anything else, which callers treat the same)
        when the model cannot answer.
        """

    def close(self) -> None:
        """Release weights or connections."""
