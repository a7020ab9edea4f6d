import json
import os
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arena.battle_files import (MAX_TSTAMP, WINNERS, BattleFileError, read_battles, vote_ids,
                                write_battles)
from arena.text import unreadable_character
from tests.conftest import shared_file

GOOD = {"model_a": "alpha", "model_b": "beta", "winner": "model_a"}


def write_lines(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def problems_of(path: Path, **options) -> list[tuple[int, str]]:
    with pytest.raises(BattleFileError) as caught:
        read_battles(path, **options)
    assert caught.value.path == path
    return caught.value.problems


def test_round_trip_fills_defaults(tmp_path):
    records = [
        {**GOOD, "tstamp": 1_700_000_000.5, "turn": 2, "anony": False},
        {"model_a": "beta", "model_b": "gamma ✓", "winner": "tie (bothbad)", "flagged": True},
    ]
    path = tmp_path / "votes.jsonl"
    write_battles(path, records)
    read = read_battles(path)
    assert read == [
        {**records[0], "flagged": False},
        {**records[1], "tstamp": None, "turn": 1, "anony": True},
    ]
    assert "gamma ✓" in path.read_text(encoding="utf-8")  # ensure_ascii=False
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert list(first) == ["model_a", "model_b", "winner", "tstamp", "turn", "anony"]
    assert read_battles(write_lines(tmp_path / "again.jsonl", *path.read_text().splitlines())) == read


def test_json_array_and_blank_lines_and_extra_keys(tmp_path):
    array = tmp_path / "votes.json"
    array.write_text("  \n" + json.dumps([GOOD, {**GOOD, "winner": "tie", "judge": "w1"}], indent=2))
    records = read_battles(array)
    assert [r["winner"] for r in records] == ["model_a", "tie"]
    assert records[1]["judge"] == "w1"
    jsonl = write_lines(tmp_path / "votes.jsonl", "", json.dumps(GOOD), "   ", json.dumps(GOOD), "")
    assert len(read_battles(jsonl)) == 2


MALFORMED_LINES = [
    ('{"model_a": "a", "model_b": "b", "winner": "model_a"', "invalid JSON"),
    ('["model_a", "b"]', "expected a JSON object"),
    ('{"model_b": "b", "winner": "tie"}', "model_a is missing"),
    ('{"model_a": "a", "model_b": "b"}', "winner is missing"),
    ('{"model_a": "", "model_b": "b", "winner": "tie"}', "model_a is empty"),
    ('{"model_a": "a", "model_b": 3, "winner": "tie"}', "model_b must be a string"),
    ('{"model_a": " a ", "model_b": "a", "winner": "tie"}', "the same model"),
    ('{"model_a": "' + "x" * 201 + '", "model_b": "b", "winner": "tie"}', "longer than 200"),
    ('{"model_a": "a", "model_b": "b", "winner": "draw"}', "winner must be one of"),
    ('{"model_a": "a", "model_b": "b", "winner": "tie", "tstamp": "noon"}', "tstamp must be"),
    ('{"model_a": "a", "model_b": "b", "winner": "tie", "tstamp": NaN}', "tstamp must be"),
    ('{"model_a": "a", "model_b": "b", "winner": "tie", "turn": 0}', "turn must be"),
    ('{"model_a": "a", "model_b": "b", "winner": "tie", "turn": true}', "turn must be"),
    ('{"model_a": "a", "model_b": "b", "winner": "tie", "anony": "yes"}', "anony must be"),
    ('{"model_a": "a", "model_b": "b", "winner": "tie", "flagged": 1}', "flagged must be"),
    ('{"model_a": "\\ud800", "model_b": "b", "winner": "tie"}', "not valid Unicode"),
    ('{"model_a": "a", "model_b": "b", "winner": "tie", "tstamp": 1e400}', "tstamp must be"),
    ('{"model_a": "a", "model_b": "b", "winner": "tie", "tstamp": 1' + "0" * 400 + "}", "tstamp must be"),
    ('{"model_a": "a", "model_b": "b", "winner": "tie", "turn": 1' + "0" * 5000 + "}", "invalid JSON"),
    ("[" * 100_000 + "]" * 100_000, "invalid JSON"),
    # Values SQLite cannot store, or a time no reader can show:
    ('{"model_a": "a", "model_b": "b", "winner": "tie", "turn": 100000000000000000000000}', "turn must be an integer"),
    ('{"model_a": "a", "model_b": "b", "winner": "tie", "turn": 9223372036854775808}', "turn must be an integer"),
    ('{"model_a": "a", "model_b": "b", "winner": "tie", "turn": 1000001}', "turn must be an integer from 1 to"),
    ('{"model_a": "a", "model_b": "b", "winner": "tie", "tstamp": 1e300}', "tstamp must be Unix seconds"),
    ('{"model_a": "a", "model_b": "b", "winner": "tie", "tstamp": -1}', "tstamp must be Unix seconds"),
    ('{"model_a": "a", "model_b": "b", "winner": "tie", "judge": "\\udc80"}', "judge is not valid Unicode"),
    ('{"model_a": "a", "model_b": "b", "winner": "tie", "judge": {"id": 1}}', "judge must be a string"),
    ('{"model_a": "a", "model_b": "b", "winner": "tie", "battle_id": 7}', "battle_id must be a string"),
    ('{"model_a": "a", "model_b": "b", "winner": "tie", "battle_id": " "}', "battle_id must be a string"),
    ('{"model_a": "a", "model_b": "b", "winner": "tie", "battle_id": "\\ud800"}', "battle_id is not valid Unicode"),
]


@pytest.mark.parametrize(("line", "message"), MALFORMED_LINES, ids=[message for _, message in MALFORMED_LINES])
def test_each_malformed_record_is_reported_at_its_line(tmp_path, line, message):
    path = write_lines(tmp_path / "votes.jsonl", json.dumps(GOOD), "", line, json.dumps(GOOD))
    problems = problems_of(path)
    assert len(problems) == 1
    assert problems[0][0] == 3 and message in problems[0][1]


def test_undecodable_bytes_are_a_problem_on_their_line(tmp_path):
    path = tmp_path / "votes.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b'\n{"model_a": "\xff\xfe"}\n')
    assert problems_of(path) == [(2, "not valid UTF-8 (byte 14 of the line)")]
    array = tmp_path / "votes.json"
    array.write_bytes(b"[\n" + json.dumps(GOOD).encode() + b',\n{"model_a": "\xc3"}]')
    assert problems_of(array) == [(3, "not valid UTF-8")]


def test_one_pretty_printed_vote_is_named_as_such_not_refused_line_by_line(tmp_path):
    path = tmp_path / "vote.json"
    path.write_text(json.dumps(GOOD, indent=2) + "\n")
    lines = len(json.dumps(GOOD, indent=2).splitlines())
    assert problems_of(path) == [(1, f"one JSON object spread over {lines} lines: a vote file holds one vote per line "
                                     "(JSONL) or a JSON array of votes")]
    two = tmp_path / "two.json"  # two objects, each over lines: not one object, so refused line by line
    two.write_text(json.dumps(GOOD, indent=2) + "\n" + json.dumps(GOOD, indent=2))
    assert len(problems_of(two)) == 2 * lines


def test_all_problems_are_collected_and_nothing_is_returned(tmp_path):
    lines = [json.dumps(GOOD) if i % 3 else "not json" for i in range(60)]
    path = write_lines(tmp_path / "votes.jsonl", *lines)
    with pytest.raises(BattleFileError) as caught:
        read_battles(path)
    error = caught.value
    assert [line for line, _ in error.problems] == list(range(1, 61, 3))
    text = str(error)
    assert str(path) in text and "line 1:" in text and "line 58:" in text
    assert "... and" not in text  # 20 problems: all shown
    many = write_lines(tmp_path / "many.jsonl", *(["{}"] * 30))
    assert "... and 70 more" in str(pytest.raises(BattleFileError, read_battles, many).value)


def test_json_array_problems_name_the_line_each_element_starts_on(tmp_path):
    path = tmp_path / "votes.json"
    path.write_text(json.dumps([GOOD, GOOD, {**GOOD, "winner": "x"}, 5], indent=1))  # "[", then 5 lines a vote
    assert [line for line, _ in problems_of(path)] == [2 + 2 * 5, 2 + 3 * 5]
    one_line = tmp_path / "one-line.json"
    one_line.write_text(json.dumps([GOOD, {**GOOD, "winner": "x"}, 5]))
    assert [line for line, _ in problems_of(one_line)] == [1, 1]
    for text, message in (("[%s,]", "Expecting value"), ("[%s] x", "more after the array"), ("[%s %s]", "expected ','")):
        bad = tmp_path / "bad.json"
        bad.write_text(text.replace("%s", json.dumps(GOOD)))
        assert message in problems_of(bad)[0][1]
    broken = tmp_path / "broken.json"
    broken.write_text('[\n{"model_a": "a",\n "model_b": "b" "winner": "tie"}\n]')
    assert problems_of(broken)[0][0] == 3


def test_size_and_record_limits(tmp_path):
    path = write_lines(tmp_path / "votes.jsonl", *[json.dumps(GOOD)] * 10)
    problems = problems_of(path, max_bytes=100)
    assert problems[0][0] == 0 and "limit" in problems[0][1]
    assert problems_of(path, max_records=9)[-1][0] == 10
    assert len(read_battles(path, max_records=10)) == 10


def test_missing_file_is_a_battle_file_error(tmp_path):
    assert problems_of(tmp_path / "absent.jsonl")[0][0] == 0


@pytest.mark.parametrize("name, count", [("chatbot_arena_2023_battles.jsonl", 25_938), ("llmfao_battles.jsonl", 8_931)])
def test_real_files_read_completely(name, count):
    path = shared_file(name)
    records = read_battles(path)
    assert len(records) == count
    assert all(r["anony"] and not r["flagged"] and r["tstamp"] is None for r in records)


def test_two_different_votes_may_not_claim_one_battle_id(tmp_path):
    vote = {**GOOD, "battle_id": "b-1"}
    path = write_lines(tmp_path / "votes.jsonl", json.dumps(vote), json.dumps(vote), json.dumps({**vote, "winner": "tie"}))
    assert problems_of(path) == [(3, 'battle_id "b-1" is also on line 1, with another vote')]
    # A copy of the same vote with another time or turn (a re-saved file) is that vote, once, as on import.
    copy = {**vote, "tstamp": 1_700_000_000.5, "turn": 2}
    assert read_battles(write_lines(tmp_path / "copies.jsonl", json.dumps(vote), json.dumps(copy))) == read_battles(
        write_lines(tmp_path / "one.jsonl", json.dumps(vote)))
    assert problems_of(write_lines(tmp_path / "named.jsonl", json.dumps(vote), json.dumps({**vote, "anony": False}))) == [
        (2, 'battle_id "b-1" is also on line 1, with another vote')]


def test_vote_ids_follow_the_record_not_the_file(tmp_path):
    path = shared_file("chatbot_arena_2023_battles.jsonl")
    lines = path.read_text(encoding="utf-8").splitlines()[:300]
    key = b"the database's secret"
    ids = vote_ids(read_battles(write_lines(tmp_path / "head.jsonl", *lines)), key)
    assert len(set(ids)) == 300  # the real file repeats records: occurrence numbers keep them apart
    longer = vote_ids(read_battles(write_lines(tmp_path / "longer.jsonl", *lines, *lines[:5])), key)
    assert longer[:300] == ids and not set(longer[300:]) & set(ids)
    crlf = tmp_path / "crlf.jsonl"
    crlf.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode())
    assert vote_ids(read_battles(crlf), key) == ids
    spaced = write_lines(tmp_path / "spaced.jsonl", *(json.dumps(json.loads(line), indent=1).replace("\n", "") for line in lines))
    assert vote_ids(read_battles(spaced), key) == ids
    assert not set(vote_ids(read_battles(crlf), b"another database's secret")) & set(ids)
    own = read_battles(write_lines(tmp_path / "own.jsonl", json.dumps({**GOOD, "battle_id": "live-7"})))
    assert vote_ids(own, key) == ["live-7"]


