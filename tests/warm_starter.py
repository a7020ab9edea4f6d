"""A process that imports the server's code once and forks a fresh `serve` whenever it is asked.

The kill -9 test restarts the server 20 times. A new interpreter spends about 3 s of its 3.5 s start importing
Gradio; a fork of this process, which has those modules loaded and no threads yet, serves in about a
second. The child runs the same command as `python -m arena serve`, in a process of its own: killed, it
dies as that one would, with whatever it had not committed.

One JSON list a line in, one line out (stdin, stdout):
    ["start", LOG, ARGUMENT, ...]  ->  PID      (`serve ARGUMENT...`; its stdout and stderr go to the file LOG)
    ["reap", PID]                  ->  STATUS   (waits for that child to end)
When its input ends (the test is over, or gone), it kills the servers it still has.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import threading
import traceback

import arena.cli
# What `serve` imports when it starts (Gradio above all), imported here once, so that each child has it loaded.
import arena.backends.scripted  # noqa: F401
import arena.ui.app  # noqa: F401
import arena.ui.content_policy  # noqa: F401
import arena.ui.look  # noqa: F401
import arena.ui.request_guard  # noqa: F401

# A fork copies only the thread that calls it: a lock another thread held would stay locked in the child.
assert threading.active_count() == 1, f"threads before forking: {threading.enumerate()}"

_DIE_WITH_PARENT = 1  # prctl's PR_SET_PDEATHSIG: a server must not outlive this process, killed or not


def serve_in_child(output: int, arguments: list[str]) -> None:
    ctypes.CDLL(None, use_errno=True).prctl(_DIE_WITH_PARENT, signal.SIGKILL)
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)  # the requests are the parent's, not the server's
    code = 1
    try:
        code = arena.cli.main(["serve", *arguments])
    except SystemExit as stop:  # as the interpreter would report it
        code = stop.code if isinstance(stop.code, int) else 1
        if not isinstance(stop.code, int) and stop.code is not None:
            print(stop.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # never back into the parent's loop


def main() -> None:
    serving: set[int] = set()
    for line in sys.stdin:
        command, *words = json.loads(line)
        if command == "start":
            output = os.open(words[0], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)  # there once the pid is known
            pid = os.fork()
            if pid == 0:
                serve_in_child(output, words[1:])
            os.close(output)
            serving.add(pid)
            print(pid, flush=True)
        elif command == "reap":
            print(os.waitpid(words[0], 0)[1], flush=True)
            serving.discard(words[0])
    for pid in serving:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
