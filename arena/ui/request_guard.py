"""What reaches Gradio: caps per client network on new sessions and on events queued, a cap on request size,
and no routes the arena does not use.

Gradio keeps the state of at most 10,000 sessions and silently drops the
oldest, and a session is whatever `session_hash` a request names. Without a
cap, one address sending requests under thousands of made-up hashes pushes
every volunteer's battle out of memory (their vote is then refused) and costs
the server ~150 KB a session. A page load is one session, so a real visitor
needs a few an hour; the cap (`limits.sessions_per_hour`) is per client
network, like every other limit, because the hash is the client's choice.

Gradio's queue bounds neither a session nor a client. Every event joined stays
in memory, body and all, until it has run, and each time the queue moves every
waiting event is sent its new place; those messages pile up for a client that
never reads them. One session joining 6,000 events (empty prompts, refused at
once) took the server to 13 GB and held a volunteer's battle back 154 s. So
a session may have `EVENTS_PER_SESSION` events in Gradio's hands at once, and a
client network `limits.queued_events_per_address` (an IPv6 /56 and /48 4 and 16 times that,
as for every limit); beyond that a join is answered 429. An event is in
Gradio's hands while it waits, while it runs, and after it ran until its page
has read the result: a client that never reads what it asked for gets no more.
And a request's body is at most `body_limit` (40 bodies of 15 MB took 2 GB).

Routes for features the arena does not use are turned away: uploads (the
arena takes no files; they would fill the disk), deep links (one saves a
session's prompts and answers for anyone who knows its hash), and the
component server, recordings and the editor's routes, and Gradio's usage
monitoring (every event's counts and timings, public by default).
"""

from __future__ import annotations

import json
import time
from collections import Counter, OrderedDict

from arena.config import Limits
from arena.limits import RateLimited, RateLimiter, allowance_levels, client_network

API = "/gradio_api/"
TURNED_AWAY = tuple(API + route for route in (
    "deep_link", "upload", "component_server", "process_recording", "vibe", "undo-vibe", "run-history"))
MONITORING = "/monitoring"  # Gradio's usage dashboard: every event's counts and timings, public unless turned away
# Routes that run an event: without a hash, Gradio makes one up, so such a request is a new session.
EVENT_ROUTES = tuple(API + route for route in ("queue/join", "run/", "api/", "call/"))
# Routes that put an event in Gradio's queue (`run/` and `api/` run only events that skip it: api_open=False).
JOIN_ROUTES = tuple(API + route for route in ("queue/join", "call/"))
# A page has a few events under way at once (a page load starts two, an answer one, a vote's leaderboard
# refresh one): 16 is ample, and bounds what one session can make the server hold.
EVENTS_PER_SESSION = 16
_SWEEP_INTERVAL_S = 60.0  # how often the holders of every network, not only the one joining, are looked over


def body_limit(max_prompt_chars: int) -> int:
    """The largest request body taken: the longest prompt allowed, every character written as its longest
    JSON escape (12 bytes: an emoji as the pair \\ud83d\\ude00), and 64 KiB for the rest.

    A prompt is the only sizeable thing the page sends (the chats are outputs, never sent back): measured in
    Chromium, a 4,000-character prompt made a body of 4 KB in ASCII and 18 KB in CJK and control characters,
    the other events' bodies under 200 bytes. With the default 4,000 characters the limit is 113,536 bytes,
    so a prompt pasted far over the limit still reaches the service, which says how long it is.
    """
    return 64 * 1024 + 12 * max_prompt_chars


