"""The rating engine: Bradley-Terry ratings with bootstrap resamples, plus online Elo.

Works on plain vote records (dicts in FastChat's clean-battle shape) with numpy
alone, so a researcher can rerun the ranking on an exported vote file without
the app. Votes are first aggregated into per-pair counts: every later step
costs in proportion to the number of model pairs, not the number of votes.

Ratings are on the Elo scale: a difference of 400 points means 10:1 odds.
Ties, of either kind, count as half a win for each side, as Chatbot Arena does.
The ratings' mean, weighted by each model's number of votes (less for models the ridge rather than the
votes places), is 1000 in each group of compared models: see `_Centring`. `arena.leaderboard` turns
these into the published ranking: intervals, ranks and notes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from arena.battle_files import WINNERS, is_anonymous, is_flagged

ELO_SCALE = 400.0
ELO_BASE = 10.0
INITIAL_RATING = 1000.0

# Penalty (natural-log units, per model) that keeps strengths finite when the
# data cannot: models that never lost, never won, or were never compared with
# the rest. Small enough to move a rating resting on a dozen votes by about 0.001 points.
DEFAULT_RIDGE = 1e-4

# Score of model_a for each winner label (model_a, model_b, tie, tie (bothbad)); ties of both kinds are half a win.
SCORE_OF_MODEL_A = MappingProxyType(dict(zip(WINNERS, (1.0, 0.0, 0.5, 0.5), strict=True)))

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

ProgressCallback = Callable[[int, int], None]


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
    """The votes that count: never flagged ones, and anonymous ones only unless `include_named`."""
    return [r for r in records if not is_flagged(r) and (include_named or is_anonymous(r))]


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
    (`placed`, 0 to 1; see `arena.leaderboard.compute_leaderboard`): a plain mean would let a model with a vote or two
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
    progress: ProgressCallback | None = None,
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


# --- which models the votes link -------------------------------------------


def reachability(adjacency: np.ndarray) -> np.ndarray:
    """reach[i, j]: j can be reached from i along edges (transitive closure by squaring)."""
    reach = adjacency.astype(bool) | np.eye(adjacency.shape[0], dtype=bool)
    while True:
        wider = (reach.astype(float) @ reach.astype(float)) > 0
        if np.array_equal(wider, reach):
            return reach
        reach = wider


def equivalence_classes(mutual_reach: np.ndarray, members: Sequence[int]) -> list[list[int]]:
    """Equivalence classes of `members` under a symmetric reachability matrix, in first-seen order."""
    seen: set[int] = set()
    groups = []
    for member in members:
        if member not in seen:
            group = [m for m in members if mutual_reach[member, m]]
            seen.update(group)
            groups.append(group)
    return groups


def compared_components(battles: np.ndarray) -> list[list[int]]:
    """The connected groups of models linked by battles (`battles[i, j]`: how often i met j), in first-seen order."""
    return equivalence_classes(reachability(np.asarray(battles) > 0), range(len(battles)))
