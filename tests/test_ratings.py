import json
import math

import numpy as np
import pytest

from arena import ratings
from arena.leaderboard import compute_leaderboard, ranks_from_intervals
from arena.ratings import (
    PairCounts,
    aggregate,
    bootstrap_ratings,
    fit_bradley_terry,
    online_elo,
    select_votes,
)
from tests.conftest import shared_file

ELO_PER_NAT = 400 / math.log(10)


def real_votes(name: str) -> list[dict]:
    path = shared_file(name)
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def vote(a: str, b: str, winner: str = "model_a", **extra) -> dict:
    return {"model_a": a, "model_b": b, "winner": winner, **extra}


def simulated_votes(
    true_ratings: np.ndarray, count: int, rng: np.random.Generator, tie_share: float = 0.0
) -> list[dict]:
    """Votes from a Bradley-Terry world.

    A share of votes are ties; the decisive ones are skewed so that each side's
    expected score (a tie being half a win) is still what the ratings predict.
    """
    n = len(true_ratings)
    first = rng.integers(0, n, count)
    second = (first + rng.integers(1, n, count)) % n
    p_first = 1 / (1 + 10 ** ((true_ratings[second] - true_ratings[first]) / 400))
    assert np.all((p_first >= tie_share / 2) & (p_first <= 1 - tie_share / 2)), "too many ties for these ratings"
    tie = rng.random(count) < tie_share
    first_wins = rng.random(count) < (p_first - tie_share / 2) / (1 - tie_share)
    winners = np.where(tie, "tie", np.where(first_wins, "model_a", "model_b"))
    return [vote(f"m{a}", f"m{b}", w) for a, b, w in zip(first.tolist(), second.tolist(), winners.tolist())]


def vote_weighted_mean(ratings, votes) -> float:
    """The mean the leaderboard centres on: each model weighted by its number of votes."""
    return float(np.average(ratings, weights=votes))


def logistic_regression_ratings(votes: list[dict], models: list[str]) -> np.ndarray:
    """Chatbot Arena's way, independently: every vote twice, a tie as one win each way; vote-weighted mean 1000."""
    from sklearn.linear_model import LogisticRegression

    index = {m: i for i, m in enumerate(models)}
    rows, labels = [], []
    for v in votes:
        row = np.zeros(len(models))
        row[index[v["model_a"]]], row[index[v["model_b"]]] = math.log(10), -math.log(10)
        outcomes = {"model_a": (1, 1), "model_b": (0, 0)}.get(v["winner"], (1, 0))
        rows += [row, row]
        labels += list(outcomes)
    fit = LogisticRegression(fit_intercept=False, C=np.inf, tol=1e-10, max_iter=10_000).fit(np.array(rows), labels)
    ratings = 400 * fit.coef_[0]
    votes_per_model = np.abs(np.array(rows[::2])).sum(axis=0) / math.log(10)
    return ratings - vote_weighted_mean(ratings, votes_per_model) + 1000


# --- Bradley-Terry against independent computations --------------------------


def test_bradley_terry_agrees_with_logistic_regression_on_small_data():
    rng = np.random.default_rng(7)
    votes = simulated_votes(np.array([0, 60, 120, -80, 30, -150.0]), 400, rng, tie_share=0.25)
    board = compute_leaderboard(votes, bootstrap_rounds=0)
    reference = logistic_regression_ratings(votes, board.models)
    ours = np.array([row.rating for row in board.rows])
    assert np.abs(ours - reference).max() < 0.5


def test_bradley_terry_two_models_closed_form():
    ratings = fit_bradley_terry(np.array([[0.0, 30.0], [10.0, 0.0]]))
    assert ratings[0] - ratings[1] == pytest.approx(400 * math.log10(3), abs=0.01)
    assert ratings.mean() == pytest.approx(1000)


