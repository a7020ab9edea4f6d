"""Starting the arena: config, storage, models, web app, in that order.

The web server comes up before the models finish loading so volunteers see
a "still loading" page instead of a refused connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from arena.config import ArenaConfig
from arena.roster import ModelLoadError, Roster
from arena.service import ArenaService
from arena.storage import ArenaStore, DatabaseFileError
from arena.wording import counted

log = logging.getLogger("arena")

_STOP_GRACE_S = 1.0  # what a request being answered at stop gets (a vote takes milliseconds)


def serve(config: ArenaConfig, db_path: Path, host: str, port: int, cache_dir: Path,
          synchronous: str = "NORMAL") -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    _log_to_stderr()
    from starlette.middleware import Middleware

    from arena.ui.app import build_app  # gradio is slow to import; commands that do not serve skip it
    from arena.ui.content_policy import MediaFromHereOnly
    from arena.ui.look import PAGE_CSS, page_theme
    from arena.ui.request_guard import RequestGuard

    _stop_on_terminate()  # after the imports: a SIGTERM during them ends the process as before, with nothing open
    # Both checks come before the database is opened: a start that fails must change nothing in it.
    if not _can_listen(host, port):
        return _cannot_listen(host, port)
    serving = _ServingLock.claim(db_path)  # held while this function runs: the lock lives as long as its file
    if serving is None:
        return 1
    try:
        store = ArenaStore(db_path, synchronous=synchronous)
    except DatabaseFileError:  # not an arena database: leave nothing beside it that this start made
        serving.give_up()
        raise
    # What is open closes in reverse order however serving ends, each part even if a second Ctrl-C cuts
    # the one before it short: the store last, so that the votes are folded into arena.db.
    with contextlib.ExitStack() as on_stop:
        on_stop.callback(store.close)
        _report_database(store, db_path, config)
        roster = Roster(config, cache_dir=cache_dir)
        on_stop.callback(roster.close)
        service = ArenaService(config, roster, store)
        page = build_app(service)
        app = page.blocks
        # api_open=False: a generation must wait its turn in the queue; a raw POST to /run/predict would
        # start it beside the queue and past max_concurrent_battles. Quick events (votes) are unaffected.
        # max_size: at most 32 addresses' shares wait, whoever sent them, 2,048 events by default (the request
        # guard bounds what one client may have in the queue: 64 events, its IPv6 /48 16 times that, so no one
        # subscriber fills it). That bounds memory (a body is at most ~110 KB at the default max_prompt_chars,
        # so 230 MB if every one were that large; a page's are under 20 KB) and the place messages each move of
        # the queue sends; a place beyond it would be hours of waiting at a few answers at a time. A join past
        # it gets Gradio's 503 "Queue is full".
        app.queue(default_concurrency_limit=8, api_open=False, max_size=32 * config.settings.limits.queued_events_per_address)
        try:
            app.launch(server_name=host, server_port=port, prevent_thread_lock=True, show_error=False, quiet=True,
                       footer_links=["gradio", "settings"], css=PAGE_CSS, theme=page_theme(), js=page.script,
                       enable_monitoring=False,  # the request guard turns /monitoring away too
                       app_kwargs={"middleware": [Middleware(RequestGuard, sessions_per_hour=config.settings.limits.sessions_per_hour,
                                                             max_prompt_chars=config.settings.limits.max_prompt_chars,
                                                             events_per_network=config.settings.limits.queued_events_per_address),
                                                  Middleware(MediaFromHereOnly)]})
        except OSError:  # taken since the check; Gradio's own message suggests a variable that --port overrides
            return _cannot_listen(host, port)
        cut_off = _CutOffRequests()
        on_stop.callback(cut_off.report, app)
        on_stop.callback(app.close)
        on_stop.callback(_end_event_streams, app, cut_off)
        on_stop.callback(service.stop)  # first: the answers that the stop cuts off are not the volunteers' leaving
        print(f"Arena page: http://{host}:{port}  (models loading…)", flush=True)
        try:
            roster.load(report=lambda message: print(message, flush=True))
        except (ModelLoadError, KeyboardInterrupt) as exc:
            stopped = "stopped while loading the models" if isinstance(exc, KeyboardInterrupt) else str(exc)
            print(f"error: {stopped}", file=sys.stderr, flush=True)
            return 130 if isinstance(exc, KeyboardInterrupt) else 1
        _report_ready(service, host, port)
        try:
            while app.is_running:  # not app.block_thread(): on Ctrl-C it stops the server before the streams end
                time.sleep(0.1)
        except KeyboardInterrupt:
            pass
    return 0


def _end_event_streams(app, cut_off: _CutOffRequests) -> None:
    """End the open pages' event streams, so that the web server stops at once.

    Every page holds one; uvicorn waits for them until Gradio gives up on the server's thread (5 s), so each
    stop took 5 s while anyone had the page open. A request still being answered (an answer streaming, a vote
    being recorded) gets `_STOP_GRACE_S`, then is cut off; `cut_off` counts those.
    """
    app.server_app.stop_event.set()  # seen by the server's event loop on its next tick (100 ms)
    app.server.config.timeout_graceful_shutdown = _STOP_GRACE_S
    logging.getLogger("uvicorn.error").addFilter(cut_off)


class _CutOffRequests(logging.Filter):
    """uvicorn logs each request cut off at stop with a traceback, as if it had crashed: counted, and said once."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        # "Cancel %s running task(s), timeout graceful shutdown exceeded": how many it cut off
        if isinstance(record.msg, str) and record.msg.startswith("Cancel ") and record.args:
            self.count += int(record.args[0])
            return False
        return record.exc_info is None or not isinstance(record.exc_info[1], asyncio.CancelledError)

    def report(self, app) -> None:
        """Once Gradio has closed the web server: whether it gave up waiting for it (5 s), and what was cut off."""
        if app.server is not None and app.server.thread.is_alive():  # the wait `_end_event_streams` spares
            print("stopping: the web server had not stopped after 5 s; going on without it", flush=True)
        if self.count:
            print(f"stopping: {counted(self.count, 'request')} still being answered cut off (an answer cut off "
                  "is recorded at the next start)", flush=True)


