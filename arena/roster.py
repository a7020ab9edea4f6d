"""The contestants of an arena: config entries bound to loaded backends.

Entries that point at the same weights share one backend, so three
personalities of one model cost one copy in memory.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from arena.backends import Backend, Delta, Message, backend_class
from arena.config import ArenaConfig, ModelEntry
from arena.wording import counted


class ModelLoadError(RuntimeError):
    def __init__(self, name: str, cause: BaseException, source: str = ""):
        self.name = name
        self.cause = cause
        where = f" from {source}" if source else ""
        super().__init__(f"model '{name}' failed to load{where}: {type(cause).__name__}: {cause}")


class TooFewModels(ModelLoadError):
    """`on_load_failure: disable` left fewer than two models: no battle can be served."""

    def __init__(self, loaded: list[str], failures: dict[str, str]):
        self.loaded, self.failures = loaded, failures
        RuntimeError.__init__(
            self, f"only {counted(len(loaded), 'model')} loaded{' (' + ', '.join(loaded) + ')' if loaded else ''}"
            f" and a battle needs two; failed and disabled: "
            + "; ".join(f"{name} ({cause})" for name, cause in failures.items()))


@dataclass
class Contestant:
    entry: ModelEntry
    backend: Backend

    @property
    def name(self) -> str:
        return self.entry.name

    def stream(self, turns: list[Message], cancel: threading.Event) -> Iterator[Delta]:
        messages = list(turns)
        if self.entry.system_prompt:
            messages.insert(0, {"role": "system", "content": self.entry.system_prompt})
        return self.backend.stream(messages, self.entry.generation, cancel)


@dataclass
class Roster:
    config: ArenaConfig
    cache_dir: Path | None = None
    contestants: dict[str, Contestant] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    loading: str = "not started"
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
            groups.setdefault(backend_class(entry).sharing_key(entry), []).append(entry)
        for index, entries in enumerate(groups.values(), start=1):
            names = ", ".join(e.name for e in entries)
            self.loading = f"loading weights {index}/{len(groups)} ({names})"
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
            if not any(self.contestants.get(entry.name) for entry in entries):
                backend.close()  # nobody serves on these weights: free them
        if len(self.contestants) < 2:
            raise TooFewModels(list(self.contestants), self.failures)
        self.loading = "ready"
        self.ready.set()

    def _give_up(self, entries: list[ModelEntry], exc: Exception, report: Callable[[str], None]) -> None:
        """`on_load_failure`: "stop" raises ModelLoadError naming the model; "disable" leaves these entries out."""
        if self.config.settings.on_load_failure == "stop":
            raise ModelLoadError(entries[0].name, exc, entries[0].source or entries[0].base_url or "") from exc
        for entry in entries:
            self.failures[entry.name] = f"{type(exc).__name__}: {exc}"
        report(f"    FAILED, disabled {', '.join(e.name for e in entries)}: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        for backend in {id(c.backend): c.backend for c in self.contestants.values()}.values():
            backend.close()