def test_ties_count_half_a_win_each_way():
    votes = [vote("a", "b")] * 20 + [vote("a", "b", "model_b")] * 10 + [vote("b", "a", "tie (bothbad)")] * 6
    votes += [vote("a", "b", "tie")] * 4
    board = compute_leaderboard(votes, bootstrap_rounds=0)
    by_model = {row.model: row for row in board.rows}
    assert by_model["a"].rating - by_model["b"].rating == pytest.approx(400 * math.log10(25 / 15), abs=0.01)
    assert by_model["a"].win_rate == pytest.approx(25 / 40)
    assert board.win_fraction[0, 1] == pytest.approx(25 / 40)


def test_real_2023_data_matches_logistic_regression_and_published_order():
    votes = real_votes("chatbot_arena_2023_battles.jsonl")
    board = compute_leaderboard(votes, bootstrap_rounds=200, seed=1)
    assert len(board.models) == 20 and board.votes_used == 25_938
    assert board.models[:2] == ["gpt-4", "claude-v1"]
    ours = np.array([row.rating for row in board.rows])
    assert np.abs(ours - logistic_regression_ratings(votes, board.models)).max() < 0.5
    for row in board.rows:
        assert all(map(math.isfinite, (row.rating, row.ci_lower, row.ci_upper, row.elo)))
        assert row.ci_lower < row.rating < row.ci_upper
    assert board.rows[0].rank == 1
    assert board.notes == []


def test_real_llmfao_data_many_models_few_votes():
    votes = real_votes("llmfao_battles.jsonl")
    board = compute_leaderboard(votes, bootstrap_rounds=100, seed=1)
    assert len(board.models) == 59 and board.votes_used == 8_931
    assert all(math.isfinite(row.ci_lower) and math.isfinite(row.ci_upper) for row in board.rows)
    ratings, votes_per_model = [row.rating for row in board.rows], [row.votes for row in board.rows]
    assert vote_weighted_mean(ratings, votes_per_model) == pytest.approx(1000)


# --- bootstrap -----------------------------------------------------------------


def test_intervals_cover_true_strengths_about_95_percent_of_the_time():
    rng = np.random.default_rng(2024)
    true_ratings = np.linspace(-150, 150, 8)
    covered = []
    for repetition in range(40):
        votes = simulated_votes(true_ratings, 1500, rng, tie_share=0.2 if repetition % 2 else 0.0)
        board = compute_leaderboard(votes, bootstrap_rounds=200, seed=repetition)
        truths = true_ratings[[int(row.model[1:]) for row in board.rows]]
        truths += 1000 - vote_weighted_mean(truths, [row.votes for row in board.rows])
        for row, truth in zip(board.rows, truths):
            covered.append(row.ci_lower <= truth <= row.ci_upper)
    assert 0.85 <= np.mean(covered) <= 0.99


def test_bootstrap_is_reproducible_and_reports_progress():
    votes = simulated_votes(np.array([0.0, 100, 200]), 300, np.random.default_rng(3))
    calls = []
    first = compute_leaderboard(
        votes, bootstrap_rounds=250, seed=11, progress=lambda done, total: calls.append((done, total))
    )
    second = compute_leaderboard(votes, bootstrap_rounds=250, seed=11)
    assert first.rows == second.rows
    counts = aggregate(votes)
    one_thread = bootstrap_ratings(counts, 250, seed=11, workers=1)
    assert np.array_equal(one_thread, bootstrap_ratings(counts, 250, seed=11, workers=3))
    assert not np.array_equal(one_thread, bootstrap_ratings(counts, 250, seed=12, workers=1))
    assert calls and calls[-1] == (250, 250)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_bootstrap_resamples_keep_the_full_data_vote_weighted_mean():
    counts = aggregate(simulated_votes(np.array([0.0, 50, -50, 120]), 500, np.random.default_rng(5)))
    samples = bootstrap_ratings(counts, 64, seed=0)
    assert samples.shape == (64, 4)
    assert np.allclose(np.average(samples, axis=1, weights=counts.votes_per_model), 1000)
    assert samples.std(axis=0).min() > 1  # rounds really differ


