"""Where uniform sampling's wrong pairs are when it reaches Kendall tau = 0.9 (20 models).

If they were a few hard pairs, a sampler could win much by spending on those;
if they are many pairs each somewhat uncertain, moving votes around gains
little. This measures which, without simulating votes: for arenas drawn as in
``sampling.py`` (sd 150 Elo, the ``arena-ties`` voter), the uniform design's
vote count at tau = 0.9 (``--votes``, from the sampling benchmark's table)
gives every pair's gap a variance (the inverse of the design's Fisher
information, per vote as ``sampling_references.information_per_vote``), and so
a chance of being ordered wrongly.

Run: ``.venv/bin/python benchmarks/sampling_regime.py`` (a few seconds).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sampling import VOTERS  # noqa: E402
from sampling_references import information_per_vote  # noqa: E402


def wrong_pair_chances(strengths: np.ndarray, votes: int, voter: str) -> tuple[np.ndarray, np.ndarray]:
    """Per unordered pair: the chance the uniform design orders it wrongly, and whether the two are neighbours."""
    order = np.sort(strengths)
    gaps = order[:, None] - order[None, :]
    count = len(order)
    conductance = votes / (count * (count - 1) / 2) * information_per_vote(np.abs(gaps), VOTERS[voter])
    np.fill_diagonal(conductance, 0.0)
    covariance = np.linalg.pinv(np.diag(conductance.sum(axis=1)) - conductance)
    variance = np.diag(covariance)[:, None] + np.diag(covariance)[None, :] - 2.0 * covariance
    rows, cols = np.triu_indices(count, k=1)
    standardised = np.abs(gaps[rows, cols]) / np.sqrt(variance[rows, cols])
    chance = np.array([0.5 * math.erfc(z / math.sqrt(2.0)) for z in standardised])
    return chance, (cols - rows) == 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--votes", type=int, default=3307, help="uniform's mean votes to tau >= 0.9 (README table)")
    parser.add_argument("--arenas", type=int, default=200)
    parser.add_argument("--voter", choices=sorted(VOTERS), default="arena-ties")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(args.arenas):
        chance, neighbours = wrong_pair_chances(rng.normal(1500.0, 150.0, 20), args.votes, args.voter)
        rows.append((chance.sum(), chance[neighbours].sum(), (chance > 0.1).sum(), ((chance > 0.1) & (chance < 0.4)).sum()))
    expected, from_neighbours, uncertain, moderate = np.mean(rows, axis=0)
    print(f"{args.arenas} arenas of 20 models, uniform design, {args.votes:,} votes, voter {args.voter}:")
    print(f"  expected wrong pairs {expected:.1f} (tau 0.9 allows 9.5), {from_neighbours:.1f} of them between neighbours")
    print(f"  pairs with more than a 10% chance of being wrong: {uncertain:.1f}, of which {moderate:.1f} below 40%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
