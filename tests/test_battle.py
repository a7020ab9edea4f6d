"""Battle logic and vote rules, through ArenaService on a real SQLite file.

The scripted backend stands in for models only where a real one would fail
by chance (crash, hang, empty answer); the rules under test are the real ones.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter

import pytest

from arena.backends import Delta, GenerationError
from arena.battle import BattleBook, FailureStreaks, Leaving, Mode, RuleViolation, Status
from arena.config import Limits
from arena.duel import run_duel
from arena.identity import identity_leak
from arena.limits import RateLimiter, client_network
from arena.sampling import make_sampler
from arena.service import SILENCE_PROBE, SLOW_START_NOTICE_S, VoteReceipt
from arena.ui.battle_text import FAILED_NOTE, STOPPED_NOTE, receipt_text, shown_conversations, status_line
from tests.conftest import SCRIPTED_MODELS, wait_until

CLIENT = "10.0.0.1"


def finish(views):
    last = None
    for last in views:
        pass
    return last


def test_battle_pairs_two_different_models_and_hides_them(make_service):
    service = make_service()
    seen = Counter()
    for round_ in range(30):
        view = finish(service.ask(None, f"question {round_}", CLIENT, Mode.ANONYMOUS))
        battle = service.book.get(view.battle_id, service.store.client_id(CLIENT))
        assert battle.model_a != battle.model_b
        assert view.names is None and view.votable
        seen[frozenset(battle.models.values())] += 1
    assert len(seen) == 3  # every pair of the three models came up


def test_vote_is_committed_then_names_revealed(make_service):
    service = make_service()
    view = finish(service.ask(None, "Say hello", CLIENT, Mode.ANONYMOUS))
    receipt = service.vote(view.battle_id, CLIENT, "model_b")
    row = service.store.vote_for(view.battle_id)
    battle = service.store.battle(view.battle_id)
    assert row["winner"] == "model_b" and battle["status"] == "voted"
    assert (receipt.model_a, receipt.model_b) == (battle["model_a"], battle["model_b"])
    revealed = service.revealed_view(view.battle_id, CLIENT)
    assert revealed.names == {"a": battle["model_a"], "b": battle["model_b"]}


def test_one_vote_per_battle_even_when_requests_race(make_service):
    service = make_service()
    view = finish(service.ask(None, "Say hello", CLIENT, Mode.ANONYMOUS))
    results = []

    def vote():
        try:
            results.append(service.vote(view.battle_id, CLIENT, "tie"))
        except RuleViolation as refusal:
            results.append(refusal)

    threads = [threading.Thread(target=vote) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(not isinstance(r, RuleViolation) for r in results) == 1
    assert service.store.counts()["votes"] == 1
    with pytest.raises(RuleViolation, match="already voted"):
        service.vote(view.battle_id, CLIENT, "model_a")


def test_no_vote_before_both_answers_are_complete(make_service):
    service = make_service()
    views = service.ask(None, "Say hello", CLIENT, Mode.ANONYMOUS)
    first = next(views)
    assert first.generating and not first.votable
    with pytest.raises(RuleViolation, match="wait until both answers"):
        service.vote(first.battle_id, CLIENT, "model_a")
    finish(views)
    service.vote(first.battle_id, CLIENT, "model_a")


def test_no_vote_on_a_battle_the_client_did_not_start(make_service):
    service = make_service()
    view = finish(service.ask(None, "Say hello", CLIENT, Mode.ANONYMOUS))
    for battle_id, address in ((view.battle_id, "10.9.9.9"), ("made-up-id", CLIENT), (None, CLIENT)):
        with pytest.raises(RuleViolation, match="not yours"):
            service.vote(battle_id, address, "model_a")
    assert service.store.counts()["votes"] == 0


def test_unknown_outcome_is_refused(make_service):
    service = make_service()
    view = finish(service.ask(None, "Say hello", CLIENT, Mode.ANONYMOUS))
    with pytest.raises(RuleViolation, match="Unknown vote"):
        service.vote(view.battle_id, CLIENT, "model_c")
    assert service.store.db["votes"].count == 0  # refused: nothing stored, and the battle is still open
    assert service.vote(view.battle_id, CLIENT, "tie (bothbad)").outcome == "tie (bothbad)"
    assert [row["winner"] for row in service.store.db["votes"].rows] == ["tie (bothbad)"]


@pytest.mark.parametrize("prompt, message", [("", "type a prompt"), ("   \n\t", "type a prompt"), ("x" * 201, "limit here is 200")])
def test_empty_and_oversized_prompts_are_refused(make_service, prompt, message):
    service = make_service()
    with pytest.raises(RuleViolation, match=message):
        service.ask(None, prompt, CLIENT, Mode.ANONYMOUS)
    assert service.store.counts()["battles"] == 0


def test_a_prompt_of_exactly_the_limit_is_taken(make_service):
    service = make_service()  # max_prompt_chars: 200
    assert finish(service.ask(None, "x" * 200, CLIENT, Mode.ANONYMOUS)).votable


def test_follow_up_goes_to_both_models_with_their_own_history(make_service, monkeypatch):
    """What each model is sent (seen at its backend): its system prompt, then its own answers, never the other's."""
    service = make_service("""
        settings: {sampling: uniform}
        models:
          - {name: owl-model, backend: scripted, script: "reply: Owls hoot.", system_prompt: You are an owl.}
          - {name: fox-model, backend: scripted, script: "reply: Foxes bark."}
    """)
    received: dict[str, list] = {}
    for name, contestant in service.roster.contestants.items():
        def spy(messages, settings, cancel, group=None, *, name=name, stream=contestant.backend.stream):
            received.setdefault(name, []).append([(m["role"], m["content"]) for m in messages])
            return stream(messages, settings, cancel, group)
        monkeypatch.setattr(contestant.backend, "stream", spy)
    first = finish(service.ask(None, "First question", CLIENT, Mode.ANONYMOUS))
    second = finish(service.ask(first.battle_id, "Second question", CLIENT, Mode.ANONYMOUS))
    assert second.battle_id == first.battle_id
    own = {"owl-model": "Owls hoot.", "fox-model": "Foxes bark."}
    system = {"owl-model": [("system", "You are an owl.")], "fox-model": []}
    for name, sent in received.items():
        assert sent == [system[name] + [("user", "First question")],
                        system[name] + [("user", "First question"), ("assistant", own[name]), ("user", "Second question")]]
    assert set(received) == set(own)
    assert service.store.battle(first.battle_id)["turns"] == 2


def test_a_side_by_side_follow_up_with_other_picks_starts_another_battle(make_service):
    """The pickers are sent with every prompt: a new pair is a new battle, with the new models answering."""
    service = make_service()
    first = finish(service.ask(None, "First question", CLIENT, Mode.NAMED, ("echo-one", "echo-two")))
    same = finish(service.ask(first.battle_id, "Second question", CLIENT, Mode.NAMED, ("echo-one", "echo-two")))
    assert same.battle_id == first.battle_id
    other = finish(service.ask(first.battle_id, "Third question", CLIENT, Mode.NAMED, ("echo-one", "constant-bot")))
    assert other.battle_id != first.battle_id
    battle = service.book.get(other.battle_id, service.store.client_id(CLIENT))
    assert (battle.model_a, battle.model_b) == ("echo-one", "constant-bot") and len(battle.exchanges) == 1
    assert battle.exchanges[0].answers["b"] == "A calm and steady answer."


def test_turn_limit(make_service):
    service = make_service()  # max_turns: 3
    view = finish(service.ask(None, "one", CLIENT, Mode.ANONYMOUS))
    for prompt in ("two", "three"):
        finish(service.ask(view.battle_id, prompt, CLIENT, Mode.ANONYMOUS))
    with pytest.raises(RuleViolation, match="limit of 3 turns"):
        service.ask(view.battle_id, "four", CLIENT, Mode.ANONYMOUS)