def test_intervals_are_the_central_95_percent_of_the_bootstrap_ratings():
    votes = simulated_votes(np.array([0.0, 70, 140, 210]), 800, np.random.default_rng(12), tie_share=0.1)
    board = compute_leaderboard(votes, bootstrap_rounds=200, seed=3)
    counts = aggregate(votes)
    # Every model has about 100 wins and 100 losses: none is placed by the ridge, so all weigh fully on the mean.
    samples = bootstrap_ratings(counts, 200, seed=3, placed=np.ones(len(counts.models)))
    lower, upper = np.percentile(samples, [2.5, 97.5], axis=0)
    for row in board.rows:
        i = counts.models.index(row.model)
        assert (row.ci_lower, row.ci_upper) == pytest.approx((lower[i], upper[i]), abs=1e-6)


def with_newcomer(votes: list[dict], opponent: str, winner: str) -> list[dict]:
    return votes + [vote("newbie", opponent, winner)]


@pytest.mark.parametrize("winner", ["model_a", "tie"])
def test_a_newcomer_with_one_vote_barely_moves_the_other_models(winner):
    # Models far enough apart that bootstrap noise cannot change a rank.
    votes = simulated_votes(np.linspace(-300, 300, 6), 3000, np.random.default_rng(6), tie_share=0.05)
    before = compute_leaderboard(votes, bootstrap_rounds=300, seed=0)
    after = {row.model: row for row in compute_leaderboard(with_newcomer(votes, "m0", winner), bootstrap_rounds=300,
                                                            seed=0).rows}
    assert after["newbie"].ci_lower is None and after["newbie"].ci_upper is None  # left out of 37% of resamples
    for row in before.rows:
        other = after[row.model]
        assert other.rank == row.rank
        assert abs(other.rating - row.rating) < 1
        # Other resamples, so some noise; lopsided intervals were off by 100 points.
        assert abs(other.ci_lower - row.ci_lower) < 10 and abs(other.ci_upper - row.ci_upper) < 10


def test_a_newcomer_with_one_vote_moves_no_rating_on_real_data():
    votes = real_votes("chatbot_arena_2023_battles.jsonl")
    before = compute_leaderboard(votes, bootstrap_rounds=0)
    after = {row.model: row for row in compute_leaderboard(with_newcomer(votes, "llama-13b", "model_a"),
                                                            bootstrap_rounds=0).rows}
    assert max(abs(after[row.model].rating - row.rating) for row in before.rows) < 1


def test_a_newcomer_with_a_few_straight_wins_moves_no_other_rating():
    """The ridge puts eight straight wins ~1,500 points up: even weighted by its 8 votes it dragged every other
    rating ~18 points down. Models the ridge places do not count in the mean rating, nor in the bootstrap's."""
    votes = simulated_votes(np.linspace(-200, 200, 6), 330, np.random.default_rng(0))
    unbeaten = [vote("newbie", f"m{k % 6}") for k in range(8)]
    before = {row.model: row for row in compute_leaderboard(votes, bootstrap_rounds=100, seed=0).rows}
    after = {row.model: row for row in compute_leaderboard(votes + unbeaten, bootstrap_rounds=100, seed=0).rows}
    assert after["newbie"].ci_lower is None and after["newbie"].rating > 2000
    assert max(abs(after[model].rating - row.rating) for model, row in before.items()) < 2
    rows = list(before.values())
    assert abs(np.average([r.rating for r in rows], weights=[r.votes for r in rows]) - 1000) < 1e-6


def test_a_newcomer_with_straight_wins_shifts_no_other_models_interval():
    """The resamples are centred like the ratings, without the ridge's models: counted in each resample's mean,
    twenty straight wins dragged every other interval ~18 points below its rating."""
    votes = simulated_votes(np.linspace(-200, 200, 6), 1000, np.random.default_rng(0))
    unbeaten = [vote("newbie", f"m{k % 6}") for k in range(20)]
    board = compute_leaderboard(votes + unbeaten, bootstrap_rounds=300, seed=0)
    settled = [row for row in board.rows if row.model != "newbie"]
    offsets = np.array([(row.ci_lower + row.ci_upper) / 2 - row.rating for row in settled])
    assert np.abs(offsets).max() < 10  # bootstrap intervals are a little lopsided, never by this much
    assert abs(np.average(offsets, weights=[row.votes for row in settled])) < 4