class RequestGuard:
    """ASGI middleware in front of Gradio; every other request passes untouched."""

    def __init__(self, app, sessions_per_hour: int, max_prompt_chars: int = Limits.max_prompt_chars,
                 events_per_network: int = Limits.queued_events_per_address, clock=time.monotonic):
        self.app = app
        self.limiter = RateLimiter(sessions_per_hour, clock=clock, unit="new session", what_counts="a page load one")
        # `limits.queued_events_per_address` (64): a page holds about one event at a time, so 64 volunteers
        # behind one address (a campus NAT) can all wait or be answered at the same moment; the 120 battles an
        # hour that address may start keep far fewer busy. An IPv6 /48's share, 16 times that, is half of the
        # whole queue (`max_size` in arena/server.py), so no one subscriber fills it.
        self.events_per_network = events_per_network
        self.clock = clock
        self.max_prompt_chars = max_prompt_chars
        self.max_body = body_limit(max_prompt_chars)
        self.known: OrderedDict[tuple[str, str], float] = OrderedDict()  # (network, session) -> last seen
        # Sessions that joined events from each network (and each wider IPv6 network), with when they last
        # did: the network's count is the sum of what Gradio holds for them.
        self.holders: dict[str, dict[str, float]] = {}
        # Joins handed to Gradio and not yet answered, per ("session", hash) and ("network", network): Gradio
        # counts an event only once it is queued, and many joins can be on their way at once.
        self.joining: Counter[tuple[str, str]] = Counter()
        self.last_sweep = clock()

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] == "http" and (path.startswith(TURNED_AWAY) or path == MONITORING
                                        or path.startswith(MONITORING + "/")):
            await _answer(send, 404, "This arena does not serve this route.")
            return
        if scope["type"] != "http" or not scope["path"].startswith(API):
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        too_large = (413, f"The request is too large: the limit here is {self.max_body:,} bytes, and a prompt may have "
                          f"at most {self.max_prompt_chars:,} characters.")
        if _declared_length(scope) > self.max_body:
            await _answer(send, *too_large)
            return
        body = await _whole_body(receive, self.max_body)
        if body is None:
            return  # the client went away
        if len(body) > self.max_body:
            await _answer(send, *too_large)
            return
        session = _json_text(body, "session_hash")
        if session is None and not scope["path"].startswith(EVENT_ROUTES):
            await self.app(scope, _replaying(body, receive), send)  # names no session and makes none
            return
        network = client_network((scope.get("client") or (None,))[0])
        joining = scope["path"].startswith(JOIN_ROUTES)
        if joining and (crowded := self._crowded(scope, network, session)) is not None:
            await _answer(send, 429, crowded)
            return
        refusal = self._refusal(network, session)
        if refusal is not None:
            await _answer(send, 429, f"Too many new sessions from {refusal.whose(refusal.network)} (the limit here "
                                     f"is {refusal.allowed:,} an hour). Keep using a page you have open, or come back "
                                     "later.")
        elif joining:
            await self._join(scope, _replaying(body, receive), send, network, session)
        else:
            await self.app(scope, _replaying(body, receive), send)

    def _refusal(self, network: str, session: str | None) -> RateLimited | None:
        """A session its network used within the hour goes on; a new one counts against the network's cap."""
        now = self.clock()
        while self.known and next(iter(self.known.values())) <= now - RateLimiter.WINDOW_S:
            self.known.popitem(last=False)
        key = (network, session)
        if session is not None and key in self.known:
            self.known[key] = now  # in use: an open page keeps its session however long it stays
            self.known.move_to_end(key)
            return None
        try:
            self.limiter.check_and_count(network)
        except RateLimited as refusal:
            return refusal
        if session is not None:
            self.known[key] = now
        return None

    def _crowded(self, scope, network: str, session: str | None) -> str | None:
        """Why a join must wait, if its session or network already has its share of the queue; else None.

        Runs with no await between the count and the join's `self.joining` entry, so joins sent at once
        are counted one after another.
        """
        queue = scope["app"].get_blocks()._queue
        if session is not None and self._held(queue, session) >= EVENTS_PER_SESSION:
            return (f"This page already has {EVENTS_PER_SESSION} requests waiting or running here, the most one page "
                    "may have at once. Please wait for them to finish.")
        now = self.clock()
        if now - self.last_sweep >= _SWEEP_INTERVAL_S:  # networks that do not come back are forgotten too
            self.last_sweep = now
            for level in list(self.holders):
                self._forget_idle(queue, level, now)
        for level, allowed in self._levels(network):
            holders = self._forget_idle(queue, level, now)
            held = sum(self._held(queue, holder, waiting=False) for holder in holders) + self.joining["network", level]
            if held >= allowed:
                whose = RateLimited.whose(None if level == network else level, sentence_start=True)
                return (f"{whose} already has {allowed:,} requests waiting or running here, the "
                        "most it may have at once. Please wait for them to finish.")
        return None

    def _forget_idle(self, queue, level: str, now: float) -> dict[str, float]:
        """A network's holders, less those that hold nothing and those that joined nothing for an hour:
        whatever Gradio might still keep for a session no one uses stops counting against its address."""
        holders = self.holders.get(level, {})
        for holder, joined in list(holders.items()):
            if joined <= now - RateLimiter.WINDOW_S or not self._held(queue, holder):
                del holders[holder]
        if not holders:
            self.holders.pop(level, None)
        return holders

    def _held(self, queue, session: str, waiting: bool = True) -> int:
        """The events Gradio holds for a session (see `_in_gradio`), with its joins on their way if `waiting`."""
        return _in_gradio(queue, session) + (self.joining["session", session] if waiting else 0)

    def _levels(self, network: str) -> list[tuple[str, int]]:
        """(network, events it may have at once): the client's own, then the wider IPv6 networks around it."""
        return allowance_levels(network, self.events_per_network)

    async def _join(self, scope, receive, send, network: str, session: str | None) -> None:
        """Hand a join to Gradio, counted as on its way until answered, then note its session as a holder."""
        counted = [("network", level) for level, _ in self._levels(network)]
        counted += [("session", session)] if session is not None else []
        answer = bytearray()

        async def sending(message):
            if message["type"] == "http.response.body" and len(answer) < 4096:
                answer.extend(message.get("body", b""))
            await send(message)

        for key in counted:
            self.joining[key] += 1
        try:
            await self.app(scope, receive, sending)
        finally:
            for key in counted:
                self.joining[key] -= 1
                if not self.joining[key]:
                    del self.joining[key]
        # A join that names no session (`call/`) gets one from Gradio: the id of its event.
        holder = session or _json_text(bytes(answer), "event_id")
        if holder is not None:
            for level, _ in self._levels(network):
                self.holders.setdefault(level, {})[holder] = self.clock()