def test_regenerate_asks_both_again_and_keeps_every_attempt(make_service):
    service = make_service()
    view = finish(service.ask(None, "Tell me", CLIENT, Mode.ANONYMOUS))
    again = finish(service.regenerate(view.battle_id, CLIENT))
    assert again.votable and again.battle_id == view.battle_id
    attempts = {row["attempt"] for row in service.store.db["messages"].rows_where("battle_id = ?", [view.battle_id])}
    assert attempts == {1, 2}
    service.vote(view.battle_id, CLIENT, "model_a")
    with pytest.raises(RuleViolation):
        service.regenerate(view.battle_id, CLIENT)


def test_a_new_prompt_after_the_vote_starts_a_new_battle(make_service):
    service = make_service()
    view = finish(service.ask(None, "Tell me", CLIENT, Mode.ANONYMOUS))
    service.vote(view.battle_id, CLIENT, "model_a")
    fresh = finish(service.ask(view.battle_id, "Another", CLIENT, Mode.ANONYMOUS))
    assert fresh.battle_id != view.battle_id and fresh.votable


FAILING = """
    settings:
      sampling: uniform
      generation_timeout_s: 1
    models:
      - {{name: healthy, backend: scripted, script: echo}}
      - {{name: broken, backend: scripted, script: "{script}"}}
"""


@pytest.mark.parametrize("script, cause", [("error", "failed on purpose"), ("hang", "timeout"), ("empty", "empty answer")])
def test_a_failing_model_ends_its_battle_cleanly(make_service, script, cause):
    service = make_service(FAILING.format(script=script))
    view = finish(service.ask(None, "Hello", CLIENT, Mode.ANONYMOUS))
    assert view.failed and not view.votable
    assert view.unanswered_prompt == "Hello"  # the box offers it again for a new round
    status = status_line(view)
    assert "could not answer" in status and "not counted" in status
    assert "broken" not in status and "healthy" not in status  # anonymity holds in failure too
    assert view.names is None and service.revealed_view(view.battle_id, CLIENT).names is None
    battle = service.book.get(view.battle_id, service.store.client_id(CLIENT))
    for side in "ab":  # each panel says what became of its own answer
        expected = FAILED_NOTE if battle.models[side] == "broken" else STOPPED_NOTE
        shown = shown_conversations(view)[side]
        assert shown[-1]["content"].endswith(expected), shown
    stored = service.store.battle(view.battle_id)
    assert stored["status"] == "failed" and cause in stored["failure"] and "broken" in stored["failure"]
    with pytest.raises(RuleViolation, match="failed"):
        service.vote(view.battle_id, CLIENT, "model_a")
    # The arena keeps working: a follow-up starts a fresh battle.
    fresh = finish(service.ask(view.battle_id, "Hello again", CLIENT, Mode.ANONYMOUS))
    assert fresh.battle_id != view.battle_id


STEADY = """
    settings: {sampling: uniform, generation_timeout_s: 1.5}
    models:
      - {name: steady-one, backend: scripted, script: "reply: one two three four five six seven eight nine ten"}
      - {name: steady-two, backend: scripted, script: "reply: uno dos tres cuatro cinco seis siete ocho nueve diez"}
"""


def test_a_slow_but_steady_answer_outlasting_the_timeout_is_not_a_stall(make_service, monkeypatch):
    """The timeout is for silence: a model writing a word every 0.3 s for 3 s keeps its battle alive."""
    monkeypatch.setattr("arena.backends.scripted.STEP_SECONDS", 0.3)
    service = make_service(STEADY)
    started = time.monotonic()
    view = finish(service.ask(None, "Hello", CLIENT, Mode.ANONYMOUS))
    assert time.monotonic() - started > 2.5  # longer than the timeout, as a whole
    assert view.votable and not view.failed, status_line(view)
    stored = service.store.battle(view.battle_id)
    assert stored["status"] == "ready" and not stored["failure"], stored
    service.vote(view.battle_id, CLIENT, "tie")


def test_a_prompt_with_half_a_character_is_refused_before_anything_starts(make_service):
    service = make_service()
    with pytest.raises(RuleViolation, match="broken character"):
        service.ask(None, "Hello \ud800 there", CLIENT, Mode.ANONYMOUS)
    assert service.store.db["battles"].count == 0


