"""Vote files in FastChat's "clean battle" shape: reading them strictly, writing them plainly.

Reading is all-or-nothing: an import either takes every record or reports every
problem with its line, so a half-imported file never skews a leaderboard.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import math
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from contextlib import contextmanager, suppress
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any

from arena.text import model_name, too_long_or_broken
from arena.wording import counted

WINNERS = ("model_a", "model_b", "tie", "tie (bothbad)")
# What an optional field means when a record leaves it out.
RECORD_DEFAULTS = MappingProxyType({"tstamp": None, "turn": 1, "anony": True, "flagged": False})


def is_anonymous(record: Mapping) -> bool:
    """Whether a vote came from an anonymous battle; a record that does not say is one (RECORD_DEFAULTS)."""
    return bool(record.get("anony", RECORD_DEFAULTS["anony"]))


def is_flagged(record: Mapping) -> bool:
    """Whether a vote is flagged (never counted); a record that does not say is not (RECORD_DEFAULTS)."""
    return bool(record.get("flagged", RECORD_DEFAULTS["flagged"]))

# Bounds that keep every value storable (SQLite integers are 64-bit) and every time formattable.
MAX_TURN = 1_000_000
MAX_TSTAMP = 253_402_300_799.0  # the last second of the year 9999, the largest `datetime` can show
MAX_ID_LENGTH = 200  # `battle_id` and `judge`
MAX_FLAG_REASON_LENGTH = 1000
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
# Problems kept on an error: enough to fix a file, bounded for a file of pure garbage.
MAX_KEPT_PROBLEMS = 1000
# Problems shown in the error message.
SHOWN_PROBLEMS = 20

_JSON_WHITESPACE = b" \t\r\n"
_UTF8_BOM = b"\xef\xbb\xbf"


class BattleFileError(ValueError):
    """A vote file that cannot be imported, with every problem found and where.

    `problems` holds (line, message) pairs: the 1-based text line (where a JSON array's
    element starts), and 0 for the file as a whole. At most `MAX_KEPT_PROBLEMS` are kept; `problem_count`
    is the full number.
    """

    def __init__(self, path: Path | str, problems: list[tuple[int, str]], problem_count: int | None = None):
        self.path = Path(path)
        self.problems = problems
        self.problem_count = len(problems) if problem_count is None else problem_count
        super().__init__(self.describe())

    def describe(self, outcome: str = "nothing read") -> str:
        """Every problem, one a line, after the file's name and `outcome` ("nothing imported")."""
        count = self.problem_count
        lines = [f"{self.path}: {counted(count, 'problem')}, {outcome}"]
        for line, message in self.problems[:SHOWN_PROBLEMS]:
            lines.append(f"  line {line}: {message}" if line else f"  {message}")
        if count > SHOWN_PROBLEMS:
            lines.append(f"  ... and {count - SHOWN_PROBLEMS} more")
        return "\n".join(lines)


class BattleFileTooLarge(BattleFileError):
    """A file over the size limit: it would be read whole, so it is refused unread."""


def _model_name(record: Mapping, key: str, problems: list[str]) -> str | None:
    if key not in record:
        problems.append(f"{key} is missing")
        return None
    value = record[key]
    name, problem = model_name(value)
    if problem:
        problems.append(f"{key} {problem}" + ("" if isinstance(value, str) else f", got {_shown(value)}"))
    return name


def _storable_text(key: str, text: str, max_length: int, problems: list[str]) -> str | None:
    """`text` if SQLite can store it and a person can read it; otherwise None and a problem."""
    problem = too_long_or_broken(text, max_length)
    if problem:
        problems.append(f"{key} {problem}")
        return None
    return text


def _optional_text(record: Mapping, key: str, problems: list[str], *, integers: bool = False) -> str | None:
    """An optional identifier (`battle_id`, `judge`) as text; None when absent or null."""
    value = record.get(key)
    if value is None:
        return None
    if integers and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        kind = "a string or an integer" if integers else "a string"
        problems.append(f"{key} must be {kind}, not empty, got {_shown(value)}")
        return None
    return _storable_text(key, value, MAX_ID_LENGTH, problems)


