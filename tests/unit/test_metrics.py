"""Unit tests of recsys.evaluation.metrics: bounds (perfect and empty rankings), hand-worked values, argument errors."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from recsys.constants import ITEM_COL, RANK_COL, USER_COL
from recsys.evaluation.metrics import (
    catalog_coverage,
    evaluate,
    intra_list_diversity,
    popularity_bias,
    ranking_metrics,
)

RANKING_KEYS = ("hr", "precision", "recall", "ndcg", "map", "mrr")


def recs(rows: list[tuple[int, int, int]]) -> pd.DataFrame:
    """(user, item, rank) tuples -> a recommendation frame."""
    return pd.DataFrame(rows, columns=[USER_COL, ITEM_COL, RANK_COL])


def truth(rows: list[tuple[int, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=[USER_COL, ITEM_COL])


# The hand-worked example used by several tests below, with k = 3.
#   user 1: relevant {10, 30, 99}; list 10 (hit), 11, 30 (hit), 99 (hit but rank 4 > k: ignored)
#   user 2: relevant {20};         list 21, 20 (hit), 22
#   user 3: relevant {40};         no recommendations at all (counts as zero)
#   user 4: not in truth;          list 10 (ignored by ranking metrics, counted by coverage/popularity)
EXAMPLE_K = 3
EXAMPLE_RECS = recs(
    [
        (1, 10, 1), (1, 11, 2), (1, 30, 3), (1, 99, 4),
        (2, 21, 1), (2, 20, 2), (2, 22, 3),
        (4, 10, 1),
    ]
)
EXAMPLE_TRUTH = truth([(1, 10), (1, 30), (1, 99), (2, 20), (3, 40), (3, 40)])  # (3, 40) twice: deduplicated
LOG2_3 = math.log2(3)


# --------------------------------------------------------------------------------------------- ranking metrics


def test_perfect_ranking_scores_one_on_every_ranking_metric():
    # Every top-2 item is relevant and each user has exactly k relevant items.
    result = ranking_metrics(recs([(1, 1, 1), (1, 2, 2), (2, 4, 1), (2, 3, 2)]), truth([(1, 1), (1, 2), (2, 3), (2, 4)]), k=2)
    assert result == {"hr@2": 1.0, "precision@2": 1.0, "recall@2": 1.0, "ndcg@2": 1.0, "map@2": 1.0, "mrr@2": 1.0, "ndcg_se@2": 0.0, "users": 2.0}


def test_ndcg_and_map_normalise_by_min_of_relevant_and_k():
    # 5 relevant items but only k = 2 slots: both slots hit, so NDCG and MAP are perfect while recall is 2/5.
    result = ranking_metrics(recs([(1, 1, 1), (1, 2, 2)]), truth([(1, i) for i in range(1, 6)]), k=2)
    assert result["ndcg@2"] == pytest.approx(1.0)
    assert result["map@2"] == pytest.approx(1.0)
    assert result["precision@2"] == pytest.approx(1.0)
    assert result["recall@2"] == pytest.approx(2 / 5)


def test_no_hits_scores_zero_on_every_ranking_metric():
    result = ranking_metrics(recs([(1, 5, 1), (1, 6, 2), (2, 7, 1)]), truth([(1, 1), (2, 2)]), k=2)
    assert all(result[f"{name}@2"] == 0.0 for name in RANKING_KEYS)
    assert result["users"] == 2.0


def test_hand_worked_example_matches_exact_values():
    result = ranking_metrics(EXAMPLE_RECS, EXAMPLE_TRUTH, k=EXAMPLE_K)
    # Per user (user 3 scores 0 everywhere; the mean is over the 3 truth users):
    #   hr:        u1 1, u2 1                         -> 2/3
    #   precision: u1 2/3, u2 1/3                     -> (2/3 + 1/3) / 3 = 1/3
    #   recall:    u1 2/3, u2 1/1                     -> (2/3 + 1) / 3 = 5/9
    #   ndcg:      u1 DCG = 1/log2(2) + 1/log2(4) = 1.5, IDCG(min(3,3)=3) = 1 + 1/log2(3) + 0.5
    #              u2 DCG = 1/log2(3), IDCG(min(1,3)=1) = 1
    #   map:       u1 (1/1 + 2/3) / 3 = 5/9, u2 (1/2) / 1 = 1/2 -> (5/9 + 1/2) / 3 = 19/54
    #   mrr:       u1 1/1, u2 1/2                     -> 1.5 / 3 = 1/2
    expected_ndcg = (1.5 / (1.5 + 1 / LOG2_3) + 1 / LOG2_3) / 3
    assert result["hr@3"] == pytest.approx(2 / 3)
    assert result["precision@3"] == pytest.approx(1 / 3)
    assert result["recall@3"] == pytest.approx(5 / 9)
    assert result["ndcg@3"] == pytest.approx(expected_ndcg)
    # = (1.5 / 2.130930 + 0.630930) / 3 = (0.703916 + 0.630930) / 3
    assert result["ndcg@3"] == pytest.approx(0.444949, abs=1e-6)
    assert result["map@3"] == pytest.approx(19 / 54)
    assert result["mrr@3"] == pytest.approx(1 / 2)
    # ndcg_se: per-user ndcg (0.703916, 0.630930, 0) around their mean 0.444949; squared deviations
    # 0.067064, 0.034591, 0.197979 sum to 0.299634; s = sqrt(0.299634 / 2) = 0.387062; s / sqrt(3) = 0.223471
    per_user = np.array([1.5 / (1.5 + 1 / LOG2_3), 1 / LOG2_3, 0.0])
    assert result["ndcg_se@3"] == pytest.approx(np.std(per_user, ddof=1) / math.sqrt(3))
    assert result["ndcg_se@3"] == pytest.approx(0.223471, abs=1e-6)
    assert result["users"] == 3.0


def test_ndcg_standard_error_is_zero_for_one_user_and_shrinks_with_more_users():
    assert ranking_metrics(recs([(1, 1, 1)]), truth([(1, 1)]), k=1)["ndcg_se@1"] == 0.0
    # Users 1, 2 hit (ndcg 1), users 3, 4 miss (0): s = sqrt(4 * 0.25 / 3), se = s / 2.
    four = ranking_metrics(recs([(1, 1, 1), (2, 1, 1)]), truth([(1, 1), (2, 1), (3, 1), (4, 1)]), k=1)
    assert four["ndcg_se@1"] == pytest.approx(math.sqrt(1 / 3) / 2)
    # Twice as many users with the same half-and-half split: the mean is the same, its error smaller.
    eight = ranking_metrics(recs([(u, 1, 1) for u in (1, 2, 3, 4)]), truth([(u, 1) for u in range(1, 9)]), k=1)
    assert eight["ndcg@1"] == four["ndcg@1"] == 0.5
    assert eight["ndcg_se@1"] < four["ndcg_se@1"]


def test_truth_users_without_recommendations_count_as_zero():
    scored = ranking_metrics(recs([(1, 1, 1)]), truth([(1, 1)]), k=1)
    diluted = ranking_metrics(recs([(1, 1, 1)]), truth([(1, 1), (2, 1), (3, 1), (4, 1)]), k=1)
    assert diluted["users"] == 4.0
    for name in RANKING_KEYS:
        assert scored[f"{name}@1"] == 1.0
        assert diluted[f"{name}@1"] == pytest.approx(1 / 4), name


def test_recommended_users_absent_from_truth_are_ignored():
    base = ranking_metrics(recs([(1, 1, 1)]), truth([(1, 1)]), k=1)
    with_stranger = ranking_metrics(recs([(1, 1, 1), (9, 5, 1)]), truth([(1, 1)]), k=1)
    assert with_stranger == base


def test_ranks_beyond_k_are_ignored():
    # The only relevant item is at rank 3 > k = 2, so there is no hit at all.
    result = ranking_metrics(recs([(1, 7, 1), (1, 8, 2), (1, 1, 3)]), truth([(1, 1)]), k=2)
    assert all(result[f"{name}@2"] == 0.0 for name in RANKING_KEYS)
    # And the same list cut at k = 3 does hit it, at rank 3.
    assert ranking_metrics(recs([(1, 7, 1), (1, 8, 2), (1, 1, 3)]), truth([(1, 1)]), k=3)["mrr@3"] == pytest.approx(1 / 3)


def test_row_order_does_not_matter():
    shuffled = EXAMPLE_RECS.sample(frac=1.0, random_state=7)
    assert ranking_metrics(shuffled, EXAMPLE_TRUTH, EXAMPLE_K) == pytest.approx(
        ranking_metrics(EXAMPLE_RECS, EXAMPLE_TRUTH, EXAMPLE_K)
    )


def test_nullable_integer_ranks_are_accepted():
    nullable = EXAMPLE_RECS.astype({RANK_COL: "Int64"})
    assert ranking_metrics(nullable, EXAMPLE_TRUTH, EXAMPLE_K) == pytest.approx(
        ranking_metrics(EXAMPLE_RECS, EXAMPLE_TRUTH, EXAMPLE_K)
    )


# ---------------------------------------------------------------------------------------------------- coverage


def test_coverage_of_whole_catalogue_is_one():
    assert catalog_coverage(recs([(1, 1, 1), (1, 2, 2), (2, 3, 1)]), n_catalog_items=3, k=2) == 1.0


def test_coverage_without_top_k_rows_is_zero():
    # Only rank 2 > k = 1 rows: nothing is in the top-1.
    assert catalog_coverage(recs([(1, 1, 2)]), n_catalog_items=10, k=1) == 0.0


def test_coverage_hand_worked_example():
    # Top-3 items: u1 {10, 11, 30}, u2 {21, 20, 22}, u4 {10}; item 99 is rank 4 -> 6 distinct of 12.
    assert catalog_coverage(EXAMPLE_RECS, n_catalog_items=12, k=EXAMPLE_K) == pytest.approx(6 / 12)


def test_coverage_rejects_catalogue_smaller_than_recommended_items():
    with pytest.raises(ValueError, match="6 distinct items.*n_catalog_items is 5"):
        catalog_coverage(EXAMPLE_RECS, n_catalog_items=5, k=EXAMPLE_K)
    with pytest.raises(ValueError, match="n_catalog_items must be an integer >= 1"):
        catalog_coverage(EXAMPLE_RECS, n_catalog_items=0, k=EXAMPLE_K)


# -------------------------------------------------------------------------------------------------- popularity


def test_popularity_of_only_maximally_popular_items_is_one():
    popularity = pd.Series({1: 1.0, 2: 1.0})
    assert popularity_bias(recs([(1, 1, 1), (2, 2, 1)]), popularity, k=1) == 1.0


def test_popularity_of_unknown_items_is_zero():
    assert popularity_bias(recs([(1, 5, 1), (2, 6, 1)]), pd.Series({1: 0.7}), k=1) == 0.0


def test_popularity_hand_worked_example():
    # Top-3 rows: u1 10 (.4), 11 (0), 30 (.1); u2 21 (0), 20 (.2), 22 (0); u4 10 (.4); 99 is rank 4.
    # Mean over the 7 rows = (.4 + .1 + .2 + .4) / 7 = 1.1 / 7.
    popularity = pd.Series({10: 0.4, 20: 0.2, 30: 0.1, 99: 0.3})
    assert popularity_bias(EXAMPLE_RECS, popularity, k=EXAMPLE_K) == pytest.approx(1.1 / 7)


def test_popularity_rejects_duplicated_items():
    with pytest.raises(ValueError, match="item_popularity has 1 duplicate product_id"):
        popularity_bias(EXAMPLE_RECS, pd.Series([0.1, 0.2], index=[10, 10]), k=EXAMPLE_K)


# --------------------------------------------------------------------------------------------------- diversity


def test_diversity_of_all_different_categories_is_one():
    categories = pd.Series({1: "a", 2: "b", 3: "c"})
    assert intra_list_diversity(recs([(1, 1, 1), (1, 2, 2), (1, 3, 3)]), categories, k=3) == 1.0


def test_diversity_of_a_single_category_is_zero():
    categories = pd.Series({1: "a", 2: "a", 3: "a"})
    assert intra_list_diversity(recs([(1, 1, 1), (1, 2, 2), (2, 3, 1), (2, 1, 2)]), categories, k=2) == 0.0


def test_diversity_hand_worked_example():
    # u1 top-3 = 10 (a), 11 (a), 30 (b): 3 pairs, 1 same-category -> 2/3.
    # u2 top-3 = 21 (c), 20 (d), 22 (e): all 3 pairs differ -> 1.
    # u4 has a single item -> skipped.  Mean = (2/3 + 1) / 2 = 5/6.
    categories = pd.Series({10: "a", 11: "a", 30: "b", 99: "a", 21: "c", 20: "d", 22: "e"})
    assert intra_list_diversity(EXAMPLE_RECS, categories, k=EXAMPLE_K) == pytest.approx(5 / 6)


def test_diversity_leaves_out_items_of_unknown_category():
    # Item 3 has no category: only the pair (1, 2) is judged, and it is same-category.
    categories = pd.Series({1: "a", 2: "a"})
    assert intra_list_diversity(recs([(1, 1, 1), (1, 2, 2), (1, 3, 3)]), categories, k=3) == 0.0
    # A user left with fewer than two judged items is skipped entirely.
    assert intra_list_diversity(recs([(1, 1, 1), (1, 3, 2)]), categories, k=2) == 0.0


# ---------------------------------------------------------------------------------------------------- evaluate


def test_evaluate_combines_every_metric():
    popularity = pd.Series({10: 0.4, 20: 0.2, 30: 0.1})
    categories = pd.Series({10: "a", 11: "a", 30: "b", 21: "c", 20: "d", 22: "e"})
    result = evaluate(
        EXAMPLE_RECS, EXAMPLE_TRUTH, EXAMPLE_K, n_catalog_items=12, item_popularity=popularity, item_category=categories
    )
    expected = ranking_metrics(EXAMPLE_RECS, EXAMPLE_TRUTH, EXAMPLE_K) | {
        "coverage@3": 0.5,
        "popularity@3": 1.1 / 7,
        "diversity@3": 5 / 6,
    }
    assert result == pytest.approx(expected)


def test_evaluate_without_categories_has_no_diversity():
    result = evaluate(EXAMPLE_RECS, EXAMPLE_TRUTH, EXAMPLE_K, n_catalog_items=12, item_popularity=pd.Series(dtype=float))
    assert "diversity@3" not in result
    assert result["popularity@3"] == 0.0
    assert result["coverage@3"] == 0.5


# ------------------------------------------------------------------------------------------------ argument errors


@pytest.mark.parametrize("bad_k", [0, -1, 2.5, True, None])
def test_rejects_k_below_one_or_not_an_integer(bad_k):
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        ranking_metrics(EXAMPLE_RECS, EXAMPLE_TRUTH, bad_k)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        catalog_coverage(EXAMPLE_RECS, 12, bad_k)


def test_rejects_missing_recommendation_columns():
    with pytest.raises(ValueError, match=r"ranking_metrics: recommendations is missing column\(s\) \['rank'\]"):
        ranking_metrics(EXAMPLE_RECS.drop(columns=[RANK_COL]), EXAMPLE_TRUTH, 3)
    with pytest.raises(ValueError, match=r"popularity_bias: recommendations is missing column\(s\) \['product_id'\]"):
        popularity_bias(EXAMPLE_RECS.drop(columns=[ITEM_COL]), pd.Series(dtype=float), 3)
    with pytest.raises(ValueError, match=r"intra_list_diversity: recommendations is missing column\(s\) \['user_id'\]"):
        intra_list_diversity(EXAMPLE_RECS.drop(columns=[USER_COL]), pd.Series(dtype=object), 3)


def test_rejects_missing_truth_columns_and_empty_truth():
    with pytest.raises(ValueError, match=r"truth is missing column\(s\) \['product_id'\]"):
        ranking_metrics(EXAMPLE_RECS, EXAMPLE_TRUTH.drop(columns=[ITEM_COL]), 3)
    with pytest.raises(ValueError, match="truth is empty"):
        ranking_metrics(EXAMPLE_RECS, truth([]), 3)


def test_rejects_duplicate_user_item_recommendations():
    duplicated = recs([(1, 10, 1), (1, 10, 2), (2, 5, 1)])
    with pytest.raises(ValueError, match=r"1 duplicate \(user_id, product_id\) row"):
        ranking_metrics(duplicated, EXAMPLE_TRUTH, 3)
    with pytest.raises(ValueError, match=r"1 duplicate \(user_id, product_id\) row"):
        catalog_coverage(duplicated, 12, 3)


def test_rejects_tied_ranks_and_bad_rank_values():
    with pytest.raises(ValueError, match=r"1 duplicate \(user_id, rank\) row"):
        ranking_metrics(recs([(1, 10, 1), (1, 11, 1)]), EXAMPLE_TRUTH, 3)
    with pytest.raises(ValueError, match="rank < 1; ranks are 1-based"):
        ranking_metrics(recs([(1, 10, 0)]), EXAMPLE_TRUTH, 3)
    with pytest.raises(ValueError, match="must be an integer column"):
        ranking_metrics(EXAMPLE_RECS.astype({RANK_COL: float}), EXAMPLE_TRUTH, 3)
    with pytest.raises(ValueError, match="1 row\\(s\\) with a null"):
        ranking_metrics(EXAMPLE_RECS.astype({RANK_COL: "Int64"}).assign(rank=lambda f: f[RANK_COL].where(f[ITEM_COL] != 22)), EXAMPLE_TRUTH, 3)


def test_rejects_non_dataframe_arguments():
    with pytest.raises(TypeError, match="recommendations must be a pandas DataFrame"):
        ranking_metrics([(1, 10, 1)], EXAMPLE_TRUTH, 3)
    with pytest.raises(TypeError, match="item_category must be a pandas Series"):
        intra_list_diversity(EXAMPLE_RECS, {10: "a"}, 3)