def test_one_more_loss_for_a_nearly_unbeaten_model_does_not_shift_every_rating():
    """A model is weighed on the mean as surely as the votes place it: all or nothing, its fourth loss
    (which gives it an interval) moved every other rating ~50 points at once."""
    rng = np.random.default_rng(1)
    votes = simulated_votes(np.linspace(-150, 150, 5), 2000, rng)
    others = [f"m{k}" for k in range(5)]
    star_wins = [vote("star", others[k % 5]) for k in range(300)]

    def ratings_with(losses: int) -> dict[str, float]:
        lost = [vote(others[k % 5], "star") for k in range(losses)]
        return {row.model: row.rating for row in compute_leaderboard(votes + star_wins + lost, bootstrap_rounds=0).rows}

    three, four = ratings_with(3), ratings_with(4)
    assert max(abs(four[m] - three[m]) for m in others) < 5


def test_a_newcomer_moves_no_rating_of_a_group_it_never_met():
    """Groups never compared are centred each on its own: no common level links them."""
    votes = simulated_votes(np.linspace(-100, 100, 3), 600, np.random.default_rng(2))
    votes += [vote("p", "q")] * 30 + [vote("q", "p")] * 20
    before = {row.model: row.rating for row in compute_leaderboard(votes, bootstrap_rounds=0).rows}
    after = {row.model: row.rating for row in
             compute_leaderboard(votes + [vote("newbie", "m0")] * 8, bootstrap_rounds=0).rows}
    assert max(abs(after[m] - before[m]) for m in before) < 2
    assert abs(before["p"] + before["q"] - 2000) < 1e-6  # p and q meet 50 times each: their own mean is 1000


@pytest.mark.parametrize("case", ["simulated", "unbeaten and disconnected"])
def test_bootstrap_shortcut_steps_reach_the_exact_newton_answer(monkeypatch, case):
    if case == "simulated":
        votes = simulated_votes(np.linspace(-250, 250, 12), 3000, np.random.default_rng(8), tie_share=0.08)
    else:
        votes = [vote("a", "b")] * 5 + [vote("b", "a")] * 2 + [vote("top", "a")] * 4 + [vote("c", "d")] * 3
        votes += [vote("d", "c", "tie")] * 2
    counts = aggregate(votes)
    shortcut = bootstrap_ratings(counts, 200, seed=4)
    monkeypatch.setattr(ratings, "_SHARED_STEP_LIMIT", 0)  # every step a full Newton step
    assert np.abs(shortcut - bootstrap_ratings(counts, 200, seed=4)).max() < 1e-3


# --- ranks, anchor, filters ------------------------------------------------------


def test_ranks_count_only_models_surely_better():
    lower = np.array([10.0, 5, 0, -10])
    upper = np.array([20.0, 15, 4, 1])
    assert ranks_from_intervals(lower, upper).tolist() == [1, 1, 3, 3]
    assert ranks_from_intervals(lower, upper, can_outrank=[False, True, True, True]).tolist() == [1, 1, 2, 2]


def test_overlapping_intervals_share_a_rank():
    votes = [vote("strong", "x")] * 90 + [vote("x", "strong")] * 10
    votes += [vote("strong", "y")] * 90 + [vote("y", "strong")] * 10
    votes += [vote("x", "y")] * 51 + [vote("y", "x")] * 49
    board = compute_leaderboard(votes, bootstrap_rounds=300, seed=0)
    assert [(row.model, row.rank) for row in board.rows] == [("strong", 1), ("x", 2), ("y", 2)]


def test_without_bootstrap_there_are_no_intervals_and_ranks_follow_the_ratings():
    votes = [vote("a", "b")] * 3 + [vote("b", "c")] * 3 + [vote("c", "a")] * 1 + [vote("a", "c")] * 2
    board = compute_leaderboard(votes, bootstrap_rounds=0)
    assert all(row.ci_lower is None and row.ci_upper is None for row in board.rows)
    assert [row.rank for row in board.rows] == [1, 2, 3]
    assert all(row["ci_lower"] is None and row["ci_upper"] is None for row in board.as_dicts())


