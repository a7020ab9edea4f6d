"""What reaches Gradio: a cap on new page sessions per client network, and no routes the arena does not use.

Gradio keeps the state of at most 10,000 sessions and silently drops the
oldest, and a session is whatever `session_hash` a request names. Without a
cap, one address sending requests under thousands of made-up hashes pushes
every volunteer's battle out of memory (their vote is then refused) and costs
the server ~150 KB a session. A page load is one session, so a real visitor
needs a few an hour; the cap (`limits.sessions_per_hour`) is per client
network, like every other limit, because the hash is the client's choice.

Routes for features the arena does not use are turned away: uploads (the
arena takes no files; they would fill the disk), deep links (one saves a
session's prompts and answers for anyone who knows its hash), and the
component server, recordings and the editor's routes, and Gradio's usage
monitoring (every event's counts and timings, public by default).
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict

from arena.limits import RateLimited, RateLimiter, client_network

API = "/gradio_api/"
TURNED_AWAY = tuple(API + route for route in (
    "deep_link", "upload", "component_server", "process_recording", "vibe", "undo-vibe", "run-history"))
MONITORING = "/monitoring"  # Gradio's usage dashboard: every event's counts and timings, public unless turned away
# Routes that run an event: without a hash, Gradio makes one up, so such a request is a new session.
EVENT_ROUTES = tuple(API + route for route in ("queue/join", "run/", "api/", "call/"))
MAX_BODY = 16 << 20  # far above any prompt the limits allow


class RequestGuard:
    """ASGI middleware in front of Gradio; every other request passes untouched."""

    def __init__(self, app, sessions_per_hour: int, clock=time.monotonic):
        self.app = app
        self.limiter = RateLimiter(sessions_per_hour, clock=clock)
        self.clock = clock
        self.known: OrderedDict[tuple[str, str], float] = OrderedDict()  # (network, session) -> last seen

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
        body = await _whole_body(receive)
        if body is None:
            return  # the client went away
        if len(body) > MAX_BODY:
            await _answer(send, 413, "The request is too large.")
            return
        session = _session_hash(body)
        if session is None and not scope["path"].startswith(EVENT_ROUTES):
            await self.app(scope, _replaying(body, receive), send)  # names no session and makes none
            return
        network = client_network((scope.get("client") or (None,))[0])
        refusal = self._refusal(network, session)
        if refusal is None:
            await self.app(scope, _replaying(body, receive), send)
        else:
            await _answer(send, 429, f"Too many new sessions from {refusal.whose(refusal.network)} (the limit here "
                                     f"is {refusal.allowed:,} an hour). Keep using a page you have open, or come back "
                                     "later.")

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


def _session_hash(body: bytes) -> str | None:
    """The hash a request names; None when it names none or cannot be read as JSON."""
    try:
        session = json.loads(body).get("session_hash")
    except (ValueError, AttributeError):
        return None
    return session if isinstance(session, str) and session else None


async def _whole_body(receive) -> bytes | None:
    """The request body, read up to just past MAX_BODY; None if the client disconnected."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY or not message.get("more_body", False):
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
