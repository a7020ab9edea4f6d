"""The command line, run as an operator runs it, on real public arena data."""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from arena.config import load_config
from tests.conftest import ROOT, SHARED_DATA, shared_file

ARENA_2023 = SHARED_DATA / "chatbot_arena_2023_battles.jsonl"


def arena(*args, check=True, prefix=()):
    command = [*prefix, sys.executable, "-m", "arena", *map(str, args)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def test_models_lists_the_shipped_config():
    config = load_config(ROOT / "models.yaml")
    out = arena("models").stdout
    assert f"{len(config.models)} models, {len(config.enabled_models)} enabled" in out and config.enabled_models
    lines = out.splitlines()
    for entry in config.models:
        line = next(line for line in lines if entry.name in line.split())
        settings = entry.generation
        assert line.split()[0] == ("enabled" if entry.enabled else "disabled")
        assert f"temperature={settings.temperature:g} top_p={settings.top_p:g}" in line
        assert f"max_new_tokens={settings.max_new_tokens}" in line


def test_a_vote_file_over_the_size_limit_is_refused_with_the_way_out(tmp_path):
    """Files are read whole, so there is a limit; a researcher with a bigger dump is told how to raise it."""
    shared_file(ARENA_2023.name)
    db = tmp_path / "arena.db"
    refused = arena("import", ARENA_2023, "--db", db, "--max-file-mb", 1, check=False)
    assert refused.returncode != 0 and "more than the limit of 1,048,576" in refused.stderr
    assert "--max-file-mb" in refused.stderr and not db.exists()
    assert "25,938 votes" in arena("ratings", "--battles", ARENA_2023, "--max-file-mb", 2, "--bootstrap", 0).stdout
    assert arena("import", ARENA_2023, "--db", db, "--max-file-mb", 0, check=False).returncode == 2


def test_models_reports_a_bad_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - {name: x, backend: transformers, source: bundled:smollm2, top_p: 7}\n")
    done = arena("models", "--config", bad, check=False)
    assert done.returncode == 2 and "model 'x'" in done.stderr and "'top_p'" in done.stderr and str(bad) in done.stderr


def test_models_warns_of_a_key_variable_this_shell_does_not_set(tmp_path):
    config = tmp_path / "remote.yaml"
    config.write_text("models:\n  - {name: one, backend: scripted, script: echo}\n"
                      "  - {name: remote, backend: openai, base_url: 'http://127.0.0.1:9/v1', model: m, api_key_env: ARENA_TEST_KEY}\n")
    env = {k: v for k, v in os.environ.items() if k != "ARENA_TEST_KEY"}
    unset = subprocess.run([sys.executable, "-m", "arena", "models", "--config", str(config)], cwd=ROOT, capture_output=True,
                           text=True, env=env, timeout=60)
    assert unset.returncode == 0 and "warning: remote would fail to load from this shell: the environment variable " \
        "ARENA_TEST_KEY is not set" in unset.stdout
    set_ = subprocess.run([sys.executable, "-m", "arena", "models", "--config", str(config)], cwd=ROOT, capture_output=True,
                          text=True, env={**env, "ARENA_TEST_KEY": "sk-x"}, timeout=60)
    assert set_.returncode == 0 and "warning" not in set_.stdout


def test_import_export_round_trip_on_real_arena_votes(tmp_path):
    shared_file(ARENA_2023.name)
    db = tmp_path / "arena.db"
    assert "25,938 votes added" in arena("import", ARENA_2023, "--db", db).stdout
    assert "0 votes added" in arena("import", ARENA_2023, "--db", db).stdout  # same file twice: nothing new
    out = tmp_path / "ratings"
    arena("export", "--db", db, "--out", out, "--bootstrap", 100, "--anchor", "vicuna-13b=1050")
    assert {p.name for p in out.iterdir()} == {"leaderboard.csv", "leaderboard.json", "leaderboard.md", "battles.jsonl",
                                               "export.json", "ratings.svg", "win-fraction.svg", "predicted.svg",
                                               "battle-counts.svg"}
    markdown = (out / "leaderboard.md").read_text()
    assert markdown.startswith("![Plot of each model's rating with its 95% confidence interval](ratings.svg)")
    assert "gpt-4" in (out / "ratings.svg").read_text() and "(battle-counts.svg)" in markdown
    # export.json's command recomputes the same leaderboard from the exported votes alone
    recompute = shlex.split(json.loads((out / "export.json").read_text())["recompute"])
    assert recompute[:4] == [".venv/bin/python", "-m", "arena", "ratings"] and "--anchor=vicuna-13b=1050.0" in recompute
    assert json.loads(arena(*recompute[3:]).stdout) == json.loads((out / "leaderboard.json").read_text())

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


def test_ratings_from_a_vote_file(tmp_path):
    shared_file(ARENA_2023.name)
    done = arena("ratings", "--battles", ARENA_2023, "--format", "json", "--bootstrap", 200, "--seed", 1)
    board = json.loads(done.stdout)
    assert [row["model"] for row in board[:2]] == ["gpt-4", "claude-v1"]
    assert "bootstrap" in done.stderr  # long work shows progress
    anchored = json.loads(arena("ratings", "--battles", ARENA_2023, "--format", "json", "--bootstrap", 0,
                                "--anchor", "vicuna-13b=1000").stdout)
    assert next(r for r in anchored if r["model"] == "vicuna-13b")["rating"] == pytest.approx(1000, abs=0.01)


def test_a_reader_that_stops_early_gets_no_traceback():
    shared_file(ARENA_2023.name)
    command = [sys.executable, "-m", "arena", "ratings", "--battles", str(ARENA_2023), "--bootstrap", "0"]
    reader = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader.stdout.close()  # like `| head -0`: nobody reads the table
    _, errors = reader.communicate(timeout=300)
    assert reader.returncode == 1 and b"Traceback" not in errors, errors.decode()


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
    assert not db.exists()  # refused before any database is made
    good = tmp_path / "good.jsonl"
    good.write_text('{"model_a": "x", "model_b": "y", "winner": "tie"}\n')
    arena("import", good, "--db", db)
    assert arena("import", bad, "--db", db, check=False).returncode != 0
    assert votes_in(db) == 1  # the good first line of the bad file was not imported either


def votes_in(db) -> int:
    connection = sqlite3.connect(db)  # closed at once: an open reader would keep the arena's WAL from being folded in
    try:
        return connection.execute("select count(*) from votes").fetchone()[0]
    finally:
        connection.close()


def test_importing_the_same_votes_again_adds_only_new_ones(tmp_path):
    shared_file(ARENA_2023.name)
    lines = ARENA_2023.read_text(encoding="utf-8").splitlines()
    head_100, head_101, crlf = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "crlf.jsonl"
    head_100.write_text("\n".join(lines[:100]) + "\n")
    head_101.write_text("\n".join(lines[:101]) + "\n")
    crlf.write_bytes(("\r\n".join(lines[:100]) + "\r\n").encode())
    db = tmp_path / "a.db"
    assert "100 votes added" in arena("import", head_100, "--db", db).stdout
    asked = arena("import", head_101, "--db", db, check=False)
    assert asked.returncode == 1 and "Traceback" not in asked.stderr
    assert (f"{head_101}: 100 of its 101 votes look like votes already imported from another file" in asked.stderr
            and "--skip-known" in asked.stderr and "--all-new" in asked.stderr and "nothing imported" in asked.stderr)
    assert votes_in(db) == 100
    skipped = arena("import", head_101, "--db", db, "--skip-known").stdout
    assert f"{head_101}: 1 vote added to {db}, 100 already present" in skipped
    again = arena("import", crlf, "--db", db, "--all-new").stdout  # the first file again, other line ends
    assert "0 votes added" in again and "were imported on" in again and "not added twice" in again
    out = tmp_path / "out"
    arena("export", "--db", db, "--out", out, "--bootstrap", 0)
    exported = [json.loads(line) for line in (out / "battles.jsonl").read_text().splitlines()]
    assert len(exported) == 101 and all(r["tstamp"] is None and r["battle_id"] for r in exported)
    copy = tmp_path / "copy.db"
    shutil.copy(db, copy)
    assert "0 votes added" in arena("import", out / "battles.jsonl", "--db", copy).stdout
    assert votes_in(copy) == 101


def test_a_file_that_gives_a_stored_battle_another_winner_is_refused(tmp_path):
    db, first, second = tmp_path / "a.db", tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_text('{"battle_id": "b-1", "model_a": "x", "model_b": "y", "winner": "model_a"}\n')
    second.write_text('{"model_a": "x", "model_b": "z", "winner": "tie"}\n'
                      '{"battle_id": "b-1", "model_a": "x", "model_b": "y", "winner": "model_b"}\n')
    arena("import", first, "--db", db)
    done = arena("import", second, "--db", db, check=False)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "1 record differs from votes already stored" in done.stderr
    assert "record 2: battle_id 'b-1' is already a vote of x vs y (model_a, anonymous), not a vote of x vs y (model_b" in done.stderr
    assert "nothing imported" in done.stderr and votes_in(db) == 1
    assert f"error: {second}: " in done.stderr  # which file to fix, when many are imported in turn


def test_export_files_are_readable_as_open_would_make_them(tmp_path):
    db = tmp_path / "arena.db"
    (tmp_path / "votes.jsonl").write_text('{"model_a": "x", "model_b": "y", "winner": "model_a"}\n')
    arena("import", tmp_path / "votes.jsonl", "--db", db)
    umask = os.umask(0o022)
    os.umask(umask)
    arena("export", "--db", db, "--out", tmp_path / "out", "--bootstrap", 0)
    modes = {path.name: path.stat().st_mode & 0o777 for path in (tmp_path / "out").iterdir()}
    assert len(modes) == 9 and set(modes.values()) == {0o666 & ~umask}


def test_a_huge_turn_is_reported_by_line(tmp_path):
    big = tmp_path / "big.jsonl"
    big.write_text('{"model_a": "x", "model_b": "y", "winner": "model_a", "turn": 100000000000000000000000}\n')
    done = arena("import", big, "--db", tmp_path / "big.db", check=False)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "line 1: turn must be an integer from 1 to 1,000,000" in done.stderr and str(big) in done.stderr
    assert not (tmp_path / "big.db").exists()


def test_export_into_a_regular_file_is_refused(tmp_path):
    db = tmp_path / "arena.db"
    (tmp_path / "votes.jsonl").write_text('{"model_a": "x", "model_b": "y", "winner": "model_a"}\n')
    arena("import", tmp_path / "votes.jsonl", "--db", db)
    target = tmp_path / "ratings"
    target.write_text("keep me")
    done = arena("export", "--db", db, "--out", target, check=False)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip() == f"error: --out {target} is a file, not a folder; nothing written"
    assert target.read_text() == "keep me"


def test_an_export_that_cannot_be_written_names_the_file_and_leaves_no_part_written(tmp_path):
    db = tmp_path / "arena.db"
    (tmp_path / "votes.jsonl").write_text('{"model_a": "x", "model_b": "y", "winner": "model_a"}\n')
    arena("import", tmp_path / "votes.jsonl", "--db", db)
    out = tmp_path / "out"
    (out / "battles.jsonl").mkdir(parents=True)  # in the way: a folder where the votes go
    done = arena("export", "--db", db, "--out", out, "--bootstrap", 0, check=False)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: cannot write the export into {out}: ") and "(battles.jsonl)" in done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["battles.jsonl"]  # nothing half-written beside it


@pytest.mark.parametrize("command", [
    ("ratings", "--db"), ("export", "--out", "{out}", "--db"), ("import", "{votes}", "--db"), ("serve", "--port", "65535", "--db"),
])
def test_a_file_that_is_not_a_database_is_named_and_left_alone(tmp_path, command):
    (tmp_path / "votes.jsonl").write_text('{"model_a": "x", "model_b": "y", "winner": "model_a"}\n')
    not_db = tmp_path / "notes.db"
    not_db.write_text("shopping list\n" * 200)
    args = [part.format(out=tmp_path / "out", votes=tmp_path / "votes.jsonl") for part in command]
    done = arena(*args, not_db, check=False)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip() == f"error: {not_db}: not an SQLite database"
    assert not_db.read_text() == "shopping list\n" * 200
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db", "votes.jsonl"]


def test_ratings_and_export_read_a_read_only_database(tmp_path):
    """As root, permissions are not enforced, so the commands then run as `nobody`."""
    db = tmp_path / "arena.db"
    (tmp_path / "votes.jsonl").write_text(
        '{"model_a": "x", "model_b": "y", "winner": "model_a"}\n{"model_a": "x", "model_b": "z", "winner": "tie"}\n')
    arena("import", tmp_path / "votes.jsonl", "--db", db)
    prefix = ()
    if os.geteuid() == 0 and shutil.which("setpriv"):
        prefix = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
    shared = Path(tempfile.mkdtemp(prefix="arena-read-only-"))
    try:
        folder, out = shared / "read-only", shared / "out"
        folder.mkdir()
        out.mkdir(mode=0o777)
        out.chmod(0o777)
        copy = folder / "arena.db"
        shutil.copy(db, copy)
        copy.chmod(0o444)
        folder.chmod(0o555)
        shared.chmod(0o755)
        before = (copy.read_bytes(), copy.stat().st_mtime_ns)
        done = arena("ratings", "--db", copy, "--bootstrap", 0, prefix=prefix)
        assert "2 votes, 3 models" in done.stdout
        arena("export", "--db", copy, "--out", out, "--bootstrap", 0, prefix=prefix)
        assert len((out / "battles.jsonl").read_text().splitlines()) == 2
        assert (copy.read_bytes(), copy.stat().st_mtime_ns) == before
        assert sorted(p.name for p in folder.iterdir()) == ["arena.db"]
    finally:
        (shared / "read-only").chmod(0o755)
        shutil.rmtree(shared)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to act as a second user")
def test_a_reader_who_may_not_write_the_database_leaves_nothing_beside_it(tmp_path):
    """Another user's `ratings` in a folder everyone may write must leave no -wal or -shm file of theirs
    beside the database: its owner could not write them, and their next `import` or `serve` would fail."""
    (tmp_path / "votes.jsonl").write_text('{"model_a": "x", "model_b": "y", "winner": "model_a"}\n')
    shared = Path(tempfile.mkdtemp(prefix="arena-shared-"))
    try:
        shared.chmod(0o1777)
        db = shared / "arena.db"
        arena("import", tmp_path / "votes.jsonl", "--db", db)
        db.chmod(0o644)
        done = arena("ratings", "--db", db, "--bootstrap", 0, prefix=("setpriv", "--reuid=65534", "--regid=65534",
                                                                      "--clear-groups"))
        assert "1 vote, 2 models" in done.stdout
        assert sorted(p.name for p in shared.iterdir()) == ["arena.db"]
        (tmp_path / "more.jsonl").write_text('{"model_a": "x", "model_b": "z", "winner": "tie"}\n')
        assert "1 vote added" in arena("import", tmp_path / "more.jsonl", "--db", db).stdout
    finally:
        shutil.rmtree(shared)


def test_importing_a_file_with_no_votes_says_so_and_touches_no_database(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    done = arena("import", tmp_path / "empty.jsonl", "--db", tmp_path / "arena.db")
    assert f"warning: {tmp_path / 'empty.jsonl'} holds no votes; nothing imported" in done.stderr
    assert not (tmp_path / "arena.db").exists()


def test_import_warns_of_a_new_name_that_differs_from_another_only_in_case(tmp_path):
    """models.yaml refuses such a pair; a vote file may hold one (two files spelling a model two ways)."""
    (tmp_path / "first.jsonl").write_text('{"model_a": "alpha", "model_b": "beta", "winner": "tie"}\n')
    (tmp_path / "second.jsonl").write_text('{"model_a": "ALPHA", "model_b": "beta", "winner": "tie"}\n'
                                           '{"model_a": "gamma", "model_b": "Gamma", "winner": "tie"}\n')
    db = tmp_path / "arena.db"
    assert "warning" not in arena("import", tmp_path / "first.jsonl", "--db", db).stderr
    second = arena("import", tmp_path / "second.jsonl", "--db", db)
    # Where each new name first appears, to find a misspelt one in the file.
    assert "new models: ALPHA (first on line 1), Gamma (first on line 2), gamma (first on line 2)" in second.stdout
    warnings = second.stderr.splitlines()
    assert [line.split(":")[0:2] for line in warnings] == [
        ["warning", " model 'ALPHA' differs from 'alpha' only in case"],
        ["warning", " model 'gamma' differs from 'Gamma' only in case"]]


def test_import_says_which_fields_it_does_not_keep_and_ratings_refuses_bad_numbers(tmp_path):
    votes = tmp_path / "votes.json"  # a JSON array: problems are reported by the line an element starts on
    votes.write_text('[\n{"model_a": "x", "model_b": "y", "winner": "tie", "prompt_id": 7, "judge": "j1"},\n'
                     '{"model_a": "x", "model_b": "y", "winner": "model_a", "language": "en"}\n]\n')
    done = arena("import", votes, "--db", tmp_path / "a.db")
    assert "fields not kept (the database has no place for them): language, prompt_id" in done.stdout
    broken = tmp_path / "broken.json"
    broken.write_text('[\n{"model_a": "x", "model_b": "y", "winner": "tie"},\n\n{"model_a": "x",\n "winner": "tie"}\n]\n')
    refused = arena("ratings", "--battles", broken, check=False)
    assert refused.returncode != 0 and "line 4: model_b is missing" in refused.stderr
    assert "nothing imported" not in refused.stderr  # `ratings` imports nothing
    assert "nothing imported" in arena("import", broken, "--db", tmp_path / "b.db", check=False).stderr
    for option in ("--min-votes", "--bootstrap", "--seed"):
        bad = arena("ratings", "--battles", votes, option, "-3", check=False)
        assert bad.returncode != 0 and f"{option}: must be a whole number of at least 0, not '-3'" in bad.stderr
    db_read_whole = arena("ratings", "--db", tmp_path / "a.db", "--max-file-mb", "1", check=False)
    assert db_read_whole.returncode != 0 and "--max-file-mb limits a vote file read with --battles" in db_read_whole.stderr
    for rounds in ("1", "39"):
        bad = arena("ratings", "--battles", votes, "--bootstrap", rounds, check=False)
        assert bad.returncode != 0 and f"--bootstrap: must be 0 (no intervals) or at least 40, not '{rounds}'" in bad.stderr
    assert arena("ratings", "--battles", votes, "--bootstrap", "40").returncode == 0
    for anchor in ("1200", "=1200", "x=high"):  # no model, or no number
        bad = arena("ratings", "--battles", votes, "--anchor", anchor, check=False)
        assert bad.returncode != 0 and f"--anchor takes MODEL=RATING, got {anchor!r}" in bad.stderr


def test_bootstrap_progress_in_a_log_is_one_line(tmp_path):
    """Piped to a file (a service's log), a progress bar's carriage returns would be one garbled line per chunk."""
    votes = tmp_path / "votes.jsonl"
    votes.write_text("".join('{"model_a": "x", "model_b": "y", "winner": "%s"}\n' % w for w in ["model_a", "model_b"] * 20))
    done = arena("ratings", "--battles", votes, "--bootstrap", "400")
    assert done.stderr == "bootstrap: 400/400\n"


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_machine_formats_keep_the_notes_on_stderr(tmp_path, fmt):
    """JSON and CSV have no place for notes: someone piping them must still hear that two groups never met."""
    votes = tmp_path / "votes.jsonl"
    lines = ['{"model_a": "x", "model_b": "y", "winner": "%s"}' % w for w in ["model_a", "model_b", "tie"] * 5]
    lines += ['{"model_a": "p", "model_b": "q", "winner": "%s"}' % w for w in ["model_a", "model_b"] * 5]
    votes.write_text("\n".join(lines) + "\n")
    done = arena("ratings", "--battles", votes, "--format", fmt, "--bootstrap", "0")
    assert "note: the votes form 2 groups of models never compared with each other" in done.stderr
    assert "note:" not in done.stdout
    rows = json.loads(done.stdout) if fmt == "json" else list(csv.DictReader(io.StringIO(done.stdout)))
    assert len(rows) == 4


@pytest.mark.parametrize("command, option", [("serve", "--port"), ("models", "--config"), ("import", "--all-new"),
                                             ("export", "--out"), ("ratings", "--bootstrap")])
def test_every_command_explains_itself(command, option):
    done = arena(command, "--help")
    assert done.stdout.startswith(f"usage: python -m arena {command}") and f"\n  {option} " in done.stdout


def test_the_counting_options_reach_the_leaderboard(tmp_path):
    """--min-votes and --include-named change the board exactly as they change compute_leaderboard's."""
    from arena.battle_files import read_battles
    from arena.leaderboard import compute_leaderboard

    votes = tmp_path / "votes.jsonl"
    lines = [{"model_a": "x", "model_b": "y", "winner": w} for w in ["model_a", "model_b", "model_a"] * 4]
    lines += [{"model_a": "y", "model_b": "x", "winner": "model_a", "anony": False}] * 6  # named votes for y
    lines += [{"model_a": "rare", "model_b": "x", "winner": "model_a"}, {"model_a": "y", "model_b": "rare", "winner": "tie"}]
    votes.write_text("".join(json.dumps(line) + "\n" for line in lines))
    records = read_battles(votes)
    plain = json.loads(arena("ratings", "--battles", votes, "--format", "json", "--bootstrap", 0).stdout)
    for options, kwargs in (((), {}), (("--min-votes", 5), {"min_votes": 5}), (("--include-named",), {"include_named": True}),
                            (("--min-votes", 5, "--include-named"), {"min_votes": 5, "include_named": True})):
        shown = json.loads(arena("ratings", "--battles", votes, "--format", "json", "--bootstrap", 0, *options).stdout)
        assert shown == compute_leaderboard(records, bootstrap_rounds=0, **kwargs).as_dicts()
        assert (shown == plain) == (not options)


CONVERSING_MODELS = """
    settings: {sampling: uniform}
    models:
      - {name: tries-twice, backend: scripted, script: "replies: First try. | Second try."}
      - {name: echo-back, backend: scripted, script: echo}
"""


def test_export_with_conversations_gives_each_vote_its_prompts_and_answers_as_voted_on(make_service, tmp_path):
    from arena.battle import Mode

    service = make_service(CONVERSING_MODELS)
    last = None
    for last in service.ask(None, "Hello", "10.0.0.1", Mode.ANONYMOUS):
        pass
    for last in service.regenerate(last.battle_id, "10.0.0.1"):  # the first answers are thrown away
        pass
    for last in service.ask(last.battle_id, "And then?", "10.0.0.1", Mode.ANONYMOUS):
        pass
    service.vote(last.battle_id, "10.0.0.1", "model_a")
    # Side by side, not in plain ASCII, regenerated at its second turn only, and flagged: the echo names its model.
    pair = ("echo-back", "tries-twice")
    for last in service.ask(None, "Привет 👋", "10.0.0.1", Mode.NAMED, pair):
        pass
    for last in service.ask(last.battle_id, "Are you echo-back?", "10.0.0.1", Mode.NAMED, pair):
        pass
    for last in service.regenerate(last.battle_id, "10.0.0.1"):
        pass
    service.vote(last.battle_id, "10.0.0.1", "tie")
    for last in service.ask(None, "Never voted on", "10.0.0.1", Mode.ANONYMOUS):
        pass
    service.store.close()
    imported = tmp_path / "imported.jsonl"  # votes without their conversations
    imported.write_text('{"model_a": "tries-twice", "model_b": "echo-back", "winner": "tie"}\n')
    db, out = tmp_path / "arena.db", tmp_path / "export"
    arena("import", imported, "--db", db)

    done = arena("export", "--db", db, "--out", out, "--conversations", "--bootstrap", "0")
    assert f"wrote {out / 'conversations.jsonl'}" in done.stdout
    first, second = [json.loads(text) for text in (out / "conversations.jsonl").read_text(encoding="utf-8").splitlines()]
    battles = [json.loads(text) for text in (out / "battles.jsonl").read_text().splitlines()]
    for line in (first, second):  # each as its vote is in battles.jsonl, in the same order, no client id
        voted = next(record for record in battles if record["battle_id"] == line["battle_id"])
        assert {key: line[key] for key in voted} == voted and "judge" not in line
    order = [record["battle_id"] for record in battles]
    assert order.index(first["battle_id"]) < order.index(second["battle_id"])

    def conversation(prompts, answers):
        return [message for prompt, answer in zip(prompts, answers)
                for message in ({"role": "user", "content": prompt}, {"role": "assistant", "content": answer})]

    answers = {"tries-twice": ["Second try.", "Second try."], "echo-back": ["Hello", "And then?"]}
    for side in ("a", "b"):
        assert first[f"conversation_{side}"] == conversation(["Hello", "And then?"], answers[first[f"model_{side}"]])
    prompts = ["Привет 👋", "Are you echo-back?"]
    assert second["anony"] is False and second["flagged"] is True and second["winner"] == "tie"
    assert second["flag_reason"] == "answer names 'echo-back'"  # the word, though only the answer voted on lost it
    assert second["conversation_a"] == conversation(prompts, prompts)  # the second turn once, as regenerated
    assert second["conversation_b"] == conversation(prompts, ["Second try.", "Second try."])
    assert json.loads((out / "export.json").read_text())["conversations_exported"] == 2

    # Prompts are shared only when asked: an export without the option takes the earlier file away.
    done = arena("export", "--db", db, "--out", out, "--bootstrap", "0")
    assert "removed" in done.stdout and not (out / "conversations.jsonl").exists()
    assert json.loads((out / "export.json").read_text())["conversations_exported"] is None
