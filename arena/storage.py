"""Everything the arena keeps, in one SQLite file (through sqlite-utils).

The schema is meant to be browsed by a person (`sqlite-utils tables arena.db`,
Datasette, any SQLite client): models, battles, messages and votes, one row
per thing, plain columns. WAL mode lets the leaderboard read while votes are
written; a vote is committed before the caller may acknowledge it.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import os
import secrets
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import sqlite_utils

from arena.battle_files import (canonical_json, content_vote_id, kept_flag_reason, normalise_record, record_contents,
                                unkeyed_vote_ids, vote_identity, vote_ids)
from arena.config import ModelEntry
from arena.wording import counted

SCHEMA_VERSION = 1


class DuplicateVote(Exception):
    """The battle already has a vote (the database refuses a second one)."""


class DatabaseFileError(sqlite3.DatabaseError):
    """A database file the arena cannot use (not SQLite, not an arena's, not writable), named in the message."""


KNOWN_VOTE_POLICIES = ("ask", "skip", "new")
SHOWN_CONFLICTS = 20  # records named when a file contradicts stored votes
# A battle's `failure` when a server stopped with it open (said at the next start).
STOPPED_WHILE_ANSWERING = "the server stopped while the models were answering (this turn was not stored)"
STOPPED_BEFORE_THE_VOTE = "the server stopped before the vote"
# What an imported record keeps (`judge` as the voter's client id); anything else in it is dropped.
IMPORTED_FIELDS = frozenset({"model_a", "model_b", "winner", "tstamp", "turn", "anony", "flagged", "battle_id", "judge"})


class KnownVotesError(ValueError):
    """A file whose votes match votes imported from another file, and nothing says whether they are the same."""

    def __init__(self, matched: int, total: int):
        self.matched, self.total = matched, total
        super().__init__(f"{matched:,} of its {total:,} votes look like votes already imported from another file "
                         "(identical records, and nothing in them, such as a battle_id or tstamp, tells them apart)")


@dataclass(frozen=True)
class ImportSummary:
    added: int
    already_present: int
    new_models: list[str]
    imported_before: float | None = None  # when the same votes (same file, any layout) were first imported
    fields_not_kept: list[str] = field(default_factory=list)  # record fields the database has no place for
    # (new model, another it differs from only in case): likely one model spelt two ways, rated as two
    case_only_differences: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class ModelChange:
    """A served model whose settings differ from those its earlier votes were cast under."""

    name: str
    votes: int
    fields: list[str]  # what changed: backend, source, and the keys of its settings


class ArenaStore:
    """The arena's database. `read_only=True` opens an existing one for reading and never writes to it
    (no schema, no WAL switch), so leaderboards and exports work on a copy nobody may change.

    Raises DatabaseFileError when the file cannot be used.
    """

    def __init__(self, path: Path | str, *, synchronous: str = "NORMAL", read_only: bool = False):
        self.path = Path(path)
        self.lock = threading.RLock()
        connection = None
        try:
            if read_only:
                connection = _connect_read_only(self.path)
                self.db = sqlite_utils.Database(connection)
                self._check_schema()
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # One connection shared by Gradio's worker threads, serialised by a lock:
                # SQLite has one writer at a time anyway.
                connection = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
                self.db = sqlite_utils.Database(connection)
                self._check_not_foreign()
                self.db.enable_wal()
                # NORMAL in WAL mode survives a killed process; FULL also survives power loss.
                self.db.execute(f"PRAGMA synchronous={synchronous}")
                self._create_schema()
        except (sqlite3.DatabaseError, OSError) as error:
            _close(connection)
            if isinstance(error, DatabaseFileError):
                raise
            why = (_why_unusable(error) if isinstance(error, sqlite3.DatabaseError)
                   else f"cannot create the database: {error.strerror or error}")
            raise DatabaseFileError(f"{self.path}: {why}") from error

    # --- schema -----------------------------------------------------------

    def _create_schema(self) -> None:
        with self._transaction():
            self.db["meta"].create({"key": str, "value": str}, pk="key", if_not_exists=True)
            self.db["models"].create(
                {"name": str, "backend": str, "source": str, "origin": str, "settings": str, "first_seen": float},
                pk="name",
                if_not_exists=True,
            )
            # A model's earlier settings, kept when models.yaml changes them under the same name.
            self.db["model_history"].create(
                {"name": str, "backend": str, "source": str, "settings": str, "replaced": float, "votes_before": int},
                if_not_exists=True,
            )
            self.db["battles"].create(
                {
                    "id": str, "mode": str, "model_a": str, "model_b": str, "status": str,
                    "started": float, "ended": float, "turns": int, "client_id": str, "failure": str,
                },
                pk="id",
                if_not_exists=True,
                foreign_keys=[("model_a", "models", "name"), ("model_b", "models", "name")],
            )
            self.db["messages"].create(
                {
                    "id": int, "battle_id": str, "turn": int, "attempt": int, "side": str, "role": str,
                    "content": str, "tokens": int, "latency_s": float, "first_token_s": float, "created": float,
                },
                pk="id",
                if_not_exists=True,
                foreign_keys=[("battle_id", "battles", "id")],
            )
            self.db["votes"].create(
                {
                    "id": int, "battle_id": str, "winner": str, "created": float, "client_id": str,
                    "flagged": int, "flag_reason": str,
                },
                pk="id",
                if_not_exists=True,
                foreign_keys=[("battle_id", "battles", "id")],
            )
            self.db["imports"].create(
                {"id": int, "file_key": str, "source": str, "imported": float, "records": int, "added": int, "known": str},
                pk="id",
                if_not_exists=True,
            )
            self.db["votes"].create_index(["battle_id"], unique=True, if_not_exists=True)
            self.db["messages"].create_index(["battle_id"], if_not_exists=True)
            self.db["meta"].insert({"key": "schema_version", "value": str(SCHEMA_VERSION)}, replace=True)
            if self._meta("client_salt") is None:
                self.db["meta"].insert({"key": "client_salt", "value": secrets.token_hex(16)})
            if self._meta("model_names") != "NFC":  # once per database: it scans every battle
                self._compose_model_names()
                self.db["meta"].insert({"key": "model_names", "value": "NFC"}, replace=True)
        self.client_salt = self._meta("client_salt")

    def _compose_model_names(self) -> None:
        """Names are compared in Unicode NFC (see `battle_files`); rename any an earlier version stored otherwise,
        so "é" typed two ways stays one model."""
        connection = self.db.conn
        names = {row[0] for row in connection.execute(
            "select name from models union select model_a from battles union select model_b from battles")}
        for name in names:
            composed = unicodedata.normalize("NFC", name)
            if composed == name:
                continue
            if connection.execute("select 1 from models where name = ?", [composed]).fetchone():
                connection.execute("delete from models where name = ?", [name])
            else:
                connection.execute("update models set name = ? where name = ?", [composed, name])
            for column in ("model_a", "model_b"):
                connection.execute(f"update battles set {column} = ? where {column} = ?", [composed, name])

    def _check_not_foreign(self) -> None:
        """Refuse, before writing anything, a SQLite file that is not empty and not an arena's."""
        tables = self.db.table_names()
        if tables and not self._is_arena_database():
            shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
            raise DatabaseFileError(f"{self.path}: not an arena database (it has other tables: {shown}); nothing written")

    def _check_schema(self) -> None:
        missing = [table for table in ("models", "battles", "votes") if not self.db[table].exists()]
        if missing:
            raise DatabaseFileError(f"{self.path}: not an arena database (missing tables: {', '.join(missing)})")
        if not self._is_arena_database():
            raise DatabaseFileError(f"{self.path}: not an arena database (no schema_version in a meta table)")
        self.client_salt = self._meta("client_salt")

    def _is_arena_database(self) -> bool:
        """Every arena database has `meta.schema_version` from its first write; table names alone would let
        another program's `votes` or `models` pass."""
        return self.db["meta"].exists() and self._meta("schema_version") is not None

    def _meta(self, key: str) -> str | None:
        row = self.db.execute("select value from meta where key = ?", [key]).fetchone()
        return row[0] if row else None

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction, holding SQLite's write lock from its start (BEGIN IMMEDIATE).

        A deferred one that reads, then writes, fails at once with "database is locked" when another
        connection (a second process on the same file) wrote in between: waiting cannot help it, so
        SQLite does not wait. Taken up front, the lock is waited for (the connection's 30 s timeout).
        """
        with self.lock:
            if self.db.conn.in_transaction:
                with self.db.atomic():  # nested: a savepoint
                    yield
                return
            self.db.conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self.db.conn.rollback()
                raise
            self.db.conn.commit()

    @property
    def synchronous(self) -> str:
        """The level this connection writes with, as SQLite reports it (NORMAL or FULL when opened for writing)."""
        with self.lock:
            level = self.db.execute("PRAGMA synchronous").fetchone()[0]
        return {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[level]

    def close(self) -> None:
        with self.lock:
            self.db.close()

    # --- identities -------------------------------------------------------

    def client_id(self, address: str) -> str:
        """An anonymous, stable id for a client address: researchers get no IPs."""
        return hmac.new(self.client_salt.encode(), address.encode(), hashlib.sha256).hexdigest()[:16]

    def register_models(self, entries: Iterable[ModelEntry]) -> list[ModelChange]:
        """Record the served models; returns those that already have votes under other settings.

        Their rating will mix what the model was and what it is now, which the operator should hear
        of; the earlier row is kept in `model_history`.
        """
        now = time.time()
        changes = []
        with self._transaction():
            for entry in entries:
                row = {"name": entry.name, "backend": entry.backend, "source": entry.location,
                       "origin": "config", "settings": json.dumps(entry.identity_settings())}
                stored = next(self.db["models"].rows_where("name = ?", [entry.name]), None)
                if stored is None:
                    self.db["models"].insert({**row, "first_seen": now})
                    continue
                changed = _changed_fields(stored, row)
                if changed and stored["origin"] == "config":
                    # Votes cast under the settings being replaced: since they were set, not ever.
                    since = self.db.execute("select max(replaced) from model_history where name = ?",
                                            [entry.name]).fetchone()[0]
                    votes = self.db.execute(
                        "select count(*) from votes v join battles b on b.id = v.battle_id "
                        "where ? in (b.model_a, b.model_b) and (? is null or b.started >= ?)",
                        [entry.name, since, since]).fetchone()[0]
                    self.db["model_history"].insert({key: stored[key] for key in ("name", "backend", "source", "settings")}
                                                    | {"replaced": now, "votes_before": votes})
                    if votes:
                        changes.append(ModelChange(entry.name, votes, changed))
                self.db["models"].update(entry.name, row)
        return changes

    # --- battles ----------------------------------------------------------

    def record_battle_start(self, battle_id: str, mode: str, model_a: str, model_b: str, client_id: str, started: float) -> None:
        with self._transaction():
            self.db["battles"].insert(
                {"id": battle_id, "mode": mode, "model_a": model_a, "model_b": model_b, "status": "generating",
                 "started": started, "ended": None, "turns": 0, "client_id": client_id, "failure": None}
            )

    def mark_abandoned(self, battle_id: str) -> None:
        """The volunteer left the battle unvoted; it ends now."""
        with self._transaction():
            self.db.conn.execute("update battles set status = 'abandoned', ended = ? where id = ? and status = 'ready'",
                                 [time.time(), battle_id])

    def close_unfinished_battles(self) -> int:
        """Mark battles an earlier process left generating or unvoted as abandoned; returns how many.

        A battle lives in the memory of the process that started it, so after a
        restart nobody can continue or vote on it; researchers should not have to
        guess that from a `ready` status. It ends at its last stored message, and its `failure` says
        whether the server stopped while it was answering or while it waited for a vote.
        """
        with self._transaction():
            return self.db.conn.execute(
                """update battles set status = 'abandoned',
                       ended = coalesce(ended, (select max(created) from messages where battle_id = battles.id), started),
                       failure = coalesce(failure, case status when 'generating' then ? else ? end)
                   where status in ('generating', 'ready')""", [STOPPED_WHILE_ANSWERING, STOPPED_BEFORE_THE_VOTE]
            ).rowcount

    def mark_answering(self, battle_id: str) -> None:
        """A follow-up or a regeneration is being answered: until its turn is stored, the row says so."""
        with self._transaction():
            self.db["battles"].update(battle_id, {"status": "generating"})

    def record_turn(self, battle_id: str, turn: int, attempt: int, messages: list[dict], status: str, failure: str | None = None) -> None:
        """Store one exchange (the prompt and both answers) and the battle's new status together."""
        now = time.time()
        with self._transaction():
            self.db["messages"].insert_all(
                [{"battle_id": battle_id, "turn": turn, "attempt": attempt, "created": now, **m} for m in messages]
            )
            self.db["battles"].update(battle_id, {"status": status, "turns": turn, "failure": failure,
                                                  "ended": now if status in ("failed", "abandoned") else None})

    def record_vote(self, battle_id: str, winner: str, client_id: str, flag_reason: str | None) -> float:
        """Commit the vote and close the battle in one transaction; returns the vote's time."""
        now = time.time()
        try:
            # Plain statements: sqlite-utils' table helpers re-read the schema on every call,
            # which made a vote ~8x longer inside the lock every vote waits for.
            with self._transaction():
                self.db.conn.execute(
                    "insert into votes (battle_id, winner, created, client_id, flagged, flag_reason) values (?, ?, ?, ?, ?, ?)",
                    [battle_id, winner, now, client_id, int(flag_reason is not None), flag_reason],
                )
                self.db.conn.execute("update battles set status = 'voted', ended = ? where id = ?", [now, battle_id])
        except sqlite3.IntegrityError as exc:
            raise DuplicateVote(battle_id) from exc
        return now

    def battle(self, battle_id: str) -> dict | None:
        rows = list(self.db["battles"].rows_where("id = ?", [battle_id]))
        return rows[0] if rows else None

    def vote_for(self, battle_id: str) -> dict | None:
        rows = list(self.db["votes"].rows_where("battle_id = ?", [battle_id]))
        return rows[0] if rows else None

    # --- votes as data ----------------------------------------------------

    def vote_records(self) -> list[dict]:
        """Every vote in FastChat's clean-battle shape (plus `flagged`, and `flag_reason` on a flagged one), oldest first."""
        with self.lock:
            rows = self.db.execute(
                """
                select b.model_a, b.model_b, v.winner, v.created, b.turns, b.mode, v.flagged, v.client_id, b.id,
                       v.flag_reason
                from votes v join battles b on b.id = v.battle_id
                order by v.created, v.id
                """
            ).fetchall()
        return [
            {"model_a": a, "model_b": b, "winner": winner, "tstamp": created, "turn": max(turns or 1, 1),
             "anony": mode == "anonymous", "flagged": bool(flagged), "judge": judge, "battle_id": battle_id,
             **({"flag_reason": reason} if flagged and reason else {})}
            for a, b, winner, created, turns, mode, flagged, judge, battle_id, reason in rows
        ]

    def voted_conversations(self) -> Iterator[tuple[str, list[dict], list[dict]]]:
        """(battle id, what Model A was given and answered, the same for Model B) for each vote cast in this
        arena (an imported vote has no messages), in `vote_records` order, as voted on: the newest attempt of
        each turn, earlier ones being regenerated away. One battle at a time, as a large arena's text would not
        fit in memory; the store is locked until the last one is read."""
        with self.lock:
            rows = self.db.execute(
                """
                select m.battle_id, m.side, m.content from votes v join messages m on m.battle_id = v.battle_id
                where m.attempt = (select max(attempt) from messages n where n.battle_id = m.battle_id and n.turn = m.turn)
                order by v.created, v.id, m.turn, m.id
                """
            )
            for battle_id, battle_rows in itertools.groupby(rows, key=lambda row: row[0]):
                with_a: list[dict] = []
                with_b: list[dict] = []
                for _, side, content in battle_rows:
                    if side == "user":
                        with_a.append({"role": "user", "content": content})
                        with_b.append({"role": "user", "content": content})
                    else:
                        (with_a if side == "a" else with_b).append({"role": "assistant", "content": content})
                yield battle_id, with_a, with_b

    def import_votes(self, records: list[dict], source_digest: str | None = None, *,
                     source: str | None = None, known: str = "ask") -> ImportSummary:
        """Add validated clean-battle records in one transaction (all or nothing).

        Each vote's battle id comes from the record, not the file (see `battle_files.vote_ids`),
        so the same file imported again, in any layout, adds nothing. A record without a
        `battle_id` that matches a vote imported from another file is ambiguous: a longer copy
        of that file repeats it, another file may hold a new vote that looks the same (the 2023
        arena file has nothing but models and winner). `known` decides: "ask" refuses the file
        (KnownVotesError, nothing written), "skip" takes them as the votes already stored,
        "new" adds them as more votes. Every import is logged in `imports` (`source` names it).
        A vote without a time stays undated (NULL), and the ratings replay it as older than any
        dated vote. `source_digest`, the file's SHA-256, lets a re-import find votes older
        versions stored under other ids and give them their current ones.
        """
        if known not in KNOWN_VOTE_POLICIES:
            raise ValueError(f"known must be one of {', '.join(KNOWN_VOTE_POLICIES)}, not {known!r}")
        try:
            return self._import_votes(records, source_digest, source, known)
        except DatabaseFileError:
            raise
        except sqlite3.DatabaseError as error:  # a full disk, a locked or damaged file: said with its path
            raise DatabaseFileError(f"{self.path}: {error}") from error

    def _import_votes(self, records: list[dict], source_digest: str | None, source: str | None, known: str) -> ImportSummary:
        now = time.time()
        records = [_normalised(record, number) for number, record in enumerate(records, start=1)]
        file_key = hashlib.sha256("\n".join(map(canonical_json, records)).encode("ascii")).hexdigest()
        key = self._vote_id_key()
        battle_ids = vote_ids(records, key)
        with self._transaction():
            earlier_import = self.db.execute("select min(imported) from imports where file_key = ?", [file_key]).fetchone()[0]
            policy = "skip" if earlier_import is not None else known  # the same file again: the same votes
            stored = {row[0] for row in self.db.execute("select id from battles where id like 'imported-%'")}
            earlier = {row[0] for row in self.db.execute("select id from battles where id like 'import-%'")}
            # Ids earlier versions gave imported votes: by position in this very file (the same votes), and
            # by a plain hash of the content (look-alikes from any file, like the current ids).
            by_position = [f"import-{source_digest[:16]}-{n}" if source_digest else None for n in range(1, len(records) + 1)]
            by_plain_hash = unkeyed_vote_ids(records) if earlier else [None] * len(records)
            self._adopt_earlier_ids(records, battle_ids, by_position, stored, earlier)
            if policy == "ask":
                matched = sum(record.get("battle_id") is None and (current in stored or plain in earlier)
                              for record, current, plain in zip(records, battle_ids, by_plain_hash))
                if matched:
                    raise KnownVotesError(matched, len(records))
            self._check_same_votes(records)
            self._adopt_earlier_ids(records, battle_ids, by_plain_hash, stored, earlier)
            if policy == "new":
                battle_ids = vote_ids(records, key, _first_free_occurrences(records, key, stored))
            known_models = {row[0] for row in self.db.execute("select name from models")}
            new_models = sorted({r[k] for r in records for k in ("model_a", "model_b")} - known_models)
            self.db["models"].insert_all(
                [{"name": n, "backend": "", "source": "", "origin": "import", "settings": "{}", "first_seen": now} for n in new_models]
            )
            before = self.db["votes"].count
            battles, votes = [], []
            for record, battle_id in zip(records, battle_ids):
                tstamp = record.get("tstamp")
                battles.append({
                    "id": battle_id, "mode": "anonymous" if record["anony"] else "named",  # normalised: filled in
                    "model_a": record["model_a"], "model_b": record["model_b"], "status": "imported",
                    "started": tstamp, "ended": tstamp, "turns": record["turn"],
                    "client_id": str(record.get("judge", "")), "failure": None,
                })
                votes.append({
                    "battle_id": battle_id, "winner": record["winner"], "created": tstamp,
                    "client_id": str(record.get("judge", "")), "flagged": int(record["flagged"]),
                    "flag_reason": (kept_flag_reason(record) or "flagged in imported file") if record["flagged"] else None,
                })
            self.db["battles"].insert_all(battles, ignore=True, batch_size=1000)
            self.db["votes"].insert_all(votes, ignore=True, batch_size=1000)
            added = self.db["votes"].count - before
            self.db["imports"].insert({"file_key": file_key, "source": source, "imported": now, "records": len(records),
                                       "added": added, "known": policy})
        not_kept = {key for record in records for key in record} - IMPORTED_FIELDS - {"flag_reason"}
        if any(record.get("flag_reason") is not None and kept_flag_reason(record) is None for record in records):
            not_kept.add("flag_reason")  # on a vote not flagged, or not text the database can keep
        not_kept = sorted(not_kept)
        first_spelling: dict[str, str] = {}
        for name in sorted(known_models) + new_models:
            first_spelling.setdefault(name.casefold(), name)
        case_only = [(name, first_spelling[name.casefold()]) for name in new_models
                     if first_spelling[name.casefold()] != name]
        return ImportSummary(added=added, already_present=len(records) - added, new_models=new_models,
                             imported_before=earlier_import, fields_not_kept=not_kept, case_only_differences=case_only)

    def _vote_id_key(self) -> bytes:
        """The secret that keys imported votes' ids (derived from the salt, never exported)."""
        return hmac.new(self.client_salt.encode(), b"imported vote ids", hashlib.sha256).digest()

    def _check_same_votes(self, records: list[dict]) -> None:
        """A record's own `battle_id` names one vote: refuse a file that tells it differently.

        A record that changes what the leaderboard counts of a stored vote (see `vote_identity`) is a
        conflict, not a vote already present.
        """
        seen: dict[str, tuple] = {}
        conflicts = []
        for number, record in enumerate(records, start=1):
            battle_id = record.get("battle_id")
            if battle_id is None:
                continue
            vote = vote_identity(record)
            if battle_id not in seen:
                stored = self.db.execute(
                    "select b.model_a, b.model_b, v.winner, b.mode = 'anonymous', v.flagged, b.status "
                    "from battles b left join votes v on v.battle_id = b.id where b.id = ?", [battle_id]).fetchone()
                if stored and stored[2] is None:  # a live battle nobody voted on: a file cannot vote for it
                    raise ValueError(f"record {number}: battle_id {battle_id!r} is a battle of this arena that has no vote "
                                     f"({stored[5]}); a file cannot add one")
                seen[battle_id] = (*stored[:3], bool(stored[3]), bool(stored[4])) if stored else vote
            if seen[battle_id] != vote:
                conflicts.append(f"record {number}: battle_id {battle_id!r} is already {_vote_text(seen[battle_id])}, "
                                 f"not {_vote_text(vote)}")
        if conflicts:
            shown = conflicts[:SHOWN_CONFLICTS]
            more = f"\n  and {len(conflicts) - len(shown)} more" if len(conflicts) > len(shown) else ""
            differ = "differs" if len(conflicts) == 1 else "differ"
            raise ValueError(f"{counted(len(conflicts), 'record')} {differ} from votes already stored under the same "
                             "battle_id:\n  " + "\n  ".join(shown) + more)

    def _adopt_earlier_ids(self, records: list[dict], battle_ids: list[str], old_ids: list[str | None],
                           stored: set[str], earlier: set[str]) -> None:
        """Give votes stored under an earlier version's id (`old_ids`, per record) their current one.

        The plain-hash ids of the version before could be tested against guesses by anyone holding an
        export; position ids did not follow the vote. Updates `stored` and `earlier` as it renames.
        """
        if not earlier:
            return
        connection = self.db.conn
        for record, battle_id, old_id in zip(records, battle_ids, old_ids):
            if old_id not in earlier or battle_id in stored:
                continue
            tstamp = record.get("tstamp")  # old imports stored the import time for undated votes
            connection.execute("update votes set battle_id = ?, created = ? where battle_id = ?", [battle_id, tstamp, old_id])
            connection.execute("update battles set id = ?, started = ?, ended = ? where id = ?",
                               [battle_id, tstamp, tstamp, old_id])
            earlier.discard(old_id)
            stored.add(battle_id)

    def counts(self, tables: tuple[str, ...] = ("models", "battles", "messages", "votes")) -> dict[str, int]:
        """Rows per table; ask only for the tables needed (counting `messages` scans a large table)."""
        with self.lock:
            return {table: self.db[table].count for table in tables}


def _normalised(record: dict, number: int) -> dict:
    """The record as `read_battles` gives it, so its content id does not depend on how it was built."""
    normalised, problems = normalise_record(record)
    if problems:
        raise ValueError(f"record {number}: {'; '.join(problems)}")
    return normalised


def _first_free_occurrences(records: list[dict], key: bytes, stored: set[str]) -> dict[str, int]:
    """Per content, the first occurrence number not yet stored: where votes declared new start counting."""
    first: dict[str, int] = {}
    for _, content, _ in record_contents(records):
        if content is not None and content not in first:
            occurrence = 1
            while content_vote_id(key, content, occurrence) in stored:
                occurrence += 1
            first[content] = occurrence
    return first


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """A connection that reads `path` without creating it or changing it."""
    if not path.is_file():
        raise DatabaseFileError(f"{path}: no such database file")
    # A file we may write gets a read-write connection made query-only, which removes its -wal and
    # -shm files on closing. A mode=ro one would leave them behind, and as another user's, the owner
    # could not write them: their next serve or import would fail. A file with no write-ahead log beside
    # it is open in no writer and has no votes waiting in a log, so where read-write fails (a read-only
    # folder) or is not allowed, it is read as immutable: SQLite then makes no files beside it (a writer
    # that starts on it while it is read, in a folder it may write, could make that read fail or see a
    # half-written state: the reads happen in the first moments, and rerunning the command settles it).
    # With a log, mode=ro reads it; and a file nobody may write cannot change while it is read, so when SQLite
    # cannot make a -shm beside it (a read-only folder), it is read as immutable too.
    writable = os.access(path, os.W_OK)
    queries = ["mode=rw"] if writable else []
    if not path.with_name(path.name + "-wal").exists():
        queries.append("mode=ro&immutable=1")
    elif not writable:
        queries += ["mode=ro"] + (["immutable=1"] if not path.stat().st_mode & 0o222 else [])
    for query in queries:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?{query}", uri=True, check_same_thread=False, timeout=30)
        try:
            connection.execute("PRAGMA query_only = ON")
            connection.execute("select count(*) from sqlite_master").fetchone()
            return connection
        except sqlite3.DatabaseError as error:
            connection.close()
            failure = error
    if "readonly" in str(failure):
        raise DatabaseFileError(
            f"{path}: cannot be read here: SQLite needs to create {path.name}-shm beside it and the folder is "
            "read-only (copy the database somewhere writable)"
        ) from failure
    raise failure


def _why_unusable(error: sqlite3.DatabaseError) -> str:
    text = str(error)
    if "not a database" in text:
        return "not an SQLite database"
    if "readonly" in text:
        return "cannot write to it (read-only file, or a read-only folder, where SQLite keeps its -wal and -shm files)"
    if "unable to open" in text:
        return "cannot open it (missing folder or no permission)"
    return text


def _close(connection: sqlite3.Connection | None) -> None:
    if connection is not None:
        connection.close()


def _vote_text(vote: tuple) -> str:
    model_a, model_b, winner, anony, flagged = vote
    return (f"a vote of {model_a} vs {model_b} ({winner}, {'anonymous' if anony else 'named'}"
            f"{', flagged' if flagged else ''})")


def _changed_fields(stored: dict, row: dict) -> list[str]:
    """What differs between a model's stored row and its row now.

    A local source is a resolved path, which moves with the checkout or the venv (a bundled model lives
    in site-packages): only its last part names the weights. A hub id or URL keeps its last part too.
    """
    changed = ["backend"] if stored["backend"] != row["backend"] else []
    if _source_name(stored["source"]) != _source_name(row["source"]):
        changed.append("source")
    try:
        before = json.loads(stored["settings"] or "{}")
    except ValueError:
        before = {}
    after = json.loads(row["settings"])
    for key, value in after.items():
        if key not in before:  # stored by a version that did not record it: unknown, so not a change
            continue
        if key == "generation" and isinstance(before.get(key), dict):
            changed += [name for name in value if before[key].get(name) != value[name]]
        elif before.get(key) != value:
            changed.append(key)
    return changed


def _source_name(source: str | None) -> str:
    return (source or "").rstrip("/").rsplit("/", 1)[-1]
