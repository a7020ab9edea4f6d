"""How fast the bundled model writes answers: alone, in one battle, in many battles at once.

The contestants of the shipped `models.yaml` (three personalities of
SmolLM2-135M sharing one loaded copy) answer through the real serving path,
`Contestant.stream` -> `TransformersBackend` -> `BatchedDecoder`. Every stream
asks one prompt after another for a fixed window, cycling through the
personalities, so the number of concurrent requests stays constant; tokens are
counted inside the window only.

Reference, measured in the same run: one stream alone. Ceiling, measured in
the same run: a decode step must read every weight once, so one stream cannot
beat (memory copy bandwidth) / (bytes of parameters) tokens/s; batching
shares that read between the rows of a step, which is how many streams
together can go past it.

Targets: each side of one battle keeps >= 70% of the single-stream speed;
8 battles at once (16 streams) give >= 3x the single-stream tokens/s.

    .venv/bin/python benchmarks/decode.py            # about 2.5 minutes on 2 cores
    .venv/bin/python benchmarks/decode.py --quick    # about 1 minute
    .venv/bin/python benchmarks/decode.py --threads 1   # override the serving thread setting, to compare
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from arena.decoding.cpu_threads import THREADS_VARIABLE  # noqa: E402
from arena.config import load_config  # noqa: E402
from arena.roster import Contestant, Roster  # noqa: E402
from tests.conftest import MODEL_CACHE  # noqa: E402

SIDE_SPEED_TARGET = 0.70
AGGREGATE_TARGET = 3.0
DISTURBED_SHARE = 0.10  # other processes' share of the CPU above which a window is measured again
PROMPTS = [
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain how a refrigerator keeps food cold.",
    "What should I pack for a week of hiking in the mountains?",
    "Describe the water cycle to a ten-year-old.",
    "Give me a recipe for a simple vegetable soup.",
    "Why do cats purr? Explain what is known.",
    "Compare trains and planes for a 500 km trip.",
    "How do I start learning to play the guitar?",
    "Tell me about the history of the printing press.",
    "Explain what a budget is and how to make one.",
    "Write a letter to a friend who moved to another country.",
    "How does a vaccine train the immune system?",
]


@dataclass
class StreamLog:
    """Token counts with the time they arrived, for one concurrent stream."""

    arrivals: list[tuple[float, int]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def tokens_between(self, start: float, end: float) -> int:
        return sum(tokens for when, tokens in self.arrivals if start <= when < end)


def keep_asking(contestants: list[Contestant], offset: int, log: StreamLog, stop: threading.Event) -> None:
    """One volunteer's stream: prompt after prompt, personality after personality, until stopped."""
    for turn in itertools.count(offset):
        if stop.is_set():
            return
        contestant = contestants[turn % len(contestants)]
        cancel = threading.Event()
        try:
            for delta in contestant.stream([{"role": "user", "content": PROMPTS[turn % len(PROMPTS)]}], cancel):
                log.arrivals.append((time.monotonic(), delta.tokens))
                if stop.is_set():
                    cancel.set()
        except Exception as exc:  # noqa: BLE001 - counted and reported
            log.errors.append(f"{type(exc).__name__}: {exc}")


class OtherLoad:
    """Share of the machine's CPU time that other processes used meanwhile: a disturbed measurement shows."""

    def __enter__(self) -> "OtherLoad":
        self.share = float("nan")
        self.start = (_cpu_jiffies(), os.times())
        return self

    def __exit__(self, *exc) -> None:
        (busy_before, total_before), times_before = self.start
        (busy_after, total_after), times_after = _cpu_jiffies(), os.times()
        if total_after > total_before:
            ours = (times_after.user + times_after.system - times_before.user - times_before.system) * os.sysconf("SC_CLK_TCK")
            self.share = max(0.0, (busy_after - busy_before - ours) / (total_after - total_before))


def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies over all cores since boot; zeros where /proc is missing."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:9]]
    except OSError:
        return 0, 0
    return sum(fields) - fields[3] - fields[4], sum(fields)


def measure(contestants: list[Contestant], streams: int, warmup_s: float, window_s: float) -> list[float]:
    """Tokens/s of each of `streams` concurrent streams over the window."""
    logs = [StreamLog() for _ in range(streams)]
    stop = threading.Event()
    threads = [threading.Thread(target=keep_asking, args=(contestants, 5 * i, logs[i], stop), daemon=True)
               for i in range(streams)]
    for thread in threads:
        thread.start()
    start = time.monotonic() + warmup_s
    time.sleep(warmup_s)
    with OtherLoad() as others:
        time.sleep(window_s)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    errors = [e for log in logs for e in log.errors]
    if errors:
        print(f"  {len(errors)} errors, first: {errors[0]}")
    return [log.tokens_between(start, start + window_s) / window_s for log in logs], others.share


