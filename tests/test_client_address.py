"""Which address a battle belongs to, and is rate-limited by, behind a reverse proxy.

The server runs on uvicorn, which replaces the socket address with the
X-Forwarded-For client only when the connection comes from a trusted proxy
(``FORWARDED_ALLOW_IPS``, by default 127.0.0.1 and ::1). Here the tests play
the proxy: they connect from 127.0.0.1 and send the header.
"""

from __future__ import annotations

import json

from gradio_client import Client

ONE_BATTLE_AN_HOUR = """
    settings: {sampling: uniform, limits: {battles_per_hour: 1}}
    models:
      - {name: first, backend: scripted, script: "reply: One answer."}
      - {name: second, backend: scripted, script: "reply: Another answer."}
"""
REFUSED = "1 battle started from your network address in the last hour"


def start_battle(url: str, forwarded_for: str) -> str:
    client = Client(url, verbose=False, headers={"X-Forwarded-For": forwarded_for})
    return json.dumps(client.submit("Hello", api_name="/battle_ask").result())


def test_volunteers_behind_a_trusted_proxy_are_told_apart(start_arena):
    arena = start_arena(ONE_BATTLE_AN_HOUR)
    assert REFUSED not in start_battle(arena.url, "203.0.113.5")
    assert REFUSED in start_battle(arena.url, "203.0.113.5")  # same volunteer: over the limit
    # Another volunteer through the same proxy has a limit of their own; a client that
    # prepends an address of its choosing is still known by what the proxy appended.
    assert REFUSED not in start_battle(arena.url, "203.0.113.6")
    assert REFUSED in start_battle(arena.url, "198.51.100.1, 203.0.113.6")


def test_the_header_is_ignored_unless_the_proxy_is_trusted(start_arena):
    arena = start_arena(ONE_BATTLE_AN_HOUR, env={"FORWARDED_ALLOW_IPS": "192.0.2.1"})
    assert REFUSED not in start_battle(arena.url, "203.0.113.5")
    # The connection is not from the trusted proxy, so any header is ignored: same client, refused.
    assert REFUSED in start_battle(arena.url, "203.0.113.6")