@pytest.mark.parametrize("votes", [[vote("solo", "other")], [vote("a", "b")] * 5], ids=["one vote", "only wins"])
def test_a_bootstrap_that_cannot_vary_gives_no_interval_and_no_rank(votes):
    board = compute_leaderboard(votes, bootstrap_rounds=50, seed=0)
    assert all(row.ci_lower is None and row.ci_upper is None for row in board.rows)
    assert [row.rank for row in board.rows] == [None, None]


def test_anchor_shifts_every_number_alike_and_changes_no_rank():
    votes = simulated_votes(np.array([0.0, 80, 160, 240]), 2000, np.random.default_rng(9))
    votes += [vote("rare", "m0"), vote("m3", "rare"), vote("rare", "m1", "model_b"), vote("rare", "m2", "tie")] * 2
    plain = compute_leaderboard(votes, bootstrap_rounds=200, seed=0)
    for model in ("m1", "rare"):
        board = compute_leaderboard(votes, bootstrap_rounds=200, seed=0, anchor=(model, 1200.0))
        assert [(row.model, row.rank) for row in board.rows] == [(row.model, row.rank) for row in plain.rows]
        anchored = {row.model: row for row in board.rows}
        assert anchored[model].rating == pytest.approx(1200.0, abs=1e-9)
        shift = 1200.0 - {row.model: row for row in plain.rows}[model].rating
        for row in plain.rows:
            assert anchored[row.model].rating == pytest.approx(row.rating + shift)
            assert anchored[row.model].ci_lower == pytest.approx(row.ci_lower + shift)
            assert anchored[row.model].ci_upper == pytest.approx(row.ci_upper + shift)
    with pytest.raises(ValueError, match="no-such-model"):
        compute_leaderboard(votes, anchor=("no-such-model", 1000.0))


@pytest.mark.parametrize("rating", [math.nan, math.inf, -math.inf])
def test_anchor_rating_must_be_finite(rating):
    for votes in ([vote("a", "b"), vote("b", "a")], []):
        with pytest.raises(ValueError, match=r"anchor rating must be a finite number, got -?(nan|inf)"):
            compute_leaderboard(votes, bootstrap_rounds=0, anchor=("a", rating))


def test_min_votes_drops_rare_models_before_fitting():
    votes = [vote("a", "b")] * 6 + [vote("b", "a")] * 4 + [vote("a", "rare"), vote("rare", "b")]
    votes += [vote("lonely", "r1")] * 2 + [vote("r2", "lonely")] * 2  # lonely has 4 votes, all against rare models
    board = compute_leaderboard(votes, bootstrap_rounds=0, min_votes=3)
    assert board.models == ["a", "b"]
    assert [row.votes for row in board.rows] == [10, 10]
    assert board.rows[0].rating - board.rows[1].rating == pytest.approx(400 * math.log10(6 / 4), abs=0.01)
    assert board.notes == [
        "3 models left out for fewer than 3 votes: r1, r2, rare",
        "1 model left out for no votes against the remaining models: lonely",
    ]


def test_min_votes_keeps_a_model_with_exactly_that_many_votes():
    votes = [vote("a", "b")] * 6 + [vote("b", "a")] * 4
    votes += [vote("edge", "a"), vote("b", "edge"), vote("edge", "b", "tie")]  # exactly 3
    votes += [vote("short", "a"), vote("b", "short")]  # one short
    board = compute_leaderboard(votes, bootstrap_rounds=0, min_votes=3)
    assert sorted(board.models) == ["a", "b", "edge"]
    assert {row.model: row.votes for row in board.rows}["edge"] == 3
    assert board.notes == ["1 model left out for fewer than 3 votes: short"]