def _in_gradio(queue, session: str) -> int:
    """How many of a session's events Gradio holds: waiting, running, or over with the result not yet read.

    Read from the queue's own books (gradio 6.31, pinned in requirements.txt; Gradio offers no public
    count). `pending_event_ids_session` keeps an event's id until the page has read its result (Gradio
    closes the page's stream by it, so it is kept exact); `event_ids_to_events` holds the events that wait
    or run. An id whose event is over is counted only while the session has unread messages: a page
    closed while its answer ran leaves that id behind for good (its messages go with its stream), and
    counted, such ids would in the end lock a busy campus address out.
    """
    ids = queue.pending_event_ids_session.get(session)
    if not ids:
        return 0
    unread = queue.pending_messages_per_session.get(session)
    if unread is not None and not unread.empty():
        return len(ids)
    return sum(1 for event_id in ids if event_id in queue.event_ids_to_events)


def _json_text(data: bytes, key: str) -> str | None:
    """A non-empty string under `key` in a JSON object: the session hash a request names, the event id in
    Gradio's answer to a join. None when there is none or the data is not such JSON."""
    try:
        value = json.loads(data).get(key)
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


def _declared_length(scope) -> int:
    """The Content-Length a request declares; 0 if none (a chunked body is measured as it is read)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


async def _whole_body(receive, limit: int) -> bytes | None:
    """The request body, read up to just past `limit`; None if the client disconnected."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if size > limit or not message.get("more_body", False):
            return b"".join(chunks)


def _replaying(body: bytes, receive):
    """A `receive` that hands the already-read body to the app, then listens as before (for disconnects)."""
    delivered = False

    async def replay():
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _answer(send, status: int, message: str) -> None:
    payload = json.dumps({"detail": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
