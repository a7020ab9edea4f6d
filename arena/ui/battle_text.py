"""What the battle panel says: status lines, notes in the answers, the vote receipt.

Kept out of the service, which reports what happened (`BattleView`, `VoteReceipt`) and leaves the words
to the page; no Gradio here, so tests read the same text the page shows.
"""

from __future__ import annotations

from arena.battle import SIDES, Mode
from arena.battle_files import WINNERS
from arena.service import BattleView, VoteReceipt
from arena.text import markdown_text
from arena.ui.chat_markup import markup_shown_as_written
from arena.wording import NEW_ROUND

SIDE_LABELS = {"a": "Model A", "b": "Model B"}
# Each outcome stored and its button's words, which the receipt repeats so that a mis-tap shows.
VOTE_LABELS = dict(zip(WINNERS, ("A is better", "B is better", "Tie", "Both are bad"), strict=True))
FAILED_NOTE = "*⚠️ This model could not answer.*"
STOPPED_NOTE = "*The other model could not answer, so this battle ended.*"
ANSWERING = "(New round stops them.)"  # ends every status line said while the models answer; the page's script looks for it
LEFT_UNVOTED = f"The last battle ended without a vote, so it is not counted. {NEW_ROUND}"


def intro(mode: Mode, named_votes_counted: bool) -> str:
    if mode is Mode.ANONYMOUS:
        return ("Ask anything: two anonymous models answer side by side. Vote for the better answer to see who they "
                "are. You can ask follow-ups or regenerate before voting.")
    counted = "are counted" if named_votes_counted else "are not counted"
    return f"Pick two models and compare them. These votes are stored as named and {counted} on the leaderboard."


def _sides(sides: tuple[str, ...]) -> str:
    return " and ".join(SIDE_LABELS[side] for side in sides)


def status_line(view: BattleView) -> str:
    if view.generating and view.waiting_for_a_start:
        return ("One model has not started its answer yet. Both answers appear together once it does, so that "
                f"neither is known by its speed. {ANSWERING}")
    if view.generating:
        return f"Both models are answering… {ANSWERING}"
    if view.failed and not view.failed_sides:  # the server, not a model: the turn could not be stored
        return f"Something went wrong on the server, so this battle ended and is not counted. {NEW_ROUND}"
    if view.failed:
        return f"{_sides(view.failed_sides)} could not answer. This battle ended and is not counted. {NEW_ROUND}"
    status = "Both answers are in. Which is better? Vote, or ask a follow-up question to both."
    if view.names:  # side by side, before the vote: the pickers wait, and say why here
        status += " To pick other models, vote or start a new round."
    if len(view.cut_sides) == 2:
        status += " (Both answers were cut at the length limit, so they may end mid-sentence.)"
    elif view.cut_sides:
        status += f" ({_sides(view.cut_sides)}'s answer was cut at the length limit, so it may end mid-sentence.)"
    return status


def shown_conversations(view: BattleView) -> dict[str, list[dict[str, str]]]:
    """The chats as shown: HTML in prompts and answers as written, not rendered (a prompt asking about the <b>
    tag keeps it); after a model failed, each panel says what happened to its own answer."""
    shown = {}
    for side in SIDES:
        conversation = [{**message, "content": markup_shown_as_written(message["content"])}
                        for message in view.conversations[side]]
        if view.failed and view.failed_sides:
            note = FAILED_NOTE if side in view.failed_sides else STOPPED_NOTE
            last = conversation[-1]
            last["content"] = f"{last['content']}\n\n{note}" if last["content"].strip() else note
        shown[side] = conversation
    return shown


def receipt_text(receipt: VoteReceipt, mode: Mode = Mode.ANONYMOUS, named_votes_counted: bool = False) -> str:
    chose = f"You chose: {VOTE_LABELS[receipt.outcome]}."
    if mode is Mode.NAMED and not receipt.flagged_term:  # the volunteer picked the models: say whether it counts
        counts = "counted" if named_votes_counted else "kept for research, not counted"
        return f"Thanks, your vote is recorded: side-by-side votes are {counts} on the leaderboard. {chose} {NEW_ROUND}"
    model_a, model_b = markdown_text(receipt.model_a), markdown_text(receipt.model_b)
    text = f"Thanks, your vote is recorded. {chose} Model A was **{model_a}**, Model B was **{model_b}**."
    if receipt.flagged_term:
        text += (
            f" An answer named a model ('{markdown_text(receipt.flagged_term)}'): the vote is kept, flagged, "
            "and left out of the leaderboard."
        )
    return f"{text} {NEW_ROUND}"
