"""Tests of the learned fusion (candidate features, the ranker, per-user top-k, fallback fill) and reasons."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from recsys.constants import ITEM_COL, RANK_COL, SCORE_COL, USER_COL
from recsys.fusion.context import CONTEXT_COLUMNS, add_context_features
from recsys.fusion.blend import (
    FusionParams,
    HybridRanker,
    candidate_features,
    feature_columns,
    fill_with_fallback,
    top_k_per_user,
)
from recsys.fusion.explain import add_reasons

# Small but enough trees to learn a threshold on one feature; min_samples_leaf small for the tiny frames.
FAST_FUSION = FusionParams(max_iter=40, min_samples_leaf=10, sources=("a", "b"), seed=3)


def _candidates(rows: list[tuple[int, int, float, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=[USER_COL, ITEM_COL, SCORE_COL, RANK_COL])


# ---------------------------------------------------------------------------------------------
# candidate_features
# ---------------------------------------------------------------------------------------------
def test_candidate_features_one_row_per_pair_with_hand_worked_values():
    candidates = {
        "a": _candidates([(1, 10, 3.0, 1), (1, 20, 1.0, 2), (1, 30, 2.0, 3), (2, 10, 5.0, 1)]),
        "b": _candidates([(1, 20, 0.5, 1), (2, 30, 0.2, 1), (2, 40, 0.1, 2)]),
    }
    item_popularity = pd.Series({10: 3, 20: 1})  # 30 and 40 unknown -> 0
    user_activity = pd.Series({1: 4})  # user 2 unknown -> 0

    features = candidate_features(candidates, item_popularity, user_activity)

    features = features.sort_values([USER_COL, ITEM_COL]).reset_index(drop=True)
    assert features[[USER_COL, ITEM_COL]].values.tolist() == [[1, 10], [1, 20], [1, 30], [2, 10], [2, 30], [2, 40]]
    # Everything but the context columns (added by fusion.context) comes from candidate_features.
    assert set(feature_columns(("a", "b"))) - set(CONTEXT_COLUMNS) <= set(features.columns)
    # rr = 1 / (rank + 5) for a proposer, 0 otherwise.
    np.testing.assert_allclose(features["a_rr"], [1 / 6, 1 / 7, 1 / 8, 1 / 6, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(features["b_rr"], [0, 1 / 6, 0, 0, 1 / 6, 1 / 7], rtol=1e-6)
    assert features["n_sources"].tolist() == [1, 2, 1, 1, 1, 1]
    np.testing.assert_allclose(features["rrf"], [1 / 6, 1 / 7 + 1 / 6, 1 / 8, 1 / 6, 1 / 6, 1 / 7], rtol=1e-6)
    # Scores min-max per user within a source: user 1 in a has 3, 1, 2 -> 1, 0, 0.5.
    np.testing.assert_allclose(features["a_score"], [1.0, 0.0, 0.5, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(features["b_score"], [0.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(features["item_popularity"], np.log1p([3, 1, 0, 3, 0, 0]), rtol=1e-6)
    np.testing.assert_allclose(features["user_activity"], np.log1p([4, 4, 4, 0, 0, 0]), rtol=1e-6)


def test_candidate_features_names_a_missing_column():
    with pytest.raises(ValueError, match=RANK_COL):
        candidate_features({"a": _candidates([(1, 10, 1.0, 1)]).drop(columns=[RANK_COL])}, pd.Series(dtype=float), pd.Series(dtype=float))


# ---------------------------------------------------------------------------------------------
# HybridRanker on a synthetic rule: the truth is "source a proposed it at rank <= 3"
# ---------------------------------------------------------------------------------------------
def _synthetic_stage(seed: int, n_users: int = 150, pool: int = 15, per_source: int = 10):
    rng = np.random.default_rng(seed)
    a_rows, b_rows, truth = [], [], []
    for user in range(n_users):
        products = 1000 + rng.permutation(pool * 10)[:pool]
        a_items = rng.choice(products, per_source, replace=False)
        b_items = rng.choice(products, per_source, replace=False)
        for rank, item in enumerate(a_items, start=1):
            a_rows.append((user, int(item), float(per_source - rank) + rng.random() * 0.1, rank))
            if rank <= 3:
                truth.append((user, int(item)))
        for rank, item in enumerate(b_items, start=1):
            b_rows.append((user, int(item), float(per_source - rank), rank))
    candidates = {"a": _candidates(a_rows), "b": _candidates(b_rows)}
    activity = pd.Series(rng.integers(1, 50, n_users), index=np.arange(n_users))
    popularity = pd.Series(rng.integers(1, 100, pool * 10), index=1000 + np.arange(pool * 10))
    features = candidate_features(candidates, popularity, activity)
    return candidates, features, pd.DataFrame(truth, columns=[USER_COL, ITEM_COL])


@pytest.fixture(scope="module")
def trained_ranker():
    _, features, truth = _synthetic_stage(seed=0)
    return HybridRanker(FAST_FUSION).fit(features, truth)


def test_ranker_learns_the_rule_and_ranks_it_first_on_fresh_candidates(trained_ranker):
    candidates, features, truth = _synthetic_stage(seed=1)

    ranked = trained_ranker.rank(features, k=3)

    got = ranked.groupby(USER_COL)[ITEM_COL].apply(frozenset)
    expected = truth.groupby(USER_COL)[ITEM_COL].apply(frozenset)
    assert (got == expected.reindex(got.index)).all()
    # Every true candidate outscores every other candidate of its user.
    scored = features[[USER_COL, ITEM_COL]].assign(score=trained_ranker.score(features))
    scored["is_truth"] = pd.MultiIndex.from_frame(scored[[USER_COL, ITEM_COL]]).isin(pd.MultiIndex.from_frame(truth))
    margins = scored.groupby(USER_COL).apply(
        lambda g: g.loc[g["is_truth"], SCORE_COL].min() - g.loc[~g["is_truth"], SCORE_COL].max(), include_groups=False
    )
    assert (margins > 0).all()


def test_rank_output_shape_and_sources(trained_ranker):
    _, features, _ = _synthetic_stage(seed=2, n_users=20)

    ranked = trained_ranker.rank(features, k=5)

    assert list(ranked.columns) == [USER_COL, ITEM_COL, SCORE_COL, "sources", RANK_COL]
    assert ranked[USER_COL].is_monotonic_increasing
    for _, rows in ranked.groupby(USER_COL):
        assert rows[RANK_COL].tolist() == [1, 2, 3, 4, 5]
        assert rows[SCORE_COL].is_monotonic_decreasing
        assert not rows[ITEM_COL].duplicated().any()
    merged = ranked.merge(features, on=[USER_COL, ITEM_COL])
    expected_sources = [
        ",".join(name for name, rr in (("a", row.a_rr), ("b", row.b_rr)) if rr > 0) for row in merged.itertuples()
    ]
    assert merged["sources"].tolist() == expected_sources
    assert {"a", "a,b"} <= set(expected_sources)  # the rule's winners come from a, sometimes both


def test_rank_sources_column_on_a_hand_made_frame(trained_ranker):
    features = pd.DataFrame(
        {USER_COL: [1, 1, 1], ITEM_COL: [7, 8, 9], "a_rr": [1 / 6, 0.0, 1 / 7], "b_rr": [0.0, 1 / 6, 1 / 8]}
    )
    ranked = trained_ranker.rank(features, k=3).set_index(ITEM_COL)
    assert ranked.loc[[7, 8, 9], "sources"].tolist() == ["a", "b", "a,b"]
    assert sorted(ranked[RANK_COL]) == [1, 2, 3]


def test_ranker_ignores_a_source_missing_from_the_features(trained_ranker):
    # A named source with no columns (it proposed nothing) counts as "not proposed", not as an error.
    _, features, _ = _synthetic_stage(seed=2, n_users=5)
    without_b = features.drop(columns=["b_rr", "b_score"])
    zeroed_b = features.assign(b_rr=0.0, b_score=0.0)
    np.testing.assert_array_equal(trained_ranker.score(without_b), trained_ranker.score(zeroed_b))


def test_rank_with_an_empty_source_and_with_no_candidates_at_all(trained_ranker):
    empty = _candidates([]).astype({USER_COL: np.int64, ITEM_COL: np.int64, SCORE_COL: float, RANK_COL: np.int64})
    only_a = candidate_features({"a": _candidates([(1, 5, 2.0, 1), (1, 6, 1.0, 2)]), "b": empty}, pd.Series(dtype=float), pd.Series(dtype=float))
    assert only_a["n_sources"].tolist() == [1, 1] and only_a["b_rr"].tolist() == [0, 0]
    assert trained_ranker.rank(only_a, k=5)["sources"].tolist() == ["a", "a"]

    nothing = candidate_features({"a": empty, "b": empty}, pd.Series(dtype=float), pd.Series(dtype=float))
    ranked = trained_ranker.rank(nothing, k=5)
    assert ranked.empty and list(ranked.columns) == [USER_COL, ITEM_COL, SCORE_COL, "sources", RANK_COL]
    # ... and the fallback still serves the users.
    fallback = _candidates([(1, 5, 2.0, 1), (1, 6, 1.0, 2)])
    assert fill_with_fallback(ranked, fallback, np.array([1]), k=2)[ITEM_COL].tolist() == [5, 6]


def test_fit_without_any_positive_is_a_clear_error():
    _, features, _ = _synthetic_stage(seed=0, n_users=10)
    truth = pd.DataFrame({USER_COL: [0, 1], ITEM_COL: [1, 2]})  # products nobody proposed
    with pytest.raises(ValueError, match="no validation target appears among the candidates"):
        HybridRanker(FAST_FUSION).fit(features, truth)


def test_fit_without_any_negative_is_a_clear_error():
    _, features, _ = _synthetic_stage(seed=0, n_users=10)
    with pytest.raises(ValueError, match="no negatives"):
        HybridRanker(FAST_FUSION).fit(features, features[[USER_COL, ITEM_COL]])


def test_fit_needs_sources_and_truth_columns():
    _, features, truth = _synthetic_stage(seed=0, n_users=10)
    with pytest.raises(ValueError, match="sources"):
        HybridRanker(FusionParams()).fit(features, truth)
    with pytest.raises(ValueError, match=ITEM_COL):
        HybridRanker(FAST_FUSION).fit(features, truth[[USER_COL]])


def test_score_before_fit():
    with pytest.raises(RuntimeError, match="before fit"):
        HybridRanker(FAST_FUSION).score(pd.DataFrame({USER_COL: [1], ITEM_COL: [2]}))


def test_ranker_is_deterministic_and_survives_save_load(trained_ranker, tmp_path):
    _, features, truth = _synthetic_stage(seed=0)
    _, fresh, _ = _synthetic_stage(seed=4, n_users=30)

    again = HybridRanker(FAST_FUSION).fit(features, truth)
    np.testing.assert_array_equal(again.score(fresh), trained_ranker.score(fresh))

    trained_ranker.save(tmp_path / "hybrid")
    loaded = HybridRanker.load(tmp_path / "hybrid")
    assert loaded.params == trained_ranker.params and loaded.params.sources == ("a", "b")
    pd.testing.assert_frame_equal(loaded.rank(fresh, k=4), trained_ranker.rank(fresh, k=4))


def test_rank_applies_the_category_cap_from_params():
    _, features, truth = _synthetic_stage(seed=0)
    ranker = HybridRanker(replace(FAST_FUSION, max_per_category=1)).fit(features, truth)
    _, fresh, fresh_truth = _synthetic_stage(seed=1, n_users=20)
    # The rule's three winners of each user share one category; everything else is "other".
    winners = set(fresh_truth[ITEM_COL])
    category = pd.Series({item: ("hot" if item in winners else "other") for item in fresh[ITEM_COL].unique()})

    capped = ranker.rank(fresh, k=3, item_category=category)
    uncapped = ranker.rank(fresh, k=3)

    assert (uncapped.groupby(USER_COL)[ITEM_COL].apply(lambda s: s.isin(winners).sum()) == 3).all()
    per_user_hot = capped.groupby(USER_COL)[ITEM_COL].apply(lambda s: s.map(category).eq("hot").sum())
    per_user_other = capped.groupby(USER_COL)[ITEM_COL].apply(lambda s: s.map(category).eq("other").sum())
    assert (per_user_hot == 1).all() and (per_user_other == 1).all()  # only two categories: 2 rows each
    assert capped[RANK_COL].tolist() == [1, 2] * 20


# ---------------------------------------------------------------------------------------------
# top_k_per_user and fill_with_fallback
# ---------------------------------------------------------------------------------------------
def test_top_k_per_user_orders_breaks_ties_and_caps_categories():
    ranked = pd.DataFrame(
        {
            USER_COL: [2, 1, 1, 1, 1, 1, 1],
            ITEM_COL: [9, 5, 4, 3, 2, 1, 6],
            SCORE_COL: [0.1, 0.5, 0.6, 0.7, 0.8, 0.9, 0.8],
        }
    )
    category = pd.Series({1: "shoes", 2: "shoes", 3: "shoes", 4: "kitchen", 9: "kitchen"})  # 5 and 6 unknown

    plain = top_k_per_user(ranked, k=4)
    assert plain[USER_COL].tolist() == [1, 1, 1, 1, 2]
    assert plain[ITEM_COL].tolist() == [1, 2, 6, 3, 9]  # 2 and 6 tie at 0.8: smaller id first
    assert plain[RANK_COL].tolist() == [1, 2, 3, 4, 1]

    capped = top_k_per_user(ranked, k=4, max_per_category=2, item_category=category)
    # shoes: 1, 2 kept, 3 dropped; unknown (6, 5) counts as one category of its own: 6 then 5.
    assert capped[ITEM_COL].tolist() == [1, 2, 6, 4, 9]
    assert capped[RANK_COL].tolist() == [1, 2, 3, 4, 1]

    # A cap of 0 or no categories means no cap.
    pd.testing.assert_frame_equal(top_k_per_user(ranked, k=4, max_per_category=0, item_category=category), plain)
    pd.testing.assert_frame_equal(top_k_per_user(ranked, k=4, max_per_category=2), plain)


def test_fill_with_fallback_gives_every_listed_user_k_rows_hybrid_first():
    hybrid = pd.DataFrame(
        {
            USER_COL: [1, 1, 3],
            ITEM_COL: [10, 20, 99],
            SCORE_COL: [0.9, 0.05, 0.5],
            "sources": ["a", "a,b", "b"],
            RANK_COL: [1, 2, 1],
        }
    )
    fallback = pd.DataFrame(
        {
            USER_COL: [1, 1, 1, 1, 2, 2, 2, 2, 7],
            ITEM_COL: [20, 30, 40, 50, 20, 30, 40, 50, 30],
            SCORE_COL: [9.0, 8.0, 7.0, 6.0, 9.0, 8.0, 7.0, 6.0, 9.0],
            RANK_COL: [1, 2, 3, 4, 1, 2, 3, 4, 1],
        }
    )

    filled = fill_with_fallback(hybrid, fallback, np.array([1, 2]), k=4)

    for user in (1, 2):
        rows = filled[filled[USER_COL] == user]
        assert len(rows) == 4 and not rows[ITEM_COL].duplicated().any()
        assert rows[RANK_COL].tolist() == [1, 2, 3, 4]
    user_1 = filled[filled[USER_COL] == 1]
    # Both hybrid rows (even the weak 0.05) come before popularity's; 20 keeps its hybrid sources.
    assert user_1[ITEM_COL].tolist() == [10, 20, 30, 40]
    assert user_1["sources"].tolist() == ["a", "a,b", "popularity", "popularity"]
    user_2 = filled[filled[USER_COL] == 2]
    assert user_2[ITEM_COL].tolist() == [20, 30, 40, 50]
    assert (user_2["sources"] == "popularity").all()
    # Fallback rows of users not listed are not added.
    assert 7 not in set(filled[USER_COL])


# ---------------------------------------------------------------------------------------------
# add_reasons
# ---------------------------------------------------------------------------------------------
def test_add_reasons_by_source_and_history():
    items = pd.DataFrame(
        {
            ITEM_COL: [1, 2, 3, 4, 5],
            "title": ["Red Trail Runner", None, "Steel Blender", "Frying Pan", "Mystery Box"],
            "category_code": ["apparel.shoes", "apparel.shoes", "kitchen.blender", "kitchen.pan", None],
            "top_category": ["apparel", "apparel", "kitchen", "kitchen", None],
        }
    )
    sequences = pd.DataFrame(
        {
            USER_COL: [10, 11, 12, 13],
            "product_ids": [np.array([3, 1]), np.array([2]), np.array([4]), np.array([], dtype=np.int64)],
            "event_types": [np.array(["cart", "view"]), np.array(["purchase"]), np.array(["cart"]), np.array([], dtype=object)],
        }
    )
    recommendations = pd.DataFrame(
        {
            USER_COL: [10, 10, 10, 10, 11, 12, 13, 14, 10],
            ITEM_COL: [2, 3, 4, 5, 1, 1, 3, 4, 4],
            SCORE_COL: [0.9, 0.8, 0.7, 0.6, 0.9, 0.9, 0.9, 0.9, 0.1],
            "sources": [
                "popularity,sequence",  # sequence speaks first whatever the order
                "content,collaborative",
                "collaborative",
                "popularity",
                "sequence",
                "content",
                "content",
                "popularity",
                "",
            ],
            RANK_COL: [1, 2, 3, 4, 1, 1, 1, 1, 5],
        }
    )

    out = add_reasons(recommendations, items, sequences)

    assert out.drop(columns=["reason"]).equals(recommendations)
    assert out["reason"].tolist() == [
        "because you viewed Red Trail Runner",
        "similar to Red Trail Runner",
        "customers with similar taste chose it",
        "popular in the shop",  # item 5 has no top category
        "because you bought apparel shoes #2",  # no title: category and id stand in
        "similar to Frying Pan",
        "similar to your recent activity",  # empty history
        "popular in kitchen",  # user 14 has no sequence at all
        "popular in kitchen",  # no source recorded: popularity is the fallback
    ]


def test_context_features_hand_worked():
    """User 1 put 3/4 of their weight on shoes (brand acme) and 1/4 on kitchen; prices 100 and 300."""
    t0 = pd.Timestamp("2026-11-20 12:00", tz="UTC")
    interactions = pd.DataFrame(
        {
            USER_COL: [1, 1],
            ITEM_COL: [10, 20],
            "weight": [3.0, 1.0],
            "last_event_time": [t0, t0 - pd.Timedelta(days=5)],
        }
    )
    items = pd.DataFrame(
        {
            ITEM_COL: [10, 20, 30, 40],
            "top_category": ["apparel", "kitchen", "apparel", None],
            "category_code": ["apparel.shoes", "kitchen.blender", "apparel.shoes", None],
            "brand": ["acme", "blendco", "acme", "other"],
            "price": [100.0, 300.0, 400.0, 0.0],
            "first_seen": [t0 - pd.Timedelta(days=10), t0 - pd.Timedelta(days=10), t0 - pd.Timedelta(days=2), pd.NaT],
        }
    )
    candidates = pd.DataFrame({USER_COL: [1, 1, 2], ITEM_COL: [30, 40, 30]})
    out = add_context_features(candidates, interactions, items, recent_days=3).set_index([USER_COL, ITEM_COL])
    assert set(CONTEXT_COLUMNS) <= set(out.columns)
    assert out.loc[(1, 30), "top_category_affinity"] == pytest.approx(0.75)
    assert out.loc[(1, 30), "category_affinity"] == pytest.approx(0.75)
    assert out.loc[(1, 30), "brand_affinity"] == pytest.approx(0.75)
    assert out.loc[(1, 40), "top_category_affinity"] == 0.0  # unknown category: no affinity
    assert out.loc[(2, 30), "brand_affinity"] == 0.0  # user 2 has no history
    assert out.loc[(1, 30), "item_age_days"] == pytest.approx(2.0)
    assert out.loc[(1, 40), "item_age_days"] == -1.0  # never seen
    # median price of the user's items is 200: 400 / 200 -> log 2
    assert out.loc[(1, 30), "price_ratio"] == pytest.approx(np.log(2.0), rel=1e-5)
    assert out.loc[(1, 40), "price_ratio"] == 0.0  # price 0: no ratio