def copy_bandwidth(size_bytes: int = 1 << 30, repeats: int = 5) -> tuple[float, float]:
    """Bytes moved per second (read + write, as STREAM counts a copy) by numpy copies on 1 and 2 threads."""
    sources = [np.ones(size_bytes // 8 // 2) for _ in range(2)]
    targets = [np.empty_like(s) for s in sources]

    def copy(index: int) -> None:
        np.copyto(targets[index], sources[index])

    results = []
    for threads in (1, 2):
        best = float("inf")
        for _ in range(repeats):
            workers = [threading.Thread(target=copy, args=(i,)) for i in range(threads)]
            started = time.perf_counter()
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            best = min(best, time.perf_counter() - started)
        results.append(2 * sources[0].nbytes * threads / best)
    return results[0], results[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short windows (about 1 minute)")
    parser.add_argument("--window", type=float, help="seconds measured per scenario (default 20, quick 6)")
    parser.add_argument("--retries", type=int, default=2, help="re-measurements of a scenario other processes disturbed")
    parser.add_argument("--threads", type=int, help=f"torch intra-op threads instead of the serving setting (sets {THREADS_VARIABLE})")
    args = parser.parse_args()
    window = args.window or (6.0 if args.quick else 20.0)
    warmup = 2.0 if args.quick else 4.0

    if args.threads:
        os.environ[THREADS_VARIABLE] = str(args.threads)
    started = time.monotonic()
    config = load_config(ROOT / "models.yaml")
    roster = Roster(config, cache_dir=MODEL_CACHE)
    roster.load(report=lambda message: None)  # sets the serving thread configuration, then imports torch
    import torch
    contestants = [roster.contestants[name] for name in roster.names]
    backend = contestants[0].backend
    model = backend.model
    parameter_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    parameters = sum(p.numel() for p in model.parameters())
    print(f"model: {config.models[0].source} -> {type(model).__name__}, {model.dtype}, {parameters / 1e6:.1f}M parameters, "
          f"{parameter_bytes / 1e6:.0f} MB read per decode step (loaded in {time.monotonic() - started:.1f} s)")
    print(f"machine: {os.cpu_count()} cores; torch {torch.__version__}, intra-op threads {torch.get_num_threads()}, "
          f"inter-op threads {torch.get_num_interop_threads()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(default)')}")
    print(f"contestants: {', '.join(c.name for c in contestants)} (one shared backend: "
          f"{len({id(c.backend) for c in contestants}) == 1}); window {window:g} s per scenario after {warmup:g} s warm-up\n")

    one_thread, two_threads = copy_bandwidth()
    bandwidth = max(one_thread, two_threads)
    ceiling = bandwidth / parameter_bytes
    print(f"memory copy bandwidth (numpy, 1 GiB, read+write): {one_thread / 1e9:.1f} GB/s on 1 thread, "
          f"{two_threads / 1e9:.1f} GB/s on 2 threads")
    print(f"bandwidth ceiling for one stream: {bandwidth / 1e9:.1f} GB/s / {parameter_bytes / 1e6:.0f} MB = {ceiling:.1f} tokens/s\n")

    def settled(streams: int) -> tuple[list[float], float]:
        """Measure; while other processes took over DISTURBED_SHARE of the CPU, measure again (bounded)."""
        best = None
        for _ in range(1 + args.retries):
            rates, others = measure(contestants, streams, warmup, window)
            if best is None or others < best[1]:
                best = (rates, others)
            if others <= DISTURBED_SHARE:
                break
        return best

    single_rates, single_others = settled(1)
    single = single_rates[0]
    print(f"{'scenario':<26}{'streams':>8}{'tokens/s':>10}{'per stream':>12}{'vs single':>11}{'vs ceiling':>12}{'others CPU':>12}")
    disturbed = []

    def row(name: str, rates: list[float], others: float) -> None:
        total = sum(rates)
        if others > DISTURBED_SHARE:
            disturbed.append(name)
        print(f"{name:<26}{len(rates):>8}{total:>10.1f}{total / len(rates):>12.1f}{total / single:>10.2f}x"
              f"{total / ceiling:>11.0%}{others:>11.0%}{' !' if others > DISTURBED_SHARE else ''}")

    row("one model alone", single_rates, single_others)
    battle, others = settled(2)
    row("one battle (both sides)", battle, others)
    for side, rate in zip("AB", battle):
        print(f"{'  side ' + side:<26}{1:>8}{rate:>10.1f}{rate:>12.1f}{rate / single:>10.2f}x")
    crowds = {}
    for battles in (4, 8):
        crowds[battles], others = settled(2 * battles)
        row(f"{battles} battles at once", crowds[battles], others)
    print(f"\nwidest batch decoded in one step: {backend.decoder.widest_batch} rows")
    if disturbed:
        print(f"! other processes used more than {DISTURBED_SHARE:.0%} of the CPU during: {', '.join(disturbed)} "
              "-- these numbers are disturbed; run again on a quiet machine")

    checks = [
        (f"each side of one battle keeps >= {SIDE_SPEED_TARGET:.0%} of single-stream speed",
         min(battle) / single >= SIDE_SPEED_TARGET,
         f"A {battle[0] / single:.0%}, B {battle[1] / single:.0%}"),
        (f"8 battles at once give >= {AGGREGATE_TARGET:g}x single-stream tokens/s",
         sum(crowds[8]) / single >= AGGREGATE_TARGET, f"{sum(crowds[8]) / single:.2f}x"),
    ]
    print()
    for name, passed, value in checks:
        print(f"{'PASS' if passed else 'FAIL'}  {name}: {value}")
    roster.close()
    return 0 if all(passed for _, passed, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
