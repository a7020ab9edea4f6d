"""A leaderboard as text people and tools read: terminal table, JSON, CSV, Markdown, export files."""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from arena.battle_files import DEFAULT_MAX_BYTES, atomic_text_writers, export_fields, write_battle_lines
from arena.leaderboard import Leaderboard, LeaderboardOptions
from arena.text import display_width, markdown_text, padded
from arena.wording import counted

FORMATS = ("table", "json", "csv", "md")
COLUMNS = ("rank", "model", "rating", "ci_lower", "ci_upper", "elo", "votes", "win_rate", "group")
DISPLAY_HEADER = ("Rank", "Model", "Rating", "95% CI", "Elo", "Votes", "Win rate")
HEAD_TO_HEAD_HEADER = ("Model", "Opponent", "Battles", "Won % (ties half)", "Predicted %")
_EMPTY = "Nothing to rank."  # the notes say why: no votes yet, or none left by --min-votes


def _interval(row: Mapping) -> str:
    """The 95% interval as distances from the rating, the way arena leaderboards print it.

    Where the bootstrap measured nothing (no interval: see `ModelRating`) none is printed.
    """
    if row["ci_lower"] is None:
        return "–"
    return f"+{row['ci_upper'] - row['rating']:.1f}/-{row['rating'] - row['ci_lower']:.1f}"


def display_rows(leaderboard: Leaderboard) -> tuple[list[str], list[list]]:
    """Header and cells as people read them, in the terminal, in Markdown and on the web page.

    Numbers stay numbers (rounded as shown), so the page's table sorts them as numbers; a rank the
    bootstrap could not measure is "–". A "Group" column appears only when the votes form more than
    one compared group.
    """
    header = list(DISPLAY_HEADER)
    rows = leaderboard.as_dicts()
    cells = [
        ["–" if row["rank"] is None else row["rank"], row["model"], round(row["rating"], 1), _interval(row),
         round(row["elo"], 1), row["votes"], f"{row['win_rate']:.1%}"]
        for row in rows
    ]
    if len({row["group"] for row in rows}) > 1:
        header.append("Group")
        for row, line in zip(rows, cells):
            line.append(row["group"])
    return header, cells


def head_to_head_rows(leaderboard: Leaderboard) -> list[list]:
    """Every pair of rated models once, in leaderboard order (the better-rated first within a group): the
    heatmaps' numbers as rows.

    Beyond a handful of models the heatmaps' cells carry no numbers, and a screen reader gets none from
    an image; a table gives both, and sorts (numbers stay numbers). "–" where a pair never met, and as
    the prediction between models of different compared groups, whose ratings say nothing of each other,
    and where a model's rating is the regularisation's rather than its votes' (it has no interval).
    """
    models = leaderboard.models
    rows = []
    for i, j in itertools.combinations(range(len(models)), 2):
        battles = int(leaderboard.battle_counts[i, j])
        won, predicted = (round(100 * float(value), 1) if math.isfinite(value) else "–"
                          for value in (leaderboard.win_fraction[i, j], leaderboard.predicted_win_probability[i, j]))
        rows.append([models[i], models[j], battles, won, predicted])
    return rows


def _as_text(cells: list[list]) -> list[list[str]]:
    """Cells as printed: numbers to one decimal, as the page shows them."""
    return [[f"{value:.1f}" if isinstance(value, float) else str(value) for value in line] for line in cells]


def _text_rows(leaderboard: Leaderboard) -> tuple[list[str], list[list[str]]]:
    header, cells = display_rows(leaderboard)
    return header, _as_text(cells)


def _summary(leaderboard: Leaderboard) -> str:
    rounds = leaderboard.bootstrap_rounds
    intervals = f"95% intervals from {rounds:,} bootstrap rounds" if rounds else "no bootstrap: intervals not computed"
    return f"{counted(leaderboard.votes_used, 'vote')}, {counted(len(leaderboard.models), 'model')}; {intervals}."


