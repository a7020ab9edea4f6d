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
REFUSED = "limit here: 1 battle an hour"


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


FEW_SESSIONS = """
    settings: {sampling: uniform, limits: {sessions_per_hour: 3}}
    models:
      - {name: first, backend: scripted, script: "reply: One answer."}
      - {name: second, backend: scripted, script: "reply: Another answer."}
"""


def test_one_network_cannot_flood_the_server_with_new_sessions(start_arena):
    """Gradio drops the oldest of its 10,000 session states: a flood of made-up hashes would push
    every volunteer's battle out of memory. New sessions are counted per client network."""
    import httpx

    arena = start_arena(FEW_SESSIONS)
    ids = {d["api_name"]: d["id"] for d in httpx.get(f"{arena.url}/config").json()["dependencies"]}

    def new_round(session_hash: str | None, network: str, route: str = "run/predict") -> int:
        body = {"fn_index": ids["battle_new_round"], "data": [None]}
        if session_hash is not None:
            body["session_hash"] = session_hash
        url = f"{arena.url}/gradio_api/{route}"
        return httpx.post(url, json=body, headers={"X-Forwarded-For": network}, timeout=30).status_code

    flooder = "203.0.113.66"
    assert [new_round(f"made-up-{i}", flooder) for i in range(3)] == [200, 200, 200]
    assert new_round("made-up-3", flooder) == 429
    assert new_round("made-up-0", flooder) == 200  # a session it already has goes on working
    assert new_round(None, flooder, "call/battle_new_round") == 429  # a hash Gradio would make up is new too
    assert new_round("made-up-4", flooder, "api/battle_new_round") == 429  # every route that makes a session
    assert new_round("made-up-5", flooder, "queue/join") == 429
    assert new_round("made-up-3", "::ffff:203.0.113.66") == 429  # the same IPv4 client, written as IPv6
    assert new_round("a-volunteer", "203.0.113.7") == 200  # other networks are not affected
    # One IPv6 subscriber's /64s share the /56's allowance (4 x 3 here), and the refusal says whose.
    home = [f"2001:db8:5:{n:x}::1" for n in range(5)]
    assert [new_round(f"v6-{n}-{i}", address) for n, address in enumerate(home[:4]) for i in range(3)] == [200] * 12
    refused = httpx.post(f"{arena.url}/gradio_api/run/predict", json={"fn_index": ids["battle_new_round"], "data": [None],
                         "session_hash": "v6-fresh"}, headers={"X-Forwarded-For": home[4]}, timeout=30)
    assert refused.status_code == 429
    assert "from the network your address belongs to (2001:db8:5::/56) (the limit here is 12 an hour)" in refused.text
    # A deep link would save a session's page for anyone who knows its hash, from any address; the
    # arena takes no files; the component server made a session before answering 404.
    assert httpx.get(f"{arena.url}/gradio_api/deep_link", params={"session_hash": "a-volunteer"}).status_code == 404
    assert httpx.post(f"{arena.url}/gradio_api/upload", files={"files": ("a.bin", b"x" * 10)}).status_code == 404
    assert httpx.post(f"{arena.url}/gradio_api/component_server", json={
        "session_hash": "made-up-6", "component_id": 1, "fn_name": "x", "data": None}).status_code == 404
    assert httpx.get(f"{arena.url}/monitoring/summary").status_code == 404  # Gradio's usage figures stay private
    volunteer = Client(arena.url, verbose=False, headers={"X-Forwarded-For": "198.51.100.9"})
    answers = json.dumps(volunteer.submit("Hello", api_name="/battle_ask").result())
    assert "One answer." in answers and "Another answer." in answers


def test_a_request_body_is_held_to_what_a_prompt_needs(start_arena):
    """A page's largest request is its prompt (the chats are not sent back): the body limit is the longest
    prompt allowed, each character in its longest JSON escape, plus 64 KiB. 40 joins of 15 MB each, when
    16 MB were allowed, took a server from 1.2 to 3.2 GB in 4 s."""
    import httpx

    arena = start_arena(ONE_BATTLE_AN_HOUR)  # max_prompt_chars: 4,000, so 113,536 bytes
    ids = {d["api_name"]: d["id"] for d in httpx.get(f"{arena.url}/config").json()["dependencies"]}

    def ask(prompt: str, session: str, forwarded_for: str) -> tuple[int, str]:
        """Join with the body an ASCII-only client sends (an emoji is 12 bytes), then read the result."""
        body = json.dumps({"data": [prompt, None], "fn_index": ids["battle_ask"], "session_hash": session}).encode()
        headers = {"Content-Type": "application/json", "X-Forwarded-For": forwarded_for}
        joined = httpx.post(f"{arena.url}/gradio_api/queue/join", content=body, headers=headers, timeout=60)
        if joined.status_code != 200:
            return joined.status_code, joined.text
        with httpx.stream("GET", f"{arena.url}/gradio_api/queue/data", params={"session_hash": session},
                          headers=headers, timeout=60) as stream:
            lines = [line for line in stream.iter_lines() if line.startswith("data:")]
        return 200, "".join(lines)

    # The longest prompt allowed, in its longest escapes (48 KB), is answered...
    assert (status := ask("\U0001f600" * 4000, "longest", "203.0.113.5"))[0] == 200 and "One answer." in status[1]
    # ...and one pasted far over the limit reaches the service, which says how long it is.
    status, said = ask("x" * 100_000, "pasted", "203.0.113.6")
    assert status == 200 and "Your prompt has 100,000 characters; the limit here is 4,000." in said
    status, said = ask("x" * 113_500, "huge", "203.0.113.7")
    assert status == 413 and "The request is too large: the limit here is 113,536 bytes" in said
    # Every route under Gradio's API is held to it, and a body declared larger is not even read.
    assert httpx.post(f"{arena.url}/gradio_api/run/predict", content=b"{" + b" " * 120_000 + b"}",
                      headers={"Content-Type": "application/json"}, timeout=60).status_code == 413
    huge = b'{"session_hash": "' + b"x" * (17 << 20) + b'"}'
    refused = httpx.post(f"{arena.url}/gradio_api/queue/join", content=huge,
                         headers={"Content-Type": "application/json"}, timeout=60)
    assert refused.status_code == 413 and "too large" in refused.text