def test_export_fields_keep_undated_votes_undated_and_their_ids(tmp_path):
    path = tmp_path / "votes.jsonl"
    write_battles(path, [{**GOOD, "tstamp": None, "battle_id": "live-7", "judge": "hashed-client"}])
    assert json.loads(path.read_text()) == {**GOOD, "tstamp": None, "turn": 1, "anony": True, "battle_id": "live-7"}
    assert read_battles(path)[0]["battle_id"] == "live-7"


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_get_the_mode_open_would_give(tmp_path, umask):
    previous = os.umask(umask)
    try:
        write_battles(tmp_path / "votes.jsonl", [GOOD])
        with open(tmp_path / "plain.txt", "w"):
            pass
    finally:
        os.umask(previous)
    mode = (tmp_path / "votes.jsonl").stat().st_mode & 0o777
    assert mode == 0o666 & ~umask == (tmp_path / "plain.txt").stat().st_mode & 0o777


# --- property-based ----------------------------------------------------------

names = st.text(st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Zl", "Zp")), min_size=1, max_size=40).map(
    lambda name: unicodedata.normalize("NFC", name.strip())).filter(lambda name: name and not unreadable_character(name))
records = st.builds(
    lambda pair, winner, tstamp, turn, anony, flagged: {
        "model_a": pair[0], "model_b": pair[1], "winner": winner, "tstamp": tstamp, "turn": turn,
        "anony": anony, "flagged": flagged,
    },
    st.tuples(names, names).filter(lambda pair: pair[0] != pair[1]),
    st.sampled_from(WINNERS),
    st.none() | st.floats(min_value=0, max_value=MAX_TSTAMP),
    st.integers(min_value=1, max_value=10**6),
    st.booleans(),
    st.booleans(),
)
quick = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@quick
@given(st.lists(records, max_size=8))
def test_valid_records_round_trip_exactly(tmp_path, generated):
    path = tmp_path / "round_trip.jsonl"
    write_battles(path, generated)
    assert read_battles(path) == generated


