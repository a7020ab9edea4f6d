import csv
import io
import json
import os
import shlex

import numpy as np
import pytest

from arena.battle_files import read_battles
from arena.leaderboard import compute_leaderboard
from arena.reports import COLUMNS, RenderedFigure, head_to_head_rows, recompute_command, render, write_exports
from arena.text import display_width


def vote(a, b, winner="model_a", **extra):
    return {"model_a": a, "model_b": b, "winner": winner, **extra}


@pytest.fixture(scope="module")
def records():
    votes = [vote("gpt|pipe", "small")] * 30 + [vote("small", "gpt|pipe")] * 10 + [vote("mid", "small", "tie")] * 8
    votes += [vote("mid", "gpt|pipe", "model_b")] * 12 + [vote("mid", "gpt|pipe")] * 6
    votes += [vote("small", "mid", flagged=True, tstamp=5.0), vote("small", "mid", anony=False, turn=3)]
    return votes


@pytest.fixture(scope="module")
def board(records):
    return compute_leaderboard(records, bootstrap_rounds=100, seed=0)


def test_json_is_sorted_best_first_with_required_keys(board):
    rows = json.loads(render(board, "json"))
    assert [list(row) for row in rows] == [list(COLUMNS)] * 3
    assert [row["model"] for row in rows] == ["gpt|pipe", "mid", "small"]
    assert rows[0]["rating"] > rows[1]["rating"] > rows[2]["rating"]
    # Counted from the records above (the flagged and the named vote left out; a tie is half a win), win rate to 4 places.
    assert [(row["votes"], row["win_rate"]) for row in rows] == [(58, round(42 / 58, 4)), (26, round(10 / 26, 4)),
                                                               (48, round(14 / 48, 4))]
    for row, rated in zip(rows, board.rows):  # ratings and interval ends to 2 decimals
        assert row["rank"] == rated.rank and row["ci_lower"] < row["rating"] < row["ci_upper"]
        for key in ("rating", "ci_lower", "ci_upper", "elo"):
            assert row[key] == pytest.approx(getattr(rated, key), abs=0.005) and round(row[key], 2) == row[key]


def test_csv_has_the_documented_header_and_one_row_per_model(board):
    text = render(board, "csv")
    assert text.splitlines()[0] == "rank,model,rating,ci_lower,ci_upper,elo,votes,win_rate,group"
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [row["model"] for row in rows] == board.models
    assert float(rows[0]["win_rate"]) == board.as_dicts()[0]["win_rate"]


def test_table_aligns_columns_and_shows_intervals_and_notes(board):
    text = render(board, "table")
    lines = text.splitlines()
    assert lines[0].split() == ["Rank", "Model", "Rating", "95%", "CI", "Elo", "Votes", "Win", "rate"]
    body = lines[2:5]
    assert len({line.index(row.model) for line, row in zip(body, board.rows)}) == 1  # names line up
    first = board.as_dicts()[0]
    assert f"+{first['ci_upper'] - first['rating']:.1f}/-{first['rating'] - first['ci_lower']:.1f}" in body[0]
    assert "100 bootstrap rounds" in text
    assert "note: 2 of 68 votes left out: 1 flagged and 1 named" in text


def test_table_columns_line_up_as_a_terminal_shows_wide_names():
    """A CJK or emoji character takes two columns: counted as one, every column after such a name slid."""
    votes = [vote("北京-模型", "beta"), vote("🙂-bot", "beta"), vote("plain", "beta", "model_b")]
    lines = render(compute_leaderboard(votes, bootstrap_rounds=0, seed=0), "table").splitlines()
    rows = lines[2:6]
    assert {row.split()[1] for row in rows} == {"北京-模型", "🙂-bot", "plain", "beta"}
    # The rating column starts at the same column on every row, header included.
    starts = {display_width(line[:line.index(line.split()[2])]) for line in [lines[0], *rows]}
    assert len(starts) == 1, lines


@pytest.mark.parametrize("fmt", ["table", "md"])
def test_without_a_bootstrap_no_interval_is_printed(records, fmt):
    text = render(compute_leaderboard(records, bootstrap_rounds=0, seed=0), fmt)
    assert "+0.0/-0.0" not in text and "–" in text and "intervals not computed" in text


