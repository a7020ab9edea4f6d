"""One client cannot fill Gradio's queue, and with it the server's memory (arena/ui/request_guard.py).

Gradio's queue bounds neither a session nor a client, and every event waiting in it is sent its place
each time the queue moves, messages that pile up for a client that never reads them: one session
joining 6,000 empty prompts took a server to 13 GB and held a volunteer back 154 s. Through a real
server: a session may have 16 events in Gradio's hands, a client address 64, and a volunteer beside a
flood is answered at once. The tests play a trusted proxy (X-Forwarded-For from 127.0.0.1) to be several
clients.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
from gradio_client import Client

from tests.conftest import FAST_MODELS

PAGE_FULL = "This page already has 16 requests waiting or running here"
ADDRESS_FULL = "already has 64 requests waiting or running here"


def ask_id(url: str) -> int:
    return next(d["id"] for d in httpx.get(f"{url}/config").json()["dependencies"] if d["api_name"] == "battle_ask")


def join(url: str, fn: int, session: str | None, address: str, prompt: str = "",
         route: str = "queue/join") -> httpx.Response:
    """Put a `battle_ask` in the queue and read nothing back, as a flood does (an empty prompt: refused at once)."""
    body = {"data": [prompt, None], "fn_index": fn, "event_data": None, "trigger_id": None}
    if session is not None:
        body["session_hash"] = session
    return httpx.post(f"{url}/gradio_api/{route}", json=body, headers={"X-Forwarded-For": address}, timeout=60)


def read_results(url: str, session: str, address: str) -> list[dict]:
    """What a page does: read the session's stream until Gradio closes it (every result delivered)."""
    messages = []
    with httpx.stream("GET", f"{url}/gradio_api/queue/data", params={"session_hash": session},
                      headers={"X-Forwarded-For": address}, timeout=60) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                messages.append(json.loads(line[5:]))
                if messages[-1]["msg"] in ("close_stream", "unexpected_error"):
                    break
    return messages


def test_one_session_cannot_pile_events_in_the_queue(start_arena):
    arena = start_arena(FAST_MODELS)
    fn = ask_id(arena.url)
    flooder = "203.0.113.66"
    with ThreadPoolExecutor(16) as pool:  # many at once, as a flood sends them
        answers = list(pool.map(lambda _: join(arena.url, fn, "flood", flooder), range(200)))
    codes = [answer.status_code for answer in answers]
    assert codes.count(200) == 16 and codes.count(429) == 184, sorted(set(codes))
    assert PAGE_FULL in next(answer.text for answer in answers if answer.status_code == 429)
    # A volunteer beside the flood is answered at once (6,000 joins held one back 154 s).
    volunteer = Client(arena.url, verbose=False, headers={"X-Forwarded-For": "198.51.100.9"})
    answer = json.dumps(volunteer.submit("Hello", api_name="/battle_ask").result(timeout=60))
    assert "First." in answer and "Second." in answer
    # The events finished long ago, but their results are still held for the flood, unread: it gets no more.
    assert join(arena.url, fn, "flood", flooder).status_code == 429
    # Once a session reads its results it has its room back: the cap is on what it holds, not on what it asks.
    completed = [m for m in read_results(arena.url, "flood", flooder) if m["msg"] == "process_completed"]
    assert len(completed) == 16
    assert join(arena.url, fn, "flood", flooder).status_code == 200


