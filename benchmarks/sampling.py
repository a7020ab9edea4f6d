"""How many votes each pair-sampling policy needs before the leaderboard is right.

Simulated arenas with known strengths (Elo scale, sd 150): each policy picks
the pairs, a simulated voter answers by the Bradley-Terry probabilities (by
default calling close pairs a tie more often, at the rates seen in real arena
votes; see ``--voter``), and the votes are fitted every
``--checkpoint`` votes. Every policy meets the same arenas (same strengths,
same seeds), so ratios between policies are paired. Reported per policy:

* votes until Kendall tau >= 0.9 against the true order -- the first
  checkpoint where tau >= 0.9 *and* it is still >= 0.9 at the next checkpoint,
  so one lucky crossing does not count; mean +- standard error over arenas;
* its ratio to ``uniform`` with a 95% bootstrap interval (arenas resampled,
  the same ones for both policies);
* mean 95% interval width (Elo) at 10k votes, from a multinomial bootstrap of
  the aggregated vote counts, on the first ``width_arenas`` arenas only (each
  of those runs on to 10k votes, which is what makes it expensive);
* mean wall time of one draw + observe.

``weighted`` runs with random weights in [0.5, 2], so it shows what an
operator's weights cost, not a way to rank faster.

Votes-to-tau is heavy-tailed and noisy (two arenas differ by 2x on luck
alone), so the 20-model verdict rests on 600 arenas: with fewer, a 10%
difference between policies is within noise.

Target: at 20 models, ``active`` reaches tau >= 0.9 with at least 30% fewer
votes than ``uniform`` (ratio of means <= 0.70); the exit status is 1 when it
misses. And speed: one draw plus the update that follows a vote takes well under
10 ms with 100 models. The reference, measured in the same run on the same votes,
is what the update spares: building the sampler's statistics from scratch.

``--references`` adds three yardsticks that know the true strengths
(``sampling_references.py``): what a sampler could reach if it knew which
pairs are wrong right now, with the best fixed mix of pairs, and reacting
to the votes while knowing how far apart each pair is.

Run: ``.venv/bin/python benchmarks/sampling.py`` (about 4-5 minutes on 2
cores; about 8 with ``--references``), or ``--quick`` for a smoke run.
``--tau 0.95 --arenas 200`` asks what the saving is worth at another
precision (20 models only, no verdict; about 7 minutes at 0.95); ``--spread``
likewise asks it of arenas whose models are closer together or further apart.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

# One process per core runs arenas; multithreaded BLAS inside each would only
# fight over the same cores (set before numpy loads).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from arena.ratings import PairCounts, bootstrap_ratings, fit_bradley_terry  # noqa: E402
from arena.sampling import POLICIES, make_sampler  # noqa: E402
from sampling_references import REFERENCES, make_reference  # noqa: E402

TAU_TARGET = 0.9
STRENGTH_SD = 150.0  # Elo; wider than the real arenas in ../shared/data (116 and 82), which flatters active
WIDTH_AT_VOTES = 10_000
REQUIRED_SAVING = 0.30
DRAW_BUDGET_S = 0.010  # per draw + update, at SPEED_MODELS
SPEED_MODELS, SPEED_VOTES = 100, 16_000  # about where uniform reaches tau >= 0.9 at 100 models

# Chance that the voter calls a pair a tie, by the Elo gap. The default is
# fitted to the 2023 Chatbot Arena votes in ../shared/data: binned by the gap
# between the two models' fitted ratings, ties (both kinds) are 38% of votes
# within 50 points, 35% at 50-100, 31% at 100-150, 26% at 150-200, 20% at
# 200-300 and 12% beyond; 0.38 * exp(-(gap / 330)^2) follows those bins
# within 4 points. ``close-ties`` is the steeper guess used before it.
VOTERS = {
    "arena-ties": lambda gap: 0.38 * np.exp(-((np.asarray(gap) / 330.0) ** 2)),
    "close-ties": lambda gap: 0.3 * np.exp(-((np.asarray(gap) / 200.0) ** 2)),
    "flat-ties": lambda gap: np.full(np.shape(gap), 0.3),
    "no-ties": lambda gap: np.zeros(np.shape(gap)),
}


@dataclass(frozen=True)
class Scenario:
    models: int
    repetitions: int
    max_votes: int
    width_arenas: int  # arenas that also run on to WIDTH_AT_VOTES for the interval width


@dataclass
class RunResult:
    votes_to_tau: int | None
    interval_width: float
    seconds_per_vote: float


def kendall_tau(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall tau-b between two score vectors (ties in either one allowed)."""
    dx = np.sign(x[:, None] - x[None, :])
    dy = np.sign(y[:, None] - y[None, :])
    upper = np.triu_indices(len(x), k=1)
    dx, dy = dx[upper], dy[upper]
    denominator = np.sqrt((dx != 0).sum() * (dy != 0).sum())
    return float((dx * dy).sum() / denominator) if denominator else 0.0