def test_markdown_is_a_table_with_escaped_names(board):
    text = render(board, "md")
    lines = text.splitlines()
    assert lines[0].startswith("| Rank | Model |") and set(lines[1]) <= set("|-: ")
    assert "gpt\\|pipe" in text
    assert sum(line.startswith("| ") for line in lines) == 2 + len(board.rows)


def test_empty_leaderboard_renders_in_every_format():
    empty = compute_leaderboard([])
    assert json.loads(render(empty, "json")) == []
    assert render(empty, "csv").strip() == ",".join(COLUMNS)
    assert render(empty, "table") == "Nothing to rank.\nnote: no votes to rank yet\n"
    assert render(empty, "md") == "_Nothing to rank._\n\n> no votes to rank yet\n"
    # Votes, but none left: the first line must not say there are no votes.
    few = compute_leaderboard([{"model_a": "x", "model_b": "y", "winner": "tie"}] * 3, min_votes=1500)
    assert render(few, "table") == ("Nothing to rank.\nnote: 2 models left out for fewer than 1,500 votes: x, y\n"
                                    "note: no model has 1,500 counted votes or more\n")


def test_unknown_format_is_refused(board):
    with pytest.raises(ValueError, match="xml"):
        render(board, "xml")


def test_write_exports_writes_five_files_and_every_vote(tmp_path, board, records):
    out = tmp_path / "exports" / "today"
    paths = write_exports(board, records, out)
    assert sorted(p.name for p in paths) == ["battles.jsonl", "export.json", "leaderboard.csv", "leaderboard.json",
                                             "leaderboard.md"]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)  # no temporary files left
    assert json.loads((out / "leaderboard.json").read_text()) == board.as_dicts()
    battles = read_battles(out / "battles.jsonl")
    assert len(battles) == len(records)  # flagged and named ones too
    assert battles[-2]["flagged"] is True and battles[-2]["tstamp"] == 5.0
    assert battles[-1]["anony"] is False and battles[-1]["turn"] == 3
    assert [(b["model_a"], b["model_b"], b["winner"]) for b in battles] == [
        (r["model_a"], r["model_b"], r["winner"]) for r in records
    ]
    write_exports(board, records[:3], out)  # replacing an export works
    assert len(read_battles(out / "battles.jsonl")) == 3


def test_an_exports_markdown_leads_with_the_ratings_figure_and_shows_every_pair(tmp_path, board, records):
    figures = [RenderedFigure(f"{name}.svg", f"Drawing of {name}", f"<svg>{name}</svg>") for name in ("first", "second")]
    paths = write_exports(board, records, tmp_path, figures)
    assert [p.name for p in paths[-2:]] == ["first.svg", "second.svg"]
    assert (tmp_path / "second.svg").read_text() == "<svg>second</svg>"
    markdown = (tmp_path / "leaderboard.md").read_text()
    assert markdown.startswith("![Drawing of first](first.svg)\n")
    table, head_to_head = markdown.split("## Head to head")
    assert render(board, "md") in table and "![Drawing of second](second.svg)" in head_to_head
    rows = [line for line in head_to_head.splitlines() if line.startswith("| ")]
    assert rows[:2] == ["| Model | Opponent | Battles | Won % (ties half) | Predicted % |", "| --- | --- | ---: | ---: | ---: |"]
    pairs = rows[2:]
    assert pairs == [f"| {a.replace('|', chr(92) + '|')} | {b.replace('|', chr(92) + '|')} | {n} | {won:.1f} | {predicted:.1f} |"
                     for a, b, n, won, predicted in head_to_head_rows(board)]


