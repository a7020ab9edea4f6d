"""The contestants of an arena: config entries bound to loaded backends.

Entries that point at the same weights share one backend, so three
personalities of one model cost one copy in memory.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from arena.backends import Backend, Delta, GenerationError, Message, backend_class, cause_text
from arena.config import ArenaConfig, ModelEntry
from arena.wording import counted


class ModelLoadError(RuntimeError):
    """The arena cannot start with the models it has: the message says which failed and why."""


def _failed_to_load(name: str, cause: BaseException, source: str = "") -> ModelLoadError:
    where = f" from {source}" if source else ""
    return ModelLoadError(f"model '{name}' failed to load{where}: {cause_text(cause)}")


def _too_few_models(loaded: list[str], failures: dict[str, str]) -> ModelLoadError:
    """`on_load_failure: disable` left fewer than two models: no battle can be served."""
    return ModelLoadError(
        f"only {counted(len(loaded), 'model')} loaded{' (' + ', '.join(loaded) + ')' if loaded else ''}"
        " and a battle needs two; failed and disabled: " + "; ".join(f"{name} ({cause})" for name, cause in failures.items()))


@dataclass
class Contestant:
    entry: ModelEntry
    backend: Backend

    @property
    def name(self) -> str:
        return self.entry.name

    def stream(self, turns: list[Message], cancel: threading.Event, max_new_tokens: int | None = None,
               group: Hashable | None = None) -> Iterator[Delta]:
        """The answer to `turns`; `max_new_tokens` lowers the entry's own limit (see `ArenaService`); answers
        of one `group` start together where the backend can see to it (`Backend.stream`)."""
        settings = self.entry.generation
        if max_new_tokens is not None and max_new_tokens < settings.max_new_tokens:
            settings = replace(settings, max_new_tokens=max_new_tokens)
        return self.backend.stream(self._messages(turns), settings, cancel, group)

    def prompt_tokens(self, turns: list[Message]) -> int | None:
        """Tokens the model reads for `turns`, its system prompt included (None: only a remote server knows)."""
        return self.backend.prompt_tokens(self._messages(turns))

    def _messages(self, turns: list[Message]) -> list[Message]:
        system = [{"role": "system", "content": self.entry.system_prompt}] if self.entry.system_prompt else []
        return [*system, *turns]


@dataclass
class Roster:
    config: ArenaConfig
    cache_dir: Path | None = None
    contestants: dict[str, Contestant] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    loading_stage: str = "starting"  # for volunteers: how far loading has come, no model named
    ready: threading.Event = field(default_factory=threading.Event)

    @property
    def names(self) -> list[str]:
        return sorted(self.contestants)

    def load(self, report: Callable[[str], None] = print) -> None:
        """Load every enabled entry, one backend per distinct set of weights.

        On a failure, `settings.on_load_failure` decides: "stop" raises
        ModelLoadError naming the model; "disable" leaves it out and serves the rest.
        """
        groups: dict[object, list[ModelEntry]] = {}
        for entry in self.config.enabled_models:
            problem = backend_class(entry).preflight_problem(entry)
            if problem:  # before any loading: minutes of it would be wasted under "stop"
                self._give_up([entry], GenerationError(problem), report)
                continue
            groups.setdefault((entry.backend, backend_class(entry).sharing_key(entry)), []).append(entry)
        # Quick checks first (remote endpoints): their failures show before the weights load.
        ordered = sorted(groups.values(), key=lambda entries: not backend_class(entries[0]).loads_quickly)
        loaded = 0  # weights that serve at least one entry: a failure is not counted as loaded
        for index, entries in enumerate(ordered, start=1):
            names = ", ".join(e.name for e in entries)
            self.loading_stage = f"{loaded} of {len(groups)} loaded"
            report(f"[{index}/{len(groups)}] {names}")
            started = time.monotonic()
            backend = backend_class(entries[0])(entries[0], cache_dir=self.cache_dir)
            try:
                backend.load(lambda message: report(f"    {message}"))
            except Exception as exc:  # any failure of a model's own code is reported, never a crash
                self._give_up(entries, exc, report)
                continue
            report(f"    ready in {time.monotonic() - started:.1f} s")
            for entry in entries:
                problem = backend.settings_problem(entry.generation)  # e.g. more new tokens than the model can read
                if problem:
                    self._give_up([entry], ValueError(problem), report)
                else:
                    self.contestants[entry.name] = Contestant(entry, backend)
            if any(self.contestants.get(entry.name) for entry in entries):
                loaded += 1
            else:
                backend.close()  # nobody serves on these weights: free them
        if len(self.contestants) < 2:
            raise _too_few_models(list(self.contestants), self.failures)
        self.loading_stage = "ready"
        self.ready.set()

    def _give_up(self, entries: list[ModelEntry], exc: Exception, report: Callable[[str], None]) -> None:
        """`on_load_failure`: "stop" raises ModelLoadError naming the model; "disable" leaves these entries out."""
        if self.config.settings.on_load_failure == "stop":
            raise _failed_to_load(entries[0].name, exc, entries[0].location) from exc
        for entry in entries:
            self.failures[entry.name] = cause_text(exc)
        report(f"    FAILED, disabled {', '.join(e.name for e in entries)}: {cause_text(exc)}")

    def close(self) -> None:
        for backend in {id(c.backend): c.backend for c in self.contestants.values()}.values():
            backend.close()