def parses(line: bytes) -> bool:
    try:
        json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return False
    return True


def assert_only_battle_file_errors(path: Path, content: bytes) -> None:
    path.write_bytes(content)
    try:
        records = read_battles(path)
    except BattleFileError as error:
        assert error.problems and error.problem_count >= len(error.problems)
        text = content.removeprefix(b"\xef\xbb\xbf")
        lines, is_array = text.split(b"\n"), text.lstrip(b" \t\r\n").startswith(b"[")
        for line, message in error.problems:
            # Where: a non-blank line of a JSONL file; in an array, an element or a text line (0: the whole array).
            if is_array:
                assert 0 <= line <= max(len(lines), content.count(b",") + 1), (line, message)
            else:
                assert 1 <= line <= len(lines) and lines[line - 1].strip(b" \t\r\n"), (line, message)
                # and what: a line that is not JSON is reported as such, a JSON line for its fields
                assert message.startswith(("invalid JSON", "not valid UTF-8")) is not parses(lines[line - 1]), (line, message)
            # What: one printable line, so the report shows it as it is (hostile bytes are not echoed raw).
            assert message.strip() and message.isprintable(), message
        first_line, first_message = error.problems[0]
        assert str(error).startswith(f"{path}: ")
        assert (f"line {first_line}: {first_message}" if first_line else f"  {first_message}") in str(error)
    else:
        assert all(set(WINNERS) >= {r["winner"]} for r in records)