def _optional_fields(record: Mapping) -> dict:
    """The optional fields of a record, defaults filled in."""
    return {key: record.get(key, default) for key, default in RECORD_DEFAULTS.items()}


def _timestamp(value: Any, problems: list[str]) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
        if 0 <= seconds <= MAX_TSTAMP:  # also false for NaN
            return seconds
    problems.append(f"tstamp must be Unix seconds from 0 to {MAX_TSTAMP:.0f} (the year 9999), got {_shown(value)}")
    return None


def normalise_record(record: Any) -> tuple[dict | None, list[str]]:
    """The record with RECORD_DEFAULTS filled in and names stripped, or its problems.

    Every value that reaches the database is checked to fit it. `battle_id` (a vote's
    own id, which exports write) and `judge` are optional, dropped when null. Other
    keys beyond the clean-battle ones are carried over unchanged.
    """
    if not isinstance(record, dict):
        return None, [f"expected a JSON object, got {_json_kind(record)}"]
    problems: list[str] = []
    model_a = _model_name(record, "model_a", problems)
    model_b = _model_name(record, "model_b", problems)
    if model_a is not None and model_a == model_b:
        problems.append(f"model_a and model_b are the same model ({model_a!r})")
    winner = record.get("winner")
    if "winner" not in record:
        problems.append("winner is missing")
    elif not isinstance(winner, str) or winner not in WINNERS:
        problems.append(f"winner must be one of {', '.join(WINNERS)}; got {_shown(winner)}")

    fields = _optional_fields(record)
    tstamp = _timestamp(fields["tstamp"], problems)
    turn = fields["turn"]
    if isinstance(turn, bool) or not isinstance(turn, int) or not 1 <= turn <= MAX_TURN:
        problems.append(f"turn must be an integer from 1 to {MAX_TURN:,}, got {_shown(turn)}")
    flags = {key: fields[key] for key in ("anony", "flagged")}
    for key, flag in flags.items():
        if not isinstance(flag, bool):
            problems.append(f"{key} must be true or false, got {_shown(flag)}")
    identifiers = {
        "battle_id": _optional_text(record, "battle_id", problems),
        "judge": _optional_text(record, "judge", problems, integers=True) if record.get("judge") != "" else None,
    }
    if problems:
        return None, problems

    normalised = {
        "model_a": model_a, "model_b": model_b, "winner": winner, "tstamp": tstamp, "turn": turn, **flags,
        **{key: value for key, value in identifiers.items() if value is not None},
    }
    extras = {key: value for key, value in record.items() if key not in normalised and key not in identifiers}
    return {**normalised, **extras}, []


def vote_ids(records: Sequence[Mapping], key: bytes, first_occurrence: Mapping[str, int] | None = None) -> list[str]:
    """An id per normalised record that follows the vote, not the file it came in.

    A record's own `battle_id` is its id, so an export imported back finds its votes.
    Otherwise the id is a keyed hash of the record's content and of how many identical
    records came before it in the same file: the k-th identical record in any file (say
    the 3rd undated "a beat b") is taken to be the same vote, so a file imported again
    adds nothing. `first_occurrence` (content -> n) numbers a content's records from n
    instead of 1: votes declared new, after the n-1 identical ones already stored.
    The key (the database's secret) keeps the id from being a fingerprint of fields an
    export leaves out, such as `judge`: without it, guessing a judge and hashing would
    confirm the guess.
    """
    ids = []
    for record, content, occurrence in record_contents(records):
        if content is None:
            ids.append(record["battle_id"])
            continue
        ids.append(content_vote_id(key, content, occurrence + (first_occurrence or {}).get(content, 1) - 1))
    return ids


def content_vote_id(key: bytes, content: str, occurrence: int) -> str:
    """The id of the `occurrence`-th vote with this canonical content (see `vote_ids`)."""
    digest = hmac.new(key, f"{content}\n{occurrence}".encode("ascii"), hashlib.sha256).hexdigest()
    return f"imported-{digest[:32]}"