def test_a_turn_that_cannot_be_stored_is_never_votable(make_service, monkeypatch):
    """The vote is kept only with the answers it judged: storing the turn comes before the vote opens."""
    service = make_service()

    def full_disk(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(service.store, "record_turn", full_disk)
    view = finish(service.ask(None, "Hello", CLIENT, Mode.ANONYMOUS))
    assert not view.votable and view.failed
    assert "went wrong on the server" in status_line(view)  # not blamed on a model
    assert not any("could not answer" in m["content"] for side in "ab" for m in shown_conversations(view)[side])
    with pytest.raises(RuleViolation, match="failed"):
        service.vote(view.battle_id, CLIENT, "model_a")
    assert service.store.db["votes"].count == 0


def test_the_vote_opens_only_once_the_turn_is_stored(make_service, monkeypatch):
    """Not merely in the end: at no moment may a vote be taken for answers not yet stored."""
    service = make_service()
    store_turn, early = service.store.record_turn, []

    def vote_while_storing(battle_id, *args, **kwargs):
        try:
            service.vote(battle_id, CLIENT, "model_a")
            early.append("taken")
        except RuleViolation:
            early.append("refused")
        return store_turn(battle_id, *args, **kwargs)

    monkeypatch.setattr(service.store, "record_turn", vote_while_storing)
    view = finish(service.ask(None, "Hello", CLIENT, Mode.ANONYMOUS))
    assert early == ["refused"] and view.votable


def test_a_vote_whose_commit_failed_can_be_cast_again(make_service, monkeypatch):
    """The volunteer saw an error, not a receipt: the battle must not count as voted."""
    service = make_service()
    view = finish(service.ask(None, "Hello", CLIENT, Mode.ANONYMOUS))
    record_vote, calls = service.store.record_vote, []

    def busy_once(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise sqlite3.OperationalError("database is locked")
        return record_vote(*args, **kwargs)

    monkeypatch.setattr(service.store, "record_vote", busy_once)
    with pytest.raises(sqlite3.OperationalError):
        service.vote(view.battle_id, CLIENT, "model_b")
    assert service.vote(view.battle_id, CLIENT, "model_b").outcome == "model_b"
    assert [r["winner"] for r in service.store.vote_records()] == ["model_b"]


def test_a_duel_that_never_ran_is_not_votable(make_service, monkeypatch):
    service = make_service()

    def broken_duel(*args, **kwargs):
        raise RuntimeError("no thread could start")
        yield  # a generator, like the real one

    monkeypatch.setattr("arena.service.run_duel", broken_duel)
    views = service.ask(None, "Hello", CLIENT, Mode.ANONYMOUS)
    with pytest.raises(RuntimeError):
        finish(views)
    (battle_id,) = [row["id"] for row in service.store.db["battles"].rows]
    assert service.store.battle(battle_id)["status"] == "failed"
    with pytest.raises(RuleViolation, match="failed"):
        service.vote(battle_id, CLIENT, "model_a")


def test_a_battle_forgotten_while_answering_is_told_to_stop():
    book = BattleBook(Limits())
    now = [1000.0]
    book.clock = lambda: now[0]
    battle = book.open(Mode.ANONYMOUS, "client", "one", "two")
    book.add_prompt(battle, "Hello")
    now[0] += BattleBook.KEEP_S + 1
    book.forget_old()
    assert battle.left_while_answering.is_set()  # its stream then stores it as abandoned
    assert book.closing_status(battle, failed=True, model_failed=False) is Status.ABANDONED


def test_a_model_that_failed_stays_failed_when_the_volunteer_leaves_too():
    book = BattleBook(Limits())
    battle = book.open(Mode.ANONYMOUS, "client", "one", "two")
    battle.left_while_answering.set()
    assert book.closing_status(battle, failed=True, model_failed=True) is Status.FAILED  # its error is kept
    assert book.closing_status(battle, failed=True, model_failed=False) is Status.ABANDONED


LEAKY_MODELS = """
    settings: {{sampling: {sampling}}}
    models:
      - {{name: echo-one, backend: scripted, script: echo, family: [EchoCorp]}}
      - {{name: echo-two, backend: scripted, script: echo}}
      - {{name: echo-three, backend: scripted, script: echo}}
"""


def test_identity_leak_is_flagged_and_left_out_of_the_leaderboard(make_service):
    service = make_service(LEAKY_MODELS.format(sampling="uniform"))
    leaky = finish(service.ask(None, "I am made by echocorp labs", CLIENT, Mode.ANONYMOUS))
    receipt = service.vote(leaky.battle_id, CLIENT, "model_a")
    assert receipt.flagged_term == "EchoCorp" and "left out of the leaderboard" in receipt_text(receipt)
    clean = finish(service.ask(None, "plain words", CLIENT, Mode.ANONYMOUS))
    assert service.vote(clean.battle_id, CLIENT, "model_a").flagged_term is None
    flags = [r["flagged"] for r in service.store.vote_records()]
    assert flags == [True, False]
    assert service.leaderboard(bootstrap_rounds=0).votes_used == 1


def test_the_active_sampler_learns_only_from_counted_votes(make_service):
    """A flagged vote is left out of the leaderboard, so it must not steer which pairs come next either."""
    service = make_service(LEAKY_MODELS.format(sampling="active"))
    leaky = finish(service.ask(None, "I am made by echocorp labs", CLIENT, Mode.ANONYMOUS))
    before = service.sampler.pair_probabilities()
    assert service.vote(leaky.battle_id, CLIENT, "model_a").flagged_term == "EchoCorp"
    assert service.sampler.pair_probabilities() == before
    clean = finish(service.ask(None, "plain words", CLIENT, Mode.ANONYMOUS))
    before = service.sampler.pair_probabilities()
    service.vote(clean.battle_id, CLIENT, "model_a")
    assert service.sampler.pair_probabilities() != before  # a counted vote does move it


@pytest.mark.parametrize("counted", [False, True])
def test_the_active_sampler_learns_from_side_by_side_votes_when_the_leaderboard_counts_them(make_service, counted):
    service = make_service(LEAKY_MODELS.format(sampling=f"active, count_named_votes: {str(counted).lower()}"))
    finish(service.ask(None, "warm up", CLIENT, Mode.ANONYMOUS))  # the sampler exists once a pair was drawn
    named = finish(service.ask(None, "plain words", CLIENT, Mode.NAMED, chosen=("echo-two", "echo-three")))
    before = service.sampler.pair_probabilities()
    service.vote(named.battle_id, CLIENT, "model_a")
    assert (service.sampler.pair_probabilities() != before) == counted
    assert service.leaderboard(bootstrap_rounds=0).votes_used == counted
    # A sampler built later (a restart), from the stored votes, starts from the same ones.
    service.sampler = None
    finish(service.ask(None, "again", CLIENT, Mode.ANONYMOUS))
    knowing_nothing = make_sampler("active", service.roster.names).pair_probabilities()
    assert (service.sampler.pair_probabilities() != knowing_nothing) == counted


def test_a_name_shown_then_regenerated_away_still_flags_the_vote(make_service):
    service = make_service("""
        settings: {sampling: uniform}
        models:
          - {name: zebra-model, backend: scripted, script: "replies: I am zebra-model. | Happy to help.", family: [ZebraCorp]}
          - {name: otter-model, backend: scripted, script: "reply: Happy to help."}
    """)
    shown = finish(service.ask(None, "Who are you?", CLIENT, Mode.ANONYMOUS))
    assert any("zebra-model" in message["content"] for side in shown.conversations.values() for message in side)
    again = finish(service.regenerate(shown.battle_id, CLIENT))
    assert not any("zebra" in message["content"] for side in again.conversations.values() for message in side)
    receipt = service.vote(shown.battle_id, CLIENT, "model_a")
    assert receipt.flagged_term == "zebra-model"
    assert [r["flagged"] for r in service.store.vote_records()] == [True]


def test_a_refused_side_by_side_request_does_not_use_up_the_hourly_limit(make_service):
    service = make_service(SCRIPTED_MODELS.replace("battles_per_hour: 1000", "battles_per_hour: 1"))
    for chosen in [("echo-one", "echo-one"), ("echo-one", "no-such-model"), None]:
        with pytest.raises(RuleViolation, match="Pick two different models|not available"):
            service.ask(None, "Hello", CLIENT, Mode.NAMED, chosen)
    assert finish(service.ask(None, "Hello", CLIENT, Mode.ANONYMOUS)).votable  # the one battle this hour
    with pytest.raises(RuleViolation, match="limit"):
        service.ask(None, "Hello", CLIENT, Mode.ANONYMOUS)


def test_a_failed_battle_never_claims_both_answers_are_complete(make_service):
    service = make_service("""
        settings: {sampling: uniform}
        models:
          - {name: breaks-down, backend: scripted, script: error}
          - {name: echo-one, backend: scripted, script: echo}
    """)
    views = list(service.ask(None, "Tell me a long story about a lighthouse keeper", CLIENT, Mode.ANONYMOUS))
    assert views[-1].failed and not views[-1].votable
    assert not any("complete" in status_line(view) for view in views), [status_line(view) for view in views]


def test_an_answer_stopped_by_the_length_limit_is_said_to_be_cut(make_service):
    service = make_service("""
        settings: {sampling: uniform}
        models:
          - {name: short-one, backend: scripted, script: echo, max_new_tokens: 3}
          - {name: long-one, backend: scripted, script: echo}
    """)
    named = finish(service.ask(None, "one two three four five", CLIENT, Mode.NAMED, ("short-one", "long-one")))
    assert "Model A's answer was cut at the length limit" in status_line(named)
    assert "Model A and" not in status_line(named)  # the other answer ended by itself
    short = finish(service.ask(None, "one two", CLIENT, Mode.ANONYMOUS))
    assert "length limit" not in status_line(short)


def test_anonymous_answers_stop_at_one_length_so_a_cut_names_neither_model_nor_pair(make_service):
    """Each model's own max_new_tokens would show in a cut answer's length (a red team read 11 of 11 that way),
    and a pair's smaller one would tell which pair is playing: every anonymous answer stops at the smallest."""
    service = make_service("""
        settings: {sampling: uniform, limits: {battles_per_hour: 1000}}
        models:
          - {name: short-one, backend: scripted, script: echo, max_new_tokens: 3}
          - {name: long-one, backend: scripted, script: echo, max_new_tokens: 4}
          - {name: longer-one, backend: scripted, script: echo, max_new_tokens: 5}
    """)
    pairs = set()
    while len(pairs) < 3:  # until every pair has played, the one without short-one included
        view = finish(service.ask(None, "one two three four five six", CLIENT, Mode.ANONYMOUS))
        assert "Both answers were cut at the length limit" in status_line(view)
        assert [view.conversations[side][-1]["content"] for side in "ab"] == ["one two three"] * 2
        pairs.add(frozenset(service.book.find(view.battle_id).models.values()))
        assert service.vote(view.battle_id, CLIENT, "tie").outcome == "tie"
    named = finish(service.ask(None, "one two three four five six", CLIENT, Mode.NAMED, ("long-one", "longer-one")))
    answers = [named.conversations[side][-1]["content"] for side in "ab"]
    assert answers == ["one two three four", "one two three four five"]  # side by side, each model's own limit


def test_a_prompt_too_long_in_tokens_is_refused_before_a_battle_starts(make_service):
    """Counted in the models' own tokens: a few thousand rare characters can be many thousand tokens."""
    service = make_service("""
        settings: {sampling: uniform, limits: {max_conversation_tokens: 12, battles_per_hour: 2}}
        models:
          - {name: echo-one, backend: scripted, script: echo}
          - {name: echo-two, backend: scripted, script: echo}
    """)
    with pytest.raises(RuleViolation, match=r"^This prompt is too long for the models here\. Please shorten it \(some scripts"):
        service.ask(None, " ".join(["word"] * 13), CLIENT, Mode.ANONYMOUS)
    assert service.store.db["battles"].count == 0  # nothing started, and nothing counted against the hour
    view = finish(service.ask(None, " ".join(["word"] * 5), CLIENT, Mode.ANONYMOUS))
    with pytest.raises(RuleViolation, match=r"^This conversation is too long for the models here\. Vote, or start a new round"):
        service.ask(view.battle_id, "five more words right here", CLIENT, Mode.ANONYMOUS)  # 5 + 5 answered + 5
    assert service.vote(view.battle_id, CLIENT, "tie").outcome == "tie"  # the battle is still open to a vote
    finish(service.ask(None, "a new round", CLIENT, Mode.ANONYMOUS))  # the second of two battles this hour
    with pytest.raises(RuleViolation, match=r"too long for the models here: about 13 tokens"):  # side by side: numbers
        service.ask(None, " ".join(["word"] * 13), CLIENT, Mode.NAMED, ("echo-one", "echo-two"))


def test_whether_a_follow_up_is_refused_does_not_depend_on_the_pair_or_its_sides(make_service, monkeypatch):
    """One model with a small context: anonymous battles are all held to it, so a refusal names no one."""
    service = make_service("""
        settings: {sampling: uniform, limits: {battles_per_hour: 100}}
        models:
          - {name: roomy, backend: scripted, script: echo}
          - {name: cramped, backend: scripted, script: echo, max_new_tokens: 10}
          - {name: other, backend: scripted, script: echo}
    """)
    cramped = service.roster.contestants["cramped"].backend
    monkeypatch.setattr(cramped, "context_length", lambda: 30)  # reads at most 20 with room for its answer
    outcomes = set()
    for _ in range(12):
        view = finish(service.ask(None, " ".join(["word"] * 4), CLIENT, Mode.ANONYMOUS))
        try:
            finish(service.ask(view.battle_id, " ".join(["word"] * 13), CLIENT, Mode.ANONYMOUS))  # 4 + 4 + 13 = 21
            outcomes.add("answered")
        except RuleViolation as refusal:
            outcomes.add(str(refusal))
    assert outcomes == {"This conversation is too long for the models here. Vote, or start a new round."}
    named = finish(service.ask(None, " ".join(["word"] * 4), CLIENT, Mode.NAMED, ("roomy", "other")))
    finish(service.ask(named.battle_id, " ".join(["word"] * 13), CLIENT, Mode.NAMED, ("roomy", "other")))  # their own room


def test_an_anonymous_prompt_needs_room_only_for_the_answer_length_anonymous_answers_stop_at(make_service, monkeypatch):
    """Anonymous answers all stop at the smallest max_new_tokens served: a model that may write 1,000 tokens
    side by side needs room for only that many here, as its backend's own check agrees."""
    service = make_service("""
        settings: {sampling: uniform}
        models:
          - {name: long-winded, backend: scripted, script: "reply: fine", max_new_tokens: 1000}
          - {name: brief, backend: scripted, script: "reply: fine", max_new_tokens: 100}
    """)
    monkeypatch.setattr(service.roster.contestants["long-winded"].backend, "context_length", lambda: 1200)
    prompt = " ".join(["word"] * 500)  # 500 + 100 fits in 1,200; 500 + 1,000 does not
    assert not finish(service.ask(None, prompt, CLIENT, Mode.ANONYMOUS)).failed
    with pytest.raises(RuleViolation, match=r"too long for the models here: about 500 tokens"):  # its own 1,000
        service.ask(None, prompt, CLIENT, Mode.NAMED, ("long-winded", "brief"))


def test_whether_a_follow_up_is_refused_does_not_depend_on_whose_tokenizer_counts(make_service, monkeypatch):
    """One model counts a token per character: a follow-up it finds too long is refused in every pair, not
    only where it plays (that would tell a volunteer who probes the limit whether it is in the battle)."""
    service = make_service("""
        settings: {sampling: uniform, limits: {battles_per_hour: 100, max_conversation_tokens: 60}}
        models:
          - {name: wordy, backend: scripted, script: echo}
          - {name: dense, backend: scripted, script: echo}
          - {name: other, backend: scripted, script: echo}
    """)
    dense = service.roster.contestants["dense"].backend
    monkeypatch.setattr(dense, "prompt_tokens", lambda messages: sum(len(m["content"]) for m in messages))
    outcomes, pairs = set(), set()
    for _ in range(12):
        view = finish(service.ask(None, "hi", CLIENT, Mode.ANONYMOUS))
        pairs.add(frozenset(service.book.get(view.battle_id, service.store.client_id(CLIENT)).models.values()))
        try:  # 14 words: far under 60 in words, over 60 in characters
            finish(service.ask(view.battle_id, "please tell me a little more about that idea of yours in a few words",
                               CLIENT, Mode.ANONYMOUS))
            outcomes.add("answered")
        except RuleViolation as refusal:
            outcomes.add(str(refusal))
    assert len(pairs) == 3  # every pair played, with dense and without
    assert outcomes == {"This conversation is too long for the models here. Vote, or start a new round."}


def test_a_model_whose_template_fails_to_count_does_not_stop_every_battle(make_service, monkeypatch):
    service = make_service("""
        settings: {sampling: uniform}
        models:
          - {name: echo-one, backend: scripted, script: echo}
          - {name: echo-two, backend: scripted, script: echo}
    """)

    def no_system_role(messages):
        raise ValueError("System role not supported")

    monkeypatch.setattr(service.roster.contestants["echo-one"].backend, "prompt_tokens", no_system_role)
    assert not finish(service.ask(None, "Hello", CLIENT, Mode.ANONYMOUS)).failed  # counted by the other; served


def test_a_battle_left_without_a_vote_is_recorded_as_abandoned(make_service):
    service = make_service()
    left = finish(service.ask(None, "Hello", CLIENT, Mode.ANONYMOUS))
    assert service.abandon(left.battle_id, "10.9.9.9") is Leaving.NOTHING  # someone else's: nothing happens
    assert service.store.battle(left.battle_id)["status"] == "ready"
    assert service.abandon(left.battle_id, CLIENT) is Leaving.ENDED  # the page says it was not counted
    assert service.store.battle(left.battle_id)["status"] == "abandoned"
    with pytest.raises(RuleViolation, match="left this battle"):
        service.vote(left.battle_id, CLIENT, "model_a")
    fresh = finish(service.ask(left.battle_id, "Again", CLIENT, Mode.ANONYMOUS))
    assert fresh.battle_id != left.battle_id  # a prompt after leaving starts a new battle
    service.vote(fresh.battle_id, CLIENT, "tie")
    assert service.abandon(fresh.battle_id, CLIENT) is Leaving.NOTHING  # New round after a vote: the vote stands
    assert service.store.battle(fresh.battle_id)["status"] == "voted"


def test_a_battle_whose_page_is_gone_ends_as_abandoned(make_service):
    service = make_service()
    left = finish(service.ask(None, "Hello", CLIENT, Mode.ANONYMOUS))
    voted = finish(service.ask(None, "Hi", CLIENT, Mode.ANONYMOUS))
    service.vote(voted.battle_id, CLIENT, "tie")
    for battle_id in (left.battle_id, voted.battle_id, None, "no-such-battle"):
        service.page_closed(battle_id)
    assert service.store.battle(left.battle_id)["status"] == "abandoned"
    assert service.store.battle(voted.battle_id)["status"] == "voted"


def test_a_battle_left_open_for_hours_is_forgotten_as_abandoned(make_service):
    service = make_service()
    stale = finish(service.ask(None, "Hello", CLIENT, Mode.ANONYMOUS))
    started = time.time()
    service.book.clock = lambda: started + BattleBook.KEEP_S + 1
    finish(service.ask(None, "Later", "10.0.0.2", Mode.ANONYMOUS))  # any new battle sweeps the old ones
    assert service.store.battle(stale.battle_id)["status"] == "abandoned"
    with pytest.raises(RuleViolation, match="expired"):
        service.vote(stale.battle_id, CLIENT, "model_a")


def test_named_mode_uses_the_chosen_pair_and_stores_named_votes(make_service):
    service = make_service()
    view = finish(service.ask(None, "Hello", CLIENT, Mode.NAMED, ("echo-two", "constant-bot")))
    assert view.names == {"a": "echo-two", "b": "constant-bot"}
    service.vote(view.battle_id, CLIENT, "model_b")
    (record,) = service.store.vote_records()
    assert record["anony"] is False and record["model_b"] == "constant-bot"
    assert service.leaderboard(bootstrap_rounds=0).votes_used == 0  # named votes do not count by default
    with pytest.raises(RuleViolation, match="two different"):
        service.ask(None, "Hello", CLIENT, Mode.NAMED, ("echo-one", "echo-one"))


def test_rate_limit_is_per_address_and_slides():
    now = [0.0]
    limiter = RateLimiter(per_hour=2, clock=lambda: now[0])
    limiter.check_and_count("1.1.1.1")
    limiter.check_and_count("1.1.1.1")
    limiter.check_and_count("2.2.2.2")
    with pytest.raises(RuleViolation, match="limit"):
        limiter.check_and_count("1.1.1.1")
    now[0] = 3570.0
    with pytest.raises(RuleViolation, match=r"come back in about 1 minute\.$"):
        limiter.check_and_count("1.1.1.1")
    now[0] = 3601.0
    limiter.check_and_count("1.1.1.1")


@pytest.mark.parametrize("host, network", [
    ("203.0.113.7", "203.0.113.7"),
    ("::ffff:203.0.113.7", "203.0.113.7"),  # the same IPv4 client, through an IPv6 socket
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff:ffff:ffff:fffe", "2001:db8:1:2::/64"),  # one subscriber's /64: one client
    ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
    ("testclient", "testclient"),
])
def test_a_client_is_its_ipv4_address_or_its_ipv6_64(host, network):
    assert client_network(host) == network


def test_a_refund_takes_back_its_own_count_not_a_neighbour_s():
    """Two /64s of one /56: the first's refused request is refunded after the second has counted."""
    limiter = RateLimiter(per_hour=1000, clock=lambda: 0.0, unit="token")
    mine, neighbour = client_network("2001:db8:1:2::1"), client_network("2001:db8:1:3::1")
    charge = limiter.check_and_count(mine, 10)
    limiter.check_and_count(neighbour, 900)
    limiter.refund(charge)
    for level in ("2001:db8:1::/56", "2001:db8:1::/48"):
        assert [spent for _, spent, _ in limiter.starts[level]] == [900]
    assert not limiter.starts[mine] and [spent for _, spent, _ in limiter.starts[neighbour]] == [900]
    limiter.refund(charge)  # twice changes nothing more
    assert [spent for _, spent, _ in limiter.starts["2001:db8:1::/56"]] == [900]


def test_one_ipv6_subscriber_s_many_64s_share_a_wider_allowance():
    """A home /56 holds 256 /64s: each /64 has its own allowance, the /56 four times one, the /48 sixteen."""
    limiter = RateLimiter(per_hour=2, clock=lambda: 0.0)
    home = [client_network(f"2001:db8:1:{n:x}::1") for n in range(0x00, 0x10)]  # 16 /64s of 2001:db8:1::/56
    for network in home[:4]:
        limiter.check_and_count(network)
        last = limiter.check_and_count(network)  # two each: the /56 has had 8, its allowance
    with pytest.raises(RuleViolation, match=r"The network your address belongs to \(2001:db8:1::/56\) reached the limit "
                                             r"here: 8 battles an hour"):
        limiter.check_and_count(home[4])  # a fresh /64, but the same subscriber
    limiter.refund(last)
    limiter.check_and_count(home[4])  # a refund gives back at every level
    neighbour = client_network("2001:db8:1:100::1")  # another /56 of the same /48
    limiter.check_and_count(neighbour)
    limiter.check_and_count("203.0.113.7")  # IPv4 has no wider levels
    assert len(limiter.starts["2001:db8:1::/48"]) == 9 and len(limiter.starts["2001:db8:1:100::/56"]) == 1
    assert sorted(key for key in limiter.starts if "." in key) == ["203.0.113.7"]


def test_the_hourly_sweep_in_the_middle_of_a_count_loses_nothing():
    """The sweep runs once, before a count's levels are checked: it cannot drop one it just made."""
    ticks = iter([0.0, 0.0, 3599.9])  # then 3600.0: the clock reaches the sweep while a count is under way
    limiter = RateLimiter(per_hour=2, clock=lambda: next(ticks, 3600.0))
    limiter.check_and_count(client_network("2001:db8:1:2::1"))
    limiter.check_and_count(client_network("2001:db8:1:3::1"))
    limiter.check_and_count(client_network("2001:db8:1:4::1"))  # after the sweep
    assert [when for when, *_ in limiter.starts["2001:db8:1::/56"]] == [3599.9, 3600.0]  # the count at 0 s has left the window


def test_the_rate_limiter_forgets_addresses_gone_quiet():
    """Every address ever seen would otherwise keep an entry: a crowd of addresses would grow memory without end."""
    now = [0.0]
    limiter = RateLimiter(per_hour=2, clock=lambda: now[0])
    for address in ("1.1.1.1", "2.2.2.2"):
        limiter.check_and_count(address)
    now[0] = 1800.0
    limiter.check_and_count("2.2.2.2")
    now[0] = 3700.0
    limiter.check_and_count("3.3.3.3")
    assert set(limiter.starts) == {"2.2.2.2", "3.3.3.3"}  # 2.2.2.2 started one within the hour: still counted
    limiter.check_and_count("2.2.2.2")  # the start at 0 s has left the window, the one at 1800 s has not
    with pytest.raises(RuleViolation, match="limit"):
        limiter.check_and_count("2.2.2.2")


def test_rate_limit_through_the_service(make_service):
    service = make_service(SCRIPTED_MODELS.replace("battles_per_hour: 1000", "battles_per_hour: 2"))
    for _ in range(2):
        finish(service.ask(None, "Hello", CLIENT, Mode.ANONYMOUS))
    with pytest.raises(RuleViolation, match="limit here: 2 battles an hour"):
        service.ask(None, "Hello", CLIENT, Mode.ANONYMOUS)
    finish(service.ask(None, "Hello", "10.0.0.2", Mode.ANONYMOUS))


def test_regenerations_count_against_the_hourly_limit(make_service):
    """Each one runs both models in full; otherwise one battle could regenerate without end."""
    service = make_service(SCRIPTED_MODELS.replace("battles_per_hour: 1000", "battles_per_hour: 4"))
    first = finish(service.ask(None, "Hello", CLIENT, Mode.ANONYMOUS))  # 1
    finish(service.regenerate(first.battle_id, CLIENT))  # 2
    streaming = service.ask(None, "Hi", CLIENT, Mode.ANONYMOUS)  # 3
    second = next(streaming)
    with pytest.raises(RuleViolation, match="Please wait"):  # refused: costs nothing
        service.regenerate(second.battle_id, CLIENT)
    finish(streaming)
    finish(service.regenerate(first.battle_id, CLIENT))  # 4
    with pytest.raises(RuleViolation, match="limit here: 4 battles an hour, regenerations included"):
        service.regenerate(first.battle_id, CLIENT)
    assert service.store.battle(first.battle_id)["status"] == "ready"  # the refusal left it votable
    service.vote(first.battle_id, CLIENT, "tie")


def test_identity_leak_matching():
    assert identity_leak(["I'm SmolLM2, made by you"], ["SmolLM"]) == "SmolLM"
    assert identity_leak(["i am gpt-4"], ["GPT-4", "gpt"]) == "GPT-4"
    assert identity_leak(["a resmolled answer"], ["smol"]) is None


def test_a_name_with_emphasis_marks_inside_a_word_is_found():
    """Markdown shows "Sm*ol*LM" as "SmolLM" with "ol" in italics: the stars hide nothing."""
    assert identity_leak(["Sm*ol*LM"], ["SmolLM"]) == "SmolLM"


def test_a_name_with_a_precomposed_accent_is_found():
    """An accent written as one character ("\u015a" is U+015A) reads as the bare letter, like a combining mark."""
    assert identity_leak(["I am \u015amol LM"], ["SmolLM"]) == "SmolLM"
    assert identity_leak(["I am Sm\u00f6l LM"], ["SmolLM"]) == "SmolLM"


@pytest.mark.parametrize("answer", [
    "I was trained by HuggingFace.", "Hugging-Face", "Hugging\nFace", "Hugging\u00a0Face",  # its own space, any way
    "My name is S-m-o-l-L-M.", "S m o l L M", "**Smol**LM", "Smol\u200bLM", "Smol\u00adLM",  # spelled, marked up, split
    "\uff33\uff4d\uff4f\uff4c\uff2c\uff2d", "Sm\u043elLM", "Smol&#76;M",  # full width, a Cyrillic o, an HTML entity
    "Smol LM", "smol-lm", "Smol_LM", "S -- m -- o -- l -- L -- M",  # split where the name changes case
    "Smol<span>LM</span>", "Smol<!-- -->LM", "[Smol](https://x)LM",  # markup that shows as nothing
    "Smol\u034fLM", "Smol\ufe0fLM", "Smol\u3164LM", "S\u0301mol LM", "S\u0336m\u0336o\u0336l\u0336LM",  # invisible, marks
])
def test_a_name_written_to_slip_past_the_check_is_still_found(answer):
    """Ways a red team got a name past an exact-substring check: each displays as the name."""
    assert identity_leak([answer], ["SmolLM", "Hugging Face"]) is not None


@pytest.mark.parametrize("answer", ["let me take a look", "home tables", "Met a friend", "the sm ol lm thing",
                                    "Метаболизм и мета-анализ",  # Russian words, not look-alikes of "Meta"
                                    "metadata", "class MetaData", "llamas and alpacas", "Hugging faces is rude"])
def test_words_run_together_are_not_taken_for_a_name(answer):
    assert identity_leak([answer], ["Meta", "SmolLM", "Llama", "Hugging Face"]) is None


def test_a_name_inside_an_identifier_is_found():
    assert identity_leak(["see config_llama.json"], ["Llama"]) == "Llama"
    assert identity_leak(["I am Hugging_Face's"], ["Hugging Face"]) == "Hugging Face"


def test_battle_book_refuses_same_model_twice():
    with pytest.raises(RuleViolation):
        BattleBook(Limits()).open(Mode.ANONYMOUS, "c", "x", "x")


def test_while_models_load_the_page_says_so_and_battles_wait(tmp_path, scripted_config):
    from arena.roster import Roster
    from arena.service import ArenaService
    from arena.storage import ArenaStore

    store = ArenaStore(tmp_path / "loading.db")
    roster = Roster(scripted_config)
    service = ArenaService(scripted_config, roster, store)
    assert "still loading" in service.loading_message()
    with pytest.raises(RuleViolation, match="still loading"):
        service.ask(None, "Hello", CLIENT, Mode.ANONYMOUS)
    roster.load(report=lambda message: None)
    assert service.loading_message() == ""
    assert finish(service.ask(None, "Hello", CLIENT, Mode.ANONYMOUS)).votable
    store.close()


def duel_threads_left(wait_s: float = 5) -> list[str]:
    """The answering threads still alive once they have had `wait_s` to notice they were cancelled."""
    def alive() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("duel-")]

    wait_until(lambda: not alive(), wait_s)
    return alive()


def test_a_volunteer_leaving_mid_answer_stops_generation_and_ends_the_battle(make_service):
    service = make_service(FAILING.format(script="hang").replace("generation_timeout_s: 1", "generation_timeout_s: 60"))
    views = service.ask(None, "Hello", CLIENT, Mode.ANONYMOUS)
    first = next(views)
    assert first.generating
    views.close()  # what Gradio does when the page goes away
    assert duel_threads_left() == []
    # Stored from a thread: Gradio closes streams on its event loop.
    wait_until(lambda: service.store.battle(first.battle_id)["status"] != "generating", timeout_s=5)
    stored = service.store.battle(first.battle_id)
    assert stored["status"] == "abandoned" and stored["failure"].startswith("left by the volunteer while answering")


@pytest.mark.parametrize("leave", ["new round", "page closed"])
def test_leaving_a_battle_mid_answer_stops_it_and_ends_it_as_abandoned(make_service, leave):
    """A stalled model must not hold the volunteer until its timeout: New round stops the battle."""
    service = make_service(FAILING.format(script="hang").replace("generation_timeout_s: 1", "generation_timeout_s: 60"))
    views = service.ask(None, "Hello", CLIENT, Mode.ANONYMOUS)
    first = next(views)
    assert first.generating
    if leave == "new round":
        service.abandon(first.battle_id, CLIENT)
    else:
        service.page_closed(first.battle_id)
    rest = list(views)  # the stream ends at once, not at the 60 s timeout
    if leave == "new round":  # the page is still listening: the stream's last view starts it afresh
        assert [(view.left, view.battle_id, view.conversations) for view in rest] == [(True, None, {"a": [], "b": []})]
        assert rest[0].unanswered_prompt == "Hello"  # given back to the box, as for a failed battle
    stored = service.store.battle(first.battle_id)
    assert stored["status"] == "abandoned" and stored["ended"] is not None
    assert stored["failure"].startswith("left by the volunteer while answering (still answering:")
    with pytest.raises(RuleViolation, match="left this battle"):
        service.vote(first.battle_id, CLIENT, "model_a")
    assert duel_threads_left() == []


def test_leaderboard_is_recomputed_at_most_once_per_interval(make_service):
    service = make_service(SCRIPTED_MODELS.replace("generation_timeout_s: 2\n", "generation_timeout_s: 2\n      leaderboard_interval_s: 1\n"))
    assert service.config.settings.leaderboard_interval_s == 1
    empty = service.leaderboard(bootstrap_rounds=0)
    view = finish(service.ask(None, "Hello", CLIENT, Mode.ANONYMOUS))
    service.vote(view.battle_id, CLIENT, "model_a")
    assert service.leaderboard(bootstrap_rounds=0) is empty  # within the interval: the board from before
    time.sleep(1.1)
    fresh = service.leaderboard(bootstrap_rounds=0)
    assert fresh.votes_used == 1
    time.sleep(1.1)
    assert service.leaderboard(bootstrap_rounds=0) is fresh  # no new votes: nothing to recompute


def test_battles_generating_is_counted_however_a_battle_ends(make_service):
    """The count sets how often each battle updates the page; a leak would slow every later battle's updates."""
    service = make_service()
    finish(service.ask(None, "Hello", CLIENT, Mode.ANONYMOUS))
    assert service.battles_generating == 0
    abandoned = service.ask(None, " ".join(["Hi"] * 60), "10.0.0.2", Mode.ANONYMOUS)  # streams ~0.6 s
    next(abandoned)
    next(abandoned)
    assert service.battles_generating == 1
    abandoned.close()  # the volunteer closed the page mid-answer
    assert service.battles_generating == 0
    failing = make_service(FAILING.format(script="error"))
    finish(failing.ask(None, "Hello", CLIENT, Mode.ANONYMOUS))
    assert failing.battles_generating == 0


def test_a_model_failing_battle_after_battle_rests_from_anonymous_draws(make_service, caplog):
    """An endpoint that went down would otherwise fail every battle it is drawn into."""
    service = make_service("""
        settings: {sampling: uniform, limits: {battles_per_hour: 1000}}
        models:
          - {name: echo-one, backend: scripted, script: echo}
          - {name: echo-two, backend: scripted, script: echo}
          - {name: broken, backend: scripted, script: error}
    """)
    now = [0.0]
    service.streaks.clock = lambda: now[0]
    failed = 0
    while failed < FailureStreaks.STREAK:
        view = finish(service.ask(None, "Hello", CLIENT, Mode.ANONYMOUS))
        failed += view.failed
    assert "broken failed 3 times in a row: left out of anonymous battles for 60 s" in caplog.text
    assert service.streaks.failures == {"broken": 3}  # the other side, stopped by its failure, is not counted
    pairs = [service.book.get(finish(service.ask(None, "Hi", CLIENT, Mode.ANONYMOUS)).battle_id,
                              service.store.client_id(CLIENT)).models for _ in range(12)]
    assert all("broken" not in pair.values() for pair in pairs)
    now[0] = 61.0  # rested: it is drawn again, and one more failure rests it twice as long
    while not finish(service.ask(None, "Hello", CLIENT, Mode.ANONYMOUS)).failed:
        pass
    assert service.streaks.resting() == {"broken"} and service.streaks.resting_until["broken"] == 61.0 + 120.0
    for _ in range(3):  # side by side, a volunteer may still pick it, and its failures there do not count
        assert finish(service.ask(None, "Hi", CLIENT, Mode.NAMED, ("broken", "echo-one"))).failed
    assert service.streaks.failures["broken"] == 4
    now[0] = 200.0
    view = finish(service.ask(None, "Hi", CLIENT, Mode.NAMED, ("echo-one", "echo-two")))
    assert not view.failed and service.streaks.resting() == set()


def test_failures_already_under_way_when_a_rest_begins_do_not_lengthen_it():
    """A crowd meets an outage at once: the battles drawn before the rest fail together, and that is one rest."""
    now = [0.0]
    streaks = FailureStreaks(clock=lambda: now[0])
    marks = [streaks.rests_begun("down") for _ in range(7)]  # seven battles drawn while it was still in
    results = [streaks.record("down", True, mark) for mark in marks]
    assert results[:3] == [(1, None), (2, None), (3, 60.0)]
    assert results[3:] == [(3, None)] * 4 and streaks.resting_until["down"] == 60.0
    now[0] = 61.0  # back from its rest, drawn again, failing again: twice as long
    assert streaks.record("down", True, streaks.rests_begun("down")) == (4, 120.0)
    assert streaks.record("down", False, 0) == (0, None)  # an answer completed, whenever drawn, ends the streak


def test_a_model_stopped_because_the_other_failed_keeps_its_streak(make_service):
    """Stopped is not answered: two models on one dead endpoint must not reset each other's streaks."""
    service = make_service("""
        settings: {sampling: uniform, generation_timeout_s: 5, limits: {battles_per_hour: 1000}}
        models:
          - {name: broken, backend: scripted, script: error}
          - {name: stuck, backend: scripted, script: hang}
    """)
    service.streaks.failures["stuck"] = 2
    view = finish(service.ask(None, "Hello", CLIENT, Mode.ANONYMOUS))  # broken fails at once; stuck is stopped
    assert view.failed and view.failed_sides and len(view.failed_sides) == 1
    assert service.streaks.failures == {"stuck": 2, "broken": 1}


def test_each_turn_is_marked_for_the_streaks_and_in_the_database_while_it_is_answered(make_service):
    """A follow-up's failure is measured against rests begun before it, not before the battle was drawn; and
    while it is answered the stored row says so, so that a restart can tell a lost turn from an unvoted one."""
    service = make_service()
    view = finish(service.ask(None, "First question", CLIENT, Mode.ANONYMOUS))
    battle = service.book.get(view.battle_id, service.store.client_id(CLIENT))
    assert set(battle.rests_at_turn_start.values()) == {0}
    for name in battle.models.values():
        service.streaks.rests[name] = 2  # rests began (and ended) since the draw
    answering = service.ask(view.battle_id, "Second question " * 10, CLIENT, Mode.ANONYMOUS)
    next(answering)  # the first frame: both models are writing
    assert service.store.battle(view.battle_id)["status"] == "generating"
    assert set(battle.rests_at_turn_start.values()) == {2}
    assert finish(answering).votable and service.store.battle(view.battle_id)["status"] == "ready"


TOKEN_BUDGET = """
    settings: {{sampling: uniform, limits: {{prompt_tokens_per_hour: {budget}}}}}
    models:
      - {{name: echo-one, backend: scripted, script: echo}}
      - {{name: echo-two, backend: scripted, script: echo}}
"""


def test_each_network_has_an_hourly_budget_of_prompt_tokens(make_service):
    """Reading prompts is the CPU work others wait for: one network may not have it read without end."""
    service = make_service(TOKEN_BUDGET.format(budget=20))
    view = finish(service.ask(None, " ".join(["word"] * 6), CLIENT, Mode.ANONYMOUS))  # 6
    finish(service.ask(view.battle_id, "two more", CLIENT, Mode.ANONYMOUS))  # 6 + 6 answered + 2 = 14: 20 in all
    with pytest.raises(RuleViolation, match=r"reached the limit here: 20 prompt tokens an hour, each prompt with the "
                                            r"conversation before it"):
        service.ask(None, "one more", CLIENT, Mode.ANONYMOUS)
    assert service.store.db["battles"].count == 1  # refused before it started
    finish(service.ask(None, "one more", "10.0.0.2", Mode.ANONYMOUS))  # another network has its own budget


def test_a_regeneration_costs_the_conversation_s_tokens_again(make_service):
    """The models read the whole conversation again: without a charge, regenerating would read without end."""
    service = make_service(TOKEN_BUDGET.format(budget=20))
    view = finish(service.ask(None, " ".join(["word"] * 6), CLIENT, Mode.ANONYMOUS))  # 6
    finish(service.regenerate(view.battle_id, CLIENT))  # 12
    finish(service.regenerate(view.battle_id, CLIENT))  # 18
    with pytest.raises(RuleViolation, match=r"reached the limit here: 20 prompt tokens an hour"):
        service.regenerate(view.battle_id, CLIENT)  # 24
    assert service.store.db["messages"].count == 3 * 3  # three attempts of a prompt and two answers, no fourth
    assert len(service.limiter.starts[client_network(CLIENT)]) == 3  # the refused one's battle count refunded


def test_a_refused_prompt_costs_no_prompt_tokens(make_service):
    service = make_service(TOKEN_BUDGET.format(budget=12))
    words = " ".join(["word"] * 6)
    for _ in range(3):  # 18 tokens asked for in all, none read
        with pytest.raises(RuleViolation, match="different models"):
            service.ask(None, words, CLIENT, Mode.NAMED, ("echo-one", "echo-one"))
    assert finish(service.ask(None, words, CLIENT, Mode.NAMED, ("echo-one", "echo-two"))).votable  # 6 of 12 left


def test_a_side_by_side_receipt_says_whether_the_vote_counts_instead_of_naming_the_picked_models():
    receipt = VoteReceipt("echo-one", "echo-two", "model_a", flagged_term=None)
    kept = receipt_text(receipt, Mode.NAMED, named_votes_counted=False)
    assert "not counted on the leaderboard" in kept and "echo-one" not in kept
    assert "are counted on the leaderboard" in receipt_text(receipt, Mode.NAMED, named_votes_counted=True)
    assert "Model A was **echo-one**" in receipt_text(receipt)  # anonymous: the reveal
    odd = VoteReceipt(model_a="my_model_v2", model_b="*star*", outcome="model_a", flagged_term=None)
    assert "Model A was **my\\_model\\_v2**, Model B was **\\*star\\***" in receipt_text(odd)  # as written
    flagged = VoteReceipt("echo-one", "echo-two", "model_a", flagged_term="EchoCorp")
    assert "left out of the leaderboard" in receipt_text(flagged, Mode.NAMED, named_votes_counted=True)


@pytest.mark.parametrize("mode", [Mode.ANONYMOUS, Mode.NAMED])
def test_a_receipt_repeats_the_choice_so_a_mis_tap_shows(mode):
    said = {outcome: receipt_text(VoteReceipt("echo-one", "echo-two", outcome, flagged_term=None), mode)
            for outcome in ("model_a", "model_b", "tie", "tie (bothbad)")}
    assert "You chose: A is better." in said["model_a"] and "You chose: B is better." in said["model_b"]
    assert "You chose: Tie." in said["tie"] and "You chose: Both are bad." in said["tie (bothbad)"]


COUNTING = " ".join(f"w{n}" for n in range(60))  # 0.6 s at the scripted model's 10 ms a word
SLOW_STARTER = f"""
    settings: {{sampling: uniform}}
    models:
      - {{name: prompt-bot, backend: scripted, script: "reply: {COUNTING}"}}
      - {{name: late-bot, backend: scripted, script: "after 0.5: reply: {COUNTING}"}}
"""


@pytest.mark.parametrize("mode", [Mode.ANONYMOUS, Mode.NAMED])
def test_an_anonymous_battle_never_shows_which_answer_started_first(make_service, mode):
    """Under load the decoder starts the shorter prompt first, so the side seen to start first could name its
    model: anonymous answers are shown as if both started together, each at its own pace."""
    service = make_service(SLOW_STARTER)
    shown = []  # words of answer a and answer b in every update the page gets
    for view in service.ask(None, "Count", CLIENT, mode, ("prompt-bot", "late-bot") if mode is Mode.NAMED else None):
        shown.append(tuple(len(view.conversations[side][-1]["content"].split()) for side in "ab"))
    assert shown[-1] == (60, 60) and len(shown) > 5
    if mode is Mode.ANONYMOUS:  # never one seen to start first, and then each at its pace, here the same: a
        # busy machine's thread lag aside (15 words: 150 ms of a word-a-10-ms stream, under a third of the head start)
        apart = [(number, a, b) for number, (a, b) in enumerate(shown) if abs(a - b) > 15 or bool(a) != bool(b)]
        assert not apart, (apart, shown)
    else:  # side by side the names are known, and each answer shows as it comes
        assert any(a > 0 and b == 0 for a, b in shown), shown


def test_an_answer_held_back_for_a_slow_starter_is_explained_without_naming_a_side(make_service):
    """Start alignment hides a ready answer until the other starts: blank panels for long must be explained."""
    service = make_service(SLOW_STARTER.replace("after 0.5", f"after {SLOW_START_NOTICE_S + 1.5}"))
    started = time.monotonic()
    seen = []  # (seconds since asking, status shown, words shown on each side)
    for view in service.ask(None, "Count", CLIENT, Mode.ANONYMOUS):
        seen.append((time.monotonic() - started, status_line(view),
                     [len(view.conversations[side][-1]["content"].split()) for side in "ab"]))
    waiting = [moment for moment, status, _ in seen if "has not started its answer yet" in status]
    assert waiting and min(waiting) >= SLOW_START_NOTICE_S, seen
    assert all(words == [0, 0] for moment, status, words in seen if moment in waiting), seen
    assert not any(side in status for _, status, _ in seen for side in ("Model A", "Model B")), seen
    assert seen[-1][1].startswith("Both answers are in"), seen


def test_an_empty_answer_fails_its_battle_but_does_not_rest_the_model(make_service):
    """Any client can find a prompt a greedy model answers with nothing: were that counted, three such
    battles would take the model out of everyone's anonymous battles."""
    service = make_service("""
        settings: {sampling: uniform, limits: {battles_per_hour: 1000}}
        models:
          - {name: echo-one, backend: scripted, script: echo}
          - {name: silent, backend: scripted, script: empty}
    """)
    service.streaks.failures["silent"] = 2  # two real failures before: an empty answer neither adds nor clears
    for _ in range(FailureStreaks.STREAK + 1):
        view = finish(service.ask(None, "Hello", CLIENT, Mode.ANONYMOUS))
        assert view.failed
    assert service.streaks.resting() == set() and service.streaks.failures == {"silent": 2}


def empty_answer_from(service, model: str, address: str) -> None:
    """Anonymous battles for `address` until one meets `model`, which must answer it with nothing (the others
    answer)."""
    while model not in service.book.get((view := finish(service.ask(None, "Hello", address, Mode.ANONYMOUS))).battle_id,
                                        service.store.client_id(address)).models.values():
        assert not view.failed
    assert view.failed  # an empty answer fails its battle


def test_a_model_that_answers_every_volunteer_with_nothing_rests(make_service, caplog):
    """An endpoint that answers everyone with nothing (a misnamed model on some servers) would fail every battle
    it is drawn into; one volunteer cannot say so alone, but several in a row can."""
    service = make_service("""
        settings: {sampling: uniform, limits: {battles_per_hour: 1000}}
        models:
          - {name: echo-one, backend: scripted, script: echo}
          - {name: echo-two, backend: scripted, script: echo}
          - {name: silent, backend: scripted, script: empty}
    """)
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.1"):
        empty_answer_from(service, "silent", address)
    assert service.streaks.resting() == set()  # two volunteers so far: a prompt each may have done it
    finish(service.ask(None, "Hi", "10.0.0.4", Mode.NAMED, ("silent", "echo-one")))  # side by side: never counted
    empty_answer_from(service, "silent", "10.0.0.3")  # three: the server asks a prompt of its own, and gets nothing either
    assert wait_until(lambda: service.streaks.resting() == {"silent"}, timeout_s=10)
    assert ("silent answered 3 volunteers in a row and the server's own prompt with nothing: left out of anonymous "
            "battles for 60 s") in caplog.text
    assert service.streaks.empty_for == {}  # counted again from nothing when it is back


def test_a_model_silenced_by_prompts_but_answering_the_servers_own_does_not_rest(make_service):
    """Several addresses (one person may hold many) can each find a prompt that silences a greedy model."""
    service = make_service("""
        settings: {sampling: uniform, limits: {battles_per_hour: 1000}}
        models:
          - {name: echo-one, backend: scripted, script: echo}
          - {name: echo-two, backend: scripted, script: echo}
          - {name: hushable, backend: scripted, script: "replies: | | | Hello, I am a model."}
    """)
    for address in ("2001:db8:0:1::1", "2001:db8:0:2::1", "2001:db8:0:3::1"):
        empty_answer_from(service, "hushable", address)
    assert wait_until(lambda: not service._probing and service.streaks.empty_for == {}, timeout_s=10)
    assert service.streaks.resting() == set()  # it answered the server's own prompt


def test_silence_heard_from_a_probe_sent_before_a_rest_began_does_not_lengthen_it():
    now = [0.0]
    streaks = FailureStreaks(clock=lambda: now[0])
    streaks.empty_for["down"] = {"v1", "v2", "v3"}
    mark = streaks.rests_begun("down")  # the probe is sent; the endpoint then goes down for everyone
    for _ in range(FailureStreaks.STREAK):
        streaks.record("down", True, streaks.rests_begun("down"))
    assert streaks.resting_until["down"] == 60.0
    assert streaks.record_silence("down", mark) == (3, None) and streaks.resting_until["down"] == 60.0
    assert streaks.empty_for == {}
    assert streaks.record_silence("down", streaks.rests_begun("down")) == (4, 120.0)  # heard after it: it counts


@pytest.mark.parametrize("probe_answer", ["fails", "never comes"])
def test_a_probe_that_fails_counts_as_one_failure_not_as_silence(make_service, caplog, probe_answer):
    """A busy remote (a 429) or one that trickles keep-alives must not turn the probe into a rest at once."""
    service = make_service("""
        settings: {sampling: uniform, generation_timeout_s: 1, limits: {battles_per_hour: 1000}}
        models:
          - {name: echo-one, backend: scripted, script: echo}
          - {name: echo-two, backend: scripted, script: echo}
          - {name: silent, backend: scripted, script: empty}
    """)
    silent = service.roster.contestants["silent"]
    volunteers_answer = silent.stream

    def stream(turns, cancel, *args, **kwargs):
        if turns[-1]["content"] != SILENCE_PROBE:
            return volunteers_answer(turns, cancel, *args, **kwargs)
        if probe_answer == "fails":
            raise GenerationError("HTTP 429: too many requests")
        return nothing_until(cancel)

    def nothing_until(cancel):
        cancel.wait()  # then returns, as a backend does once cancelled
        yield from ()

    silent.stream = stream
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        empty_answer_from(service, "silent", address)
    assert wait_until(lambda: service.streaks.failures == {"silent": 1} and not service._probing, timeout_s=10)
    assert service.streaks.resting() == set()
    expected = "HTTP 429" if probe_answer == "fails" else "no answer within 1 s"
    assert f"silent: the server's own prompt (asked after empty answers) failed: {expected}" in caplog.text


def test_an_answer_counts_as_started_when_something_shows():
    """A first token that is only a line break shows nothing: taken as the start, the other answer would
    be seen to start first, a step early."""
    def answer(pieces):
        def stream(cancel):
            for delay, text in pieces:
                time.sleep(delay)
                yield Delta(text, 1)
        return stream

    streams = {"a": answer([(0.0, "\n"), (0.4, "Hello"), (0.05, " there.")]),
               "b": answer([(0.4, "Hi"), (0.05, " again.")])}
    shown = [(frame.shown_text("a").strip(), frame.shown_text("b").strip())
             for frame in run_duel(streams, stall_timeout_s=5, frame_interval_s=0.02, align_starts=True)]
    assert shown[-1] == ("Hello there.", "Hi again.")
    assert all(bool(a) == bool(b) for a, b in shown), shown
