"""Pair sampler: valid pairs, fair sides, the promised frequencies, no starvation, warm-up."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arena.ratings import fit_bradley_terry
from arena.sampling import POLICIES, ActiveSampler, make_sampler

SIX = [f"model-{i}" for i in range(6)]


def decided_history(names, strengths, votes_per_pair, seed=0):
    """Votes among `names` drawn from Bradley-Terry with the given log-strengths."""
    rng = np.random.default_rng(seed)
    records = []
    for (i, a), (j, b) in itertools.combinations(enumerate(names), 2):
        p_a = 1.0 / (1.0 + np.exp(strengths[j] - strengths[i]))
        for _ in range(votes_per_pair):
            records.append({"model_a": a, "model_b": b, "winner": "model_a" if rng.random() < p_a else "model_b"})
    return records


def pair_counts(sampler, draws, seed=0):
    rng = np.random.default_rng(seed)
    counts = dict.fromkeys(itertools.combinations(sampler.models, 2), 0)
    position = {name: i for i, name in enumerate(sampler.models)}
    for _ in range(draws):
        a, b = sampler.draw(rng)
        counts[(a, b) if position[a] < position[b] else (b, a)] += 1
    return counts


def chi_square(counts, probabilities):
    observed = np.array([counts[pair] for pair in probabilities])
    expected = observed.sum() * np.array(list(probabilities.values()))
    return float(((observed - expected) ** 2 / expected).sum())


def far_tail(dof):
    """Chi-square value a correct sampler exceeds with negligible probability (mean + 6 sd)."""
    return dof + 6.0 * np.sqrt(2.0 * dof)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("count", [2, 3, 9])
def test_never_the_same_model_twice(policy, count):
    names = [f"m{i}" for i in range(count)]
    weights = {name: 1.0 + 10.0 * i for i, name in enumerate(names)}
    sampler = make_sampler(policy, names, weights=weights)
    rng = np.random.default_rng(count)
    for vote in range(3000):
        a, b = sampler.draw(rng)
        assert a != b and a in names and b in names
        if vote % 10 == 0:
            sampler.observe(a, b, "model_a")


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(min_value=1e-6, max_value=1e6), min_size=2, max_size=8), st.integers(0, 2**32 - 1))
def test_weighted_never_repeats_a_model_even_with_extreme_weights(weights, seed):
    names = [f"m{i}" for i in range(len(weights))]
    sampler = make_sampler("weighted", names, weights=dict(zip(names, weights)))
    rng = np.random.default_rng(seed)
    for _ in range(200):
        a, b = sampler.draw(rng)
        assert a != b


def test_uniform_draws_every_pair_equally_often():
    sampler = make_sampler("uniform", SIX)
    probabilities = sampler.pair_probabilities()
    assert np.allclose(list(probabilities.values()), 1 / 15)
    assert chi_square(pair_counts(sampler, 30_000), probabilities) < far_tail(14)


def test_weighted_pair_probabilities_follow_the_sequential_definition():
    weights = {"a": 1.0, "b": 2.0, "c": 4.0, "d": 8.0}
    total = sum(weights.values())
    expected = {
        (x, y): weights[x] / total * weights[y] / (total - weights[x])
        + weights[y] / total * weights[x] / (total - weights[y])
        for x, y in itertools.combinations(weights, 2)
    }
    got = make_sampler("weighted", list(weights), weights=weights).pair_probabilities()
    assert got == pytest.approx(expected)


def test_weighted_draw_frequencies_match_the_weights():
    weights = {"a": 1.0, "b": 2.0, "c": 4.0, "d": 8.0, "e": 0.5}
    sampler = make_sampler("weighted", list(weights), weights=weights)
    probabilities = sampler.pair_probabilities()
    counts = pair_counts(sampler, 40_000)
    assert chi_square(counts, probabilities) < far_tail(9)
    # and clearly not uniform: the heaviest pair is drawn far more than the lightest
    assert counts[("c", "d")] > 10 * counts[("a", "e")]


def test_weighted_missing_weights_default_to_one():
    sampler = make_sampler("weighted", ["a", "b", "c"], weights={"a": 1.0})
    assert np.allclose(list(sampler.pair_probabilities().values()), 1 / 3)


@pytest.mark.parametrize("policy", POLICIES)
def test_sides_are_a_coin_flip(policy):
    # the heavy (or, under active, the under-measured) model must not land on one side
    names = ["heavy", "light-1", "light-2"]
    history = decided_history(["light-1", "light-2"], [0.0, 0.3], 200)
    sampler = make_sampler(policy, names, weights={"heavy": 20.0}, history=history)
    rng = np.random.default_rng(7)
    draws = [sampler.draw(rng) for _ in range(8000)]
    for name in names:
        appearances = sum(name in pair for pair in draws)
        as_a = sum(a == name for a, _ in draws)
        assert abs(as_a - appearances / 2) < 4 * np.sqrt(appearances / 4) + 1, name


def test_active_never_starves_a_pair_after_a_lopsided_history():
    strengths = np.linspace(0.0, 5.0, 6)  # far apart: every pair is decided ...
    history = decided_history(SIX, strengths, 100)
    history += [  # ... except one pair that already has thousands of votes
        {"model_a": SIX[0], "model_b": SIX[1], "winner": w} for w in ["model_a", "model_b", "tie"] * 1500
    ]
    sampler = ActiveSampler(SIX, history, floor_share=0.1)
    floor = 0.1 / 15
    rng = np.random.default_rng(3)
    for _ in range(2000):  # the sampler keeps choosing and learning
        a, b = sampler.draw(rng)
        sampler.observe(a, b, "model_a" if SIX.index(a) > SIX.index(b) else "model_b")
    probabilities = sampler.pair_probabilities()
    assert min(probabilities.values()) >= floor * (1 - 1e-9)
    assert sum(probabilities.values()) == pytest.approx(1.0)
    counts = pair_counts(sampler, 20_000, seed=4)
    assert min(counts.values()) >= 0.5 * floor * 20_000


def test_active_pair_probabilities_match_its_draws():
    history = decided_history(SIX, np.array([0.0, 0.1, 0.2, 1.5, 1.6, 3.0]), 30)
    sampler = make_sampler("active", SIX, history=history)
    probabilities = sampler.pair_probabilities()
    assert max(probabilities.values()) > 3 * min(probabilities.values())  # it does prefer some pairs
    assert chi_square(pair_counts(sampler, 30_000), probabilities) < far_tail(14)


def share_with(sampler, name, draws=6000, seed=0):
    rng = np.random.default_rng(seed)
    return sum(name in sampler.draw(rng) for _ in range(draws)) / draws


def play(sampler, truth, own_votes, name, seed=5):
    """Let the sampler pick battles, answered by Bradley-Terry on `truth`, until `name` has `own_votes` of them."""
    rng = np.random.default_rng(seed)
    played = 0
    while played < own_votes:
        a, b = sampler.draw(rng)
        p_a = 1.0 / (1.0 + np.exp(truth[b] - truth[a]))
        sampler.observe(a, b, "model_a" if rng.random() < p_a else "model_b")
        played += name in (a, b)


def model_shares(sampler):
    shares = dict.fromkeys(sampler.models, 0.0)
    for (a, b), p in sampler.pair_probabilities().items():
        shares[a] += p
        shares[b] += p
    return shares


def test_active_new_model_gets_a_capped_boost_that_tapers_once_placed():
    established = [f"old-{i}" for i in range(8)]
    ladder = np.linspace(-1.5, 1.5, 8)
    sampler = make_sampler("active", established + ["new"], history=decided_history(established, ladder, 300))
    fair_share = 2 / 9  # what uniform would give it
    cap = 4 / 9  # the default cap for 9 models
    start = share_with(sampler, "new")
    assert 1.5 * fair_share < start <= cap + 0.02  # boosted, yet most battles still go to the others
    assert model_shares(sampler)["new"] <= cap

    # the newcomer is clearly the best: once its votes show it, it deserves no special traffic
    truth = dict(zip(established, ladder)) | {"new": 3.0}
    play(sampler, truth, 300, "new")
    assert share_with(sampler, "new") < 1.2 * fair_share


def test_active_warm_up_boosts_an_unplaced_newcomer_against_the_whole_ladder():
    """A newcomer that lost every battle is far below all, so no pair with it is confusable; yet its few
    votes (little information each) leave it unplaced, and the warm-up, not the share cap, sends it traffic."""
    established = [f"old-{i}" for i in range(11)]
    history = decided_history(established, np.linspace(-1.5, 1.5, 11), 3)
    history += [{"model_a": "new", "model_b": established[k % 11], "winner": "model_b"} for k in range(24)]
    boosted = ActiveSampler(established + ["new"], history, warm_up_share=0.3)
    plain = ActiveSampler(established + ["new"], history, warm_up_share=0.0)
    with_warm_up, without = model_shares(boosted)["new"], model_shares(plain)["new"]
    assert with_warm_up < 0.8 * boosted._max_model_share  # the cap does not bind here
    assert with_warm_up > 3 * without

    def against(sampler):
        return np.array([sampler.pair_probabilities()[(old, "new")] for old in established])

    extra = against(boosted) - against(plain)
    assert (extra > 0).all() and extra.max() < 2 * extra.sum() / len(established)  # every opponent, none twice its part


@pytest.mark.parametrize("count", [4, 9, 20, 40])
def test_active_caps_any_model_share(count):
    # one model never played, the rest settled: the uncertain one would take nearly every draw uncapped
    names = [f"m{i}" for i in range(count)]
    history = decided_history(names[1:], np.linspace(-2.0, 2.0, count - 1), 60)
    sampler = make_sampler("active", names, history=history)
    cap = max(1 / 3, min(1.0, 4 / count))
    assert max(model_shares(sampler).values()) <= cap + 1e-9
    assert model_shares(sampler)["m0"] > 1.5 * 2 / count


def test_active_prefers_close_pairs_over_decided_ones():
    names = ["a", "b", "c", "d"]
    history = decided_history(names, np.array([0.0, 0.05, 3.0, 3.05]), 200)
    probabilities = make_sampler("active", names, history=history).pair_probabilities()
    close = probabilities[("a", "b")] + probabilities[("c", "d")]
    assert close > 0.5


def test_active_incremental_strengths_track_a_full_fit():
    rng = np.random.default_rng(11)
    truth = rng.normal(0.0, 0.8, 10)
    names = [f"m{i}" for i in range(10)]
    sampler = ActiveSampler(names)
    wins = np.zeros((10, 10))
    for _ in range(3000):
        a, b = sampler.draw(rng)
        i, j = names.index(a), names.index(b)
        i_won = rng.random() < 1 / (1 + np.exp(truth[j] - truth[i]))
        sampler.observe(a, b, "model_a" if i_won else "model_b")
        wins[(i, j) if i_won else (j, i)] += 1
    full_fit = fit_bradley_terry(wins) * np.log(10) / 400
    incremental = sampler._strength
    assert np.corrcoef(full_fit, incremental)[0, 1] > 0.999
    assert np.abs((full_fit - full_fit.mean()) - (incremental - incremental.mean())).max() < 0.05


def test_history_naming_unknown_models_is_ignored():
    history = [
        {"model_a": "retired", "model_b": "a", "winner": "model_a"},
        {"model_a": "a", "model_b": "a", "winner": "tie"},
        {"model_a": "a", "model_b": "b", "winner": "tie (bothbad)", "tstamp": 1.0},
    ]
    sampler = make_sampler("active", ["a", "b", "c"], history=history)
    assert sampler._games.sum() == 2  # only the a-b vote, counted both ways
    sampler.observe("retired", "a", "model_b")  # ignored too, no error
    assert sampler._games.sum() == 2


def test_observe_from_many_threads_loses_no_vote():
    names = [f"m{i}" for i in range(12)]
    sampler = make_sampler("active", names)

    def vote(seed):
        rng = np.random.default_rng(seed)
        for _ in range(300):
            a, b = sampler.draw(rng)
            sampler.observe(a, b, "tie")

    threads = [threading.Thread(target=vote, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sampler._games.sum() == 2 * 4 * 300


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("models", [[], ["only"]])
def test_fewer_than_two_models_is_an_error(policy, models):
    with pytest.raises(ValueError, match="at least 2"):
        make_sampler(policy, models)


def test_repeated_model_names_are_an_error():
    with pytest.raises(ValueError, match="unique"):
        make_sampler("uniform", ["a", "b", "a"])


def test_unknown_policy_names_the_valid_ones():
    with pytest.raises(ValueError, match="uniform, weighted, active"):
        make_sampler("round-robin", ["a", "b"])


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_non_positive_or_non_finite_weight_is_an_error(bad):
    with pytest.raises(ValueError, match="'b'"):
        make_sampler("weighted", ["a", "b"], weights={"a": 1.0, "b": bad})


@pytest.mark.parametrize("policy", POLICIES)
def test_unknown_winner_label_is_an_error(policy):
    sampler = make_sampler(policy, ["a", "b"])
    with pytest.raises(ValueError, match="winner"):
        sampler.observe("a", "b", "left")


@pytest.mark.parametrize("names", [["heavy", "b", "c", "d"], ["b", "c", "d", "heavy"]], ids=["listed first", "listed last"])
@pytest.mark.parametrize("policy", POLICIES)
def test_excluded_models_are_never_drawn_while_a_pair_without_them_exists(policy, names):
    """A resting model (see FailureStreaks) is left out, even when its weight would have it in most pairs,
    wherever it is listed (first, it is only ever the first of a pair; last, only the second)."""
    sampler = make_sampler(policy, names, weights={"heavy": 50.0, "b": 1.0, "c": 1.0, "d": 1.0})
    rng = np.random.default_rng(0)
    pairs = [sampler.draw(rng, excluded={"heavy"}) for _ in range(300)]
    assert not any("heavy" in pair for pair in pairs)
    assert {frozenset(pair) for pair in pairs} == {frozenset(p) for p in itertools.combinations("bcd", 2)}
    everyone = [sampler.draw(rng, excluded=set(names)) for _ in range(20)]  # no pair left: draw as if none rested
    assert all(a != b and {a, b} <= set(names) for a, b in everyone)