def unkeyed_vote_ids(records: Sequence[Mapping]) -> list[str]:
    """The ids earlier versions gave records without a `battle_id` (a plain hash), to convert them."""
    return [
        record["battle_id"] if content is None
        else "import-" + hashlib.sha256(f"{content}\n{occurrence}".encode("ascii")).hexdigest()[:32]
        for record, content, occurrence in record_contents(records)
    ]


def canonical_json(record: Mapping) -> str:
    """One text per record content, whatever the key order or layout of the file it came in."""
    # ensure_ascii: extras may hold lone surrogates, which UTF-8 cannot encode.
    return json.dumps(record, sort_keys=True, ensure_ascii=True, separators=(",", ":"))


def record_contents(records: Sequence[Mapping]) -> Iterator[tuple[Mapping, str | None, int]]:
    """Each record with its canonical content and its occurrence among identical records (1, 2, ...).

    A record with its own `battle_id` needs neither: content is None.
    """
    occurrences: Counter[str] = Counter()
    for record in records:
        if record.get("battle_id") is not None:
            yield record, None, 0
            continue
        content = canonical_json(record)
        occurrences[content] += 1
        yield record, content, occurrences[content]


def _json_kind(value: Any) -> str:
    names = {
        dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number",
    }
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _shown(value: Any) -> str:
    """A short, safe rendering of an offending value for a message."""
    if value is None or isinstance(value, (dict, list)):
        return _json_kind(value)
    if isinstance(value, int) and abs(value) >= 10**40:
        return "a huge number"
    text = json.dumps(value, ensure_ascii=True)
    return text if len(text) <= 60 else text[:57] + "..."


def _parse(text: bytes) -> tuple[Any, str | None]:
    """JSON value of `text`, or the reason it is not JSON; never raises."""
    try:
        return json.loads(text.decode("utf-8")), None
    except UnicodeDecodeError as error:
        return None, f"not valid UTF-8 (byte {error.start + 1} of the line)"
    except json.JSONDecodeError as error:
        return None, f"invalid JSON: {error.msg} (column {error.colno})"
    except (ValueError, RecursionError) as error:  # e.g. integers too long to convert, absurd nesting
        return None, f"invalid JSON: {str(error)[:120] or type(error).__name__}"


def _jsonl_values(data: bytes) -> Iterator[tuple[int, Any, str | None]]:
    for number, line in enumerate(data.split(b"\n"), start=1):
        if line.strip(_JSON_WHITESPACE):
            yield (number, *_parse(line))