def test_one_address_cannot_pile_events_across_sessions(start_arena):
    """New sessions are cheap (300 an hour): an address's sessions share 64 events, an IPv6 /56 4 x 64."""
    arena = start_arena(FAST_MODELS)
    fn = ask_id(arena.url)
    flooder = "203.0.113.66"
    assert [join(arena.url, fn, f"flood-{i // 16}", flooder).status_code for i in range(64)] == [200] * 64
    refused = join(arena.url, fn, "flood-4", flooder)
    assert refused.status_code == 429 and f"Your network address {ADDRESS_FULL}" in refused.text
    assert join(arena.url, fn, "flood-5", "::ffff:203.0.113.66").status_code == 429  # the same client, as IPv6
    # Gradio makes up a session for a join that names none (`call/`): it still counts for the address.
    assert join(arena.url, fn, None, flooder, route="call/battle_ask").status_code == 429
    caller = "203.0.113.67"
    assert [join(arena.url, fn, None, caller, route="call/battle_ask").status_code for _ in range(64)] == [200] * 64
    assert join(arena.url, fn, "caller-page", caller).status_code == 429
    # Other addresses are not affected, and a volunteer's battle is answered.
    assert join(arena.url, fn, "a-volunteer", "203.0.113.7").status_code == 200
    volunteer = Client(arena.url, verbose=False, headers={"X-Forwarded-For": "198.51.100.9"})
    assert "First." in json.dumps(volunteer.submit("Hello", api_name="/battle_ask").result(timeout=60))
    # One IPv6 subscriber's /64s share the /56's 4 x 64, and the refusal says whose.
    home = [f"2001:db8:5:{n:x}::1" for n in range(5)]
    assert [join(arena.url, fn, f"v6-{n}-{i // 16}", address).status_code
            for n, address in enumerate(home[:4]) for i in range(64)] == [200] * 256
    refused = join(arena.url, fn, "v6-fresh", home[4])
    assert refused.status_code == 429
    assert "The network your address belongs to (2001:db8:5::/56) already has 256 requests" in refused.text


def test_an_operator_sets_what_one_address_may_queue(start_arena):
    """A classroom behind one address may need more room than 64; a small arena may want less."""
    arena = start_arena(FAST_MODELS.replace("100000}", "100000, queued_events_per_address: 5}"))
    fn = ask_id(arena.url)
    assert [join(arena.url, fn, f"page-{i}", "203.0.113.66").status_code for i in range(6)] == [200] * 5 + [429]
    assert join(arena.url, fn, "elsewhere", "203.0.113.67").status_code == 200


SLOW_MODELS = """
    settings: {sampling: uniform, max_concurrent_battles: 8, limits: {battles_per_hour: 100000}}
    models:
      - {name: slow-one, backend: scripted, script: "after 0.5: reply: First."}
      - {name: slow-two, backend: scripted, script: "after 0.5: reply: Second."}
"""


def test_pages_closed_mid_answer_leave_their_address_its_room(start_arena):
    """Gradio keeps the id of an event whose page closed while it ran for good: counted, 64 volunteers
    behind one campus address closing their tab mid-answer would lock out every other one there."""
    arena = start_arena(SLOW_MODELS)
    fn = ask_id(arena.url)
    campus = "203.0.113.80"
    for page in range(70):
        assert join(arena.url, fn, f"page-{page}", campus, prompt="Hello").status_code == 200
        with httpx.stream("GET", f"{arena.url}/gradio_api/queue/data", params={"session_hash": f"page-{page}"},
                          headers={"X-Forwarded-For": campus}, timeout=60) as stream:
            for line in stream.iter_lines():  # closed as soon as its answer starts
                if line.startswith("data:") and json.loads(line[5:])["msg"] == "process_starts":
                    break
    answered = Client(arena.url, verbose=False, headers={"X-Forwarded-For": campus})
    assert "First." in json.dumps(answered.submit("Hello", api_name="/battle_ask").result(timeout=60))


def test_networks_that_do_not_come_back_are_forgotten():
    """The guard notes which sessions joined from each network; one that never joins again must not stay
    noted for good (many IPv6 /64s would add up), so every network is looked over once a minute."""
    from types import SimpleNamespace

    import gradio as gr

    from arena.ui.request_guard import RequestGuard

    blocks = gr.Blocks()
    blocks.queue()  # Gradio's real queue, empty: no session holds anything
    now = [0.0]
    guard = RequestGuard(None, sessions_per_hour=300, clock=lambda: now[0])
    scope = {"app": SimpleNamespace(get_blocks=lambda: blocks)}
    guard.holders = {"198.51.100.1": {"gone-page": 0.0}}
    now[0] = 30.0
    assert guard._crowded(scope, "203.0.113.5", "a-page") is None
    assert "198.51.100.1" in guard.holders  # not looked at yet: within the minute
    now[0] = 61.0
    assert guard._crowded(scope, "203.0.113.5", "a-page") is None
    assert guard.holders == {}
