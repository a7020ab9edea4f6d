"""From vote records to the published ranking: which votes count, ratings with intervals and ranks.

The rating engine (`arena.ratings`) fits and resamples; this module decides
what a reader is shown: which votes and models count, which models get an
interval and a rank (not those the ridge rather than the votes places), how
groups never compared with each other are kept apart, and notes saying where
the data cannot pin a rating down. numpy alone, like the engine, so it runs on
an exported vote file without the app.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from arena.battle_files import is_anonymous, is_flagged
from arena.ratings import (
    ELO_BASE,
    ELO_SCALE,
    PairCounts,
    ProgressCallback,
    aggregate,
    bootstrap_ratings,
    compared_components,
    equivalence_classes,
    fit_bradley_terry,
    online_elo,
    reachability,
    select_votes,
)
from arena.wording import counted

# 95% intervals: the bootstrap percentiles this far in from each end.
_TAIL_PERCENT = 2.5
# A 95% interval's ends are the 2.5% and 97.5% points of the resamples: with fewer than 40 there is not
# one resample beyond each end, and the "interval" is a few resamples' spread.
FEWEST_BOOTSTRAP_ROUNDS = 40


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


def _named(models: Sequence[str], group: Sequence[int], limit: int = 8) -> str:
    names = [models[i] for i in group]
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


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
    linked = reachability(counts.scores > 0)
    strongly = linked & linked.T
    votes = counts.votes_per_model
    bound = []
    for component in components:
        component_votes = votes[component].sum()
        for group in equivalence_classes(strongly, component):
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
    linked by battles), 1 holding the best-rated model of those with an interval
    (without a bootstrap, of those that could have one): ratings and ranks compare
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
    between models of different compared groups and where either model's rating
    is the ridge's rather than its votes' (it has no interval; without a bootstrap,
    it could have none): its odds would read as near-certain, or as measured.
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
    flagged = sum(map(is_flagged, records))
    named = 0 if include_named else sum(not is_flagged(r) and not is_anonymous(r) for r in records)
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
    # Where the votes, not the ridge, set the rating: with a bootstrap, where it measured an interval; without
    # one, wherever an interval could have been measured (not too few wins or losses, not ridge-bound).
    by_votes: np.ndarray

    def shifted(self, shift: float) -> _Placement:
        return _Placement(self.ratings + shift, self.lower + shift, self.upper + shift, self.ranks, self.measured,
                          self.too_few, self.by_votes)

    def reordered(self, order: list[int]) -> _Placement:
        return _Placement(self.ratings[order], self.lower[order], self.upper[order], self.ranks[order],
                          self.measured[order], self.too_few[order], self.by_votes[order])


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
           seed: int | None, progress: ProgressCallback | None) -> _Placement:
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
    by_votes = measured if bootstrap_rounds > 0 else ~floating
    return _Placement(ratings, lower, upper, ranks, measured, unmeasured_for_few_votes, by_votes)


def _too_few_note(models: Sequence[str], too_few: np.ndarray) -> list[str]:
    if not too_few.any():
        return []
    few = np.flatnonzero(too_few)
    them = "it" if len(few) == 1 else "them"
    return [f"{counted(len(few), 'model')} with too few wins or losses for an interval or a rank (more "
            f"than {_TAIL_PERCENT:g}% of the resamples leave {them} no win or no loss): {_named(models, few)}"]


def _unvaried_note(models: Sequence[str], placement: _Placement, bound: list[tuple[list[int], str]],
                   bootstrap_rounds: int) -> list[str]:
    """The one case without an interval no other note explains: every resample rates the model alike.

    Only said of enough resamples to measure an interval: one or two rate many models alike by chance."""
    if bootstrap_rounds < FEWEST_BOOTSTRAP_ROUNDS:
        return []
    unvaried = ~placement.measured & ~placement.too_few
    for group, _ in bound:
        unvaried[group] = False
    if not unvaried.any():
        return []
    alike = np.flatnonzero(unvaried)
    return [f"{counted(len(alike), 'model')} with no interval or rank, as every resample of the votes rates "
            f"{'it' if len(alike) == 1 else 'them'} the same (as when all of them are ties): {_named(models, alike)}"]


def _listing_order(models: Sequence[str], ratings: np.ndarray, labels: np.ndarray,
                   by_votes: np.ndarray) -> tuple[list[int], dict[int, int]]:
    """Model indices best first within each compared group, and each group's number (1: that of the best-rated
    model of those `by_votes` places; groups with none of them come last).

    Groups never compared with each other are listed apart: interleaved by rating, a group's models would
    seem to outrank another's. A rating the ridge sets does not order the groups: two newcomers' first vote,
    1681 against 319, would put them above an arena of thousands of votes.
    """
    by_rating = sorted(range(len(models)), key=lambda i: (-ratings[i], models[i]))
    placed_first = sorted(by_rating, key=lambda i: not by_votes[i])  # stable: by rating within each
    group_numbers = {label: number for number, label in enumerate(dict.fromkeys(labels[placed_first].tolist()), start=1)}
    return sorted(by_rating, key=lambda i: group_numbers[labels[i]]), group_numbers  # stable: by rating in a group


def compute_leaderboard(
    records: Iterable[Mapping],
    *,
    bootstrap_rounds: int = 1000,
    seed: int | None = None,
    anchor: tuple[str, float] | None = None,
    min_votes: int = 0,
    include_named: bool = False,
    progress: ProgressCallback | None = None,
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
    notes += _unvaried_note(counts.models, placement, bound, bootstrap_rounds)

    order, group_numbers = _listing_order(counts.models, placement.ratings, labels, placement.by_votes)
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
    # Nor does a rating the ridge sets: after one vote, 1681 against 319 would "predict" a certain win.
    by_votes = placement.by_votes
    predicted[~by_votes[:, None] | ~by_votes[None, :]] = np.nan
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
