"""Anonymity until the vote, attacked through Gradio's own API.

A client that skips the page and calls every endpoint the app exposes must
learn nothing about which model is A and which is B before it votes.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
from gradio_client import Client

from tests.conftest import wait_until

# Distinctive names so a leak cannot hide behind a common word; answers never contain them.
ANONYMITY_MODELS = """
    settings: {sampling: uniform, limits: {battles_per_hour: 1000}}
    models:
      - {name: zebra-model-xq, backend: scripted, script: "reply: The first answer here.", max_new_tokens: 256}
      - {name: otter-model-kv, backend: scripted, script: "reply: A second answer there.", max_new_tokens: 256}
      - {name: heron-model-jw, backend: scripted, script: "reply: Yet another answer.", max_new_tokens: 64,
         temperature: 0}
"""
NAMES = ("zebra-model-xq", "otter-model-kv", "heron-model-jw")
REPLIES = {"zebra-model-xq": "The first answer here.", "otter-model-kv": "A second answer there.",
           "heron-model-jw": "Yet another answer."}


def endpoints(url: str) -> dict[str, dict]:
    config = httpx.get(f"{url}/config").json()
    return {d["api_name"]: d for d in config["dependencies"] if d.get("api_visibility") != "private"}


def every_update(job) -> list:
    """All a call sent back, a streaming one's every update included."""
    job.result()
    return job.outputs()


def names_in(value) -> set[str]:
    text = json.dumps(value, default=str)
    return {name for name in NAMES if name in text}


# The same models, each starting 2 s late: time to call the vote endpoints while the answers are on their way.
LATE_ANONYMITY_MODELS = ANONYMITY_MODELS.replace('script: "reply:', 'script: "after 2: reply:')
NAMED_PICKS = ("zebra-model-xq", "otter-model-kv")
PUBLIC_ROUTES = ("", "/config", "/gradio_api/info")  # the page, its config, the API's description


def test_no_endpoint_reveals_the_pair_before_the_vote(start_arena):
    arena = start_arena(LATE_ANONYMITY_MODELS)
    # heron's own limit would set the length of its cut answers, and of its pairs' cuts: the operator is told
    said = "note: the models' max_new_tokens differ (64, 256); anonymous answers all stop at 64 tokens"
    assert said in "".join(arena.output)
    # a greedy model answers a prompt the same way every time: the operator is told it can be recognised
    assert "note: heron-model-jw decodes greedily (temperature 0)" in "".join(arena.output)
    assert "zebra-model-xq decode" not in "".join(arena.output)
    exposed = endpoints(arena.url)
    # Only what the page needs, and nothing that takes a model identity as input.
    assert set(exposed) == {
        "battle_ask", "battle_regenerate", "battle_vote_a", "battle_vote_b", "battle_vote_tie", "battle_vote_bothbad",
        "battle_new_round", "named_ask", "named_regenerate", "named_vote_a", "named_vote_b", "named_vote_tie",
        "named_vote_bothbad", "named_new_round", "leaderboard",
    }, exposed.keys()

    # What may name models (the public list of contestants, the models a client picked side by side) must be
    # what it was before the battle, or what a bystander with no battle gets from the same call at the same time:
    # then it carries nothing about the battle.
    # From another address (a proxy on this machine is trusted to say so): what an address owns is not its.
    bystander = Client(arena.url, verbose=False, headers={"X-Forwarded-For": "198.51.100.7"})
    before = {route: httpx.get(f"{arena.url}{route}").text for route in PUBLIC_ROUTES}
    client = Client(arena.url, verbose=False)
    called: set[str] = set()
    leaks: list[str] = []

    def probe(endpoint: str, *arguments) -> list:
        """Every update `client` gets from `endpoint`; outside the battle tab (whose answers must name no one), its
        last one the same as the bystander's."""
        called.add(endpoint)
        updates = every_update(client.submit(*arguments, api_name=f"/{endpoint}"))
        if not endpoint.startswith("battle_"):
            theirs = every_update(bystander.submit(*arguments, api_name=f"/{endpoint}"))
            if json.dumps(updates[-1:], default=str) != json.dumps(theirs[-1:], default=str) or \
                    set().union(*map(names_in, updates)) != set().union(*map(names_in, theirs)):
                leaks.append(f"{endpoint}{arguments} gave {updates[-1:]}, a bystander {theirs[-1:]}")
        return updates

    def side_by_side_endpoints(answering: bool) -> None:
        """The side-by-side tab's endpoints, from the same session, in the middle of its anonymous battle.
        `answering`: with a side-by-side battle of their own, whose vote names the models picked."""
        for outcome in ("a", "b", "tie", "bothbad"):
            probe(f"named_vote_{outcome}")
            if answering and outcome == "a":
                probe("named_ask", "Hello there", *NAMED_PICKS)
                probe("named_regenerate", *NAMED_PICKS)
        probe("named_new_round", *NAMED_PICKS)

    # While both answers are on their way (the refusal says they are): votes are refused, and name no one. Sent
    # at once, so that all four are in before the answers even on a busy machine.
    battle = client.submit("Hello there", api_name="/battle_ask")
    wait_until(battle.outputs, timeout_s=30)  # the battle is open, its models still silent
    outcomes = ("a", "b", "tie", "bothbad")
    with ThreadPoolExecutor(len(outcomes)) as voters:
        refusals = list(voters.map(lambda outcome: json.dumps(client.predict(api_name=f"/battle_vote_{outcome}")),
                                   outcomes))
    called.update(f"battle_vote_{outcome}" for outcome in outcomes)
    for refusal in refusals:
        assert "Please wait until both answers are complete" in refusal and not names_in(refusal), refusal
    side_by_side_endpoints(answering=True)
    seen: list[tuple[str, object]] = [("battle_ask", update) for update in every_update(battle)]
    # Answered, not yet voted on: everything again, a follow-up and a regeneration included.
    seen += [("battle_ask", update) for update in probe("battle_ask", "Hello there")]
    seen += [("battle_regenerate", update) for update in probe("battle_regenerate")]
    side_by_side_endpoints(answering=False)
    probe("leaderboard")  # recomputed since the side-by-side votes: the same for the bystander
    leaks += [f"{route or '/'} changed" for route in PUBLIC_ROUTES if httpx.get(f"{arena.url}{route}").text != before[route]]
    # Leaving the battle unvoted keeps it anonymous too.
    seen.append(("battle_new_round", probe("battle_new_round")))
    assert called == set(exposed), f"not called mid-battle: {set(exposed) - called}"
    assert not [endpoint for endpoint, value in seen if names_in(value)]
    assert not leaks, leaks

    client.submit("Hello there", api_name="/battle_ask").result()
    client.submit("Hello there", api_name="/battle_ask").result()  # a follow-up
    receipt = client.predict(api_name="/battle_vote_a")
    assert len(names_in(receipt)) == 2  # the vote reveals exactly the pair
    assert "your vote is recorded" in json.dumps(receipt)
    # The operator's log (never a page's) says what happened, one line a vote, after the fact.
    model_a, model_b = sorted(names_in(receipt), key=json.dumps(receipt).index)
    # The log is read from the server's output by another thread.
    logged = wait_until(lambda: [line for line in arena.output if " INFO vote (anonymous" in line], timeout_s=10)
    expected = f"vote (anonymous, turn 2): {model_a} vs {model_b} -> model_a"
    assert len(logged) == 1 and logged[0].rstrip().endswith(expected)