def _table(leaderboard: Leaderboard) -> str:
    if not leaderboard.rows:
        return "\n".join([_EMPTY, *(f"note: {note}" for note in leaderboard.notes)]) + "\n"
    header, cells = _text_rows(leaderboard)
    widths = [max(display_width(line[column]) for line in [header, *cells]) for column in range(len(header))]
    left_aligned = {1}

    def line(values: list[str]) -> str:
        return "  ".join(padded(v, w, right=i not in left_aligned) for i, (v, w) in enumerate(zip(values, widths))).rstrip()

    text = [line(header), line(["-" * w for w in widths]), *(line(values) for values in cells)]
    text += ["", _summary(leaderboard)]
    text += [f"note: {note}" for note in leaderboard.notes]
    return "\n".join(text) + "\n"


def _markdown_row(values: Sequence[str]) -> str:
    return "| " + " | ".join(markdown_text(v) for v in values) + " |"


def _markdown_alignment(columns: int, text_columns: set[int]) -> str:
    """Names to the left, numbers to the right."""
    return "| " + " | ".join("---" if i in text_columns else "---:" for i in range(columns)) + " |"


def _markdown(leaderboard: Leaderboard) -> str:
    if not leaderboard.rows:
        return "\n\n".join([f"_{_EMPTY}_", *(f"> {markdown_text(note)}" for note in leaderboard.notes)]) + "\n"
    header, cells = _text_rows(leaderboard)
    text = [_markdown_row(header), _markdown_alignment(len(header), {1}), *(_markdown_row(values) for values in cells),
            "", _summary(leaderboard)]
    text += [f"\n> Note: {markdown_text(note)}" for note in leaderboard.notes]
    return "\n".join(text) + "\n"


def _csv(leaderboard: Leaderboard) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(leaderboard.as_dicts())
    return buffer.getvalue()


def _json(leaderboard: Leaderboard) -> str:
    return json.dumps(leaderboard.as_dicts(), indent=2, ensure_ascii=False) + "\n"


_RENDERERS = dict(zip(FORMATS, (_table, _json, _csv, _markdown), strict=True))


def render(leaderboard: Leaderboard, fmt: str) -> str:
    """The leaderboard as text in one of FORMATS."""
    if fmt not in _RENDERERS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return _RENDERERS[fmt](leaderboard)


@dataclass(frozen=True)
class RenderedFigure:
    """A figure an export writes beside its tables, drawn by the caller: this module draws nothing, so the
    rating engine needs no plotting library (`arena.plots` draws them)."""

    file_name: str
    description: str  # what it shows, in words: the Markdown's alt text
    svg: str


def _export_markdown(leaderboard: Leaderboard, figures: Sequence[RenderedFigure]) -> str:
    """leaderboard.md of an export: the first figure (the ratings) above the table, the others below it with
    the numbers they show, pair by pair, folded."""
    images = [f"![{figure.description}]({figure.file_name})\n" for figure in figures]
    text = [*images[:1], render(leaderboard, "md")]
    if leaderboard.rows and len(leaderboard.models) > 1:
        table = [_markdown_row(HEAD_TO_HEAD_HEADER), _markdown_alignment(len(HEAD_TO_HEAD_HEADER), {0, 1}),
                 *(_markdown_row(row) for row in _as_text(head_to_head_rows(leaderboard)))]
        text += ["## Head to head\n", *images[1:],
                 "<details><summary>The heatmaps' numbers: every pair once, in leaderboard order</summary>\n",
                 "\n".join(table) + "\n", "</details>\n"]
    return "\n".join(text)


CONVERSATIONS_FILE = "conversations.jsonl"


