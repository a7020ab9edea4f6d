"""Votes in, ranking out: Bradley-Terry ratings with bootstrap intervals, plus online Elo.

Works on plain vote records (dicts in FastChat's clean-battle shape) with numpy
alone, so a researcher can rerun the ranking on an exported vote file without
the app. Votes are first aggregated into per-pair counts: every later step
costs in proportion to the number of model pairs, not the number of votes.

Ratings are on the Elo scale: a difference of 400 points means 10:1 odds.
Ties, of either kind, count as half a win for each side, as Chatbot Arena does.
The ratings' mean, weighted by each model's number of votes (less for models the ridge rather than the
votes places), is 1000 in each group of compared models: see `_Centring`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from arena.battle_files import WINNERS
from arena.wording import counted

ELO_SCALE = 400.0
ELO_BASE = 10.0
INITIAL_RATING = 1000.0

# Penalty (natural-log units, per model) that keeps strengths finite when the
# data cannot: models that never lost, never won, or were never compared with
# the rest. Small enough to move a rating resting on a dozen votes by about 0.001 points.
DEFAULT_RIDGE = 1e-4

# Score of model_a for each winner label (model_a, model_b, tie, tie (bothbad)); ties of both kinds are half a win.
SCORE_OF_MODEL_A = MappingProxyType(dict(zip(WINNERS, (1.0, 0.0, 0.5, 0.5), strict=True)))

# 95% intervals: the bootstrap percentiles this far in from each end.
_TAIL_PERCENT = 2.5

# Bootstrap rounds are fitted together in chunks: big enough to amortise the
# Python overhead, small enough to keep the rounds x pairs arrays modest and to
# report progress often.
_MAX_CHUNK_ROUNDS = 100
_CHUNK_CELLS = 1_000_000
# Resampled fits stop when no strength moves by more than this (natural-log
# units; 1e-7 is about 2e-5 rating points).
_BOOTSTRAP_TOLERANCE = 1e-7
# Steps with the full-data curvature before a resample falls back to Newton.
_SHARED_STEP_LIMIT = 30

_ProgressCallback = Callable[[int, int], None]


# --- aggregation ------------------------------------------------------------


@dataclass(frozen=True)
class PairCounts:
    """Vote outcomes aggregated per ordered model pair.

    `wins[i, j]` counts decisive wins of `models[i]` over `models[j]`;
    `ties` is symmetric and counts ties of both kinds.
    """

    models: list[str]
    wins: np.ndarray
    ties: np.ndarray

    @property
    def battles(self) -> np.ndarray:
        """Symmetric number of battles between each pair."""
        return self.wins + self.wins.T + self.ties

    @property
    def scores(self) -> np.ndarray:
        """What `fit_bradley_terry` takes: wins with ties as half a win each way."""
        return self.wins + 0.5 * self.ties

    @property
    def votes_per_model(self) -> np.ndarray:
        return self.battles.sum(axis=1)

    @property
    def total_votes(self) -> int:
        return int(self.wins.sum() + self.ties.sum() // 2)

    def subset(self, models: Sequence[str]) -> PairCounts:
        """The counts among `models` only (votes against anyone else are dropped)."""
        index = {name: position for position, name in enumerate(self.models)}
        picked = np.array([index[name] for name in models], dtype=np.intp)
        grid = np.ix_(picked, picked)
        return PairCounts(list(models), self.wins[grid], self.ties[grid])


def outcome_score(winner: str) -> float:
    """Score of model_a for a winner label (1, 0 or 0.5); unknown labels are an error, not a tie."""
    try:
        return SCORE_OF_MODEL_A[winner]
    except (KeyError, TypeError):
        raise ValueError(f"unknown winner {winner!r}; expected one of {', '.join(SCORE_OF_MODEL_A)}") from None


def aggregate(records: Iterable[Mapping], models: Sequence[str] | None = None) -> PairCounts:
    """Count every record given (no filtering: see `select_votes`).

    Models are indexed in `models` order when given, and votes naming any other
    model are skipped; otherwise every model seen is indexed, sorted by name.
    A record pitting a model against itself carries no information and is skipped.
    """
    records = list(records)
    if models is None:
        models = sorted({r["model_a"] for r in records} | {r["model_b"] for r in records})
    models = list(models)
    index = {name: position for position, name in enumerate(models)}
    n = len(models)
    first = np.fromiter((index.get(r["model_a"], -1) for r in records), dtype=np.int64, count=len(records))
    second = np.fromiter((index.get(r["model_b"], -1) for r in records), dtype=np.int64, count=len(records))
    score = np.fromiter((outcome_score(r["winner"]) for r in records), dtype=np.float64, count=len(records))
    usable = (first >= 0) & (second >= 0) & (first != second)
    first, second, score = first[usable], second[usable], score[usable]

    def count(mask: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return np.bincount(rows[mask] * n + cols[mask], minlength=n * n).reshape(n, n)

    wins = count(score == 1.0, first, second) + count(score == 0.0, second, first)
    one_way_ties = count(score == 0.5, first, second)
    return PairCounts(models, wins, one_way_ties + one_way_ties.T)


def select_votes(records: Iterable[Mapping], *, include_named: bool = False) -> list[Mapping]:
    """The votes that count: never flagged ones, and anonymous ones only unless `include_named`.

    A missing `anony` means anonymous and a missing `flagged` means not flagged.
    """
    return [
        r for r in records
        if not r.get("flagged", False) and (include_named or r.get("anony", True))
    ]


# --- online Elo -------------------------------------------------------------


def _replay_order(records: Iterable[Mapping]) -> list[Mapping]:
    """Time order for replaying votes; votes without a timestamp count as older than any with one."""
    return sorted(records, key=lambda r: (r.get("tstamp") is not None, r.get("tstamp") or 0.0))


def online_elo(
    records: Iterable[Mapping],
    *,
    k: float = 4.0,
    scale: float = ELO_SCALE,
    base: float = ELO_BASE,
    initial: float = INITIAL_RATING,
) -> dict[str, float]:
    """Classic sequential Elo over every record given, in time order (see `_replay_order`).

    Kept alongside Bradley-Terry because it is what people expect to see, but it
    depends on vote order and forgets early votes; the ranking uses Bradley-Terry.
    """
    ratings: dict[str, float] = {}
    for record in _replay_order(records):
        a, b = record["model_a"], record["model_b"]
        rating_a, rating_b = ratings.get(a, initial), ratings.get(b, initial)
        expected_a = 1.0 / (1.0 + base ** ((rating_b - rating_a) / scale))
        change = k * (outcome_score(record["winner"]) - expected_a)
        ratings[a] = rating_a + change
        ratings[b] = rating_b - change
    return ratings


# --- Bradley-Terry fit ------------------------------------------------------


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


@dataclass(frozen=True)
class _PairLayout:
    """Which pairs have battles: pair p is `rows[p]` vs `cols[p]` among `n` models."""

    rows: np.ndarray
    cols: np.ndarray
    n: int

    @classmethod
    def of(cls, battles: np.ndarray) -> _PairLayout:
        rows, cols = np.triu_indices(battles.shape[0], k=1)
        played = battles[rows, cols] > 0
        return cls(rows[played], cols[played], battles.shape[0])

    def differences(self, theta: np.ndarray) -> np.ndarray:
        return theta[:, self.rows] - theta[:, self.cols]

    def net_flow(self, per_pair: np.ndarray) -> np.ndarray:
        """Per model: sum over its pairs of `per_pair`, counted + for the row model and - for the column."""
        rounds = per_pair.shape[0]
        offsets = (np.arange(rounds) * self.n)[:, None]
        size = rounds * self.n
        weights = per_pair.ravel()
        into_rows = np.bincount((self.rows + offsets).ravel(), weights, minlength=size)
        into_cols = np.bincount((self.cols + offsets).ravel(), weights, minlength=size)
        return (into_rows - into_cols).reshape(rounds, self.n)

    def information(self, curvature: np.ndarray, ridge: float) -> np.ndarray:
        """Minus the Hessian of the penalised log-likelihood (a weighted graph Laplacian + ridge)."""
        matrix = np.zeros((curvature.shape[0], self.n, self.n))
        matrix[:, self.rows, self.cols] = -curvature
        matrix[:, self.cols, self.rows] = -curvature
        diagonal = np.arange(self.n)
        matrix[:, diagonal, diagonal] = -matrix.sum(axis=2) + ridge
        return matrix


def _fit_log_strengths(
    layout: _PairLayout,
    scores: np.ndarray,
    battles: np.ndarray,
    *,
    ridge: float,
    start: np.ndarray | None = None,
    inverse_information: np.ndarray | None = None,
    tolerance: float = 1e-9,
    max_iterations: int = 200,
) -> np.ndarray:
    """Penalised Bradley-Terry maximum likelihood for many data sets at once.

    Row r of `scores`/`battles` is one data set over `layout`'s pairs: what the
    row model earned and how many battles the pair had. Returns natural-log
    strengths, shape (R, n). Newton's method with step halving: the
    log-likelihood is concave and the ridge makes it strictly so, so this
    converges from any start, quadratically near the optimum.

    Given `inverse_information` of a nearby problem (the full data, for
    bootstrap resamples), steps reuse it instead of solving a fresh system per
    data set: linear convergence, but no batched factorisation (which is what
    dominates, and what multithreaded BLAS handles badly for small matrices).
    Data sets still unconverged after `_SHARED_STEP_LIMIT` steps switch to Newton.
    """
    rounds = scores.shape[0]
    theta = np.zeros((rounds, layout.n)) if start is None else np.array(np.broadcast_to(start, (rounds, layout.n)))
    losses = battles - scores

    def objective(theta_: np.ndarray, sets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        diff = layout.differences(theta_)
        log_p = _log_sigmoid(diff)
        fit = (battles[sets] * log_p - losses[sets] * diff).sum(axis=1)
        return fit - 0.5 * ridge * (theta_**2).sum(axis=1), log_p

    active = np.arange(rounds)
    value, log_p = objective(theta, active)
    for iteration in range(max_iterations):
        if active.size == 0:
            break
        p = np.exp(log_p)
        gradient = layout.net_flow(scores[active] - battles[active] * p) - ridge * theta[active]
        if inverse_information is not None and iteration < _SHARED_STEP_LIMIT:
            step = gradient @ inverse_information
        else:
            information = layout.information(battles[active] * p * (1.0 - p), ridge)
            step = np.linalg.solve(information, gradient[..., None])[..., 0]

        old_value = value[active]
        new_theta = theta[active] + step
        new_value, new_log_p = objective(new_theta, active)
        slack = 1e-12 * (1.0 + np.abs(old_value))
        worse = new_value < old_value - slack
        for _ in range(60):
            if not worse.any():
                break
            step[worse] *= 0.5
            new_theta[worse] = theta[active[worse]] + step[worse]
            retry_value, retry_log_p = objective(new_theta[worse], active[worse])
            new_value[worse], new_log_p[worse] = retry_value, retry_log_p
            worse[worse] = retry_value < old_value[worse] - slack[worse]

        theta[active] = new_theta
        value[active] = new_value
        unconverged = np.abs(step).max(axis=1) >= tolerance
        log_p = new_log_p[unconverged]
        active = active[unconverged]
    return theta


@dataclass(frozen=True)
class _Centring:
    """Which models set the mean rating, and how much: per compared group, its members and their weights.

    Bradley-Terry fixes only differences, so some mean must be chosen. Each group of models compared
    with one another (through chains of battles) is centred on its own: groups never compared have
    no common level, and one group's newcomer must not move another's ratings. Within a group, each
    model weighs by its number of battles, times how surely the votes rather than the ridge place it
    (`placed`, 0 to 1; see `compute_leaderboard`): a plain mean would let a model with a vote or two
    drag every other rating, and eight straight wins put a newcomer some 1,500 points up, which even
    weighted by its 8 votes moved everyone else by ~18 points. Weighing the ridge's models smoothly, not
    all or nothing, keeps one more vote from shifting every rating at once.
    """

    groups: tuple[tuple[np.ndarray, np.ndarray], ...]  # (member indices, their weights summing to 1)

    @classmethod
    def of(cls, battles: np.ndarray, placed: np.ndarray | None = None) -> _Centring:
        battles = np.asarray(battles, dtype=float)
        votes = battles.sum(axis=1)
        weights = votes if placed is None else votes * placed
        groups = []
        for members in compared_components(battles):
            members = np.array(members)
            # a group whose every model floats, or that never played, still needs some centre
            for candidate in (weights[members], votes[members], np.ones(len(members))):
                if candidate.sum() > 0:
                    groups.append((members, candidate / candidate.sum()))
                    break
        return cls(tuple(groups))

    def to_elo(self, log_strengths: np.ndarray, *, scale: float, base: float, mean: float) -> np.ndarray:
        """Log-strengths (one row per resample, or one vector) to Elo-scale ratings, each group at mean `mean`."""
        centred = np.array(log_strengths, dtype=float)
        for members, weights in self.groups:
            centred[..., members] -= (log_strengths[..., members] @ weights)[..., None]
        return mean + centred * (scale / math.log(base))


def fit_bradley_terry(
    scores: np.ndarray,
    *,
    ridge: float = DEFAULT_RIDGE,
    scale: float = ELO_SCALE,
    base: float = ELO_BASE,
    mean: float = INITIAL_RATING,
    placed: np.ndarray | None = None,
) -> np.ndarray:
    """Bradley-Terry ratings on the Elo scale, with vote-weighted mean `mean` (1000) in each compared group.

    `scores[i, j]` is what model i scored against model j: its wins plus half
    its ties (so possibly fractional); the diagonal is ignored. Each model weighs on
    the mean by its number of battles, times `placed` (see `_Centring`). Agrees with an
    unpenalised logistic regression (Chatbot Arena's method) wherever that has
    a finite answer; the tiny `ridge` only matters where it does not.
    """
    scores = np.asarray(scores, dtype=float)
    layout = _PairLayout.of(scores + scores.T)
    if layout.n == 0:
        return np.zeros(0)
    earned = scores[layout.rows, layout.cols]
    battles = earned + scores[layout.cols, layout.rows]
    theta = _fit_log_strengths(layout, earned[None, :], battles[None, :], ridge=ridge)
    return _Centring.of(scores + scores.T, placed).to_elo(theta[0], scale=scale, base=base, mean=mean)


def bootstrap_ratings(
    counts: PairCounts,
    rounds: int,
    *,
    seed: int | None = None,
    progress: _ProgressCallback | None = None,
    workers: int | None = None,
    ridge: float = DEFAULT_RIDGE,
    scale: float = ELO_SCALE,
    base: float = ELO_BASE,
    mean: float = INITIAL_RATING,
    placed: np.ndarray | None = None,
) -> np.ndarray:
    """Elo-scale ratings refitted on `rounds` resamples of the votes, shape (rounds, models).

    Resampling votes with replacement is the same as a multinomial draw over the
    (pair, outcome) cells with the observed proportions, so each round is drawn
    from the aggregated counts and all rounds are fitted together, starting
    from the full-data fit. Each round has mean `mean`, weighted by the full
    data's votes per model and `placed` (the same weights every round, so a rare model's
    swings do not move the others). `progress(done, total)`
    is called after every chunk of rounds, from the calling thread. `workers`
    threads share the rounds (default: one per core).
    """
    n = len(counts.models)
    if rounds <= 0 or n == 0:
        return np.zeros((max(rounds, 0), n))
    layout = _PairLayout.of(counts.battles)
    rows, cols = layout.rows, layout.cols
    cells = np.concatenate([counts.wins[rows, cols], counts.wins[cols, rows], counts.ties[rows, cols]]).astype(float)
    total = int(cells.sum())
    full_scores, full_battles = _cell_scores(cells[None, :], rows.size)
    start = _fit_log_strengths(layout, full_scores, full_battles, ridge=ridge)
    p = np.exp(_log_sigmoid(layout.differences(start)))
    inverse_information = np.linalg.inv(layout.information(full_battles * p * (1.0 - p), ridge)[0])
    centring = _Centring.of(counts.battles, placed)

    chunk = max(1, min(_MAX_CHUNK_ROUNDS, _CHUNK_CELLS // max(1, rows.size)))
    chunk_starts = range(0, rounds, chunk)
    seeds = np.random.SeedSequence(seed).spawn(len(chunk_starts))
    result = np.empty((rounds, n))

    def fit_chunk(position: int) -> int:
        first = chunk_starts[position]
        size = min(chunk, rounds - first)
        draws = np.random.default_rng(seeds[position]).multinomial(total, cells / total, size=size).astype(float)
        scores, battles = _cell_scores(draws, rows.size)
        theta = _fit_log_strengths(
            layout, scores, battles, ridge=ridge, start=start, inverse_information=inverse_information,
            tolerance=_BOOTSTRAP_TOLERANCE,
        )
        result[first:first + size] = centring.to_elo(theta, scale=scale, base=base, mean=mean)
        return size

    # numpy releases the GIL in the multinomial draws and the array arithmetic,
    # so chunks fitted on separate threads use separate cores. Each chunk has
    # its own seed, so the result does not depend on the number of workers.
    workers = max(1, min(workers or os.cpu_count() or 1, len(chunk_starts)))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bootstrap")
    try:
        done = 0
        for size in pool.map(fit_chunk, range(len(chunk_starts))):
            done += size
            if progress is not None:
                progress(done, rounds)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return result


def _cell_scores(cells: np.ndarray, pairs: int) -> tuple[np.ndarray, np.ndarray]:
    """(row-model score, battles) per pair from [row wins | column wins | ties] cell counts."""
    row_wins, col_wins, ties = cells[:, :pairs], cells[:, pairs:2 * pairs], cells[:, 2 * pairs:]
    return row_wins + 0.5 * ties, row_wins + col_wins + ties


def _chance_ridge_placed(counts: PairCounts) -> np.ndarray:
    """Per model: the chance that a resample of the votes leaves it no win or no loss (ties count as both).

    In such a resample the ridge, not the votes, places the model, far above or below its fit: more
    than 2.5% of those and the interval's ends are the ridge's. A multinomial resample of T votes
    misses a set of cells holding a share q of them with chance (1 - q)^T; none at all is in both.
    """
    total = counts.total_votes
    scores, votes = counts.scores.sum(axis=1), counts.votes_per_model
    ties = counts.ties.sum(axis=1)
    wins = scores - 0.5 * ties
    losses = votes - wins - ties

    def missed(share: np.ndarray) -> np.ndarray:
        return (1.0 - share / total) ** total

    return missed(wins + ties) + missed(losses + ties) - missed(votes)


def ranks_from_intervals(
    lower: np.ndarray, upper: np.ndarray, can_outrank: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """1 + how many models are surely better (their lower bound above this one's upper bound).

    Only models in the boolean mask `can_outrank` (default: all) count as surely better, and
    only within the same label of `groups` (default: one group): models never linked by
    battles have no measured gap, whatever their intervals say.
    """
    lower, upper = np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)
    surely_better = lower[None, :] > upper[:, None]
    if can_outrank is not None:
        surely_better &= np.asarray(can_outrank, dtype=bool)[None, :]
    if groups is not None:
        labels = np.asarray(groups)
        surely_better &= labels[:, None] == labels[None, :]
    return 1 + surely_better.sum(axis=1)


# --- diagnostics ------------------------------------------------------------


def _reachability(adjacency: np.ndarray) -> np.ndarray:
    """reach[i, j]: j can be reached from i along edges (transitive closure by squaring)."""
    reach = adjacency.astype(bool) | np.eye(adjacency.shape[0], dtype=bool)
    while True:
        wider = (reach.astype(float) @ reach.astype(float)) > 0
        if np.array_equal(wider, reach):
            return reach
        reach = wider


def _groups(mutual_reach: np.ndarray, members: Sequence[int]) -> list[list[int]]:
    """Equivalence classes of `members` under a symmetric reachability matrix, in first-seen order."""
    seen: set[int] = set()
    groups = []
    for member in members:
        if member not in seen:
            group = [m for m in members if mutual_reach[member, m]]
            seen.update(group)
            groups.append(group)
    return groups


def _named(models: Sequence[str], group: Sequence[int], limit: int = 8) -> str:
    names = [models[i] for i in group]
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def compared_components(battles: np.ndarray) -> list[list[int]]:
    """The connected groups of models linked by battles (`battles[i, j]`: how often i met j), in first-seen order."""
    return _groups(_reachability(np.asarray(battles) > 0), range(len(battles)))


def _component_labels(components: list[list[int]], n: int) -> np.ndarray:
    """Per model, the index of its connected group of compared models."""
    labels = np.zeros(n, dtype=int)
    for label, group in enumerate(components):
        labels[group] = label
    return labels


def comparison_notes(counts: PairCounts, components: list[list[int]],
                     bound: list[tuple[list[int], str]]) -> list[str]:
    """Say where the data cannot pin ratings down, so the regularisation does instead.

    Maximum likelihood has a finite answer only when, inside each connected
    group of compared models, every model can be linked to every other by a
    chain of wins (ties link both ways). Otherwise the ridge decides how far
    apart the ratings go, and readers should know. `components` and `bound` are
    `compared_components(counts.battles)` and `ridge_bound_groups(counts, components)`.
    """
    models = counts.models
    notes = []
    if len(components) > 1:
        groups = "; ".join(f"[{_named(models, group, 5)}]" for group in components[:6])
        more = f"; and {len(components) - 6} more" if len(components) > 6 else ""
        notes.append(
            f"the votes form {len(components)} groups of models never compared with each other (the Group column): "
            f"ratings compare only within a group, and each group is ranked and listed on its own "
            f"(groups: {groups}{more})"
        )
    for group, what in bound:
        if len(group) == 1:
            notes.append(f"model {models[group[0]]} has {what}: its rating is bounded by the regularisation, "
                         "not by the votes")
        else:
            notes.append(f"models {_named(models, group)} have {what} against the other models they were "
                         "compared with: their ratings are bounded by the regularisation, not by the votes")
    return notes


def ridge_bound_groups(counts: PairCounts, components: list[list[int]]) -> list[tuple[list[int], str]]:
    """Groups of models whose place only the ridge sets, each with "only wins" or "only losses".

    Inside a compared group, models linked both ways by chains of wins are pinned to each other
    by the votes; a set of them with only wins (or only losses) against the rest of the group
    is not. Which side floats? The mean is weighted by votes, so the side holding most of the
    group's votes stays put and the smaller sides float: a newcomer with one win floats, not
    the twenty models it was compared with. Sides with no majority between them all float.
    `components` is `compared_components(counts.battles)`.
    """
    linked = _reachability(counts.scores > 0)
    strongly = linked & linked.T
    votes = counts.votes_per_model
    bound = []
    for component in components:
        component_votes = votes[component].sum()
        for group in _groups(strongly, component):
            others = [m for m in component if m not in group]
            if not others:
                continue
            lost = counts.scores[np.ix_(others, group)].sum() > 0
            won = counts.scores[np.ix_(group, others)].sum() > 0
            if lost and won:
                continue
            if votes[group].sum() > component_votes / 2:
                continue  # holds most of the votes: it pins the mean, the others float around it
            bound.append((group, "only wins" if not lost else "only losses"))
    return bound


# --- leaderboard ------------------------------------------------------------


@dataclass(frozen=True)
class ModelRating:
    """One leaderboard row. `win_rate` is (wins + ties/2) / votes.

    `ci_lower` and `ci_upper` are None when no interval was measured: no
    bootstrap, one that could not vary (a single vote), a model left with no win
    or no loss in more than 2.5% of resamples (up to about 10 votes), or one in a
    `ridge_bound_groups` group (only wins or only losses against the rest), where
    the ridge, not its votes, would set the ends. A zero-width or ridge-made
    interval would read as a measurement. `rank` is None too when the bootstrap
    ran but measured no interval. `group` numbers the compared groups (models
    linked by battles), 1 holding the best-rated model: ratings and ranks compare
    only within a group.
    """

    rank: int | None
    model: str
    rating: float
    ci_lower: float | None
    ci_upper: float | None
    elo: float
    votes: int
    win_rate: float
    group: int = 1


@dataclass(frozen=True)
class LeaderboardOptions:
    """The options a leaderboard was computed with (see `compute_leaderboard`): kept with it, so an export
    can say how to compute it again."""

    bootstrap_rounds: int = 1000
    seed: int | None = None
    anchor: tuple[str, float] | None = None
    min_votes: int = 0
    include_named: bool = False

    def as_dict(self) -> dict:
        anchor = {"model": self.anchor[0], "rating": float(self.anchor[1])} if self.anchor else None
        return {"bootstrap_rounds": self.bootstrap_rounds, "seed": self.seed, "anchor": anchor,
                "min_votes": self.min_votes, "include_named": self.include_named}


@dataclass
class Leaderboard:
    """A ranking and the matrices behind it, all in `models` order (best first).

    `win_fraction[i, j]` is the share of i-vs-j battles won by i (ties half) and
    `predicted_win_probability[i, j]` what the ratings predict for it; both are
    NaN on the diagonal, `win_fraction` where a pair never met, and the prediction
    between models of different compared groups.
    """

    rows: list[ModelRating]
    models: list[str]
    battle_counts: np.ndarray
    win_fraction: np.ndarray
    predicted_win_probability: np.ndarray
    notes: list[str]
    votes_used: int
    options: LeaderboardOptions = field(default_factory=LeaderboardOptions)

    @property
    def bootstrap_rounds(self) -> int:
        return self.options.bootstrap_rounds

    def as_dicts(self) -> list[dict]:
        """Rows as plain dicts for JSON/CSV: ratings to 2 decimals (None stays None), win rate to 4."""
        return [
            {
                "rank": row.rank,
                "model": row.model,
                "rating": round(row.rating, 2),
                "ci_lower": _rounded(row.ci_lower, 2),
                "ci_upper": _rounded(row.ci_upper, 2),
                "elo": round(row.elo, 2),
                "votes": row.votes,
                "win_rate": round(row.win_rate, 4),
                "group": row.group,
            }
            for row in self.rows
        ]


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _empty_leaderboard(notes: list[str], options: LeaderboardOptions) -> Leaderboard:
    nothing = np.zeros((0, 0))
    return Leaderboard([], [], nothing, nothing.copy(), nothing.copy(), notes, 0, options)


def _exclusion_notes(total: int, used: int, include_named: bool, records: Sequence[Mapping]) -> list[str]:
    if used == total:
        return []
    flagged = sum(1 for r in records if r.get("flagged", False))
    named = 0 if include_named else sum(1 for r in records if not r.get("flagged", False) and not r.get("anony", True))
    parts = [f"{flagged:,} flagged"] if flagged else []
    if named:
        parts.append(f"{named:,} named (non-anonymous)")
    return [f"{total - used:,} of {total:,} votes left out: {' and '.join(parts)}"]


def _without_rare_models(counts: PairCounts, min_votes: int) -> tuple[PairCounts, list[str]]:
    """Drop models with fewer than `min_votes` votes, then any left with no opponent at all."""
    notes = []
    for reason, keep in (
        (f"fewer than {min_votes:,} votes", lambda c: c.votes_per_model >= min_votes),
        ("no votes against the remaining models", lambda c: c.votes_per_model > 0),
    ):
        kept = keep(counts)
        if not kept.all():
            dropped = [m for m, k in zip(counts.models, kept) if not k]
            notes.append(f"{counted(len(dropped), 'model')} left out for {reason}: {_named(dropped, range(len(dropped)))}")
            counts = counts.subset([m for m, k in zip(counts.models, kept) if k])
    return counts, notes


@dataclass(frozen=True)
class _Placement:
    """Ratings, 95% interval ends and ranks, in `counts.models` order; `measured` where an interval was."""

    ratings: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    ranks: np.ndarray
    measured: np.ndarray
    # No interval for too few wins or losses (none without a bootstrap; a ridge-bound group has its own note).
    too_few: np.ndarray

    def shifted(self, shift: float) -> _Placement:
        return _Placement(self.ratings + shift, self.lower + shift, self.upper + shift, self.ranks, self.measured,
                          self.too_few)

    def reordered(self, order: list[int]) -> _Placement:
        return _Placement(self.ratings[order], self.lower[order], self.upper[order], self.ranks[order],
                          self.measured[order], self.too_few[order])


def _counted_votes(records: list[Mapping], include_named: bool,
                   min_votes: int) -> tuple[list[Mapping], PairCounts, list[str]]:
    """The votes a leaderboard counts, their pair counts, and notes on what was left out and why
    (including why nothing is left, when nothing is)."""
    votes = select_votes(records, include_named=include_named)
    notes = _exclusion_notes(len(records), len(votes), include_named, records)
    counts = aggregate(votes)
    if counts.total_votes == 0:
        return votes, counts, notes + ["no votes to rank yet"]
    if min_votes > 0:
        counts, dropped_notes = _without_rare_models(counts, min_votes)
        if dropped_notes:
            notes += dropped_notes
            kept = set(counts.models)
            votes = [r for r in votes if r["model_a"] in kept and r["model_b"] in kept]
        if counts.total_votes == 0:
            notes.append(f"no model has {min_votes:,} counted votes or more")
    return votes, counts, notes


def _place(counts: PairCounts, labels: np.ndarray, bound: list[tuple[list[int], str]], bootstrap_rounds: int,
           seed: int | None, progress: _ProgressCallback | None) -> _Placement:
    """Fit, bootstrap and rank, leaving out of the mean, the intervals and the ranks the models the ridge places."""
    # Models the ridge places, not the votes: no interval, no rank, no weight on the mean rating.
    chance_ridge_placed = _chance_ridge_placed(counts)
    too_few = chance_ridge_placed > _TAIL_PERCENT / 100  # wins or losses: a resample may have none
    placed = 1.0 - chance_ridge_placed
    floating = too_few.copy()
    for group, _ in bound:  # the bootstrap varies there only as the ridge lets it
        floating[group] = True
        placed[group] = 0.0
        too_few[group] = False  # said by its own note
    ratings = fit_bradley_terry(counts.scores, placed=placed)
    samples = bootstrap_ratings(counts, bootstrap_rounds, seed=seed, progress=progress, placed=placed)
    if bootstrap_rounds > 0:
        lower, upper = np.percentile(samples, [_TAIL_PERCENT, 100 - _TAIL_PERCENT], axis=0)
    else:
        lower = upper = np.round(ratings, 6)  # equal records fit equal up to rounding noise: one rank, not two
    measured = (upper > lower) & ~floating
    # Only models with a measured interval can be surely better than another, or a model with one
    # win would outrank everyone below where the ridge leaves it in the resamples missing that win;
    # and only they get a rank, which would otherwise come from the ridge's end of their interval.
    ranks = ranks_from_intervals(lower, upper, can_outrank=measured if bootstrap_rounds > 0 else None, groups=labels)
    unmeasured_for_few_votes = too_few if bootstrap_rounds > 0 else np.zeros_like(too_few)
    return _Placement(ratings, lower, upper, ranks, measured, unmeasured_for_few_votes)


def _too_few_note(models: Sequence[str], too_few: np.ndarray) -> list[str]:
    if not too_few.any():
        return []
    few = np.flatnonzero(too_few)
    them = "it" if len(few) == 1 else "them"
    return [f"{counted(len(few), 'model')} with too few wins or losses for an interval or a rank (more "
            f"than {_TAIL_PERCENT:g}% of the resamples leave {them} no win or no loss): {_named(models, few)}"]


def _listing_order(models: Sequence[str], ratings: np.ndarray, labels: np.ndarray) -> tuple[list[int], dict[int, int]]:
    """Model indices best first within each compared group, and each group's number (1: the best-rated model's).

    Groups never compared with each other are listed apart: interleaved by rating, a group's models would
    seem to outrank another's.
    """
    by_rating = sorted(range(len(models)), key=lambda i: (-ratings[i], models[i]))
    group_numbers = {label: number for number, label in enumerate(dict.fromkeys(labels[by_rating].tolist()), start=1)}
    return sorted(by_rating, key=lambda i: group_numbers[labels[i]]), group_numbers  # stable: by rating in a group


def compute_leaderboard(
    records: Iterable[Mapping],
    *,
    bootstrap_rounds: int = 1000,
    seed: int | None = None,
    anchor: tuple[str, float] | None = None,
    min_votes: int = 0,
    include_named: bool = False,
    progress: _ProgressCallback | None = None,
) -> Leaderboard:
    """The leaderboard: Bradley-Terry ratings, 95% bootstrap intervals, ranks, Elo and matrices.

    Uses anonymous votes only unless `include_named`, never flagged ones, and only
    models with at least `min_votes` of those votes (counted before dropping the
    others; `votes` in each row counts the votes actually used). Ratings have a
    vote-weighted mean of 1000; `anchor=(model, rating)` instead shifts every
    rating and interval by one constant that puts that model at exactly that
    rating, so ranks and interval widths are the same either way.
    A model's rank is 1 + the number of models of its compared group whose interval lies wholly
    above its own, not counting models without a measured interval (see `ModelRating`).
    """
    if bootstrap_rounds < 0:
        raise ValueError(f"bootstrap_rounds must be 0 or more, got {bootstrap_rounds}")
    if anchor is not None and not math.isfinite(anchor[1]):
        raise ValueError(f"anchor rating must be a finite number, got {anchor[1]!r}")
    options = LeaderboardOptions(bootstrap_rounds, seed, anchor, min_votes, include_named)
    votes, counts, notes = _counted_votes(list(records), include_named, min_votes)
    if counts.total_votes == 0:
        return _empty_leaderboard(notes, options)
    if anchor is not None and anchor[0] not in counts.models:
        raise ValueError(f"anchor model {anchor[0]!r} has no usable votes (models: {', '.join(counts.models)})")

    components = compared_components(counts.battles)
    bound = ridge_bound_groups(counts, components)
    labels = _component_labels(components, len(counts.models))
    placement = _place(counts, labels, bound, bootstrap_rounds, seed, progress)
    if anchor is not None:
        # One constant for every number: pinning the anchor in each round would add its noise to every interval.
        placement = placement.shifted(anchor[1] - placement.ratings[counts.models.index(anchor[0])])
    notes += comparison_notes(counts, components, bound) + _too_few_note(counts.models, placement.too_few)

    order, group_numbers = _listing_order(counts.models, placement.ratings, labels)
    counts = counts.subset([counts.models[i] for i in order])
    placement, labels = placement.reordered(order), labels[order]
    battles = counts.battles
    votes_per_model = battles.sum(axis=1)
    earned = counts.scores.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        win_fraction = np.where(battles > 0, counts.scores / battles, np.nan)
    ratings = placement.ratings
    predicted = 1.0 / (1.0 + ELO_BASE ** ((ratings[None, :] - ratings[:, None]) / ELO_SCALE))
    predicted[labels[:, None] != labels[None, :]] = np.nan  # ratings of different groups say nothing of each other
    np.fill_diagonal(predicted, np.nan)

    elo = online_elo(votes)
    measured = placement.measured
    rows = [
        ModelRating(
            rank=int(placement.ranks[i]) if measured[i] or bootstrap_rounds == 0 else None, model=model,
            rating=float(ratings[i]),
            ci_lower=float(placement.lower[i]) if measured[i] else None,
            ci_upper=float(placement.upper[i]) if measured[i] else None,
            elo=float(elo[model]), votes=int(votes_per_model[i]),
            win_rate=float(earned[i] / votes_per_model[i]), group=group_numbers[labels[i]],
        )
        for i, model in enumerate(counts.models)
    ]
    return Leaderboard(
        rows=rows, models=list(counts.models), battle_counts=battles, win_fraction=win_fraction,
        predicted_win_probability=predicted, notes=notes, votes_used=counts.total_votes, options=options,
    )
