"""Choose which two models meet in the next anonymous battle.

Three policies share one interface (``PairSampler``), each named in ``_SAMPLER_FACTORIES``:

* ``uniform``  -- every unordered pair of enabled models is equally likely;
* ``weighted`` -- models are picked in proportion to a configured weight;
* ``active``   -- pairs whose order is still uncertain are preferred, so the
  leaderboard settles with fewer votes, while every pair keeps a floor
  probability so nothing starves and no voter can predict the pairing.

Every policy flips a coin for the A/B sides, so position bias cannot line up
with any particular model.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Collection, Iterable, Mapping, Sequence

import numpy as np

from arena.ratings import aggregate, outcome_score

# Start-up fit of the history: stop when no strength moves more than this
# (natural-log units), or after this many MM sweeps.
_STARTUP_TOLERANCE = 1e-6
_MAX_STARTUP_SWEEPS = 2000


# Warm-up: a model is placed once its strength variance is within this factor
# of the median model's; below that its boost grows over this many halvings of
# its information (so a model with 1/16 of the typical information gets all of it).
_PLACED_VARIANCE_RATIO = 2.0
_WARM_UP_DOUBLINGS = 3.0


def _cap_model_shares(probabilities: np.ndarray, rows: np.ndarray, cols: np.ndarray, cap: float) -> np.ndarray:
    """Blend with the uniform pairing just enough that no model is in more than ``cap`` of the draws.

    A model's share is linear in the blend, so the least blend that brings
    every model under the cap has a closed form. Blending (rather than cutting
    one model's pairs) keeps the order of preference among all pairs.
    """
    count = int(max(rows.max(), cols.max())) + 1
    fair = 2.0 / count
    share = np.bincount(rows, probabilities, count) + np.bincount(cols, probabilities, count)
    over = share > cap
    if cap < fair or not over.any():
        return probabilities
    blend = float(((share[over] - cap) / (share[over] - fair)).max())
    return (1.0 - blend) * probabilities + blend / len(probabilities)


def _sample_index(rng: np.random.Generator, weights: np.ndarray) -> int:
    """Index drawn with probability proportional to ``weights`` (>= 0)."""
    cumulative = np.cumsum(weights)
    index = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    if index >= len(weights):  # u * total rounded up to total: take the last live entry
        index = int(np.flatnonzero(weights)[-1])
    return index


class PairSampler:
    """Shared bookkeeping of every policy: names, the lock, the A/B coin flip.

    Subclasses pick an unordered pair of indices (``_draw_indices``), say how
    likely each pair is (``_pair_probability_vector``) and may learn from
    votes (``_record``). The app may call ``draw``/``observe`` from several
    threads, so both take the lock.
    """

    def __init__(self, models: Sequence[str]):
        models = tuple(models)
        if len(models) < 2:
            raise ValueError(
                f"a battle needs at least 2 enabled models, got {len(models)}: {list(models)}"
            )
        duplicates = sorted({m for m in models if models.count(m) > 1})
        if duplicates:
            raise ValueError(f"model names must be unique, repeated: {duplicates}")
        self.models = models
        self._index = {name: i for i, name in enumerate(models)}
        self._pair_rows, self._pair_cols = np.triu_indices(len(models), k=1)
        self._lock = threading.Lock()

    def draw(self, rng: np.random.Generator, excluded: Collection[str] = ()) -> tuple[str, str]:
        """Two different models as (model_a, model_b), sides assigned by a coin flip.

        Pairs with a model in `excluded` (resting after failures) are left out, the others keeping
        their policy's proportions, unless that leaves no pair at all.
        """
        left_out = [self._index[name] for name in excluded if name in self._index]
        with self._lock:  # also guards `rng`, which numpy does not make thread-safe
            if left_out:
                probabilities = self._pair_probability_vector().copy()
                probabilities[np.isin(self._pair_rows, left_out) | np.isin(self._pair_cols, left_out)] = 0.0
                first, second = self._pair_from(rng, probabilities) if probabilities.sum() > 0 else self._draw_indices(rng)
            else:
                first, second = self._draw_indices(rng)
            if rng.random() < 0.5:
                first, second = second, first
        return self.models[first], self.models[second]

    def observe(self, model_a: str, model_b: str, winner: str) -> None:
        """Learn from one vote; votes naming models this sampler does not know are ignored."""
        score_a = outcome_score(winner)
        a, b = self._index.get(model_a), self._index.get(model_b)
        if a is None or b is None or a == b:
            return
        with self._lock:
            self._record(a, b, score_a)

    def pair_probabilities(self) -> dict[tuple[str, str], float]:
        """Chance that the next draw is each unordered pair, keyed in ``models`` order."""
        with self._lock:
            probabilities = self._pair_probability_vector()
        return {
            (self.models[i], self.models[j]): float(p)
            for i, j, p in zip(self._pair_rows, self._pair_cols, probabilities)
        }

    def _draw_indices(self, rng: np.random.Generator) -> tuple[int, int]:
        raise NotImplementedError

    def _pair_from(self, rng: np.random.Generator, probabilities: np.ndarray) -> tuple[int, int]:
        """A pair drawn from probabilities aligned with ``np.triu_indices(len(models), 1)``."""
        pair = _sample_index(rng, probabilities)
        return int(self._pair_rows[pair]), int(self._pair_cols[pair])

    def _pair_probability_vector(self) -> np.ndarray:
        """Probabilities aligned with ``np.triu_indices(len(models), 1)``."""
        raise NotImplementedError

    def _record(self, a: int, b: int, score_a: float) -> None:
        """Static policies learn nothing from votes."""


class UniformSampler(PairSampler):
    """Every unordered pair equally likely: the unbiased baseline."""

    def _draw_indices(self, rng):
        count = len(self.models)
        first = int(rng.integers(count))
        second = int(rng.integers(count - 1))
        return first, second + (second >= first)

    def _pair_probability_vector(self):
        return np.full(len(self._pair_rows), 1.0 / len(self._pair_rows))


class WeightedSampler(PairSampler):
    """First model with probability proportional to its weight, second likewise among the rest.

    Lets operators give a newly added or sponsored model more traffic without
    ever pairing a model with itself. Models missing from ``weights`` get 1.0.
    """

    def __init__(self, models: Sequence[str], weights: Mapping[str, float] | None = None):
        super().__init__(models)
        weights = weights or {}
        values = np.array([float(weights.get(name, 1.0)) for name in self.models])
        bad = [name for name, w in zip(self.models, values) if not (math.isfinite(w) and w > 0)]
        if bad:
            raise ValueError(f"model weights must be finite and > 0; invalid for {bad}")
        self._weights = values

    def _draw_indices(self, rng):
        first = _sample_index(rng, self._weights)
        rest = self._weights.copy()
        rest[first] = 0.0
        return first, _sample_index(rng, rest)

    def _pair_probability_vector(self):
        w = self._weights
        total = w.sum()
        wi, wj = w[self._pair_rows], w[self._pair_cols]
        return wi * wj / total * (1.0 / (total - wi) + 1.0 / (total - wj))


class ActiveSampler(PairSampler):
    """Spend votes where they can still change the ranking.

    Keeps the aggregated results and Bradley-Terry strengths (natural-log
    scale), refined by a couple of warm-started MM sweeps per vote rather than
    refitted from scratch, and their Laplace covariance. A pair of models is
    *confusable* while its estimated gap is within a few posterior standard
    deviations; a candidate battle scores by how much one vote would shrink
    the gap variances of all confusable pairs (relative to their size),
    counting indirect evidence: A-vs-C also informs A-vs-B when B and C are
    close. That is what the ranking needs: comparing two neighbours directly
    is often not the cheapest way to order them.

    Pairs are drawn in proportion to the sharpened score, mixed with a uniform
    share, so every pair keeps at least ``floor_share / n_pairs`` probability:
    nothing starves and no voter can predict the pairing. No model takes more
    than ``max_model_share`` of the draws before that floor is added.

    A virtual opponent of average strength, met ``prior_games`` times with one
    split result, keeps strengths finite for unbeaten or unplayed models and
    gives a new model a wide uncertainty. A model whose variance is far above
    the typical one gets an explicit warm-up share (up to ``warm_up_share``)
    against opponents across the ladder, tapering to nothing once its
    variance is within twice the median model's.
    """

    def __init__(
        self,
        models: Sequence[str],
        history: Iterable[Mapping] = (),
        *,
        floor_share: float = 0.1,
        sharpness: float = 4.0,
        prior_games: float = 1.0,
        sweeps_per_vote: int = 2,
        warm_up_share: float = 0.3,
        max_model_share: float | None = None,
    ):
        super().__init__(models)
        if not 0.0 < floor_share <= 1.0:
            raise ValueError(f"floor_share must be in (0, 1], got {floor_share}")
        if not 0.0 <= warm_up_share < 1.0:
            raise ValueError(f"warm_up_share must be in [0, 1), got {warm_up_share}")
        # Every draw involves two models, so with n models someone has at least
        # 2/n of the draws: the cap can never be below that.
        default_cap = max(1.0 / 3.0, min(1.0, 4.0 / len(self.models)))
        self._max_model_share = max(max_model_share or default_cap, 2.0 / len(self.models))
        self._warm_up_share = warm_up_share
        self._floor_share = floor_share
        self._sharpness = sharpness
        self._prior_games = prior_games
        self._sweeps_per_vote = sweeps_per_vote
        counts = aggregate(history, self.models)
        self._scores = counts.scores.astype(float)  # [i, j]: what i earned against j
        self._games = counts.battles.astype(float)
        self._strength = np.zeros(len(self.models))
        self._settle_strengths()
        self._refresh_probabilities()

    def _record(self, a, b, score_a):
        self._scores[a, b] += score_a
        self._scores[b, a] += 1.0 - score_a
        self._games[a, b] += 1.0
        self._games[b, a] += 1.0
        self._refine_strengths(self._sweeps_per_vote)
        self._refresh_probabilities()

    def _refine_strengths(self, sweeps: int) -> float:
        """MM sweeps of the MAP Bradley-Terry fit from the current strengths; returns the last move."""
        prior = self._prior_games
        earned = self._scores.sum(axis=1) + prior / 2.0
        strength = np.exp(self._strength)
        moved = 0.0
        for _ in range(sweeps):
            meetings = self._games / (strength[:, None] + strength[None, :])
            updated = earned / (meetings.sum(axis=1) + prior / (strength + 1.0))
            moved = float(np.abs(np.log(updated / strength)).max())
            strength = updated
        self._strength = np.log(strength)
        return moved

    def _settle_strengths(self) -> None:
        """Fit the start-up history closely; per-vote sweeps only have to track it."""
        for _ in range(_MAX_STARTUP_SWEEPS // 50):
            if self._refine_strengths(50) < _STARTUP_TOLERANCE:
                break

    def _covariance(self) -> tuple[np.ndarray, np.ndarray]:
        """Laplace covariance of the strengths (the prior game included) and each pair's vote information."""
        count = len(self.models)
        gap = self._strength[:, None] - self._strength[None, :]
        win_probability = 1.0 / (1.0 + np.exp(-gap))
        information = win_probability * (1.0 - win_probability)
        precision = -self._games * information
        np.fill_diagonal(precision, 0.0)
        versus_prior = 1.0 / (1.0 + np.exp(-self._strength))
        diagonal = -precision.sum(axis=1) + self._prior_games * versus_prior * (1.0 - versus_prior)
        precision[np.diag_indices(count)] = diagonal
        return np.linalg.inv(precision), information

    def _pair_scores(self, covariance: np.ndarray, information: np.ndarray) -> np.ndarray:
        rows, cols = self._pair_rows, self._pair_cols
        variance = np.diag(covariance)
        gap_variance = variance[:, None] + variance[None, :] - 2.0 * covariance
        np.fill_diagonal(gap_variance, 1.0)
        gap = self._strength[:, None] - self._strength[None, :]
        standardised = gap**2 / gap_variance
        # weight of each pair in the objective: confusable pairs count, in relative terms
        weight = np.exp(-0.5 * standardised) / gap_variance
        np.fill_diagonal(weight, 0.0)
        laplacian = np.diag(weight.sum(axis=1)) - weight
        spread = covariance @ laplacian @ covariance
        # one vote on (a, b) shrinks the covariance by w S d d'S / (1 + w d'S d), d = e_a - e_b;
        # the weighted sum of the gap variances then falls by w / (1 + w q) * d' S L S d
        through = np.diag(spread)
        reduction = through[rows] + through[cols] - 2.0 * spread[rows, cols]
        vote_information = information[rows, cols]
        return vote_information / (1.0 + vote_information * gap_variance[rows, cols]) * reduction

    def _refresh_probabilities(self) -> None:
        covariance, information = self._covariance()
        scores = self._pair_scores(covariance, information)
        pairs = len(scores)
        top = scores.max()
        if np.isfinite(top) and top > 0:
            preference = (scores / top) ** self._sharpness
            preference /= preference.sum()
        else:
            preference = np.full(pairs, 1.0 / pairs)
        preference = self._with_warm_up(preference, np.diag(covariance))
        preference = _cap_model_shares(preference, self._pair_rows, self._pair_cols, self._max_model_share)
        self._probabilities = self._floor_share / pairs + (1.0 - self._floor_share) * preference

    def _with_warm_up(self, preference: np.ndarray, variance: np.ndarray) -> np.ndarray:
        """Send up to ``warm_up_share`` of the draws to unplaced models, against opponents across the ladder.

        A model counts as placed once its strength variance is within
        ``_PLACED_VARIANCE_RATIO`` of the median model's; its need then rises
        with each further halving of its information, reaching 1 after
        ``_WARM_UP_DOUBLINGS`` of them. Tied to the variance, not to a vote
        count, so a model that loses nearly every battle (little information
        per vote) keeps its boost longer than one in a close race.
        """
        excess = np.log2(variance / (_PLACED_VARIANCE_RATIO * np.median(variance)))
        need = np.clip(excess / _WARM_UP_DOUBLINGS, 0.0, 1.0)
        boost = self._warm_up_share * float(need.max())
        if boost <= 0.0:
            return preference
        placement = need[self._pair_rows] + need[self._pair_cols]
        return (1.0 - boost) * preference + boost * placement / placement.sum()

    def _draw_indices(self, rng):
        return self._pair_from(rng, self._probabilities)

    def _pair_probability_vector(self):
        return self._probabilities.copy()


# A policy's name in models.yaml and how its sampler is built from (models, weights, history).
_SAMPLER_FACTORIES = {
    "uniform": lambda models, weights, history: UniformSampler(models),
    "weighted": lambda models, weights, history: WeightedSampler(models, weights),
    "active": lambda models, weights, history: ActiveSampler(models, history),
}
POLICIES = tuple(_SAMPLER_FACTORIES)


def make_sampler(
    policy: str,
    models: Sequence[str],
    weights: Mapping[str, float] | None = None,
    history: Iterable[Mapping] = (),
) -> PairSampler:
    """Build the sampler for ``policy``; ``history`` (vote records) warms ``active``."""
    if policy not in _SAMPLER_FACTORIES:
        raise ValueError(f"unknown sampling policy {policy!r}; valid policies: {', '.join(POLICIES)}")
    return _SAMPLER_FACTORIES[policy](models, weights, history)