def _array_values(data: bytes) -> Iterator[tuple[int, Any, str | None]]:
    """Each element of a JSON array with the text line it starts on, so problems point at the right line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        yield data[:error.start].count(b"\n") + 1, None, "not valid UTF-8"
        return
    decoder = json.JSONDecoder()
    line, counted_to = 1, 0

    def line_at(position: int) -> int:
        nonlocal line, counted_to
        line += text.count("\n", counted_to, position)
        counted_to = position
        return line

    def after_space(position: int) -> int:
        while position < len(text) and text[position] in " \t\r\n":
            position += 1
        return position

    position = after_space(after_space(0) + 1)  # past the "[" that made this an array
    if text[position:position + 1] == "]":
        position += 1
    else:
        while True:
            start = line_at(position)
            try:
                value, position = decoder.raw_decode(text, position)
            except json.JSONDecodeError as error:
                yield error.lineno, None, f"invalid JSON: {error.msg} (column {error.colno})"
                return
            except (ValueError, RecursionError) as error:  # e.g. integers too long to convert, absurd nesting
                yield start, None, f"invalid JSON: {str(error)[:120] or type(error).__name__}"
                return
            yield start, value, None
            position = after_space(position)
            separator = text[position:position + 1]
            if separator == "]":
                position += 1
                break
            if separator != ",":
                yield line_at(position), None, "invalid JSON: expected ',' or ']' after an element of the array"
                return
            position = after_space(position + 1)
    if after_space(position) < len(text):
        yield line_at(after_space(position)), None, "invalid JSON: more after the array's closing ']'"


@dataclass(frozen=True)
class BattleFile:
    records: list[dict]
    sha256: str  # of the bytes the records were read from: earlier versions keyed imported votes by it
    first_lines: dict[str, int]  # the line each model's first record starts on: a misspelt name is found there


def read_battles(
    path: Path | str, *, max_bytes: int = DEFAULT_MAX_BYTES, max_records: int | None = None
) -> list[dict]:
    """Every record of a JSONL file or JSON array of clean-battle votes, normalised (see `normalise_record`).

    Raises BattleFileError listing all problems (and returns nothing) if any record
    is malformed, the file is larger than `max_bytes`, or it has more than
    `max_records` records. Never raises anything else for bad content.
    """
    return read_battle_file(path, max_bytes=max_bytes, max_records=max_records).records


def read_battle_file(
    path: Path | str, *, max_bytes: int = DEFAULT_MAX_BYTES, max_records: int | None = None
) -> BattleFile:
    """`read_battles`, with the digest of the very bytes read (a second read could find the file changed)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise BattleFileTooLarge(path, [(0, f"file is {size:,} bytes, more than the limit of {max_bytes:,}")])
        with path.open("rb") as stream:
            data = stream.read(max_bytes + 1)
    except OSError as error:
        raise BattleFileError(path, [(0, f"cannot read the file: {error.strerror or error}")]) from error
    if len(data) > max_bytes:  # grew while we looked
        raise BattleFileTooLarge(path, [(0, f"file is more than the limit of {max_bytes:,} bytes")])
    sha256 = hashlib.sha256(data).hexdigest()
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM):]

    is_array = data.lstrip(_JSON_WHITESPACE).startswith(b"[")
    records: list[dict] = []
    claimed: dict[str, tuple[int, dict]] = {}  # battle_id -> its first line and record
    first_lines: dict[str, int] = {}
    problems: list[tuple[int, str]] = []
    problem_count = 0
    seen = 0

    def report(line: int, message: str) -> None:
        nonlocal problem_count
        problem_count += 1
        if len(problems) < MAX_KEPT_PROBLEMS:
            problems.append((line, message))

    for line, value, error in (_array_values if is_array else _jsonl_values)(data):
        seen += 1
        if max_records is not None and seen > max_records:
            report(line, f"more than the limit of {max_records:,} records; stopped reading here")
            break
        if error is not None:
            report(line, error)
            continue
        record, record_problems = normalise_record(value)
        for message in record_problems:
            report(line, message)
        if record is None:
            continue
        if "battle_id" in record:
            first_line, first = claimed.setdefault(record["battle_id"], (line, record))
            if first is not record:  # the same vote twice is one vote; two different ones would lose one
                if vote_identity(first) != vote_identity(record):
                    report(line, f"battle_id {_shown(record['battle_id'])} is also on line {first_line}, with another vote")
                continue
        records.append(record)
        for side in ("model_a", "model_b"):
            first_lines.setdefault(record[side], line)
    if problem_count and not is_array and _one_object_over_lines(data):
        lines = data.strip(_JSON_WHITESPACE).count(b"\n") + 1
        raise BattleFileError(path, [(1, f"one JSON object spread over {lines} lines: a vote file holds one vote "
                                         "per line (JSONL) or a JSON array of votes")])
    if problem_count:
        raise BattleFileError(path, problems, problem_count)
    return BattleFile(records, sha256, first_lines)


def _one_object_over_lines(data: bytes) -> bool:
    """Whether the file is a single pretty-printed object, which would otherwise be refused line by line."""
    if b"\n" not in data.strip(_JSON_WHITESPACE):
        return False
    try:
        return isinstance(json.loads(data), dict)
    except (ValueError, RecursionError):  # JSONL fails at its second line, without reading the rest
        return False


