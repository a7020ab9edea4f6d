"""Both sides of a battle answering at the same time.

Each side runs on its own thread; the caller sees snapshots of both answers
as they grow. A side that raises, stalls past the timeout or says nothing
fails alone: it never takes the other side's thread or the server with it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from arena.backends import Delta
from arena.text import lone_surrogates_replaced

StreamFactory = Callable[[threading.Event], Iterator[Delta]]


@dataclass
class SideResult:
    text: str = ""
    tokens: int = 0
    cut: bool = False  # stopped at the length limit
    first_token_s: float | None = None
    latency_s: float | None = None
    error: str | None = None  # detail for the server log and database, never for the page
    done: bool = False
    stopped: bool = False  # ended because the other side failed: neither a failure nor an answer it completed

    @property
    def completed(self) -> bool:
        return self.done and not self.stopped and self.error is None


@dataclass
class DuelFrame:
    sides: dict[str, SideResult] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return all(side.done for side in self.sides.values())

    @property
    def failed_sides(self) -> list[str]:
        return [name for name, side in self.sides.items() if side.error]


_FINISHED = object()

# Updates the server sends a second, shared by all the battles generating at once.
# Each update is rendered and sent while holding the GIL the decoder also needs:
# at 20 a second per battle, 8 battles ran at 10 battles/min, against 30 at 5
# a second (benchmarks/load.py).
UPDATES_PER_SECOND = 20
FRAME_INTERVAL_BOUNDS_S = (0.1, 0.5)


def frame_interval(battles_generating: int) -> float:
    """Seconds between one battle's updates: smooth when few battles run, cheap when many do."""
    low, high = FRAME_INTERVAL_BOUNDS_S
    return min(high, max(low, battles_generating / UPDATES_PER_SECOND))


def run_duel(streams: dict[str, StreamFactory], *, stall_timeout_s: float, frame_interval_s: float = FRAME_INTERVAL_BOUNDS_S[0]) -> Iterator[DuelFrame]:
    """Yield snapshots of all sides until every side is done or has failed.

    When one side fails the others are cancelled: the battle cannot be
    voted on, so their compute is better spent on the next volunteer.
    """
    events: queue.Queue = queue.Queue()
    cancels = {name: threading.Event() for name in streams}
    frame = DuelFrame({name: SideResult() for name in streams})
    started = time.monotonic()
    last_progress = {name: started for name in streams}

    def pump(name: str, factory: StreamFactory) -> None:
        try:
            for delta in factory(cancels[name]):
                events.put((name, delta))
                if cancels[name].is_set():
                    break
        except Exception as exc:  # a model's failure is data here, not a crash
            events.put((name, exc))
        finally:
            events.put((name, _FINISHED))

    for name, factory in streams.items():
        threading.Thread(target=pump, args=(name, factory), name=f"duel-{name}", daemon=True).start()

    last_yield = 0.0
    try:
        while not frame.done:
            try:
                name, item = events.get(timeout=frame_interval_s)
            except queue.Empty:
                name, item = None, None
            now = time.monotonic()
            if name is not None:
                side = frame.sides[name]
                if isinstance(item, Delta):
                    if not side.done:
                        side.text += lone_surrogates_replaced(item.text)  # a remote JSON answer may hold one
                        side.tokens += item.tokens
                        side.cut = side.cut or item.cut
                        if side.first_token_s is None and item.text:
                            side.first_token_s = now - started
                        last_progress[name] = now
                elif isinstance(item, Exception):
                    _fail(side, lone_surrogates_replaced(f"{type(item).__name__}: {item}"), now - started)
                elif item is _FINISHED and not side.done:
                    side.done = True
                    side.latency_s = now - started
                    if not side.text.strip():
                        side.error = "returned an empty answer"
            for stalled, side in frame.sides.items():
                if not side.done and now - last_progress[stalled] > stall_timeout_s:
                    _fail(side, f"no output for {stall_timeout_s:g} s (timeout)", now - started)
                    cancels[stalled].set()
            if frame.failed_sides:
                for other, side in frame.sides.items():
                    cancels[other].set()
                    if not side.done:
                        side.done = side.stopped = True
                        side.latency_s = now - started
            if frame.done or now - last_yield >= frame_interval_s:
                last_yield = now
                yield frame
    finally:  # also when the caller stops listening (a volunteer closed the page)
        for cancel in cancels.values():
            cancel.set()


def _fail(side: SideResult, message: str, elapsed: float) -> None:
    if not side.done:
        side.error = message
        side.done = True
        side.latency_s = elapsed