def test_flagged_votes_never_count_and_named_votes_only_on_request():
    votes = [vote("a", "b")] * 5 + [vote("b", "a")] * 5
    votes += [vote("a", "b", flagged=True)] * 50 + [vote("b", "a", anony=False)] * 20
    default = compute_leaderboard(votes, bootstrap_rounds=0)
    assert default.votes_used == 10
    assert default.rows[0].rating == pytest.approx(1000)
    assert any("50 flagged" in note and "20 named" in note for note in default.notes)
    named = compute_leaderboard(votes, bootstrap_rounds=0, include_named=True)
    assert named.votes_used == 30 and named.models[0] == "b"
    assert select_votes([vote("a", "b", flagged=True, anony=True)], include_named=True) == []


def test_disconnected_groups_and_unbeaten_models_stay_finite_and_are_explained():
    votes = [vote("a", "b")] * 5 + [vote("b", "a")] * 3
    votes += [vote("c", "d")] * 5 + [vote("d", "c")] * 5
    votes += [vote("champion", "a")] * 7 + [vote("b", "loser")] * 3
    board = compute_leaderboard(votes, bootstrap_rounds=100, seed=0)
    values = [v for row in board.rows for v in (row.rating, row.ci_lower, row.ci_upper) if v is not None]
    assert all(map(math.isfinite, values))
    # only wins, only losses: the ridge, not the votes, would set their intervals
    assert [row.model for row in board.rows if row.ci_lower is None] == ["champion", "loser"]
    notes = " ".join(board.notes)
    assert "2 groups of models never compared with each other" in notes and "compare only within a group" in notes
    assert "champion has only wins" in notes and "loser has only losses" in notes
    ratings = {row.model: row.rating for row in board.rows}
    assert ratings["champion"] > ratings["a"] and ratings["loser"] < ratings["b"]


def test_ranks_count_only_models_of_the_same_compared_group():
    """Two arenas in one file: a big gap in one says nothing of the other's models."""
    votes = [vote("x", "y")] * 60 + [vote("y", "x")] * 20  # x well above y
    votes += [vote("p", "q")] * 95 + [vote("q", "p")] * 5  # a wider gap, never compared with x or y
    board = compute_leaderboard(votes, bootstrap_rounds=200, seed=0)
    rows = {row.model: row for row in board.rows}
    assert rows["q"].ci_upper < rows["x"].ci_lower  # the intervals alone would put x above q
    assert {model: row.rank for model, row in rows.items()} == {"p": 1, "x": 1, "y": 2, "q": 2}
    assert any("each group is ranked and listed on its own" in note for note in board.notes)
    assert [row.model for row in board.rows] == ["p", "q", "x", "y"]  # the best-rated model's group first, apart
    # Nor do the ratings predict anything across groups: only within one.
    predicted = board.predicted_win_probability
    assert np.isnan(predicted[:2, 2:]).all() and np.isnan(predicted[2:, :2]).all()
    assert predicted[0, 1] > 0.9 and predicted[2, 3] > 0.6


@pytest.mark.parametrize("rounds", [200, 0], ids=["bootstrap", "no bootstrap"])
def test_a_pair_of_newcomers_with_one_vote_is_listed_after_the_arena_whatever_their_ratings(rounds):
    """Its ridge-set 1681 is no reason to list a group of two models and one vote above eighty votes' ranking."""
    votes = [vote("x", "y")] * 60 + [vote("y", "x")] * 20 + [vote("new-one", "new-two")]
    board = compute_leaderboard(votes, bootstrap_rounds=rounds, seed=0)
    rows = {row.model: row for row in board.rows}
    assert rows["new-one"].rating > rows["x"].rating  # what listed them first
    assert [row.model for row in board.rows] == ["x", "y", "new-one", "new-two"]
    assert [row.group for row in board.rows] == [1, 1, 2, 2]


