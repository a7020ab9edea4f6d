"""Both sides of a battle answering at the same time.

Each side runs on its own thread; the caller sees snapshots of both answers
as they grow. A side that raises, stalls past the timeout or says nothing
fails alone: it never takes the other side's thread or the server with it.
"""

from __future__ import annotations

import bisect
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from arena.backends import Delta, cause_text
from arena.text import lone_surrogates_replaced

StreamFactory = Callable[[threading.Event], Iterator[Delta]]

EMPTY_ANSWER = "returned an empty answer"


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

    @property
    def empty(self) -> bool:
        """Finished without a word: a failed answer, but as often the prompt's doing as the model's."""
        return self.error == EMPTY_ANSWER


@dataclass
class DuelFrame:
    sides: dict[str, SideResult] = field(default_factory=dict)
    # What the page may show of each answer now, where it lags the answers themselves (see _StartAligner).
    shown: dict[str, str] | None = None
    # How long an answer has been held back because another has not started (0 when none is).
    held_back_s: float = 0.0

    @property
    def done(self) -> bool:
        return all(side.done for side in self.sides.values())

    @property
    def settled(self) -> bool:
        """Done, and shown whole: the last frame."""
        return self.done and self.shown is None

    def shown_text(self, name: str) -> str:
        return self.sides[name].text if self.shown is None else self.shown[name]

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


class _StartAligner:
    """Shows the answers as if they had started at the same moment, each at its own pace.

    Which side starts first can name the model: the decoder reads a battle's two prompts one after the
    other, shorter first, so the model with the shorter system prompt starts a step or two sooner, and
    other backends differ more. Each answer is replayed from when the later one started, so the earlier
    one is held back by the difference, at its end too.
    """

    def __init__(self, names) -> None:
        self.arrivals: dict[str, list[float]] = {name: [] for name in names}  # when its text grew
        self.lengths: dict[str, list[int]] = {name: [] for name in names}  # to how many characters

    def record(self, name: str, now: float, text: str) -> None:
        if not self.lengths[name] and not text.strip():
            return  # an answer starts when something shows: a first "\n" alone would put it a step early
        if len(text) > (self.lengths[name][-1] if self.lengths[name] else 0):
            self.arrivals[name].append(now)
            self.lengths[name].append(len(text))

    def held_back_s(self, now: float) -> float:
        """How long since the first answer started while another still has not (0 once all have)."""
        firsts = [arrivals[0] for arrivals in self.arrivals.values() if arrivals]
        return now - min(firsts) if firsts and len(firsts) < len(self.arrivals) else 0.0

    def shown(self, frame: DuelFrame, now: float) -> dict[str, str] | None:
        """Each side's text to show now; None once all is shown, or when the battle failed (no vote to protect)."""
        if frame.failed_sides:
            return None
        if not all(self.arrivals.values()):
            return {name: "" for name in frame.sides}
        start = max(arrivals[0] for arrivals in self.arrivals.values())
        shown = {}
        for name, arrivals in self.arrivals.items():
            as_if_started_at_start = now - (start - arrivals[0])
            count = bisect.bisect_right(arrivals, as_if_started_at_start)
            shown[name] = frame.sides[name].text[:self.lengths[name][count - 1]]
        if frame.done and all(shown[name] == side.text for name, side in frame.sides.items()):
            return None
        return shown


def run_duel(streams: dict[str, StreamFactory], *, stall_timeout_s: float, frame_interval_s: float = FRAME_INTERVAL_BOUNDS_S[0],
             align_starts: bool = False) -> Iterator[DuelFrame]:
    """Yield snapshots of all sides until every side is done or has failed, and is shown whole.

    When one side fails the others are cancelled: the battle cannot be
    voted on, so their compute is better spent on the next volunteer.
    With `align_starts` (anonymous battles), `frame.shown` lags the answers so that
    neither is seen to start first (`_StartAligner`).
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

    aligner = _StartAligner(streams) if align_starts else None
    last_yield = 0.0
    try:
        while not frame.settled:
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
                        if aligner:
                            aligner.record(name, now, side.text)
                elif isinstance(item, Exception):
                    _fail(side, lone_surrogates_replaced(cause_text(item)), now - started)
                elif item is _FINISHED and not side.done:
                    side.done = True
                    side.latency_s = now - started
                    if not side.text.strip():
                        side.error = EMPTY_ANSWER
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
            if aligner:
                frame.shown = aligner.shown(frame, now)
                frame.held_back_s = aligner.held_back_s(now)
            if frame.settled or now - last_yield >= frame_interval_s:
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
