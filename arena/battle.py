"""Battles and the rules of voting, independent of any UI.

Every rule is enforced here, on the server, against the battle the server
holds: a client only ever has an opaque battle id, so disabled buttons are a
convenience, not a defence.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import secrets
import threading
import time
import unicodedata
from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from arena.battle_files import WINNERS  # the labels of FastChat's clean-battle records
from arena.config import Limits
from arena.text import as_read, lone_surrogates_replaced
from arena.wording import NEW_ROUND, counted

SIDES = ("a", "b")


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

    @property
    def model_a(self) -> str:
        return self.models["a"]

    @property
    def model_b(self) -> str:
        return self.models["b"]

    def transcript(self, side: str) -> list[dict[str, str]]:
        """Every prompt and this side's answer to it (empty while it is being written)."""
        messages = []
        for exchange in self.exchanges:
            messages.append({"role": "user", "content": exchange.prompt})
            messages.append({"role": "assistant", "content": exchange.answers[side]})
        return messages

    def conversation(self, side: str) -> list[dict[str, str]]:
        """The chat to send to one side: its own answers only, ending with the newest prompt."""
        return [m for m in self.transcript(side) if m["role"] == "user" or m["content"]]

    def shown_texts(self) -> list[str]:
        """Every answer the volunteer has been shown, regenerated ones included: a name seen once was seen."""
        return [
            text
            for exchange in self.exchanges
            for text in [*exchange.replaced, *(exchange.answers[side] for side in SIDES)]
        ]


def identity_leak(texts: list[str], terms: list[str]) -> str | None:
    """The first model name or family word found in the answers, if any.

    Texts are compared as read (`text.as_read`: markup, accents, look-alike letters, full-width forms
    and invisible characters do not hide a name). A term is split where it has separators or changes
    case ("SmolLM" is "Smol" + "LM", "Hugging Face" two words); it matches with any separators or none
    there ("Smol LM", "smol-lm", "HuggingFace"), or spelled out letter by letter ("S-m-o-l-L-M"), never
    run together from other words ("let me take" is not "Meta"). It must start a word and not run on
    into more letters ("metadata" is not "Meta"); digits may follow, so "SmolLM" catches "SmolLM2".
    """
    readable = [as_read(text) for text in texts]
    for term in sorted(set(terms), key=len, reverse=True):
        if any(pattern.search(text) for pattern in _term_patterns(term) for text in readable):
            return term
    return None


_TERM_PARTS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+|[^\W\d_]+")  # "SmolLM2" -> Smol, LM, 2


@functools.lru_cache(maxsize=1024)  # the same few terms at every vote
def _term_patterns(term: str) -> tuple[re.Pattern, re.Pattern]:
    parts = [as_read(part) for part in _TERM_PARTS.findall(unicodedata.normalize("NFKC", term))]
    start, end = r"(?<![0-9a-z])", r"(?![a-z])"
    as_written = start + r"[\W_]*".join(map(re.escape, parts)) + end
    spelled_out = start + r"[\W_]{1,5}".join(map(re.escape, "".join(parts))) + end
    return re.compile(as_written), re.compile(spelled_out)


