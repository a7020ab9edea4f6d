"""A cap on new page sessions per client network, in front of Gradio.

Gradio keeps the state of at most 10,000 sessions and silently drops the
oldest, and a session is whatever `session_hash` a request names. Without a
cap, one address sending requests under thousands of made-up hashes pushes
every volunteer's battle out of memory (their vote is then refused) and costs
the server ~150 KB a session. A page load is one session, so a real visitor
needs a few an hour; the cap (`limits.sessions_per_hour`) is per client
network, like every other limit, because the hash is the client's choice.

Gradio's deep links are turned away here too: one saves a session's page
(prompts and answers) for anyone who knows its hash, from any address, and
the arena offers no deep links.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict

from arena.battle import RateLimiter, RuleViolation, client_network

# The routes that run an event, and so create a session's state. Others (heartbeats, the event
# stream, files) only read a session that exists.
SESSION_ROUTES = ("/gradio_api/queue/join", "/gradio_api/run/", "/gradio_api/call/")
MAX_PARSED_BODY = 1 << 20  # a larger body is not read for its hash: it counts as a new session
DEEP_LINK_ROUTE = "/gradio_api/deep_link"


class NewSessionLimit:
    """ASGI middleware: a request naming a session its network has not used within the hour is a new one."""

    def __init__(self, app, per_hour: int, clock=time.monotonic):
        self.app = app
        self.per_hour = per_hour
        self.limiter = RateLimiter(per_hour, clock=clock)
        self.clock = clock
        self.known: OrderedDict[tuple[str, str], float] = OrderedDict()  # (network, session) -> first seen

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] == DEEP_LINK_ROUTE:
            await _refuse(send, "This arena has no deep links.", status=404)
            return
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].startswith(SESSION_ROUTES):
            await self.app(scope, receive, send)
            return
        body = await _whole_body(receive)
        if body is None:
            return  # the client went away
        network = client_network((scope.get("client") or ("unknown",))[0])
        if self._admits(network, _session_hash(body)):
            await self.app(scope, _replaying(body, receive), send)
        else:
            await _refuse(send, f"Too many new sessions from your network address (the limit here is {self.per_hour} "
                                "an hour). Keep using a page you have open, or come back later.")

    def _admits(self, network: str, session: str | None) -> bool:
        now = self.clock()
        while self.known and next(iter(self.known.values())) <= now - RateLimiter.WINDOW_S:
            self.known.popitem(last=False)
        if session is not None and (network, session) in self.known:
            return True
        try:
            self.limiter.check_and_count(network)
        except RuleViolation:
            return False
        if session is not None:
            self.known[(network, session)] = now
        return True


def _session_hash(body: bytes) -> str | None:
    """The hash a request names; None when it names none (Gradio then makes a new one) or cannot be read."""
    if len(body) > MAX_PARSED_BODY:
        return None
    try:
        session = json.loads(body).get("session_hash")
    except (ValueError, AttributeError):
        return None
    return session if isinstance(session, str) and session else None


async def _whole_body(receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
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


async def _refuse(send, message: str, status: int = 429) -> None:
    payload = json.dumps({"detail": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