def vote_identity(record: Mapping) -> tuple[str, str, str, bool, bool]:
    """What makes two records under one `battle_id` the same vote: all that decides what the leaderboard
    counts (pair, winner, anonymity, flag). A copy may differ in time or turn (a re-saved file, a
    database's own record of its vote) and still be that vote; a record changing any of these is another.
    """
    return record["model_a"], record["model_b"], record["winner"], is_anonymous(record), is_flagged(record)


def kept_flag_reason(record: Mapping) -> str | None:
    """A flagged record's own `flag_reason`, where the database can keep it; else None.

    Checked here rather than when a file is read: the field stays in the record as it came (before it was
    kept, a file's `"flag_reason": null` was part of its votes' ids), and a reason that cannot be kept is
    reported as a field not kept instead of refusing the file.
    """
    reason = record.get("flag_reason")
    if record.get("flagged") is not True or not isinstance(reason, str) or not reason.strip():
        return None
    return None if too_long_or_broken(reason, MAX_FLAG_REASON_LENGTH) else reason


def export_fields(record: Mapping) -> dict:
    """The clean-battle fields written for a record, with `flagged` (and why, when known) only when set.

    An undated vote keeps `"tstamp": null`, so every line has the same keys. `battle_id`
    is written when the record has one, so importing the file again adds nothing.
    Coerces the storage's plain values (0/1 flags, integer timestamps) to the file's types.
    """
    given = _optional_fields(record)
    fields = {
        "model_a": record["model_a"],
        "model_b": record["model_b"],
        "winner": record["winner"],
        "tstamp": None if given["tstamp"] is None else float(given["tstamp"]),
        "turn": int(given["turn"]),
        "anony": bool(given["anony"]),
    }
    if given["flagged"]:
        fields["flagged"] = True
        if record.get("flag_reason"):
            fields["flag_reason"] = str(record["flag_reason"])
    if record.get("battle_id") is not None:
        fields["battle_id"] = str(record["battle_id"])
    return fields


@contextmanager
def atomic_text_writer(path: Path | str) -> Iterator[IO[str]]:
    """A UTF-8 text stream that replaces `path` only once fully written, so readers never see half a file."""
    with atomic_text_writers([path]) as (stream,):
        yield stream


@contextmanager
def atomic_text_writers(paths: Sequence[Path | str]) -> Iterator[list[IO[str]]]:
    """UTF-8 text streams that replace `paths` only once every one is written and on disk.

    Each is written beside its target; a failure anywhere (a full disk while writing, flushing or
    syncing any of them) leaves every target as it was. The files get the mode `open()` would give
    them (0666 less the umask), not mkstemp's owner-only 0600, so the people an export is for can read it.
    """
    for path in map(Path, paths):  # what would stop a rename, checked before anything is written
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "a folder stands where this file goes", str(path))
    staged: list[tuple[Path, Path, IO[str]]] = []
    try:
        for path in map(Path, paths):
            descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            stream = os.fdopen(descriptor, "w", encoding="utf-8", newline="\n")
            staged.append((path, Path(temporary), stream))
            os.fchmod(stream.fileno(), 0o666 & ~_umask())
        yield [stream for _, _, stream in staged]
        for _, _, stream in staged:
            stream.flush()
            os.fsync(stream.fileno())
            stream.close()
        for path, temporary, _ in staged:  # renames within one folder, onto files (checked above)
            os.replace(temporary, path)
    except BaseException:
        for _, temporary, stream in staged:
            with suppress(OSError):
                stream.close()
            temporary.unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask alone is racy in threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_battles(path: Path | str, records: Iterable[Mapping]) -> None:
    """Write records as JSONL that `read_battles` (and FastChat's tools) can read back."""
    with atomic_text_writer(path) as stream:
        write_battle_lines(stream, records)


def write_battle_lines(stream: IO[str], records: Iterable[Mapping]) -> int:
    """Write `records` one JSON object a line; returns how many."""
    written = 0
    for record in records:
        stream.write(json.dumps(export_fields(record), ensure_ascii=False))
        stream.write("\n")
        written += 1
    return written