def test_votes_sent_without_the_page_follow_the_rules(start_arena):
    arena = start_arena(ANONYMITY_MODELS)
    attacker = Client(arena.url, verbose=False)
    # No battle in this session: every vote endpoint refuses, nothing is stored.
    for outcome in ("a", "b", "tie", "bothbad"):
        assert "not yours" in json.dumps(attacker.predict(api_name=f"/battle_vote_{outcome}"))
    voter = Client(arena.url, verbose=False)
    voter.submit("Hello there", api_name="/battle_ask").result()
    first = json.dumps(voter.predict(api_name="/battle_vote_b"))
    replay = json.dumps(voter.predict(api_name="/battle_vote_a"))
    assert "your vote is recorded" in first and "already voted" in replay
    # The page's own path: votes skip the queue, so a vote is one plain POST. Same rules there.
    ids = {d["api_name"]: d["id"] for d in httpx.get(f"{arena.url}/config").json()["dependencies"]}

    def posted_vote(session_hash: str, outcome: str) -> str:
        return httpx.post(f"{arena.url}/gradio_api/run/predict", json={
            "fn_index": ids[f"battle_vote_{outcome}"], "data": [None], "session_hash": session_hash}).text

    assert "already voted" in posted_vote(voter.session_hash, "tie")
    assert "not yours" in posted_vote("a-session-hash-made-up-by-the-attacker", "a")
    second = Client(arena.url, verbose=False)
    second.submit("Hello again", api_name="/battle_ask").result()
    assert "your vote is recorded" in posted_vote(second.session_hash, "a")
    assert "already voted" in posted_vote(second.session_hash, "b")
    import sqlite3

    with sqlite3.connect(arena.db) as db:
        assert db.execute("select winner from votes order by created").fetchall() == [("model_b",), ("model_a",)]



def answers_shown(output) -> tuple[list[str], list[str]]:
    """The answers in chat A and chat B of a battle endpoint's output."""
    def answers(chat) -> list[str]:
        return [part["text"] for message in chat["value"] if message["role"] == "assistant" for part in message["content"]]
    return answers(output[0]), answers(output[1])


def test_each_vote_button_records_its_outcome_for_the_models_shown(start_arena):
    """Chat A shows the model the vote then names as A, and each of the four buttons stores its own outcome."""
    arena = start_arena(ANONYMITY_MODELS)
    expected = []
    for short, winner in (("a", "model_a"), ("b", "model_b"), ("tie", "tie"), ("bothbad", "tie (bothbad)")):
        client = Client(arena.url, verbose=False)
        shown = answers_shown(client.submit("Hello there", api_name="/battle_ask").result())
        receipt = client.predict(api_name=f"/battle_vote_{short}")
        model_a, model_b = receipt[0]["label"].removeprefix("Model A: "), receipt[1]["label"].removeprefix("Model B: ")
        assert shown == ([REPLIES[model_a]], [REPLIES[model_b]])
        expected.append((model_a, model_b, winner))
    import sqlite3

    with sqlite3.connect(arena.db) as db:
        stored = db.execute("select b.model_a, b.model_b, v.winner from votes v join battles b on b.id = v.battle_id "
                            "order by v.created").fetchall()
    assert stored == expected


def test_generation_cannot_skip_the_queue(start_arena):
    """A raw POST to the REST route would start a generation beside the queue, past max_concurrent_battles."""
    arena = start_arena(ANONYMITY_MODELS)
    ids = {d["api_name"]: d["id"] for d in httpx.get(f"{arena.url}/config").json()["dependencies"]}
    skipped = httpx.post(f"{arena.url}/gradio_api/run/predict", json={
        "fn_index": ids["battle_ask"], "data": ["Hello", None], "session_hash": "skipper"}, timeout=30)
    assert skipped.status_code == 404 and "join the queue" in skipped.text
    import sqlite3

    with sqlite3.connect(arena.db) as db:
        assert db.execute("select count(*) from battles").fetchone() == (0,)
