"""`python -m arena …`: a thin layer of commands over the library."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from arena.backends import backend_class
from arena.battle_files import DEFAULT_MAX_BYTES
from arena.config import ConfigError, load_config
from arena.leaderboard import FEWEST_BOOTSTRAP_ROUNDS
from arena.reports import FORMATS
from arena.text import padded
from arena.wording import counted

DEFAULT_CONFIG = "models.yaml"
DEFAULT_DB = "arena.db"


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader stopped early (`| head`): not a failure worth a traceback. Point stdout at
        # /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m arena", description="A pairwise human-evaluation arena for LLMs.")
    commands = parser.add_subparsers(dest="command")

    serve = commands.add_parser("serve", help="start the web arena")
    serve.add_argument("--config", default=DEFAULT_CONFIG, help="model list (default: %(default)s)")
    serve.add_argument("--db", default=DEFAULT_DB, help="SQLite file for battles and votes (default: %(default)s)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_whole_number(1, 65535, "a port number"), default=7860)
    serve.add_argument("--cache-dir", default=None, help="converted-weights cache (default: .arena-cache beside --db)")
    serve.add_argument("--synchronous", choices=("normal", "full"), default="normal",
                       help="normal: acknowledged votes survive the process being killed; full: a power cut too, "
                            "each vote waiting for the disk (default: %(default)s)")
    serve.set_defaults(run=_serve)

    models = commands.add_parser("models", help="validate the model list and show it, without loading anything")
    models.add_argument("--config", default=DEFAULT_CONFIG)
    models.set_defaults(run=_models)

    export = commands.add_parser("export", help="write the leaderboard and all votes into a folder")
    export.add_argument("--db", default=DEFAULT_DB)
    export.add_argument("--out", default="ratings", help="folder (default: %(default)s/)")
    export.add_argument("--conversations", action="store_true",
                        help="also write conversations.jsonl: each voted battle's prompts and answers (they may hold "
                             "what volunteers typed about themselves); without it, one from an earlier export is removed")
    _add_rating_options(export)
    export.set_defaults(run=_export)

    import_ = commands.add_parser("import", help="add votes from a clean-battle file (JSONL or JSON array)")
    import_.add_argument("file")
    import_.add_argument("--db", default=DEFAULT_DB)
    known = import_.add_mutually_exclusive_group()
    known.add_argument("--skip-known", dest="known", action="store_const", const="skip",
                       help="records identical to votes imported from another file are those votes (a longer copy)")
    known.add_argument("--all-new", dest="known", action="store_const", const="new",
                       help="every record is a new vote, even if identical to one already imported")
    _add_file_size_option(import_)
    import_.set_defaults(run=_import, known="ask")

    ratings = commands.add_parser("ratings", help="print the leaderboard from a database or a vote file")
    source = ratings.add_mutually_exclusive_group()
    source.add_argument("--db", default=None, help=f"SQLite file (default: {DEFAULT_DB})")
    source.add_argument("--battles", help="battles.jsonl or a clean-battle JSON array")
    ratings.add_argument("--format", choices=FORMATS, default="table")
    _add_file_size_option(ratings)
    _add_rating_options(ratings)
    ratings.set_defaults(run=_ratings)
    return parser


def _add_rating_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap", type=_bootstrap_rounds, default=1000,
                        help=f"bootstrap rounds for the 95%% intervals: 0 (none) or at least {FEWEST_BOOTSTRAP_ROUNDS}")
    parser.add_argument("--seed", type=_whole_number(0), default=0)
    parser.add_argument("--anchor", metavar="MODEL=RATING", help="pin one model's rating instead of a vote-weighted mean of 1000")
    parser.add_argument("--min-votes", type=_whole_number(0), default=0, help="leave out models with fewer counted votes")
    parser.add_argument("--include-named", action="store_true", help="also count side-by-side (named) votes")


def _serve(args) -> int:
    from arena.server import serve
    from arena.storage import DatabaseFileError

    cache_dir = Path(args.cache_dir) if args.cache_dir else Path(args.db).resolve().parent / ".arena-cache"
    try:
        return serve(load_config(args.config), Path(args.db), args.host, args.port, cache_dir,
                     synchronous=args.synchronous.upper())
    except KeyboardInterrupt:  # a second Ctrl-C while stopping: the rest has closed all the same
        return 130
    except DatabaseFileError as exc:
        raise SystemExit(f"error: {exc}") from None


def _models(args) -> int:
    config = load_config(args.config)
    print(f"{config.path}: {len(config.models)} models, {len(config.enabled_models)} enabled, sampling: {config.settings.sampling}")
    for entry in config.models:
        where = entry.location
        if entry.gguf_file:
            where = f"{where}/{entry.gguf_file}"
        state = "enabled " if entry.enabled else "disabled"
        g = entry.generation
        print(f"  {state} {padded(entry.name, 24)} {entry.backend:<12} weight={entry.weight:<5g} "
              f"temperature={g.temperature:g} top_p={g.top_p:g} max_new_tokens={g.max_new_tokens}  {where}")
    for entry in config.enabled_models:  # the file is fine, but this shell could not serve it as it is
        problem = backend_class(entry).preflight_problem(entry)
        if problem:
            print(f"warning: {entry.name} would fail to load from this shell: {problem}")
    return 0


def _leaderboard(records: list[dict], args):
    from arena.leaderboard import compute_leaderboard

    anchor = None
    if args.anchor:
        model, _, rating = args.anchor.rpartition("=")
        try:
            anchor = (model, float(rating))
        except ValueError:
            anchor = None
        if anchor is None or not model:
            raise SystemExit(f"error: --anchor takes MODEL=RATING, got {args.anchor!r}")
    try:
        return compute_leaderboard(records, bootstrap_rounds=args.bootstrap, seed=args.seed, anchor=anchor,
                                   min_votes=args.min_votes, include_named=args.include_named,
                                   progress=_ProgressBar("bootstrap") if args.bootstrap >= 200 else None)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None


def _open_store(path: str, *, read_only: bool):
    """The store at `path`; a read-only one must exist and is never written to."""
    from arena.storage import ArenaStore, DatabaseFileError

    if read_only and not Path(path).is_file():
        raise SystemExit(f"error: no database at {path} (start the arena or import votes first)")
    try:
        return ArenaStore(path, read_only=read_only)
    except DatabaseFileError as exc:
        raise SystemExit(f"error: {exc}") from None


def _stored_votes(path: str) -> list[dict]:
    store = _open_store(path, read_only=True)
    try:
        return store.vote_records()
    finally:
        store.close()


def _add_file_size_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-file-mb", type=_whole_number(1), default=None, metavar="MB",
                        help=f"refuse vote files larger than this, as they are read whole (default: "
                             f"{DEFAULT_MAX_BYTES // 2**20}; an export of a million votes is about 170 MB)")


def _ratings(args) -> int:
    from arena.reports import render

    if args.battles:
        records = _read_battle_file(args.battles, args.max_file_mb).records
    elif args.max_file_mb is not None:
        raise SystemExit("error: --max-file-mb limits a vote file read with --battles; a database is not read whole")
    else:
        records = _stored_votes(args.db or DEFAULT_DB)
    leaderboard = _leaderboard(records, args)
    print(render(leaderboard, args.format), end="")
    if args.format in ("json", "csv"):  # their data has no place for the notes: a pipe must still hear them
        for note in leaderboard.notes:
            print(f"note: {note}", file=sys.stderr)
    return 0


def _export(args) -> int:
    from arena import plots
    from arena.reports import CONVERSATIONS_FILE, write_exports

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SystemExit(f"error: --out {out} is a file, not a folder; nothing written")
    store = _open_store(args.db, read_only=True)
    try:  # open until the conversations, read one battle at a time, are written
        records = store.vote_records()
        board = _leaderboard(records, args)
        figures = plots.rendered_figures(board)
        earlier_conversations = out / CONVERSATIONS_FILE
        removing = not args.conversations and earlier_conversations.exists()
        conversations = store.voted_conversations() if args.conversations else None
        try:
            written = write_exports(board, records, out, figures, conversations)
        except OSError as exc:
            where = f" ({Path(exc.filename).name})" if exc.filename else ""
            raise SystemExit(f"error: cannot write the export into {out}: {exc.strerror or exc}{where}") from None
    finally:
        store.close()
    if removing:
        print(f"removed {earlier_conversations}, an earlier export's (--conversations writes it)")
    for path in written:
        print(f"wrote {path}")
    return 0


def _import(args) -> int:
    from arena.storage import DatabaseFileError, KnownVotesError

    battle_file = _read_battle_file(args.file, args.max_file_mb, "nothing imported")
    if not battle_file.records:  # likely the wrong file: say so, and leave the database (or its absence) alone
        print(f"warning: {args.file} holds no votes; nothing imported, {args.db} not opened", file=sys.stderr)
        return 0
    store = _open_store(args.db, read_only=False)
    try:
        summary = store.import_votes(battle_file.records, battle_file.sha256, source=str(args.file), known=args.known)
    except DatabaseFileError as exc:
        raise SystemExit(f"error: {exc}; nothing imported") from None
    except KnownVotesError as exc:
        raise SystemExit(f"error: {args.file}: {exc}. Import it again with --skip-known if it repeats them "
                         "(a longer or re-saved copy of that file), or with --all-new if they are new votes; "
                         "nothing imported") from None
    except ValueError as exc:  # a vote the database already holds differently
        raise SystemExit(f"error: {args.file}: {exc}; nothing imported") from None
    finally:
        store.close()
    print(f"{args.file}: {counted(summary.added, 'vote')} added to {args.db}, {summary.already_present:,} already present")
    if summary.imported_before is not None:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(summary.imported_before))
        print(f"the same votes (this file, or one with the same content) were imported on {when}; "
              f"they are not added twice{', whatever --all-new says' if args.known == 'new' else ''}")
    if summary.new_models:
        where = battle_file.first_lines
        print(f"new models: {', '.join(f'{name} (first on line {where[name]})' for name in summary.new_models)}")
    for name, other in summary.case_only_differences:
        print(f"warning: model '{name}' differs from '{other}' only in case: they are rated as two models; if they "
              "are one, correct the name in the file (models.yaml refuses such names)", file=sys.stderr)
    if summary.fields_not_kept:
        print(f"fields not kept (the database has no place for them): {', '.join(summary.fields_not_kept)}")
    return 0


def _read_battle_file(path: str, max_file_mb: int | None, outcome: str = "nothing read"):
    from arena.battle_files import BattleFileError, BattleFileTooLarge, read_battle_file

    try:
        return read_battle_file(path, max_bytes=DEFAULT_MAX_BYTES if max_file_mb is None else max_file_mb * 2**20)
    except BattleFileTooLarge as exc:
        raise SystemExit(f"error: {exc.describe(outcome)} (raise it with --max-file-mb)") from None
    except BattleFileError as exc:
        raise SystemExit(f"error: {exc.describe(outcome)}") from None
    except OSError as exc:
        raise SystemExit(f"error: cannot read {path}: {exc.strerror or exc}") from None


class _ProgressBar:
    """A one-line terminal progress bar for long computations (written to stderr)."""

    def __init__(self, label: str):
        self.label = label

    def __call__(self, done: int, total: int) -> None:
        if not sys.stderr.isatty():  # a log file: one line when done, not a carriage return per chunk
            if done >= total:
                print(f"{self.label}: {done}/{total}", file=sys.stderr, flush=True)
            return
        width = 30
        filled = int(width * done / max(total, 1))
        end = "\n" if done >= total else ""
        print(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end=end, file=sys.stderr, flush=True)


def _bootstrap_rounds(text: str) -> int:
    rounds = _whole_number(0)(text)
    if 0 < rounds < FEWEST_BOOTSTRAP_ROUNDS:
        raise argparse.ArgumentTypeError(
            f"must be 0 (no intervals) or at least {FEWEST_BOOTSTRAP_ROUNDS}, not {text!r}: a 95% interval needs one resample "
            "beyond each end (1,000 for a ranking to publish)")
    return rounds


def _whole_number(low: int, high: int | None = None, what: str = "a whole number"):
    """An argparse type: a whole number from `low` (to `high`), refused with the bounds in the message."""
    bounds = f"from {low} to {high}" if high is not None else f"of at least {low}"

    def parse(text: str) -> int:
        if not text.isdigit() or int(text) < low or (high is not None and int(text) > high):
            raise argparse.ArgumentTypeError(f"must be {what} {bounds}, not {text!r}")
        return int(text)

    return parse