def simulated_winner(rng: np.random.Generator, elo_a: float, elo_b: float, voter: str = "arena-ties") -> str:
    """A voter who follows Bradley-Terry on decisive votes, with ties as ``VOTERS[voter]`` says."""
    gap = elo_a - elo_b
    tie = float(VOTERS[voter](gap))
    a_wins = (1.0 - tie) / (1.0 + 10.0 ** (-gap / 400.0))
    u = rng.random()
    return "tie" if u < tie else "model_a" if u < tie + a_wins else "model_b"


def interval_width(counts: PairCounts, seed: int, rounds: int) -> float:
    """Mean width (Elo) of the per-model 95% bootstrap interval."""
    samples = bootstrap_ratings(counts, rounds, seed=seed)
    low, high = np.percentile(samples, [2.5, 97.5], axis=0)
    return float((high - low).mean())


def simulate(
    policy: str, scenario: Scenario, seed: int, checkpoint: int, rounds: int, width: bool, voter: str,
    tau_target: float = TAU_TARGET, strength_sd: float = STRENGTH_SD,
) -> RunResult:
    world = np.random.default_rng(seed)
    strengths = world.normal(1500.0, strength_sd, scenario.models)
    names = [f"model-{i:03d}" for i in range(scenario.models)]
    index = {name: i for i, name in enumerate(names)}
    weights = dict(zip(names, world.uniform(0.5, 2.0, scenario.models)))
    if policy in REFERENCES:
        pairs = scenario.models * (scenario.models - 1) / 2
        wrong_pairs_at_target = (1.0 - tau_target) * pairs / 2  # tau = 1 - 2 * wrong / pairs
        sampler = make_reference(policy, names, strengths, VOTERS[voter], wrong_pairs_at_target)
    else:
        sampler = make_sampler(policy, names, weights=weights)
    pick_rng = np.random.default_rng(seed + 1)
    voter_rng = np.random.default_rng(seed + 2)
    counts = PairCounts(names, np.zeros((scenario.models,) * 2), np.zeros((scenario.models,) * 2))

    measure_width = width
    votes_to_tau, width, sampler_seconds = None, float("nan"), 0.0
    candidate = None  # first checkpoint with tau >= target, awaiting confirmation
    for vote in range(1, scenario.max_votes + 1):
        started = time.perf_counter()
        model_a, model_b = sampler.draw(pick_rng)
        drawn = time.perf_counter()
        a, b = index[model_a], index[model_b]
        winner = simulated_winner(voter_rng, strengths[a], strengths[b], voter)
        observing = time.perf_counter()
        sampler.observe(model_a, model_b, winner)
        sampler_seconds += drawn - started + time.perf_counter() - observing
        if winner == "tie":
            counts.ties[a, b] += 1
            counts.ties[b, a] += 1
        else:
            counts.wins[(a, b) if winner == "model_a" else (b, a)] += 1

        if measure_width and vote == WIDTH_AT_VOTES:
            width = interval_width(counts, seed + 3, rounds)
        if votes_to_tau is None and vote % checkpoint == 0:
            tau = kendall_tau(fit_bradley_terry(counts.scores), strengths)
            if tau < tau_target:
                candidate = None
            elif candidate is None:
                candidate = vote
            else:
                votes_to_tau = candidate
        if votes_to_tau is not None and (vote >= WIDTH_AT_VOTES or not measure_width):
            break
    return RunResult(votes_to_tau, width, sampler_seconds / vote)


