"""How fast is the rating engine, and does it give Chatbot Arena's numbers?

Synthetic votes (seeded, with ties) go through `compute_leaderboard` with a full
bootstrap, and through the reference method Chatbot Arena's notebooks use: per
bootstrap round, resample the votes and fit scikit-learn's LogisticRegression on
a vote-by-feature design matrix. The reference is far too slow to run every
round at full size, so a few rounds are timed and the cost per round is
extrapolated linearly; the output says so.

    .venv/bin/python benchmarks/ratings.py                      # 1M votes, 100 models, 1000 rounds
    .venv/bin/python benchmarks/ratings.py --votes 100000 --models 30 --rounds 200   # quick
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arena.leaderboard import compute_leaderboard  # noqa: E402
from arena.ratings import aggregate, bootstrap_ratings, fit_bradley_terry  # noqa: E402

ENGINE_TARGET_SECONDS = 5.0
SPEEDUP_TARGET = 50.0
AGREEMENT_TARGET_POINTS = 0.5


def synthetic_votes(votes: int, models: int, seed: int, tie_share: float = 0.2) -> list[dict]:
    """Votes between random pairs of models whose true ratings spread about +-150 points."""
    rng = np.random.default_rng(seed)
    true_ratings = rng.normal(0.0, 150.0, models)
    first = rng.integers(0, models, votes)
    second = (first + rng.integers(1, models, votes)) % models
    p_first = 1.0 / (1.0 + 10.0 ** ((true_ratings[second] - true_ratings[first]) / 400.0))
    decisive = np.where(rng.random(votes) < p_first, "model_a", "model_b")
    winners = np.where(rng.random(votes) < tie_share, "tie", decisive)
    names = [f"model-{index:03d}" for index in range(models)]
    return [
        {"model_a": names[a], "model_b": names[b], "winner": w, "anony": True}
        for a, b, w in zip(first.tolist(), second.tolist(), winners.tolist())
    ]


class LogisticRegressionReference:
    """Chatbot Arena's method, kept independent of the engine.

    Every vote becomes two rows of a dense design matrix (+ln 10 in model_a's
    column, -ln 10 in model_b's): two wins for a decisive vote, one win each way
    for a tie. An unpenalised, intercept-free logistic regression (lbfgs) gives
    coefficients; 400 x coefficient is the rating.
    """

    def __init__(self, records: list[dict], models: list[str]):
        index = {name: position for position, name in enumerate(models)}
        self.models = models
        self.first = np.array([index[r["model_a"]] for r in records])
        self.second = np.array([index[r["model_b"]] for r in records])
        winners = np.array([r["winner"] for r in records])
        self.a_won = winners == "model_a"
        self.tie = (winners == "tie") | (winners == "tie (bothbad)")

    def fit(self, rows: np.ndarray | None = None) -> np.ndarray:
        rows = np.arange(self.first.size) if rows is None else rows
        first, second = np.tile(self.first[rows], 2), np.tile(self.second[rows], 2)
        a_won, tie = self.a_won[rows], self.tie[rows]
        labels = np.concatenate([a_won | tie, a_won]).astype(int)  # the tie's second copy is a loss
        design = np.zeros((first.size, len(self.models)))
        design[np.arange(first.size), first] = math.log(10)
        design[np.arange(first.size), second] = -math.log(10)
        model = LogisticRegression(fit_intercept=False, C=np.inf, tol=1e-6, max_iter=1000)
        model.fit(design, labels)
        ratings = 400.0 * model.coef_[0]
        # Centred as the engine centres: the mean weighted by each model's votes in the rows used.
        votes = np.bincount(self.first[rows], minlength=len(self.models)) + np.bincount(self.second[rows], minlength=len(self.models))
        return ratings - np.average(ratings, weights=votes) + 1000.0


def timed(action):
    start = time.perf_counter()
    result = action()
    return result, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--votes", type=int, default=1_000_000)
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=1000, help="bootstrap rounds")
    parser.add_argument("--reference-rounds", type=int, default=3, help="reference rounds actually timed")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}")
    records, seconds = timed(lambda: synthetic_votes(args.votes, args.models, args.seed))
    print(f"data: {args.votes:,} synthetic votes over {args.models} models, 20% ties ({seconds:.1f} s to generate)\n")

    board, engine_seconds = timed(lambda: compute_leaderboard(records, bootstrap_rounds=args.rounds, seed=args.seed))
    counts, aggregate_seconds = timed(lambda: aggregate(records))
    _, fit_seconds = timed(lambda: fit_bradley_terry(counts.scores))
    _, bootstrap_seconds = timed(lambda: bootstrap_ratings(counts, args.rounds, seed=args.seed))
    print(f"engine: compute_leaderboard with {args.rounds:,} bootstrap rounds: {engine_seconds:.2f} s")
    print(f"  parts, timed again alone: aggregate {aggregate_seconds:.2f} s, fit {fit_seconds:.3f} s, "
          f"bootstrap {bootstrap_seconds:.2f} s (the rest is filtering, online Elo and the matrices)\n")

    reference = LogisticRegressionReference(records, board.models)
    reference_ratings, full_fit_seconds = timed(reference.fit)
    rng = np.random.default_rng(args.seed)
    round_seconds = [
        timed(lambda: reference.fit(rng.integers(0, args.votes, args.votes)))[1] for _ in range(args.reference_rounds)
    ]
    per_round = float(np.mean(round_seconds))
    reference_bootstrap = per_round * args.rounds
    reference_total = full_fit_seconds + reference_bootstrap
    print("reference (scikit-learn LogisticRegression, lbfgs, on the vote-level design matrix):")
    print(f"  full-data fit: {full_fit_seconds:.2f} s (measured)")
    print(f"  bootstrap: {args.reference_rounds} rounds measured, {per_round:.2f} s each "
          f"(min {min(round_seconds):.2f}, max {max(round_seconds):.2f})")
    print(f"  {args.rounds:,} rounds: {reference_bootstrap:.0f} s EXTRAPOLATED linearly from those "
          f"{args.reference_rounds} rounds; with the full fit {reference_total:.0f} s "
          f"({reference_total / 60:.1f} min)\n")

    ours = np.array([row.rating for row in board.rows])
    max_difference = float(np.abs(ours - reference_ratings).max())
    speedup = reference_total / engine_seconds
    checks = [
        (f"engine under {ENGINE_TARGET_SECONDS:.0f} s", engine_seconds < ENGINE_TARGET_SECONDS,
         f"{engine_seconds:.2f} s"),
        (f"at least {SPEEDUP_TARGET:.0f}x faster than the reference", speedup >= SPEEDUP_TARGET, f"{speedup:,.0f}x"),
        (f"point ratings agree within {AGREEMENT_TARGET_POINTS} points", max_difference < AGREEMENT_TARGET_POINTS,
         f"max |difference| {max_difference:.4f} points"),
    ]
    for name, passed, value in checks:
        print(f"{'PASS' if passed else 'FAIL'}  {name}: {value}")
    return 0 if all(passed for _, passed, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
