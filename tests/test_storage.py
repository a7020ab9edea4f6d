"""Storage round trips on real SQLite files."""

from __future__ import annotations

import sqlite3

import pytest

from arena.config import ModelEntry
from arena.storage import ArenaStore, DuplicateVote


@pytest.fixture
def store(tmp_path):
    store = ArenaStore(tmp_path / "arena.db")
    store.register_models([ModelEntry(name="alpha", backend="scripted", script="echo"),
                           ModelEntry(name="beta", backend="scripted", script="echo")])
    yield store
    store.close()


def play(store, battle_id="b1", winner="model_a", mode="anonymous", flag=None):
    store.record_battle_start(battle_id, mode, "alpha", "beta", "client", 100.0)
    store.record_turn(battle_id, 1, 1, [
        {"side": "user", "role": "user", "content": "hi", "tokens": None, "latency_s": None, "first_token_s": None},
        {"side": "a", "role": "assistant", "content": "hello", "tokens": 2, "latency_s": 0.5, "first_token_s": 0.1},
        {"side": "b", "role": "assistant", "content": "hey", "tokens": 1, "latency_s": 0.4, "first_token_s": 0.2},
    ], "ready")
    return store.record_vote(battle_id, winner, "client", flag)


def test_battle_messages_and_vote_round_trip(store, tmp_path):
    tstamp = play(store)
    store.close()
    reopened = ArenaStore(tmp_path / "arena.db")
    assert reopened.counts() == {"models": 2, "battles": 1, "messages": 3, "votes": 1}
    (record,) = reopened.vote_records()
    assert record == {"model_a": "alpha", "model_b": "beta", "winner": "model_a", "tstamp": tstamp, "turn": 1,
                      "anony": True, "flagged": False, "judge": "client", "battle_id": "b1"}
    answer = next(reopened.db["messages"].rows_where("side = 'a'"))
    assert (answer["content"], answer["tokens"], answer["latency_s"]) == ("hello", 2, 0.5)
    assert reopened.client_salt == store.client_salt  # client ids stay stable across restarts
    reopened.close()


def test_database_refuses_a_second_vote_for_a_battle(store):
    play(store)
    with pytest.raises(DuplicateVote):
        store.record_vote("b1", "model_b", "client", None)
    assert store.vote_for("b1")["winner"] == "model_a"


def test_file_is_in_wal_mode_and_browsable(store, tmp_path):
    play(store, flag="answer names 'alpha'")
    with sqlite3.connect(tmp_path / "arena.db") as db:
        assert db.execute("pragma journal_mode").fetchone()[0] == "wal"
        tables = {row[0] for row in db.execute("select name from sqlite_master where type = 'table'")}
        assert {"models", "battles", "messages", "votes"} <= tables
        assert db.execute("select flagged, flag_reason from votes").fetchone() == (1, "answer names 'alpha'")


def test_client_id_is_anonymous_and_stable(store):
    first = store.client_id("203.0.113.7")
    assert first == store.client_id("203.0.113.7") != store.client_id("203.0.113.8")
    assert "203" not in first


def test_import_is_all_or_nothing_and_idempotent(store):
    records = [{"model_a": "alpha", "model_b": "gamma", "winner": "tie", "tstamp": 5.0, "turn": 1, "anony": True},
               {"model_a": "gamma", "model_b": "beta", "winner": "model_b", "turn": 2, "anony": False}]
    summary = store.import_votes(records, "digest-1")
    assert (summary.added, summary.already_present, summary.new_models) == (2, 0, ["gamma"])
    again = store.import_votes(records, "digest-1")
    assert (again.added, again.already_present) == (0, 2)
    with pytest.raises(Exception):
        store.import_votes([{"model_a": "alpha", "model_b": "beta"}], "digest-2")  # no winner: nothing kept
    assert store.counts()["votes"] == 2
    imported = sorted((r["model_a"], r["winner"], r["anony"], r["turn"]) for r in store.vote_records())
    assert imported == [("alpha", "tie", True, 1), ("gamma", "model_b", False, 2)]