@quick
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_else(tmp_path, content):
    assert_only_battle_file_errors(tmp_path / "bytes.jsonl", content)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
near_records = st.dictionaries(
    st.sampled_from(["model_a", "model_b", "winner", "tstamp", "turn", "anony", "flagged", "battle_id", "judge", "other"]),
    json_values | st.sampled_from(WINNERS),
)


@quick
@given(st.lists(st.one_of(near_records, json_values, st.text(max_size=30)), max_size=5), st.booleans())
def test_arbitrary_json_never_raises_anything_else(tmp_path, values, as_array):
    def encode(value):
        return value if isinstance(value, str) else json.dumps(value)

    text = json.dumps(values) if as_array else "\n".join(map(encode, values))
    assert_only_battle_file_errors(tmp_path / "text.jsonl", text.encode("utf-8", "surrogatepass"))


@pytest.mark.parametrize("name, code", [("gpt\n4", "U+000A"), ("gpt\x004", "U+0000"), ("\u202egpt-4", "U+202E"),
                                        ("gpt\u200b-4", "U+200B"), ("gpt\u00ad-4", "U+00AD"), ("gpt\u200d-4", "U+200D"),
                                        ("gpt-4\u3164", "U+3164"), ("gpt\u2028-4", "U+2028")])
def test_a_model_name_that_cannot_be_shown_as_it_is_is_refused(tmp_path, name, code):
    path = write_lines(tmp_path / "votes.jsonl", json.dumps({**GOOD, "model_a": name}))
    assert problems_of(path) == [(1, f"model_a contains a control or invisible character ({code})")]


def test_one_name_typed_two_ways_is_one_model(tmp_path):
    composed, decomposed = "caf\u00e9-7b", "cafe\u0301-7b"
    path = write_lines(tmp_path / "votes.jsonl", json.dumps({**GOOD, "model_a": composed}),
                       json.dumps({**GOOD, "model_a": decomposed}))
    assert {record["model_a"] for record in read_battles(path)} == {composed}


def test_a_record_repeated_under_its_battle_id_is_read_once(tmp_path):
    vote = json.dumps({**GOOD, "battle_id": "b-1"})
    path = write_lines(tmp_path / "votes.jsonl", vote, json.dumps(GOOD), vote)
    assert [record.get("battle_id") for record in read_battles(path)] == ["b-1", None]