def write_exports(leaderboard: Leaderboard, records: Iterable[Mapping], out_dir: Path | str,
                  figures: Sequence[RenderedFigure] = (),
                  conversations: Iterable[tuple[str, list, list]] | None = None) -> list[Path]:
    """Write leaderboard.{csv,json,md}, every vote record (unfiltered) as battles.jsonl, export.json, and
    the `figures`, which leaderboard.md shows; with `conversations` ((battle id, what Model A was given and
    answered, what Model B was), as `ArenaStore.voted_conversations` reads them), conversations.jsonl too.

    All of them are written beside their targets first and replace them only once every one is
    complete, so a failure (a full disk) leaves the previous export whole, and a reader never
    sees half a file. Without `conversations`, an earlier export's conversations.jsonl is removed first:
    left beside this export it would pass for its own, and prompts are shared only when asked for.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = list(records)
    if conversations is None:
        (out_dir / CONVERSATIONS_FILE).unlink(missing_ok=True)
    tables = {"csv": render(leaderboard, "csv"), "json": render(leaderboard, "json"),
              "md": _export_markdown(leaderboard, figures)}
    paths = [out_dir / f"leaderboard.{fmt}" for fmt in tables] + [out_dir / "battles.jsonl", out_dir / "export.json"]
    paths += [out_dir / figure.file_name for figure in figures]
    if conversations is not None:
        paths.append(out_dir / CONVERSATIONS_FILE)
    with atomic_text_writers(paths) as streams:
        boards, rest = streams[:len(tables)], streams[len(tables):]
        (battles, about), drawings = rest[:2], rest[2:2 + len(figures)]
        for stream, text in zip(boards, tables.values()):
            stream.write(text)
        for stream, figure in zip(drawings, figures):
            stream.write(figure.svg)
        exported = write_battle_lines(battles, records)
        conversations_written = (None if conversations is None
                                 else write_conversation_lines(streams[-1], records, conversations))
        description = export_description(leaderboard, exported, out_dir / "battles.jsonl", battles.tell(),
                                         conversations_written)
        about.write(json.dumps(description, indent=2, ensure_ascii=False) + "\n")
    return paths


def write_conversation_lines(stream, records: Iterable[Mapping], conversations: Iterable[tuple[str, list, list]]) -> int:
    """Each vote that has its conversation, as battles.jsonl writes it plus `conversation_a` and `conversation_b`
    (the turns each model was given and answered, in the chat shape {"role", "content"}); returns how many."""
    votes = {record["battle_id"]: record for record in records if "battle_id" in record}
    written = 0
    for battle_id, with_a, with_b in conversations:
        if battle_id in votes:
            line = {**export_fields(votes[battle_id]), "conversation_a": with_a, "conversation_b": with_b}
            stream.write(json.dumps(line, ensure_ascii=False) + "\n")
            written += 1
    return written


def export_description(leaderboard: Leaderboard, votes_exported: int, battles_file: Path, battles_bytes: int,
                       conversations_exported: int | None = None) -> dict:
    """What an export holds and the options behind its leaderboard, with the command that recomputes it.

    The leaderboard files hold rows only; without this a reader could not tell a `--min-votes` or
    `--include-named` board from a plain one, nor redo it from `battles.jsonl`.
    """
    return {
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "votes_exported": votes_exported,
        "conversations_exported": conversations_exported,
        "votes_counted": leaderboard.votes_used,
        "models": len(leaderboard.models),
        "options": leaderboard.options.as_dict(),
        "notes": leaderboard.notes,
        "recompute": recompute_command(leaderboard.options, battles_file, battles_bytes),
    }


def recompute_command(options: LeaderboardOptions, battles_file: Path, battles_bytes: int = 0,
                      python: str = ".venv/bin/python") -> str:
    """The `ratings` command, run from the project's root, that computes the same leaderboard.json from
    `battles_file` (the same intervals only with a seed). `--name=value` keeps a value starting with "-"
    from being read as an option."""
    words = [python, "-m", "arena", "ratings", f"--battles={battles_file}", "--format", "json",
             f"--bootstrap={options.bootstrap_rounds}"]
    if battles_bytes > DEFAULT_MAX_BYTES:
        words.append(f"--max-file-mb={math.ceil(battles_bytes / 2**20)}")
    if options.seed is not None:
        words.append(f"--seed={options.seed}")
    if options.anchor:
        words.append(f"--anchor={options.anchor[0]}={float(options.anchor[1])!r}")
    if options.min_votes:
        words.append(f"--min-votes={options.min_votes}")
    if options.include_named:
        words.append("--include-named")
    return shlex.join(words)