def test_export_json_says_how_the_leaderboard_was_computed(tmp_path, records):
    out = tmp_path / "exports"
    board = compute_leaderboard(records, bootstrap_rounds=50, seed=7, anchor=("mid", 1100.0), min_votes=20,
                                include_named=True)
    write_exports(board, records, out)
    about = json.loads((out / "export.json").read_text())
    assert about["options"] == {"bootstrap_rounds": 50, "seed": 7, "anchor": {"model": "mid", "rating": 1100.0},
                                "min_votes": 20, "include_named": True}
    assert (about["votes_exported"], about["votes_counted"], about["models"]) == (len(records), 67, 3)
    assert about["notes"] == board.notes and about["notes"]  # the flagged vote left out is said
    assert shlex.split(about["recompute"]) == [
        ".venv/bin/python", "-m", "arena", "ratings", f"--battles={out / 'battles.jsonl'}", "--format", "json",
        "--bootstrap=50", "--seed=7", "--anchor=mid=1100.0", "--min-votes=20", "--include-named"]
    plain = compute_leaderboard(records, bootstrap_rounds=0)
    write_exports(plain, records, out)
    about = json.loads((out / "export.json").read_text())
    assert about["recompute"].endswith("--format json --bootstrap=0")  # no seed given: none to repeat
    assert about["options"]["anchor"] is None and about["options"]["seed"] is None


def test_the_recompute_command_survives_names_that_look_like_options_and_numpy_numbers(tmp_path):
    board = compute_leaderboard([vote("-dash", "b"), vote("b", "-dash")] * 5, bootstrap_rounds=0,
                                anchor=("-dash", np.float64(1000)))
    words = shlex.split(recompute_command(board.options, tmp_path / "-out" / "battles.jsonl", 600 * 2**20))
    assert "--anchor=-dash=1000.0" in words and f"--battles={tmp_path / '-out' / 'battles.jsonl'}" in words
    assert "--max-file-mb=600" in words  # bigger than `ratings` reads by default


def test_an_export_that_fails_midway_leaves_the_previous_one_whole(tmp_path, board, records):
    out = tmp_path / "exports"
    write_exports(board, records[:3], out)
    before = {path.name: path.read_bytes() for path in out.iterdir()}

    def votes_then_failure():
        yield from records
        raise OSError("No space left on device")

    newer = compute_leaderboard([vote("solo", "other")], bootstrap_rounds=0, seed=0)
    with pytest.raises(OSError, match="No space"):
        write_exports(newer, votes_then_failure(), out)
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before  # no file replaced, nothing left over


def test_an_export_that_cannot_replace_a_file_replaces_none(tmp_path, board, records):
    """A rename onto a folder fails: found before anything is written, or the other files would be the new export's."""
    out = tmp_path / "exports"
    write_exports(board, records[:3], out)
    (out / "export.json").unlink()
    (out / "export.json").mkdir()
    before = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
    with pytest.raises(IsADirectoryError, match="a folder stands where this file goes"):
        write_exports(board, records, out)
    assert {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()} == before
    assert sorted(path.name for path in out.iterdir()) == sorted([*before, "export.json"])  # no temporary files


@pytest.mark.parametrize("failing_sync", [1, 2, 5])
def test_an_export_whose_disk_fills_while_syncing_replaces_no_file(tmp_path, board, records, monkeypatch, failing_sync):
    """The files are only renamed once all five are on disk: a sync failing on any leaves the old set."""
    out = tmp_path / "exports"
    write_exports(board, records[:3], out)
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    real_fsync, syncs = os.fsync, []

    def fsync(descriptor):
        syncs.append(descriptor)
        if len(syncs) == failing_sync:
            raise OSError(28, "No space left on device")
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    newer = compute_leaderboard([vote("solo", "other")], bootstrap_rounds=0, seed=0)
    with pytest.raises(OSError, match="No space"):
        write_exports(newer, records, out)
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before


def test_an_interval_the_bootstrap_could_not_measure_is_null_in_json_and_empty_in_csv():
    votes = [vote("solo", "other")] + [vote("a", "b"), vote("b", "a"), vote("a", "b", "tie")] * 20
    board = compute_leaderboard(votes, bootstrap_rounds=50, seed=0)
    rows = {row["model"]: row for row in json.loads(render(board, "json"))}
    assert rows["solo"]["ci_lower"] is None and rows["solo"]["ci_upper"] is None
    assert rows["a"]["ci_lower"] < rows["a"]["rating"] < rows["a"]["ci_upper"]
    cells = {row["model"]: row for row in csv.DictReader(io.StringIO(render(board, "csv")))}
    assert cells["solo"]["ci_lower"] == cells["solo"]["ci_upper"] == ""
    assert float(cells["a"]["ci_upper"]) == rows["a"]["ci_upper"]
    no_bootstrap = json.loads(render(compute_leaderboard(votes, bootstrap_rounds=0), "json"))
    assert all(row["ci_lower"] is None and row["ci_upper"] is None for row in no_bootstrap)