@pytest.mark.parametrize("newcomer_votes, measured", [(5, False), (30, True)])
def test_a_newcomer_gets_an_interval_and_a_rank_only_once_its_votes_set_them(newcomer_votes, measured):
    """With 5 votes, many resamples leave it no win (or no loss): the ridge would set its interval's ends."""
    rng = np.random.default_rng(3)
    votes = simulated_votes(np.array([0.0, 60, 120, 180, 240]), 5000, rng)
    for i in range(newcomer_votes):
        opponent = f"m{i % 5}"
        votes.append(vote("newcomer", opponent) if i % 5 < 2 else vote(opponent, "newcomer"))
    board = compute_leaderboard(votes, bootstrap_rounds=300, seed=0)
    newcomer = next(row for row in board.rows if row.model == "newcomer")
    assert (newcomer.ci_lower is not None) is measured and (newcomer.rank is not None) is measured
    assert all(row.rank is not None and row.ci_lower is not None for row in board.rows if row.model != "newcomer")
    said = [note for note in board.notes if "too few wins or losses" in note]  # a "–" is explained
    assert said == ([] if measured else ["1 model with too few wins or losses for an interval or a rank (more than "
                                         "2.5% of the resamples leave it no win or no loss): newcomer"])


def test_a_model_with_only_wins_has_no_interval_and_outranks_nobody_but_the_rest_keep_theirs():
    votes = [vote("unbeaten", "b")] * 20 + [vote("b", "c")] * 25 + [vote("c", "b")] * 25
    board = compute_leaderboard(votes, bootstrap_rounds=200, seed=0)
    rows = {row.model: row for row in board.rows}
    assert rows["unbeaten"].ci_lower is None and rows["b"].ci_lower is not None and rows["c"].ci_lower is not None
    # b and c overlap; unbeaten's place is the ridge's, so it has no rank and outranks neither
    assert {row.model: row.rank for row in board.rows} == {"unbeaten": None, "b": 1, "c": 1}
    notes = " ".join(board.notes)
    assert "unbeaten has only wins" in notes and "only losses" not in notes  # b and c hold the votes
    assert "too few wins" not in notes  # one note for unbeaten, not two


# A young arena's first votes: after 1 and 3 no model has an interval yet, after 10 two of the three have one.
FIRST_VOTES = {
    1: [vote("a", "b")],
    3: [vote("a", "b"), vote("a", "b"), vote("b", "a")],
    10: [vote("a", "c"), vote("c", "a"), vote("a", "c", "tie")] * 2
    + [vote("a", "b"), vote("c", "b"), vote("b", "a", "tie"), vote("c", "b")],
}


@pytest.mark.parametrize("rounds", [200, 0], ids=["bootstrap", "no bootstrap"])
@pytest.mark.parametrize("count", sorted(FIRST_VOTES))
def test_the_ratings_predict_nothing_for_a_model_its_votes_do_not_place_yet(count, rounds):
    """After one vote the ratings are about 1681 and 319, the ridge's: a "1.00 chance of winning" the vote cannot
    support. Only pairs of models the votes place (those with an interval) get a prediction, bootstrap or not."""
    votes = FIRST_VOTES[count]
    placed = {row.model: row.ci_lower is not None for row in compute_leaderboard(votes, bootstrap_rounds=200, seed=0).rows}
    assert sum(placed.values()) == (2 if count == 10 else 0)
    board = compute_leaderboard(votes, bootstrap_rounds=rounds, seed=0)
    both_placed = np.array([[placed[i] and placed[j] and i != j for j in board.models] for i in board.models])
    predicted = board.predicted_win_probability
    assert np.array_equal(np.isfinite(predicted), both_placed)
    assert ((0.3 < predicted[both_placed]) & (predicted[both_placed] < 0.7)).all()  # a, c: 3 wins each, 2 ties


def test_zero_votes_give_an_empty_leaderboard():
    for records in ([], [vote("a", "b", flagged=True)]):
        board = compute_leaderboard(records, anchor=("a", 1000.0))
        assert board.rows == [] and board.models == [] and board.votes_used == 0
        assert board.as_dicts() == []
        assert board.notes


