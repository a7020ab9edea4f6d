"""Three reference samplers that know the true strengths: yardsticks, not policies.

They answer "how far could any sampler go in this benchmark?", which is what
decides whether a target is hard or out of reach:

* ``clairvoyant`` knows which pairs the current fit orders wrongly (it reads
  the true order) and spends its votes on them. No real sampler can know
  this; it shows how much the measure *could* move.
* ``best-fixed`` knows the true strengths but not the votes: it plays the one
  fixed mix of pairs that minimises the expected number of wrongly ordered
  pairs (the quantity behind Kendall tau) at the vote count where ``uniform``
  expects to reach tau = 0.9. It is the best a sampler could do by knowing
  the gaps perfectly without reacting to how the votes fell.
* ``known-gap-sizes`` knows how far apart every two models are, but not which
  one is ahead, and reacts to the votes: it tests each pair's order
  sequentially. It separates what reacting to votes can win from what only
  knowing the gaps' sizes can: a real sampler must estimate those sizes from
  the same votes.

All three run through the same ``PairSampler`` interface as the real policies.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from arena.ratings import fit_bradley_terry
from arena.sampling import ActiveSampler, PairSampler

REFERENCES = ("clairvoyant", "best-fixed", "known-gap-sizes")

# Share of draws that stay uniform, as in the real active policy, so the
# reference is held to the same "every pair keeps being sampled" rule.
UNIFORM_SHARE = 0.1
_ELO = math.log(10.0) / 400.0  # natural-log strength per Elo point


def _mix_with_uniform(weights: np.ndarray) -> np.ndarray:
    """Pair probabilities: ``weights`` normalised, with UNIFORM_SHARE spread over every pair."""
    return (1.0 - UNIFORM_SHARE) * weights / weights.sum() + UNIFORM_SHARE / len(weights)


def information_per_vote(gaps: np.ndarray, tie_probability: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Fisher information (per Elo^2) one vote carries about a pair's gap.

    The fit scores a tie as half a win each way; for that estimator the
    information is (slope of the expected score)^2 / variance of the score.
    """
    p = 1.0 / (1.0 + 10.0 ** (-gaps / 400.0))
    tie = tie_probability(gaps)
    expected = (1.0 - tie) * p + tie / 2.0
    variance = (1.0 - tie) * p + tie / 4.0 - expected**2
    slope = (1.0 - tie) * p * (1.0 - p) * _ELO
    return slope**2 / np.maximum(variance, 1e-12)


class ClairvoyantSampler(PairSampler):
    """Draws pairs the current fit orders wrongly, the clearer mistakes first (cheats: reads the truth)."""

    refit_every = 25

    def __init__(self, models: Sequence[str], strengths: np.ndarray):
        super().__init__(models)
        self._truth = np.asarray(strengths, dtype=float)
        count = len(models)
        self._scores = np.zeros((count, count))
        self._votes = 0
        self._probabilities = _mix_with_uniform(np.ones(len(self._pair_rows)))

    def _record(self, a, b, score_a):
        self._scores[a, b] += score_a
        self._scores[b, a] += 1.0 - score_a
        self._votes += 1
        if self._votes % self.refit_every == 0:
            fitted = fit_bradley_terry(self._scores)
            rows, cols = self._pair_rows, self._pair_cols
            true_gap = self._truth[rows] - self._truth[cols]
            wrong = np.sign(fitted[rows] - fitted[cols]) * np.sign(true_gap) < 0
            self._probabilities = _mix_with_uniform(wrong * np.abs(true_gap) if wrong.any() else np.ones(len(rows)))

    def _pair_probability_vector(self):
        return self._probabilities

    def _draw_indices(self, rng):
        return self._pair_from(rng, self._probabilities)


def _expected_wrong_pairs(share, votes, information, incidence, gaps, torch):
    fisher = (incidence.T * (votes * share * information)) @ incidence
    count = incidence.shape[1]
    covariance = torch.linalg.inv(fisher + torch.ones(count, count) / count)  # pins the mean strength
    gap_variance = ((incidence @ covariance) * incidence).sum(dim=1)
    return torch.special.ndtr(-gaps / gap_variance.sqrt()).sum()