@pytest.mark.parametrize("fmt", ["table", "md"])
def test_a_model_with_a_single_vote_gets_no_interval(fmt):
    board = compute_leaderboard([vote("solo", "other")], bootstrap_rounds=50, seed=0)
    lines = render(board, fmt).splitlines()
    assert all("+0.0/-0.0" not in line for line in lines) and sum("–" in line for line in lines[2:4]) == 2


def test_models_never_compared_with_each_other_are_told_apart_by_group():
    """Two arenas in one file: a reader of the JSON or CSV must see that their ratings do not compare."""
    votes = [vote("x", "y")] * 30 + [vote("y", "x")] * 20 + [vote("p", "q")] * 25 + [vote("q", "p")] * 15
    board = compute_leaderboard(votes, bootstrap_rounds=100, seed=0)
    groups = {row["model"]: row["group"] for row in json.loads(render(board, "json"))}
    assert groups["x"] == groups["y"] != groups["p"] == groups["q"]
    assert groups[board.models[0]] == 1  # numbered from the best-rated model's group
    assert {row["model"]: int(row["group"]) for row in csv.DictReader(io.StringIO(render(board, "csv")))} == groups
    header = render(board, "table").splitlines()[0].split()
    assert header[-1] == "Group"
    one_group = compute_leaderboard(votes[:50], bootstrap_rounds=0)
    assert "Group" not in render(one_group, "table").splitlines()[0]


def test_markdown_shows_model_names_as_written():
    board = compute_leaderboard([vote("a*b*", "c_d_"), vote("c_d_", "a*b*")] * 10, bootstrap_rounds=0)
    text = render(board, "md")
    assert "a\\*b\\*" in text and "c\\_d\\_" in text


def test_markdown_notes_show_model_names_as_written():
    votes = [vote("x", "y"), vote("y", "x")] * 10 + [vote("[odd] <b>", "x")]
    text = render(compute_leaderboard(votes, bootstrap_rounds=0, min_votes=5), "md")
    assert "> Note: 1 model left out for fewer than 5 votes: \\[odd\\] \\<b>" in text


def test_head_to_head_lists_every_pair_once_better_rated_first(board):
    """Counted from `records` (flagged and named votes left out, a tie half a win)."""
    rows = head_to_head_rows(board)
    ratings = {row.model: row.rating for row in board.rows}

    def predicted(model, opponent):
        return round(100 / (1 + 10 ** ((ratings[opponent] - ratings[model]) / 400)), 1)

    assert rows == [
        ["gpt|pipe", "mid", 18, 66.7, predicted("gpt|pipe", "mid")],
        ["gpt|pipe", "small", 40, 75.0, predicted("gpt|pipe", "small")],
        ["mid", "small", 8, 50.0, predicted("mid", "small")],
    ]
    assert all(50 < row[4] < 100 for row in rows)


def test_head_to_head_leaves_out_what_the_votes_cannot_say():
    """A pair that never met has no win share; models of different groups have no prediction."""
    votes = [vote("x", "y")] * 30 + [vote("y", "x")] * 20 + [vote("p", "q")] * 25 + [vote("q", "p")] * 15
    votes += [vote("z", "x")] * 5 + [vote("y", "z")] * 5
    board = compute_leaderboard(votes, bootstrap_rounds=0)
    rows = {frozenset(row[:2]): row for row in head_to_head_rows(board)}
    assert len(rows) == 10  # 5 models
    assert rows[frozenset("xy")][2:4] == [50, 60.0] and rows[frozenset("xy")][:2] == ["x", "y"]
    assert rows[frozenset("xq")][2:] == [0, "–", "–"]
    z_and_x = rows[frozenset("xz")]
    assert z_and_x[2] == 5 and isinstance(z_and_x[4], float)  # same group: predicted
    assert rows[frozenset("pz")][2:] == [0, "–", "–"]
    assert head_to_head_rows(compute_leaderboard([], bootstrap_rounds=0)) == []
