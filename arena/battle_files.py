"""Vote files in FastChat's "clean battle" shape: reading them strictly, writing them plainly.

Reading is all-or-nothing: an import either takes every record or reports every
problem with its line, so a half-imported file never skews a leaderboard.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any

WINNERS = ("model_a", "model_b", "tie", "tie (bothbad)")
# What an optional field means when a record leaves it out.
RECORD_DEFAULTS = MappingProxyType({"tstamp": None, "turn": 1, "anony": True, "flagged": False})

MAX_MODEL_NAME_LENGTH = 200
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
# Problems kept on an error: enough to fix a file, bounded for a file of pure garbage.
MAX_KEPT_PROBLEMS = 1000
# Problems shown in the error message.
SHOWN_PROBLEMS = 20

_JSON_WHITESPACE = b" \t\r\n"
_UTF8_BOM = b"\xef\xbb\xbf"


class BattleFileError(ValueError):
    """A vote file that cannot be imported, with every problem found and where.

    `problems` holds (line, message) pairs: the 1-based line for JSONL, the 1-based
    element index for a JSON array (the text line for a JSON syntax error), and 0
    for the file as a whole. At most `MAX_KEPT_PROBLEMS` are kept; `problem_count`
    is the full number.
    """

    def __init__(self, path: Path | str, problems: list[tuple[int, str]], problem_count: int | None = None):
        self.path = Path(path)
        self.problems = problems
        self.problem_count = len(problems) if problem_count is None else problem_count
        super().__init__(self._describe())

    def _describe(self) -> str:
        count = self.problem_count
        lines = [f"{self.path}: {count} problem{'s' if count != 1 else ''}, nothing imported"]
        for line, message in self.problems[:SHOWN_PROBLEMS]:
            lines.append(f"  line {line}: {message}" if line else f"  {message}")
        if count > SHOWN_PROBLEMS:
            lines.append(f"  ... and {count - SHOWN_PROBLEMS} more")
        return "\n".join(lines)


def _model_name(record: Mapping, key: str, problems: list[str]) -> str | None:
    if key not in record:
        problems.append(f"{key} is missing")
        return None
    value = record[key]
    if not isinstance(value, str):
        problems.append(f"{key} must be a string, got {_shown(value)}")
        return None
    name = value.strip()
    if not name:
        problems.append(f"{key} is empty")
        return None
    if len(name) > MAX_MODEL_NAME_LENGTH:
        problems.append(f"{key} is longer than {MAX_MODEL_NAME_LENGTH} characters")
        return None
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a \ud800-style escape
        problems.append(f"{key} is not valid Unicode text")
        return None
    return name


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
        if math.isfinite(seconds):
            return seconds
    problems.append(f"tstamp must be a finite number of seconds, got {_shown(value)}")
    return None


def normalise_record(record: Any) -> tuple[dict | None, list[str]]:
    """The record with RECORD_DEFAULTS filled in and names stripped, or its problems.

    Keys beyond the clean-battle ones are carried over unchanged.
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
    if isinstance(turn, bool) or not isinstance(turn, int) or turn < 1:
        problems.append(f"turn must be a positive integer, got {_shown(turn)}")
    flags = {key: fields[key] for key in ("anony", "flagged")}
    for key, flag in flags.items():
        if not isinstance(flag, bool):
            problems.append(f"{key} must be true or false, got {_shown(flag)}")
    if problems:
        return None, problems

    normalised = {
        "model_a": model_a, "model_b": model_b, "winner": winner, "tstamp": tstamp, "turn": turn, **flags,
    }
    extras = {key: value for key, value in record.items() if key not in normalised}
    return {**normalised, **extras}, []


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
    try:
        values = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        yield data[:error.start].count(b"\n") + 1, None, "not valid UTF-8"
        return
    except json.JSONDecodeError as error:
        yield error.lineno, None, f"invalid JSON: {error.msg} (column {error.colno})"
        return
    except (ValueError, RecursionError) as error:
        yield 0, None, f"invalid JSON: {str(error)[:120] or type(error).__name__}"
        return
    if not isinstance(values, list):
        yield 0, None, "a file starting with '[' must be one JSON array"
        return
    for number, value in enumerate(values, start=1):
        yield number, value, None


def read_battles(
    path: Path | str, *, max_bytes: int = DEFAULT_MAX_BYTES, max_records: int | None = None
) -> list[dict]:
    """Every record of a JSONL file or JSON array of clean-battle votes, normalised (see `normalise_record`).

    Raises BattleFileError listing all problems (and returns nothing) if any record
    is malformed, the file is larger than `max_bytes`, or it has more than
    `max_records` records. Never raises anything else for bad content.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise BattleFileError(path, [(0, f"file is {size:,} bytes, more than the limit of {max_bytes:,}")])
        with path.open("rb") as stream:
            data = stream.read(max_bytes + 1)
    except OSError as error:
        raise BattleFileError(path, [(0, f"cannot read the file: {error.strerror or error}")]) from error
    if len(data) > max_bytes:  # grew while we looked
        raise BattleFileError(path, [(0, f"file is more than the limit of {max_bytes:,} bytes")])
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM):]

    is_array = data.lstrip(_JSON_WHITESPACE).startswith(b"[")
    records: list[dict] = []
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
        if record is not None:
            records.append(record)
    if problem_count:
        raise BattleFileError(path, problems, problem_count)
    return records


def export_fields(record: Mapping) -> dict:
    """The clean-battle fields written for a record, with `flagged` only when set.

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
    return fields


@contextmanager
def atomic_text_writer(path: Path | str) -> Iterator[IO[str]]:
    """A UTF-8 text stream that replaces `path` only once fully written, so readers never see half a file."""
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="\n") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_battles(path: Path | str, records: Iterable[Mapping]) -> None:
    """Write records as JSONL that `read_battles` (and FastChat's tools) can read back."""
    with atomic_text_writer(path) as stream:
        for record in records:
            stream.write(json.dumps(export_fields(record), ensure_ascii=False))
            stream.write("\n")