def test_leaderboard_matrices_and_dicts():
    votes = simulated_votes(np.array([0.0, 100, 200, 300]), 400, np.random.default_rng(1), tie_share=0.2)
    board = compute_leaderboard(votes, bootstrap_rounds=50, seed=0)
    n = len(board.models)
    assert board.battle_counts.shape == board.win_fraction.shape == board.predicted_win_probability.shape == (n, n)
    assert np.array_equal(board.battle_counts, board.battle_counts.T)
    assert board.battle_counts.sum() == 2 * 400
    off = ~np.eye(n, dtype=bool)
    assert np.allclose((board.win_fraction + board.win_fraction.T)[off], 1)
    assert np.allclose((board.predicted_win_probability + board.predicted_win_probability.T)[off], 1)
    assert np.isnan(np.diag(board.predicted_win_probability)).all()
    assert board.predicted_win_probability[0, -1] > 0.5
    rows = board.as_dicts()
    assert list(rows[0]) == ["rank", "model", "rating", "ci_lower", "ci_upper", "elo", "votes", "win_rate", "group"]
    assert [r["rating"] for r in rows] == sorted((r["rating"] for r in rows), reverse=True)
    # Each row's Elo is the online Elo of the counted votes (a flagged one is not), not its rating again.
    flagged = vote(board.models[-1], board.models[0], flagged=True)
    flagged_board = compute_leaderboard([*votes, flagged], bootstrap_rounds=0)
    elo = online_elo(select_votes(votes))
    assert {row.model: row.elo for row in flagged_board.rows} == pytest.approx(elo)
    assert all(abs(row.elo - row.rating) > 0.01 for row in flagged_board.rows)


# --- aggregation and online Elo ----------------------------------------------------


def test_aggregate_counts_wins_and_ties_per_pair():
    counts = aggregate(
        [vote("b", "a"), vote("a", "b", "model_b"), vote("a", "b", "tie"), vote("a", "b", "tie (bothbad)")]
    )
    assert counts.models == ["a", "b"]
    assert counts.wins.tolist() == [[0, 0], [2, 0]]
    assert counts.ties.tolist() == [[0, 2], [2, 0]]
    assert counts.total_votes == 4
    assert isinstance(counts.subset(["b"]), PairCounts)
    with pytest.raises(ValueError, match="unknown winner"):
        aggregate([vote("a", "b", "draw")])


def test_online_elo_hand_checked():
    votes = [vote("a", "b", tstamp=1.0), vote("b", "c", tstamp=3.0), vote("a", "b", "tie", tstamp=2.0)]
    ratings = online_elo(votes)  # replayed in time order: a>b, a=b, b>c
    # 1) equal ratings, expected 0.5: a +2, b -2.
    a, b = 1002.0, 998.0
    # 2) tie: a was expected to score 1 / (1 + 10^(-4/400)).
    change = 4 * (0.5 - 1 / (1 + 10 ** (-4 / 400)))
    a, b = a + change, b - change
    assert a == pytest.approx(1001.97698, abs=1e-5)
    # 3) b (998.02) beats newcomer c (1000).
    change = 4 * (1 - 1 / (1 + 10 ** ((1000 - b) / 400)))
    b, c = b + change, 1000 - change
    assert ratings == pytest.approx({"a": a, "b": b, "c": c})
    assert online_elo(votes[:1], k=32) == {"a": 1016.0, "b": 984.0}


def test_online_elo_replays_votes_without_time_first_in_input_order():
    votes = [vote("a", "b", tstamp=5.0), vote("b", "a"), vote("b", "a", tstamp=1.0)]
    untimed = [{k: v for k, v in record.items() if k != "tstamp"} for record in votes]
    assert online_elo(votes) == online_elo([untimed[1], untimed[2], untimed[0]])
    assert online_elo(votes) != online_elo(untimed)  # order matters, so the rule above is doing something


def test_without_bootstrap_models_with_the_same_record_share_a_rank():
    votes = [vote("gpt-4", "claude-v1"), vote("GPT-4", "claude-v1")]  # fitted equal but for rounding noise
    board = compute_leaderboard(votes, bootstrap_rounds=0)
    assert {row.model: row.rank for row in board.rows} == {"gpt-4": 1, "GPT-4": 1, "claude-v1": 3}