def draw_speed(models: int = SPEED_MODELS, votes: int = SPEED_VOTES, seed: int = 7) -> tuple[float, float]:
    """Seconds per draw + update of ``active`` once `votes` are in, and per build from scratch on the same votes."""
    rng = np.random.default_rng(seed)
    strengths = rng.normal(1500.0, STRENGTH_SD, models)
    names = [f"model-{i:03d}" for i in range(models)]
    history = []
    for _ in range(votes):
        a, b = rng.choice(models, 2, replace=False)
        history.append({"model_a": names[a], "model_b": names[b], "winner": simulated_winner(rng, strengths[a], strengths[b])})
    builds = []
    for _ in range(5):
        started = time.perf_counter()
        sampler = make_sampler("active", names, history=history)
        builds.append(time.perf_counter() - started)
    index = {name: i for i, name in enumerate(names)}
    steps, spent = 200, 0.0
    for _ in range(steps):  # timed as in `simulate`: the sampler's work, not the simulated voter's
        started = time.perf_counter()
        model_a, model_b = sampler.draw(rng)
        drawn = time.perf_counter()
        winner = simulated_winner(rng, strengths[index[model_a]], strengths[index[model_b]])
        observing = time.perf_counter()
        sampler.observe(model_a, model_b, winner)
        spent += drawn - started + time.perf_counter() - observing
    return spent / steps, float(np.median(builds))


def _simulate_job(job: tuple) -> RunResult:
    return simulate(*job)


def ratio_interval(votes: np.ndarray, baseline: np.ndarray, seed: int = 0, rounds: int = 4000) -> tuple[float, float]:
    """95% bootstrap interval of mean(votes) / mean(baseline), resampling arenas in pairs."""
    picks = np.random.default_rng(seed).integers(0, len(votes), (rounds, len(votes)))
    ratios = votes[picks].mean(axis=1) / baseline[picks].mean(axis=1)
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float(low), float(high)


