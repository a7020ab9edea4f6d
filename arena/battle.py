"""Battles and the rules of voting, independent of any UI.

Every rule is enforced here, on the server, against the battle the server
holds: a client only ever has an opaque battle id, so disabled buttons are a
convenience, not a defence.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from enum import Enum

from arena.battle_files import WINNERS  # the labels of FastChat's clean-battle records
from arena.config import Limits
from arena.text import lone_surrogates_replaced
from arena.wording import NEW_ROUND

SIDES = ("a", "b")
NOTHING_TO_REGENERATE = "Nothing to regenerate yet."


class Mode(str, Enum):
    ANONYMOUS = "anonymous"
    NAMED = "named"


class Status(str, Enum):
    GENERATING = "generating"
    READY = "ready"  # both answers complete: votable, or continue the conversation
    VOTING = "voting"  # a vote is being committed
    VOTED = "voted"
    FAILED = "failed"
    ABANDONED = "abandoned"  # the volunteer moved on without voting


class Leaving(Enum):
    """What leaving a battle unvoted (New round, another pair, a closed page) did to it."""

    NOTHING = "nothing"  # nothing open to leave: voted, failed, or already left
    ENDED = "ended"  # answered but unvoted: now abandoned, not counted
    STOPPING = "stopping"  # still answering: its stream stops, ends it and sends the page its last view


class RuleViolation(Exception):
    """A request the rules refuse; the message is written for the volunteer."""


@dataclass
class Exchange:
    prompt: str
    answers: dict[str, str] = field(default_factory=lambda: {"a": "", "b": ""})
    replaced: list[str] = field(default_factory=list)  # answers shown, then regenerated away


@dataclass
class Battle:
    id: str
    mode: Mode
    client_id: str
    models: dict[str, str]  # side -> model name; never sent to the client before the vote
    started: float
    exchanges: list[Exchange] = field(default_factory=list)
    status: Status = Status.GENERATING
    attempt: int = 1
    outcome: str | None = None
    failed_sides: list[str] = field(default_factory=list)
    cut_sides: list[str] = field(default_factory=list)  # answers of the last turn stopped by max_new_tokens
    left_while_answering: threading.Event = field(default_factory=threading.Event)  # its stream stops, then it ends
    rests_at_turn_start: dict[str, int] = field(default_factory=dict)  # per model: `FailureStreaks.rests_begun`

    @property
    def model_a(self) -> str:
        return self.models["a"]

    @property
    def model_b(self) -> str:
        return self.models["b"]

    def transcript(self, side: str, before_last: bool = False) -> list[dict[str, str]]:
        """Every prompt and this side's answer to it (empty while it is being written); `before_last`: but the
        last exchange."""
        messages = []
        for exchange in self.exchanges[:-1] if before_last else self.exchanges:
            messages.append({"role": "user", "content": exchange.prompt})
            messages.append({"role": "assistant", "content": exchange.answers[side]})
        return messages

    def conversation(self, side: str, before_last: bool = False) -> list[dict[str, str]]:
        """The chat to send to one side: its own answers only, ending with the newest prompt."""
        return [m for m in self.transcript(side, before_last) if m["role"] == "user" or m["content"]]

    def shown_texts(self) -> list[str]:
        """Every answer the volunteer has been shown, regenerated ones included: a name seen once was seen."""
        return [
            text
            for exchange in self.exchanges
            for text in [*exchange.replaced, *(exchange.answers[side] for side in SIDES)]
        ]


class FailureStreaks:
    """Models failing battle after battle (a remote endpoint that went down) rest from anonymous draws.

    Each of their battles would fail and waste a volunteer's prompt. After `STREAK` failures in a row a
    model rests `REST_S`, twice as long each time it fails again on return (up to `MAX_REST_S`); one
    answer it completes ends the streak. Answers begun before a rest began, still failing as it begins
    (a crowd meets an outage at once), are what the rest answers: they do not lengthen it.

    An empty answer counts apart (`record_empty`): a prompt can make a greedy model say nothing at will.
    After empties for `STREAK` different volunteers in a row (one person may hold several addresses) the
    server asks the model a prompt of its own, and only nothing to that too (`record_silence`) rests it.
    """

    STREAK = 3
    REST_S = 60.0
    MAX_REST_S = 600.0

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.lock = threading.Lock()
        self.failures: dict[str, int] = {}
        self.resting_until: dict[str, float] = {}
        self.rests: dict[str, int] = {}  # how many rests each model has begun
        self.empty_for: dict[str, set[str]] = {}  # the volunteers (client ids) each model answered with nothing

    def rests_begun(self, model: str) -> int:
        """A mark to take when `model` starts answering, for `record` to tell what came after."""
        with self.lock:
            return self.rests.get(model, 0)

    def record(self, model: str, failed: bool, rests_at_start: int | None = None) -> tuple[int, float | None]:
        """Count one answer of `model` (anonymous battles only: side by side, a volunteer picks, and could
        keep a model resting); `rests_at_start` is `rests_begun` when that answer began. Returns its streak
        of failures, and the seconds it now rests, if it does."""
        with self.lock:
            if not failed:
                self.failures.pop(model, None)
                self.empty_for.pop(model, None)
                return 0, None
            if rests_at_start is not None and rests_at_start < self.rests.get(model, 0):
                return self.failures.get(model, 0), None  # begun before its latest rest began
            streak = self.failures[model] = self.failures.get(model, 0) + 1
            return streak, self._rest_after(model, streak)

    def record_empty(self, model: str, client_id: str, rests_at_start: int | None = None) -> bool:
        """Count an answer of `model` that said nothing to `client_id`; True when that makes `STREAK` or more
        different volunteers in a row: the moment to ask it the server's own prompt."""
        with self.lock:
            volunteers = self.empty_for.setdefault(model, set())
            if client_id in volunteers or (rests_at_start is not None and rests_at_start < self.rests.get(model, 0)):
                return False
            volunteers.add(client_id)
            return len(volunteers) >= self.STREAK

    def record_silence(self, model: str, rests_at_start: int | None = None) -> tuple[int, float | None]:
        """`model` answered the server's own prompt with nothing too: one failure past `STREAK` - 1, so it
        rests, unless a rest began since that prompt was sent. (An answer to it is `record(model, False)`; a
        failure, `record(model, True, ...)`.) Returns the failure streak and the seconds it now rests."""
        with self.lock:
            self.empty_for.pop(model, None)
            if rests_at_start is not None and rests_at_start < self.rests.get(model, 0):
                return self.failures.get(model, 0), None
            streak = self.failures[model] = max(self.failures.get(model, 0), self.STREAK - 1) + 1
            return streak, self._rest_after(model, streak)

    def _rest_after(self, model: str, streak: int) -> float | None:
        if streak < self.STREAK:
            return None
        rest = min(self.MAX_REST_S, self.REST_S * 2 ** (streak - self.STREAK))
        self.resting_until[model] = self.clock() + rest
        self.rests[model] = self.rests.get(model, 0) + 1
        return rest

    def resting(self) -> set[str]:
        now = self.clock()
        with self.lock:
            return {model for model, until in self.resting_until.items() if until > now}


