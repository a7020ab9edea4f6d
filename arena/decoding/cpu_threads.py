"""How local models use the CPU: every core for the one batched forward pass, no busy-waiting.

With batching (`batching.py`) a single thread runs all of a model's forward
passes, so torch's intra-op pool may have every core: both sides of a battle
are rows of the same matrix products, not two `generate` calls each running
two intra-op threads on the same two cores.
Inter-op parallelism is unused by decoding, so that pool is kept to one thread.

OpenMP's default is to spin between parallel regions. When anything else
wants a core -- the web server streaming answers, the tokenizer, SQLite,
another process -- a spinning worker loses its time slice and every one of
the ~500 parallel regions of a step waits for it: measured on the 2-core box
with one busy process elsewhere, 8 battles decoded 31 tokens/s spinning against
96 waiting passively. Passive waiting costs a thread wake-up per region instead,
so the pool degrades to one core's speed under contention rather than
collapsing. More numbers: README, "Serving"; `benchmarks/decode.py` prints the
setting in force.
"""

from __future__ import annotations

import os

THREADS_VARIABLE = "ARENA_TORCH_THREADS"  # an operator's override of the intra-op thread count


def configure_cpu_threads() -> int:
    """Set torch's thread pools for serving; returns the intra-op thread count.

    Call before torch is first imported: OpenMP reads its wait policy once,
    when the library loads. An explicit OMP_WAIT_POLICY in the environment wins.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    threads = int(os.environ.get(THREADS_VARIABLE) or len(os.sched_getaffinity(0)))
    torch.set_num_threads(threads)
    if torch.get_num_interop_threads() != 1:
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # the pool already started in this process; it stays idle during decoding anyway
            pass
    return threads