def report(scenario: Scenario, results: dict[str, list[RunResult]], tau_target: float) -> dict[str, tuple[float, float, float]]:
    """Print the table; returns per policy (ratio to uniform, low, high)."""
    print(f"\n{scenario.models} models, {scenario.repetitions} arenas, "
          f"cap {scenario.max_votes} votes (a capped run counts as the cap); "
          f"interval width on the first {scenario.width_arenas} arenas")
    print(f"{'policy':<17}{f'votes to tau>={tau_target:g} (mean +- se)':>32}{'vs uniform [95% CI]':>24}"
          f"{'95% CI width @10k':>20}{'draw+observe':>15}")
    votes = {
        policy: np.array([r.votes_to_tau or scenario.max_votes for r in runs], dtype=float)
        for policy, runs in results.items()
    }
    ratios = {}
    for policy, runs in results.items():
        v = votes[policy]
        capped = sum(r.votes_to_tau is None for r in runs)
        spread = f"{v.mean():.0f} +- {v.std(ddof=1) / np.sqrt(len(v)):.0f}" if len(v) > 1 else f"{v.mean():.0f}"
        note = f" ({capped} capped)" if capped else ""
        ratio = v.mean() / votes["uniform"].mean()
        low, high = ratio_interval(v, votes["uniform"])
        ratios[policy] = (ratio, low, high)
        versus = f"{ratio:.2f} [{low:.2f}, {high:.2f}]"
        width = np.nanmean([r.interval_width for r in runs])
        micros = 1e6 * np.mean([r.seconds_per_vote for r in runs])
        print(f"{policy:<17}{spread + note:>32}{versus:>24}{width:>17.1f} Elo{micros:>12.0f} us")
    if any(policy in REFERENCES for policy in results):
        print("(clairvoyant, best-fixed and known-gap-sizes know the true strengths: yardsticks, not policies)")
    return ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions: a smoke run, not a verdict")
    parser.add_argument("--checkpoint", type=int, default=250, help="votes between ranking fits")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes running arenas")
    parser.add_argument("--voter", choices=sorted(VOTERS), default="arena-ties",
                        help="how the simulated voter ties (default: as in real arena votes, more often between close models)")
    parser.add_argument("--references", action="store_true",
                        help="also run the three yardsticks that know the true strengths (20 models only)")
    parser.add_argument("--tau", type=float, default=TAU_TARGET,
                        help=f"Kendall tau to reach (default {TAU_TARGET}, where the target is set); another value "
                             "runs the 20-model arenas alone, capped at 60,000 votes, and gives no verdict")
    parser.add_argument("--spread", type=float, default=STRENGTH_SD,
                        help=f"sd of the true strengths in Elo (default {STRENGTH_SD:g}); another value runs the "
                             "20-model arenas alone and gives no verdict")
    parser.add_argument("--arenas", type=int, help="20-model arenas (default 600, or 8 with --quick)")
    args = parser.parse_args()
    if args.arenas is not None and args.arenas < 1:
        parser.error("--arenas takes 1 or more")
    if args.spread <= 0:
        parser.error("--spread takes a positive number of Elo points")
    # Another tau or spread asks what the saving is worth there: 20 models, no verdict.
    judged = args.tau == TAU_TARGET and args.spread == STRENGTH_SD
    if args.quick:
        twenty, hundred = Scenario(20, args.arenas or 8, 12_000 if judged else 60_000, 2), Scenario(100, 1, 12_000, 1)
        rounds = 20
    else:
        twenty, hundred = Scenario(20, args.arenas or 600, 20_000 if judged else 60_000, 40), Scenario(100, 8, 60_000, 2)
        rounds = 100
    scenarios = [twenty, hundred] if judged else [twenty]

    started = time.perf_counter()
    print(f"voter: {args.voter}; Kendall tau to reach: {args.tau:g}; strengths' sd: {args.spread:g} Elo")
    verdict = True
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for scenario in scenarios:
            results = {}
            references = REFERENCES if args.references and scenario.models == 20 else ()
            for policy in POLICIES + references:
                jobs = [
                    (policy, scenario, 1000 * rep + scenario.models, args.checkpoint, rounds,
                     rep < scenario.width_arenas, args.voter, args.tau, args.spread)
                    for rep in range(scenario.repetitions)
                ]
                results[policy] = list(pool.map(_simulate_job, jobs, chunksize=max(1, len(jobs) // (8 * args.workers))))
            ratios = report(scenario, results, args.tau)
            if scenario.models == 20 and judged:
                ratio, low, high = ratios["active"]
                verdict = ratio <= 1.0 - REQUIRED_SAVING
                print(f"target: active needs >= {REQUIRED_SAVING:.0%} fewer votes than uniform "
                      f"-> saved {1.0 - ratio:.0%} (95% CI {1.0 - high:.0%} to {1.0 - low:.0%}): "
                      f"{'PASS' if verdict else 'FAIL'}")
    if judged:
        per_draw, from_scratch = draw_speed()
        fast = per_draw < DRAW_BUDGET_S
        print(f"\nactive at {SPEED_MODELS} models, {SPEED_VOTES:,} votes in: draw + update {1e3 * per_draw:.2f} ms; "
              f"reference, its statistics built from scratch on the same votes: {1e3 * from_scratch:.1f} ms "
              f"({from_scratch / per_draw:.0f}x as long)")
        print(f"target: under {1e3 * DRAW_BUDGET_S:g} ms per draw + update at {SPEED_MODELS} models: "
              f"{'PASS' if fast else 'FAIL'}")
        verdict = verdict and fast
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if not judged:
        print(f"(the target is set at tau >= {TAU_TARGET:g} and sd {STRENGTH_SD:g}: no verdict here)")
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