class BattleBook:
    """The battles in progress, held on the server and keyed by an opaque id."""

    KEEP_S = 6 * 3600.0  # every battle is forgotten this long after it started; an unvoted one is abandoned

    def __init__(self, limits: Limits, clock=time.time):
        self.limits = limits
        self.clock = clock
        self.battles: dict[str, Battle] = {}
        self.lock = threading.Lock()

    def open(self, mode: Mode, client_id: str, model_a: str, model_b: str) -> Battle:
        if model_a == model_b:
            raise RuleViolation("A battle needs two different models.")
        battle = Battle(
            id=secrets.token_urlsafe(18), mode=mode, client_id=client_id,
            models={"a": model_a, "b": model_b}, started=self.clock(),
        )
        with self.lock:
            self.battles[battle.id] = battle
        return battle

    def find(self, battle_id: str | None) -> Battle | None:
        """Whoever's it is: only for the server's own housekeeping, never with an id a client sent."""
        with self.lock:
            return self.battles.get(battle_id or "")

    def get(self, battle_id: str | None, client_id: str) -> Battle:
        with self.lock:
            battle = self.battles.get(battle_id or "")
        if battle is None or battle.client_id != client_id:
            raise RuleViolation("This battle is not yours or has expired. Start a new round.")
        return battle

    def check_prompt(self, prompt: str) -> str:
        prompt = (prompt or "").strip()
        if not prompt:
            raise RuleViolation("Please type a prompt first.")
        if lone_surrogates_replaced(prompt) != prompt:  # a page never sends one; it cannot be stored as UTF-8
            raise RuleViolation("Your prompt holds a broken character (half of an emoji?); please type it again.")
        if len(prompt) > self.limits.max_prompt_chars:
            raise RuleViolation(
                f"Your prompt has {len(prompt):,} characters; the limit here is {self.limits.max_prompt_chars:,}."
            )
        return prompt

    def add_prompt(self, battle: Battle, prompt: str) -> None:
        """Start a new exchange; both sides will answer the same prompt."""
        with self.lock:
            if battle.exchanges and battle.status is not Status.READY:
                raise RuleViolation(status_message(battle.status))
            if len(battle.exchanges) >= self.limits.max_turns:
                raise RuleViolation(
                    f"This battle reached its limit of {self.limits.max_turns} turns. Please vote, then start a new round."
                )
            battle.exchanges.append(Exchange(prompt))
            battle.status = Status.GENERATING

    def restart_last(self, battle: Battle) -> None:
        """Regenerate: both answers of the last exchange are thrown away and asked again."""
        with self.lock:
            if battle.status is not Status.READY or not battle.exchanges:
                raise RuleViolation(status_message(battle.status) if battle.exchanges else NOTHING_TO_REGENERATE)
            last = battle.exchanges[-1]
            last.replaced.extend(last.answers[side] for side in SIDES)
            last.answers = {"a": "", "b": ""}
            battle.attempt += 1
            battle.status = Status.GENERATING

    def abandon(self, battle: Battle) -> Leaving:
        """Close an unvoted battle for good, decided under the lock (the stream may be settling it).

        A battle still answering cannot be closed under its stream: it is told
        to stop, and `finish` ends it as abandoned.
        """
        with self.lock:
            return self._leave(battle)

    @staticmethod
    def _leave(battle: Battle) -> Leaving:
        """The one rule for leaving a battle unvoted; the caller holds the lock."""
        if battle.status is Status.GENERATING:
            battle.left_while_answering.set()  # its stream stops and stores it as abandoned
            return Leaving.STOPPING
        if battle.status is not Status.READY:
            return Leaving.NOTHING
        battle.status = Status.ABANDONED
        return Leaving.ENDED

    def closing_status(self, battle: Battle, *, failed: bool, model_failed: bool) -> Status:
        """How a turn that stopped streaming ends: votable, failed, or abandoned if the volunteer left.

        A model that failed is recorded as failed even if the volunteer then left: its error matters.
        """
        if model_failed:
            return Status.FAILED
        if battle.left_while_answering.is_set():
            return Status.ABANDONED
        return Status.FAILED if failed else Status.READY

    def finish(self, battle: Battle, status: Status) -> Status:
        """Settle a turn once it is stored; a volunteer who left meanwhile still leaves it abandoned."""
        with self.lock:
            if status is Status.READY and battle.left_while_answering.is_set():
                status = Status.ABANDONED
            battle.status = status
            return status

    def claim_vote(self, battle: Battle, outcome: str) -> None:
        """Reserve the battle's one vote; a second, concurrent request is refused here."""
        if outcome not in WINNERS:
            raise RuleViolation(f"Unknown vote {outcome!r}.")
        with self.lock:
            if battle.status is not Status.READY:
                raise RuleViolation(status_message(battle.status))
            battle.status = Status.VOTING

    def settle_vote(self, battle: Battle, outcome: str | None) -> None:
        """Finish a claimed vote: recorded (outcome) or not (None, it can be cast again)."""
        with self.lock:
            battle.status = Status.VOTED if outcome else Status.READY
            battle.outcome = outcome

    def forget_old(self) -> list[str]:
        """Drop battles started over KEEP_S ago, leaving those still open; returns the ids of those this
        ended (answered, unvoted: now abandoned, for the store to record)."""
        cutoff = self.clock() - self.KEEP_S
        with self.lock:
            old = [battle for battle in self.battles.values() if battle.started < cutoff]
            for battle in old:
                del self.battles[battle.id]
            return [battle.id for battle in old if self._leave(battle) is Leaving.ENDED]


def status_message(status: Status) -> str:
    """What the volunteer is told when a request does not fit the battle's state."""
    return {
        Status.GENERATING: "Please wait until both answers are complete.",
        Status.VOTING: "Your vote is being recorded.",
        Status.VOTED: f"You already voted in this battle. {NEW_ROUND}",
        Status.FAILED: f"This battle failed and cannot be voted on. {NEW_ROUND}",
        Status.READY: "Both answers are ready.",
        Status.ABANDONED: f"You left this battle without voting. {NEW_ROUND}",
    }[status]