def client_network(host: str) -> str:
    """Who a connection counts as, for limits and for owning battles.

    An IPv4 address written as IPv6 (`::ffff:203.0.113.7`) is that IPv4 address,
    and an IPv6 address stands for its /64: one subscriber gets a whole /64,
    so counting single addresses would give one person countless limits.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host  # not an address (a test client, "unknown"): taken as it is
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


# An IPv6 subscriber often holds a /56 (256 /64s) or a /48 (65,536): limits that would let one /64 do
# little must also hold for those, at these multiples of the /64's allowance.
WIDER_IPV6_NETWORKS = ((56, 4), (48, 16))


def wider_networks(network: str) -> list[tuple[str, int]]:
    """(network, multiple of the /64's allowance) for the /56 and /48 around an IPv6 /64; none for IPv4."""
    try:
        inside = ipaddress.ip_network(network)
    except ValueError:
        return []
    if inside.version != 6:
        return []
    return [(str(inside.supernet(new_prefix=prefix)), multiple) for prefix, multiple in WIDER_IPV6_NETWORKS]


class RateLimited(RuleViolation):
    """Over an hourly limit: `network` is the wider one that is full (None: the client's own), at `allowed`."""

    def __init__(self, message: str, *, network: str | None, allowed: int):
        super().__init__(message)
        self.network, self.allowed = network, allowed

    @staticmethod
    def whose(network: str | None) -> str:
        """Whose limit is full, for the refusal: the client's own network, or a wider one it belongs to."""
        return f"the network your address belongs to ({network})" if network else "your network address"


@dataclass(frozen=True)
class Charge:
    """One count made by `RateLimiter.check_and_count`: where it was made, and which entry it is."""

    levels: tuple[str, ...]
    entry: tuple[float, int, int]  # (when, how much, serial): the serial tells equal counts apart


class RateLimiter:
    """Sliding one-hour window of what a client network used (battles, regenerations, sessions, tokens).

    An IPv6 /64 also counts against the /56 and /48 around it, which allow a multiple of its share
    (`WIDER_IPV6_NETWORKS`): one subscriber holding 256 /64s must not get 256 allowances. `unit` and
    `what_counts` word the refusal ("battle", "regenerations included").
    """

    WINDOW_S = 3600.0

    def __init__(self, per_hour: int, clock=time.monotonic, *, unit: str = "battle",
                 what_counts: str = "regenerations included"):
        self.per_hour = per_hour
        self.clock = clock
        self.unit, self.what_counts = unit, what_counts
        self.starts: dict[str, deque[tuple[float, int, int]]] = {}  # (when, how much, serial) per network
        self.lock = threading.Lock()
        self._next_sweep = clock() + self.WINDOW_S
        self._serial = 0

    def check_and_count(self, key: str, amount: int = 1) -> Charge:
        with self.lock:
            now = self.clock()
            if now >= self._next_sweep:  # once a window: forget addresses not seen in it (each costs memory)
                self.starts = {k: v for k, v in self.starts.items() if v and v[-1][0] > now - self.WINDOW_S}
                self._next_sweep = now + self.WINDOW_S
            levels = [(key, self.per_hour), *((wider, self.per_hour * multiple) for wider, multiple in wider_networks(key))]
            for level, allowed in levels:
                self._check(level, allowed, amount, now, shared=level != key)
            self._serial += 1
            charge = Charge(tuple(level for level, _ in levels), (now, amount, self._serial))
            for level in charge.levels:
                self.starts[level].append(charge.entry)
            return charge

    def refund(self, charge: Charge) -> None:
        """Take back one count, the request it was for being refused after all: that count only, at every
        level, for on a shared /56 or /48 the newest count may be a neighbour's."""
        with self.lock:
            for level in charge.levels:
                entries = self.starts.get(level)
                if entries and charge.entry in entries:
                    entries.remove(charge.entry)

    def _check(self, key: str, allowed: int, amount: int, now: float, shared: bool) -> None:
        starts = self.starts.setdefault(key, deque())
        while starts and starts[0][0] <= now - self.WINDOW_S:
            starts.popleft()
        used = sum(spent for _, spent, _ in starts)
        if used and used + amount > allowed:  # alone, one request may use a whole hour's allowance
            wait_min = max(1, int((starts[0][0] + self.WINDOW_S - now) / 60) + 1)
            network = key if shared else None
            whose = RateLimited.whose(network)
            raise RateLimited(
                f"{whose[0].upper()}{whose[1:]} reached the limit here: {counted(allowed, self.unit)} an hour, "
                f"{self.what_counts}. Please come back in about {counted(wait_min, 'minute')}.",
                network=network, allowed=allowed,
            )


class FailureStreaks:
    """Models failing battle after battle (a remote endpoint that went down) rest from anonymous draws.

    Each of their battles would fail and waste a volunteer's prompt. After `STREAK` failures in a row a
    model rests `REST_S`, twice as long each time it fails again on return (up to `MAX_REST_S`); one
    answer it completes ends the streak.
    """

    STREAK = 3
    REST_S = 60.0
    MAX_REST_S = 600.0

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.lock = threading.Lock()
        self.failures: dict[str, int] = {}
        self.resting_until: dict[str, float] = {}

    def record(self, model: str, failed: bool) -> tuple[int, float | None]:
        """Count one answer of `model` (anonymous battles only: side by side, a volunteer picks, and could
        keep a model resting). Returns its streak of failures, and the seconds it now rests, if it does."""
        with self.lock:
            if not failed:
                self.failures.pop(model, None)
                return 0, None
            streak = self.failures[model] = self.failures.get(model, 0) + 1
            if streak < self.STREAK:
                return streak, None
            rest = min(self.MAX_REST_S, self.REST_S * 2 ** (streak - self.STREAK))
            self.resting_until[model] = self.clock() + rest
            return streak, rest

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
                raise RuleViolation(status_message(battle.status) if battle.exchanges else "Nothing to regenerate yet.")
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
            if battle.status is Status.GENERATING:
                battle.left_while_answering.set()
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
        """Drop battles started over KEEP_S ago; returns the ids of those left unvoted, now abandoned."""
        cutoff = self.clock() - self.KEEP_S
        with self.lock:
            old = [battle for battle in self.battles.values() if battle.started < cutoff]
            for battle in old:
                del self.battles[battle.id]
                if battle.status is Status.READY:
                    battle.status = Status.ABANDONED
                elif battle.status is Status.GENERATING:
                    battle.left_while_answering.set()  # its stream stops and stores it as abandoned
        return [battle.id for battle in old if battle.status is Status.ABANDONED]


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