def _report_database(store: ArenaStore, db_path: Path, config: ArenaConfig) -> None:
    """What the operator should know of the database before the models load: which file, what changed."""
    abandoned = store.close_unfinished_battles()
    votes = store.counts(("votes",))["votes"]
    # A mistyped --db starts an empty one; the level is read back from SQLite, not from the option.
    power_cut = "; synchronous=FULL: each vote is on disk before it is acknowledged" if store.synchronous == "FULL" else ""
    print(f"Database: {db_path.resolve()} ({counted(votes, 'vote')}{power_cut})", flush=True)
    if abandoned:
        print(f"{counted(abandoned, 'battle')} left unfinished by the last run marked abandoned", flush=True)
    for change in store.register_models(config.enabled_models):
        print(f"warning: model '{change.name}' has {counted(change.votes, 'vote')} cast under other settings "
              f"({', '.join(change.fields)} changed): its rating now mixes both; to rate the new version apart, give it "
              "a new name (the earlier settings are kept in the model_history table)", flush=True)


def _report_ready(service: ArenaService, host: str, port: int) -> None:
    roster = service.roster
    answer_limits = sorted({c.entry.generation.max_new_tokens for c in roster.contestants.values()})
    if len(answer_limits) > 1:
        print(f"note: the models' max_new_tokens differ ({', '.join(map(str, answer_limits))}); anonymous answers all "
              f"stop at {service.anonymous_answer_tokens()} tokens, so that their length names no model", flush=True)
    greedy = sorted(c.name for c in roster.contestants.values() if c.entry.generation.greedy)
    if greedy:  # documented under "Integrity"; the operator is told where it bites
        print(f"note: {', '.join(greedy)} {'decodes' if len(greedy) == 1 else 'decode'} greedily (temperature 0): the same "
              "prompt gets the same answer, so a volunteer who asks again or regenerates can recognise "
              f"{'it' if len(greedy) == 1 else 'them'} before the vote; anonymous contestants are safer with some "
              "temperature", flush=True)
    print(f"Ready: {len(roster.contestants)} contestants on http://{host}:{port}", flush=True)
    for name, cause in roster.failures.items():
        print(f"disabled {name}: {cause}", file=sys.stderr, flush=True)


def _stop_on_terminate() -> None:
    """Make SIGTERM (systemd, `docker stop`, `kill`) stop the arena as Ctrl-C does.

    Python's default for it ends the process on the spot: no vote is lost (the write-ahead log holds them),
    but they stay in arena.db-wal, and a copy of arena.db alone, the obvious backup, lacks them. Closing the
    store folds them into the file. A second SIGTERM during that close is ignored, not allowed to cut it short.
    """
    def interrupt(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():  # Python takes signal handlers there only
        signal.signal(signal.SIGTERM, interrupt)


def _can_listen(host: str, port: int) -> bool:
    """Whether the web server could bind there now (with the address reuse uvicorn asks for too).

    An IPv6 address may come in brackets (`[::1]`), as Gradio takes it and as it is written in a URL.
    """
    try:
        family, kind, _, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError:
        return False
    return True


def _cannot_listen(host: str, port: int) -> int:
    print(f"error: cannot listen on {host}:{port}: the port is taken, or {host} is not an address of this "
          "machine; choose another with --port or --host", file=sys.stderr, flush=True)
    return 1


@dataclass
class _ServingLock:
    """A lock on `<db>-serving`, held while this process serves the database.

    A second server on the same file would take the first one's open battles for leftovers of a crash
    and close them. The kernel drops the lock when the process ends, however it ends.
    """

    file: IO
    path: Path
    created: bool  # by this start, which removes it again if it cannot serve

    @classmethod
    def claim(cls, db_path: Path) -> _ServingLock | None:
        """The lock, or None (said why) if another server holds it or it cannot be taken."""
        path = db_path.with_name(db_path.name + "-serving")
        created = not path.exists()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)  # as the database's own folder would be
            lock = open(path, "a+")
        except OSError as error:
            print(f"error: cannot open {path}, the lock that keeps a second server off the database: "
                  f"{error.strerror or error}", file=sys.stderr, flush=True)
            return None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            lock.close()
            print(f"error: {db_path} is being served by another arena (process {holder}); stop it first, or give "
                  "this one another --db", file=sys.stderr, flush=True)
            return None
        except OSError as error:  # a file system without locks: say so rather than blame another server
            lock.close()
            print(f"error: cannot lock {path}: {error.strerror or error}", file=sys.stderr, flush=True)
            return None
        lock.truncate(0)
        lock.write(str(os.getpid()))
        lock.flush()
        return cls(lock, path, created)

    def give_up(self) -> None:
        self.file.close()
        if self.created:
            self.path.unlink(missing_ok=True)


def _log_to_stderr() -> None:
    """The operator's log: votes and failures, one timed line each, on stderr beside the start-up lines."""
    if not any(getattr(handler, "arena_operator_log", False) for handler in log.handlers):  # once per process
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        handler.arena_operator_log = True
        log.addHandler(handler)
    log.setLevel(logging.INFO)
