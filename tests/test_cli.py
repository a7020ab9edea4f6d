"""The command line, run as an operator runs it, on real public arena data."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest

from tests.conftest import ROOT, SHARED_DATA

ARENA_2023 = SHARED_DATA / "chatbot_arena_2023_battles.jsonl"
needs_shared = pytest.mark.skipif(not ARENA_2023.is_file(), reason=f"{ARENA_2023} is missing (../shared/data)")


def arena(*args, check=True):
    done = subprocess.run([sys.executable, "-m", "arena", *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def test_models_lists_the_shipped_config():
    out = arena("models").stdout
    assert "3 enabled" in out and "smollm2-precise" in out and "temperature=0.9" in out


def test_models_reports_a_bad_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - {name: x, backend: transformers, source: bundled:smollm2, top_p: 7}\n")
    done = arena("models", "--config", bad, check=False)
    assert done.returncode == 2 and "model 'x'" in done.stderr and "'top_p'" in done.stderr and str(bad) in done.stderr


@needs_shared
def test_import_export_round_trip_on_real_arena_votes(tmp_path):
    db = tmp_path / "arena.db"
    assert "25938 votes added" in arena("import", ARENA_2023, "--db", db).stdout
    assert "0 votes added" in arena("import", ARENA_2023, "--db", db).stdout  # same file twice: nothing new
    out = tmp_path / "ratings"
    arena("export", "--db", db, "--out", out, "--bootstrap", 100)
    assert {p.name for p in out.iterdir()} >= {"leaderboard.csv", "leaderboard.json", "leaderboard.md", "battles.jsonl"}

    board = json.loads((out / "leaderboard.json").read_text())
    assert len(board) == 20 and board[0]["model"] == "gpt-4" and board[0]["rank"] == 1
    assert all({"rank", "model", "rating", "votes", "win_rate", "ci_lower", "ci_upper"} <= set(row) for row in board)
    assert [row["rating"] for row in board] == sorted((row["rating"] for row in board), reverse=True)
    assert sum(row["votes"] for row in board) == 2 * 25938

    # The exported votes load into a fresh database and give back the same battles.
    second = tmp_path / "second.db"
    arena("import", out / "battles.jsonl", "--db", second)
    query = "select b.model_a, b.model_b, v.winner, b.mode from votes v join battles b on b.id = v.battle_id"
    with sqlite3.connect(db) as first_db, sqlite3.connect(second) as second_db:
        assert sorted(first_db.execute(query)) == sorted(second_db.execute(query))
    original = [json.loads(line) for line in ARENA_2023.read_text().splitlines()]
    exported = [json.loads(line) for line in (out / "battles.jsonl").read_text().splitlines()]
    key = lambda r: (r["model_a"], r["model_b"], r["winner"])  # noqa: E731
    assert sorted(map(key, original)) == sorted(map(key, exported))


@needs_shared
def test_ratings_from_a_vote_file(tmp_path):
    done = arena("ratings", "--battles", ARENA_2023, "--format", "json", "--bootstrap", 200, "--seed", 1)
    board = json.loads(done.stdout)
    assert [row["model"] for row in board[:2]] == ["gpt-4", "claude-v1"]
    assert "bootstrap" in done.stderr  # long work shows progress
    anchored = json.loads(arena("ratings", "--battles", ARENA_2023, "--format", "json", "--bootstrap", 0,
                                "--anchor", "vicuna-13b=1000").stdout)
    assert next(r for r in anchored if r["model"] == "vicuna-13b")["rating"] == pytest.approx(1000, abs=0.01)


def test_a_malformed_file_is_reported_by_line_and_imports_nothing(tmp_path):
    db = tmp_path / "arena.db"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"model_a": "x", "model_b": "y", "winner": "model_a"}\n'
        '{"model_a": "x", "model_b": "y", "winner": "model_c"}\n'
        'not json at all\n'
        '{"model_a": "x", "model_b": "x", "winner": "tie"}\n'
    )
    done = arena("import", bad, "--db", db, check=False)
    assert done.returncode != 0
    for line in ("2", "3", "4"):
        assert f"line {line}" in done.stderr
    assert "line 1" not in done.stderr
    if db.exists():
        with sqlite3.connect(db) as connection:
            assert connection.execute("select count(*) from votes").fetchone() == (0,)