class BestFixedSampler(PairSampler):
    """Plays the fixed pair mix that a sampler knowing the true strengths would choose."""

    def __init__(
        self,
        models: Sequence[str],
        strengths: np.ndarray,
        tie_probability: Callable[[np.ndarray], np.ndarray],
        wrong_pairs_at_target: float,
        steps: int = 300,
    ):
        super().__init__(models)
        import torch  # only this yardstick needs gradients

        torch.set_num_threads(1)
        rows, cols = self._pair_rows, self._pair_cols
        strengths = np.asarray(strengths, dtype=float)
        gap = strengths[rows] - strengths[cols]
        incidence_np = np.zeros((len(rows), len(models)))
        incidence_np[np.arange(len(rows)), rows] = 1.0
        incidence_np[np.arange(len(rows)), cols] = -1.0
        as_tensor = lambda values: torch.tensor(values, dtype=torch.float64)  # noqa: E731
        information = as_tensor(information_per_vote(gap, tie_probability))
        incidence, gaps = as_tensor(incidence_np), as_tensor(np.abs(gap))

        def wrong_pairs(share, votes):
            return _expected_wrong_pairs(share, votes, information, incidence, gaps, torch)

        uniform = torch.full((len(rows),), 1.0 / len(rows), dtype=torch.float64)
        # Votes at which uniform expects `wrong_pairs_at_target` mistakes (bisection in log space).
        low, high = 10.0, 1e7
        for _ in range(50):
            middle = math.sqrt(low * high)
            low, high = (middle, high) if wrong_pairs(uniform, middle) > wrong_pairs_at_target else (low, middle)
        logits = torch.zeros(len(rows), dtype=torch.float64, requires_grad=True)
        optimiser = torch.optim.Adam([logits], lr=0.05)
        for _ in range(steps):
            loss = wrong_pairs(torch.softmax(logits, dim=0), high)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        self._probabilities = _mix_with_uniform(torch.softmax(logits, dim=0).detach().numpy())

    def _pair_probability_vector(self):
        return self._probabilities

    def _draw_indices(self, rng):
        return self._pair_from(rng, self._probabilities)


class KnownGapSizesSampler(ActiveSampler):
    """Knows each pair's gap size |d| (not its sign) and spends votes where a sign test is still open.

    With the fitted gap g and its variance v, the chance the fit orders the pair
    wrongly is 1 / (1 + exp(2 |d| |g| / v)), from the likelihood ratio of the
    two signs. One vote moves that log-ratio by about 2 d^2 times the vote's
    information, so a pair scores P(wrong) (1 - P(wrong)) d^2 x information:
    nothing for pairs already settled, and nothing for pairs too close to ever
    settle -- the part a real sampler cannot know without spending votes.
    Pairs are drawn in proportion to the squared score, with the uniform share.
    It reuses ActiveSampler's running fit and covariance.
    """

    refresh_every = 25

    def __init__(self, models: Sequence[str], strengths: np.ndarray):
        self._truth = np.asarray(strengths, dtype=float) * _ELO  # natural-log scale, as the fit
        self._votes = 0
        super().__init__(models)

    def _record(self, a, b, score_a):
        self._votes += 1
        super()._record(a, b, score_a)

    def _refresh_probabilities(self):
        if self._votes % self.refresh_every:
            return
        covariance, information = self._covariance()
        rows, cols = self._pair_rows, self._pair_cols
        variance = np.diag(covariance)
        gap_variance = variance[rows] + variance[cols] - 2.0 * covariance[rows, cols]
        fitted_gap = np.abs(self._strength[rows] - self._strength[cols])
        true_size = np.abs(self._truth[rows] - self._truth[cols])
        wrong = 1.0 / (1.0 + np.exp(np.minimum(2.0 * true_size * fitted_gap / gap_variance, 50.0)))
        score = (wrong * (1.0 - wrong) * true_size**2 * information[rows, cols]) ** 2
        self._probabilities = _mix_with_uniform(score if score.sum() > 0 else np.ones(len(rows)))


def make_reference(
    name: str,
    models: Sequence[str],
    strengths: np.ndarray,
    tie_probability: Callable[[np.ndarray], np.ndarray],
    wrong_pairs_at_target: float,
) -> PairSampler:
    if name == "clairvoyant":
        return ClairvoyantSampler(models, strengths)
    if name == "best-fixed":
        return BestFixedSampler(models, strengths, tie_probability, wrong_pairs_at_target)
    if name == "known-gap-sizes":
        return KnownGapSizesSampler(models, strengths)
    raise ValueError(f"unknown reference sampler {name!r}; choose from {REFERENCES}")

