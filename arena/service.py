"""The arena as the UI sees it: start, continue, regenerate and vote on battles.

This is the one place that joins the pieces (roster, battle rules, sampler,
storage, ratings); the Gradio layer only calls these methods and renders
what they return, so every rule holds whatever client sends the request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field

import numpy as np

from arena import ratings
from arena.backends import cause_text
from arena.battle import (NOTHING_TO_REGENERATE, SIDES, Battle, BattleBook, FailureStreaks, Leaving, Mode, RuleViolation,
                          Status, status_message)
from arena.config import ArenaConfig
from arena.duel import DuelFrame, SideResult, frame_interval, run_duel
from arena.identity import identity_leak
from arena.leaderboard import Leaderboard, compute_leaderboard
from arena.limits import RateLimiter
from arena.roster import Roster
from arena.sampling import make_sampler
from arena.storage import ArenaStore, DuplicateVote

log = logging.getLogger("arena")

SAME_MODEL_TWICE = "Pick two different models."
# An answer held back this long for the other to start is a slow or stalled model, not the usual step or two.
SLOW_START_NOTICE_S = 5.0
# What the server asks a model that answered several volunteers in a row with nothing (`_probe_silence`).
SILENCE_PROBE = "Hello! Please introduce yourself in one short sentence."


@dataclass
class BattleView:
    """What the page may show: answers and status, never model names before the vote."""

    battle_id: str | None
    conversations: dict[str, list[dict[str, str]]] = field(default_factory=lambda: {"a": [], "b": []})
    votable: bool = False
    generating: bool = False
    failed: bool = False  # ended unvoted: by `failed_sides`, or by the server when that is empty
    failed_sides: tuple[str, ...] = ()
    cut_sides: tuple[str, ...] = ()  # answers that reached their length limit
    names: dict[str, str] | None = None  # only in named mode, or once the vote is in
    left: bool = False  # the volunteer left while it answered: the page starts afresh
    # Anonymous: one answer has waited a while for the other to start (both show together), which the
    # volunteer is told, so that blank panels do not look like a hung page. Neither side is named.
    waiting_for_a_start: bool = False
    unanswered_prompt: str | None = None  # the battle ended on it (a model failed, New round): offered again


@dataclass(frozen=True)
class VoteReceipt:
    model_a: str
    model_b: str
    outcome: str
    flagged_term: str | None  # the word in an answer that named a model: the vote is not counted


@dataclass(frozen=True)
class _CachedBoard:
    board: Leaderboard
    votes: int  # the vote count it was computed from
    bootstrap_rounds: int
    computed: float  # time.monotonic()
    computed_at: float  # time.time(), for people


# Bytes of UTF-8 per token, to guess what a model only its server can count will read: about 4 in English for
# common tokenizers, 3 in CJK (a character each); the smaller makes the guess err on the side of the budget.
_BYTES_PER_GUESSED_TOKEN = 3


def _guessed_tokens(turns: list[dict]) -> int:
    return -(-sum(len(turn["content"].encode("utf-8", "replace")) for turn in turns) // _BYTES_PER_GUESSED_TOKEN)


class ArenaService:
    def __init__(self, config: ArenaConfig, roster: Roster, store: ArenaStore, *, seed: int | None = None):
        self.config = config
        self.roster = roster
        self.store = store
        self.book = BattleBook(config.settings.limits)
        self.limiter = RateLimiter(config.settings.limits.battles_per_hour)
        self.prompt_tokens = RateLimiter(config.settings.limits.prompt_tokens_per_hour, unit="prompt token",
                                         what_counts="each prompt with the conversation before it")
        self.streaks = FailureStreaks()
        self.rng = np.random.default_rng(seed)
        self.sampler = None
        self.sampler_lock = threading.Lock()
        self.identity_terms = sorted({t for m in config.models for t in m.identity_terms})
        self._leaderboard_cache: _CachedBoard | None = None
        self._generating = 0  # battles generating right now: sets how often each one updates the page
        self._generating_lock = threading.Lock()
        self._leaderboard_lock = threading.Lock()
        self._stopping = threading.Event()
        self._probing: set[str] = set()  # models being asked the server's own prompt (`_probe_silence`)

    def stop(self) -> None:
        """Store no more turns: the server is stopping and cuts off the answers still coming.

        A turn ending now stays unstored, its battle marked as answering, for the next start to record that
        the server stopped while the models were answering (not that the volunteer left); and no turn is
        written by a thread the stop does not wait for, which could find the store closed.
        """
        self._stopping.set()

    # --- status -----------------------------------------------------------

    @property
    def battles_generating(self) -> int:
        return self._generating

    @property
    def ready(self) -> bool:
        return self.roster.ready.is_set()

    def anonymous_answer_tokens(self) -> int | None:
        """Where every anonymous answer stops: the smallest max_new_tokens of the models served.

        One length for all, as a cut answer's token count would otherwise tell which model wrote it, and
        a cut shared by the pair which pair is playing. None before any model has loaded.
        """
        return min((c.entry.generation.max_new_tokens for c in self.roster.contestants.values()), default=None)

    def loading_message(self) -> str:
        if self.ready:
            return ""
        return (f"The arena is starting: its models are still loading ({self.roster.loading_stage}). You can send "
                "a prompt as soon as they are ready.")

    def model_names(self) -> list[str]:
        """The models that can battle, in the roster's order (sorted) whether or not they have loaded: the
        page is built before they load, and a list that reordered itself would drop a pick being made."""
        return self.roster.names if self.ready else sorted(m.name for m in self.config.enabled_models)

    # --- battles ----------------------------------------------------------

    def ask(self, battle_id: str | None, prompt: str, address: str, mode: Mode,
            chosen: tuple[str, str] | None = None) -> Iterator[BattleView]:
        """Send a prompt: the next turn of an open battle, or the first of a new one."""
        client_id = self.store.client_id(address)
        prompt = self.book.check_prompt(prompt)
        if not self.ready:
            # No count here: the banner above keeps counting, a refusal would stay as it was said.
            raise RuleViolation("The models are still loading: you can send your prompt once the banner above "
                                "is gone.")
        battle = self._continuing_battle(battle_id, client_id, mode, chosen)
        tokens = self._check_length(prompt, battle, chosen)
        charge = self.prompt_tokens.check_and_count(address, tokens)
        try:
            if battle is None:
                battle = self._new_battle(client_id, address, mode, chosen)
            self.book.add_prompt(battle, prompt)
        except RuleViolation:
            self.prompt_tokens.refund(charge)  # refused requests cost nothing
            raise
        return self._generate(battle)

    def regenerate(self, battle_id: str | None, address: str) -> Iterator[BattleView]:
        battle = self.book.get(battle_id, self.store.client_id(address))
        if not battle.exchanges:
            raise RuleViolation(NOTHING_TO_REGENERATE)
        # Each regeneration runs both models in full: it counts like a new battle, and the models read the
        # conversation again, so it costs its tokens again; or one battle could regenerate without end past
        # both hourly limits. Counted first, so a burst cannot overshoot.
        tokens = self._check_length(battle.exchanges[-1].prompt, battle, None, again=True)
        charges = [(self.limiter, self.limiter.check_and_count(address))]
        try:
            charges.append((self.prompt_tokens, self.prompt_tokens.check_and_count(address, tokens)))
            self.book.restart_last(battle)
        except RuleViolation:
            for limiter, charge in charges:
                limiter.refund(charge)  # refused requests cost nothing
            raise
        return self._generate(battle)

    def abandon(self, battle_id: str | None, address: str) -> Leaving:
        """The volunteer moved on without voting (New round, another pair): the record says so."""
        try:
            battle = self.book.get(battle_id, self.store.client_id(address))
        except RuleViolation:
            return Leaving.NOTHING  # nothing of theirs to close
        return self._abandon(battle)

    def page_closed(self, battle_id: str | None) -> None:
        """The page that held this battle is gone for good (Gradio calls this, never a client)."""
        battle = self.book.find(battle_id)
        if battle is not None:
            self._abandon(battle)

    def _abandon(self, battle: Battle) -> Leaving:
        leaving = self.book.abandon(battle)
        if leaving is Leaving.ENDED:
            self.store.mark_abandoned(battle.id)
        return leaving

    def _continuing_battle(self, battle_id, client_id, mode, chosen) -> Battle | None:
        """The open battle a prompt follows up, or None when it starts a new one."""
        if not battle_id:
            return None
        try:
            battle = self.book.get(battle_id, client_id)
        except RuleViolation:
            return None
        same_pair = chosen is None or (battle.model_a, battle.model_b) == chosen
        if battle.mode is mode and battle.outcome is None and battle.status not in (Status.FAILED, Status.ABANDONED) \
                and same_pair:
            return battle
        return None

    def _new_battle(self, client_id, address, mode, chosen) -> Battle:
        if mode is Mode.NAMED:
            self._check_chosen_pair(chosen)
        self.limiter.check_and_count(address)  # only a battle that will start counts against the limit
        for stale_id in self.book.forget_old():  # a page left open for hours: its battle ends unvoted
            self.store.mark_abandoned(stale_id)
        model_a, model_b = chosen if mode is Mode.NAMED else self._draw_pair()
        battle = self.book.open(mode, client_id, model_a, model_b)
        self.store.record_battle_start(battle.id, mode.value, model_a, model_b, client_id, battle.started)
        return battle

    def _check_length(self, prompt: str, battle: Battle | None, chosen: tuple[str, str] | None,
                      again: bool = False) -> int:
        """Refuse, before anything starts, a conversation too long for the limit or for a model's context;
        returns its length in tokens. `again`: `prompt` is the battle's last, to be answered again.

        Anonymous battles are held to the smallest allowance of all served models, whichever pair is
        playing, and refused without numbers: neither whether nor how a refusal comes may tell which
        models (or sides) are in the battle. So an anonymous conversation is counted by every served
        model's tokenizer, on each side's history (text the volunteer has seen), and the densest count
        decides: the verdict depends on that text alone, whichever pair plays. Side by side, each model is held to its
        own allowance, on its own history.
        """
        anonymous = chosen is None if battle is None else battle.mode is Mode.ANONYMOUS
        histories = [battle.conversation(side, before_last=again) for side in SIDES] if battle is not None else [[]]
        if anonymous:
            readers = [(contestant, history) for contestant in self.roster.contestants.values() for history in histories]
        elif battle is not None:
            readers = [(self.roster.contestants[battle.models[side]], history) for side, history in zip(SIDES, histories)]
        else:
            readers = [(self.roster.contestants[name], []) for name in chosen if name in self.roster.contestants]
        cap = self.anonymous_answer_tokens()
        common = min(self._allowed_tokens(c, cap) for c in self.roster.contestants.values()) if anonymous else None
        longest, refused, guessed = 0, False, 0
        for contestant, history in readers:
            turns = [*history, {"role": "user", "content": prompt}]
            tokens = self._prompt_tokens(contestant, turns)
            if tokens is None:  # only its server knows: it refuses what it cannot read, and that side fails
                guessed = max(guessed, _guessed_tokens(turns))
                continue
            longest = max(longest, tokens)
            refused |= tokens > (common if anonymous else
                                 self._allowed_tokens(contestant, contestant.entry.generation.max_new_tokens))
        if not refused:
            # What the models will read, by the longest count; for a model only its server can count (a remote
            # one, perhaps paid for by the token), a guess, so that the hourly budget holds for it too.
            return max(longest, guessed)
        what, advice = (("This conversation is", "Vote, or start a new round.") if battle else
                        ("This prompt is", "Please shorten it (some scripts and symbols count for many characters)."))
        numbers = "" if anonymous else f": about {longest:,} tokens, more than these models read here"
        raise RuleViolation(f"{what} too long for the models here{numbers}. {advice}")

    def _allowed_tokens(self, contestant, answer_tokens: int) -> int:
        """The most conversation tokens `contestant` may read: the limit, less room in its context for an answer
        of `answer_tokens` (an anonymous one stops at the common cap, so it needs no room for its own longer one)."""
        limit = self.config.settings.limits.max_conversation_tokens
        context = contestant.backend.context_length()
        return limit if context is None else min(limit, context - answer_tokens)

    @staticmethod
    def _prompt_tokens(contestant, turns) -> int | None:
        try:
            return contestant.prompt_tokens(turns)
        except Exception:  # a model's own template failing: its side fails in the battle, as it always did
            log.exception("%s: could not count the conversation's tokens", contestant.name)
            return None

    def _check_chosen_pair(self, chosen: tuple[str, str] | None) -> None:
        if not chosen or chosen[0] == chosen[1]:
            raise RuleViolation(SAME_MODEL_TWICE)
        unavailable = [name for name in chosen if name not in self.roster.names]
        if unavailable:
            raise RuleViolation(f"{unavailable[0]} is not available here now; pick another model.")

    def _draw_pair(self) -> tuple[str, str]:
        with self.sampler_lock:
            if self.sampler is None:
                history = self._counted(self.store.vote_records())
                weights = {c.name: c.entry.weight for c in self.roster.contestants.values()}
                self.sampler = make_sampler(self.config.settings.sampling, self.roster.names, weights, history)
        return self.sampler.draw(self.rng, excluded=self.streaks.resting())

    def _counted(self, records: list[dict]) -> list[dict]:
        """The votes the leaderboard counts: the sampler learns from these, and from no others."""
        return ratings.select_votes(records, include_named=self.config.settings.count_named_votes)

    def _generate(self, battle: Battle) -> Iterator[BattleView]:
        contestants = {side: self.roster.contestants[battle.models[side]] for side in SIDES}
        cap = self.anonymous_answer_tokens() if battle.mode is Mode.ANONYMOUS else None
        together = (battle.id, len(battle.exchanges), battle.attempt)  # this turn's two answers start together
        streams = {
            side: (lambda cancel, side=side: contestants[side].stream(battle.conversation(side), cancel, cap, group=together))
            for side in SIDES
        }
        exchange = battle.exchanges[-1]
        # Marks for the failure streaks: what happens to this turn is measured against rests begun before it.
        battle.rests_at_turn_start = {name: self.streaks.rests_begun(name) for name in battle.models.values()}
        if len(battle.exchanges) > 1 or battle.attempt > 1:  # the first turn's row says so from the start
            try:  # so that after a restart the row tells a lost turn from a battle left before its vote
                self.store.mark_answering(battle.id)
            except Exception:  # a note for researchers: not worth failing the turn; storing the turn will say
                log.exception("battle %s: could not mark it answering", battle.id)
        frame = DuelFrame()
        closed_by_page = False
        with self._generating_lock:
            self._generating += 1
            interval = frame_interval(self._generating)
        try:
            with closing(run_duel(streams, stall_timeout_s=self.config.settings.generation_timeout_s,
                                  frame_interval_s=interval, align_starts=battle.mode is Mode.ANONYMOUS)) as frames:
                for frame in frames:
                    for side in SIDES:
                        exchange.answers[side] = frame.shown_text(side)
                    if battle.left_while_answering.is_set():
                        break  # closing the duel cancels both sides
                    if not frame.settled:  # the last frame is shown once the turn is settled (failed or votable)
                        yield self._view(battle, generating=True, waiting=frame.held_back_s >= SLOW_START_NOTICE_S)
        except GeneratorExit:  # the page stopped listening (closed, reloaded): the volunteer left, no model failed
            battle.left_while_answering.set()
            closed_by_page = True
            raise
        finally:
            # Runs even when the volunteer goes away mid-stream (the generator is closed).
            with self._generating_lock:
                self._generating -= 1
            if closed_by_page:  # Gradio closes streams on its event loop: a database write there stalls every page
                threading.Thread(target=self._finish_turn, args=(battle, frame), name="finish-turn", daemon=True).start()
            else:
                self._finish_turn(battle, frame)
        if battle.left_while_answering.is_set():
            # The stream is the panel's one writer while it runs, so it is what clears the panel: a reset
            # sent by New round itself could arrive before this stream's last frame and be overwritten.
            yield BattleView(battle_id=None, left=True, unanswered_prompt=battle.exchanges[-1].prompt)
        else:
            yield self._view(battle)

    def _finish_turn(self, battle: Battle, frame: DuelFrame) -> None:
        if self._stopping.is_set():
            return
        failed = bool(frame.failed_sides) or not frame.done or not frame.sides  # no frame at all: the duel never ran
        status = self.book.closing_status(battle, failed=failed, model_failed=bool(frame.failed_sides))
        failure = self._turn_failure(battle, frame, status, failed)
        battle.failed_sides = frame.failed_sides
        battle.cut_sides = [side for side in SIDES if side in frame.sides and frame.sides[side].cut]
        if battle.mode is Mode.ANONYMOUS:  # side by side, the volunteer chose the models
            self._count_answers(battle, frame)
        # Stored before it becomes votable in memory: a vote must never be kept for a turn that is not.
        try:
            self.store.record_turn(battle.id, len(battle.exchanges), battle.attempt, _stored_messages(battle, frame),
                                   status.value, failure)
        except Exception:
            log.exception("battle %s: its turn could not be stored; the battle ends unvoted", battle.id)
            status = Status.FAILED
        if self.book.finish(battle, status) is Status.ABANDONED and status is Status.READY:
            self.store.mark_abandoned(battle.id)  # left in the moment between storing and settling

    @staticmethod
    def _turn_failure(battle: Battle, frame: DuelFrame, status: Status, failed: bool) -> str | None:
        """What the battles table says of a turn that did not end votable: who left, or what failed."""
        if status is Status.ABANDONED:
            unfinished = [battle.models[s] for s in SIDES if not frame.sides.get(s, SideResult()).done]
            return "left by the volunteer while answering" + (f" (still answering: {', '.join(unfinished)})" if unfinished else "")
        if not failed:
            return None
        failure = "; ".join([f"{battle.models[s]}: {frame.sides[s].error}" for s in frame.failed_sides] or ["interrupted"])
        log.warning("battle %s failed: %s", battle.id, failure)
        return failure

    def _count_answers(self, battle: Battle, frame: DuelFrame) -> None:
        """Each side's answer, for the failure streaks that rest a model failing everyone."""
        for side in SIDES:
            result = frame.sides.get(side, SideResult())
            model = battle.models[side]
            mark = battle.rests_at_turn_start.get(model)
            if result.empty:  # a prompt can silence a greedy model at will: the server asks one of its own
                if self.streaks.record_empty(model, battle.client_id, mark):
                    self._probe_silence(model)
            elif side in frame.failed_sides:
                self._count_failure(model, mark)
            elif result.completed:  # not one merely stopped
                self.streaks.record(model, False)

    def _count_failure(self, model: str, rests_at_start: int | None) -> None:
        streak, rest = self.streaks.record(model, True, rests_at_start)
        if rest:
            log.warning("%s failed %d times in a row: left out of anonymous battles for %.0f s", model, streak, rest)

    def _probe_silence(self, model: str) -> None:
        """Ask `model` the server's own prompt, in the background, once at a time.

        It answered several volunteers in a row with nothing: an endpoint that answers everyone so, or
        prompts chosen to silence it (by one person holding several addresses). Only nothing to a prompt
        nobody chose rests it.
        """
        with self._generating_lock:
            if model in self._probing or self._stopping.is_set():
                return
            self._probing.add(model)
        rests_at_start = self.streaks.rests_begun(model)
        threading.Thread(target=self._run_silence_probe, args=(model, rests_at_start), name="silence-probe",
                         daemon=True).start()

    def _run_silence_probe(self, model: str, rests_at_start: int) -> None:
        """The probe's answer is read up to its first word, within the battles' stall timeout and length cap
        (a model that thinks before it writes needs the same room as in a battle)."""
        timeout_s = self.config.settings.generation_timeout_s
        cancel = threading.Event()
        deadline = threading.Timer(timeout_s, cancel.set)
        deadline.daemon = True
        deadline.start()
        said, failure = "", None
        try:
            with closing(self.roster.contestants[model].stream(
                    [{"role": "user", "content": SILENCE_PROBE}], cancel, self.anonymous_answer_tokens())) as pieces:
                for piece in pieces:
                    said += piece.text
                    if said.strip():
                        break
            if cancel.is_set() and not said.strip():
                failure = f"no answer within {timeout_s:.0f} s"
        except Exception as error:  # any failure of the model's own code counts as a failure, not as silence
            failure = cause_text(error)
        finally:
            deadline.cancel()
            cancel.set()  # a backend still holding the answer lets it go
            with self._generating_lock:
                self._probing.discard(model)
        if self._stopping.is_set():
            return
        if said.strip():
            self.streaks.record(model, False)
        elif failure:
            log.warning("%s: the server's own prompt (asked after empty answers) failed: %s", model, failure)
            self._count_failure(model, rests_at_start)
        else:
            _, rest = self.streaks.record_silence(model, rests_at_start)
            if rest:
                log.warning("%s answered %d volunteers in a row and the server's own prompt with nothing: left out "
                            "of anonymous battles for %.0f s", model, FailureStreaks.STREAK, rest)

    def _view(self, battle: Battle, generating: bool = False, waiting: bool = False) -> BattleView:
        named = battle.mode is Mode.NAMED or battle.outcome is not None
        return BattleView(
            battle_id=battle.id,
            conversations={side: battle.transcript(side) for side in SIDES},
            votable=not generating and battle.status is Status.READY,
            generating=generating,
            failed=battle.status is Status.FAILED,
            failed_sides=tuple(battle.failed_sides),
            cut_sides=tuple(battle.cut_sides),
            names=dict(battle.models) if named else None,
            waiting_for_a_start=waiting,
            unanswered_prompt=battle.exchanges[-1].prompt if battle.status is Status.FAILED else None,
        )

    # --- votes ------------------------------------------------------------

    def vote(self, battle_id: str | None, address: str, outcome: str) -> VoteReceipt:
        """Record a vote; returns only after it is committed, so an acknowledgement is never lost."""
        client_id = self.store.client_id(address)
        battle = self.book.get(battle_id, client_id)
        self.book.claim_vote(battle, outcome)
        leaked = identity_leak(battle.shown_texts(), self.identity_terms)
        flag_reason = f"answer names '{leaked}'" if leaked else None
        try:
            self.store.record_vote(battle.id, outcome, client_id, flag_reason)
        except DuplicateVote:
            self.book.settle_vote(battle, outcome)
            raise RuleViolation(status_message(Status.VOTED)) from None
        except BaseException:
            self.book.settle_vote(battle, None)
            raise
        self.book.settle_vote(battle, outcome)
        # For the operator's log only (never sent to a page): what the arena is doing, vote by vote.
        log.info("vote (%s, turn %d): %s vs %s -> %s%s", battle.mode.value, len(battle.exchanges), battle.model_a,
                 battle.model_b, outcome, f", flagged: {flag_reason}" if flag_reason else "")
        record = {"model_a": battle.model_a, "model_b": battle.model_b, "winner": outcome,
                  "anony": battle.mode is Mode.ANONYMOUS, "flagged": bool(leaked)}
        if self._counted([record]):
            with self.sampler_lock:
                if self.sampler is not None:
                    self.sampler.observe(battle.model_a, battle.model_b, outcome)
        return VoteReceipt(battle.model_a, battle.model_b, outcome, leaked)

    def revealed_view(self, battle_id: str, address: str) -> BattleView:
        return self._view(self.book.get(battle_id, self.store.client_id(address)))

    # --- leaderboard ------------------------------------------------------

    def leaderboard(self, bootstrap_rounds: int = 200) -> Leaderboard:
        """The current ranking, recomputed when votes were added, at most once per `leaderboard_interval_s`.

        Every page load and every vote asks for it; without the interval a
        crowd voting at once would spend the CPU refitting and re-plotting
        instead of generating. A board misses at most the votes of the last
        interval.
        """
        with self._leaderboard_lock:
            votes = self.store.counts(("votes",))["votes"]
            cached = self._leaderboard_cache
            if cached and cached.bootstrap_rounds == bootstrap_rounds and (
                    cached.votes == votes
                    or time.monotonic() - cached.computed < self.config.settings.leaderboard_interval_s):
                return cached.board
            board = compute_leaderboard(
                self.store.vote_records(), bootstrap_rounds=bootstrap_rounds, seed=0,
                include_named=self.config.settings.count_named_votes,
            )
            self._leaderboard_cache = _CachedBoard(board, votes, bootstrap_rounds, time.monotonic(), time.time())
            return board

    def leaderboard_computed_at(self, board: Leaderboard) -> float | None:
        """When `board` was computed (Unix time), if it is the current one: the page says how fresh it is."""
        cached = self._leaderboard_cache
        return cached.computed_at if cached is not None and cached.board is board else None


def _stored_messages(battle: Battle, frame: DuelFrame) -> list[dict]:
    """The turn's rows for the messages table: the prompt, then each answer that began, with its timings."""
    messages = [{"side": "user", "role": "user", "content": battle.exchanges[-1].prompt,
                 "tokens": None, "latency_s": None, "first_token_s": None}]
    for side in SIDES:
        result = frame.sides.get(side)
        if result is not None:
            messages.append({"side": side, "role": "assistant", "content": result.text, "tokens": result.tokens,
                             "latency_s": result.latency_s, "first_token_s": result.first_token_s})
    return messages
