"""Tests of the shared model plumbing and the popularity, ALS and content recommenders.

One small synthetic shop serves every model: group-A users touch running shoes, group-B users touch
kitchen blenders, and a probe user has seen a few red running shoes. Each model must keep the common
face (columns, dtypes, contiguous ranks, k, seen exclusion, persistence) and learn what it should.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.constants import ITEM_COL, RANK_COL, SCORE_COL, USER_COL
from recsys.models.base import SeenIndex, top_k_frame
from recsys.models.collaborative import ALSParams, ALSRecommender
from recsys.models.content import ContentParams, ContentRecommender
from recsys.models.popularity import PopularityParams, PopularityRecommender

COLUMNS = [USER_COL, ITEM_COL, SCORE_COL, RANK_COL]
DTYPES = {USER_COL: np.int64, ITEM_COL: np.int64, SCORE_COL: np.float64, RANK_COL: np.int64}

SHOES = list(range(100, 110))  # running shoes, touched by group A
COLD_SHOE = 110  # a running shoe in the catalog that nobody has touched yet
BLENDERS = list(range(200, 210))  # kitchen blenders, touched by group B
GROUP_A = list(range(1, 21))
GROUP_B = list(range(21, 41))
PROBE = 0  # touched the red shoes 100..103
PROBE_TOUCHED = [100, 101, 102, 103]
PROBE_SEEN_ONLY = 104  # in ``seen`` but not in the interactions: must be excluded all the same
UNKNOWN_USER = 999
ALL_ITEMS = SHOES + [COLD_SHOE] + BLENDERS

# Small and fast: a handful of iterations is plenty for two disjoint blocks. With 8 factors for 20 items a
# weak regularisation lets the probe user's 4 items be fitted by directions that leak into the other block
# (checked against a plain numpy implicit ALS), so regularise firmly.
FAST_ALS = ALSParams(rank=8, max_iter=5, reg_param=1.0, alpha=20.0, seed=7)

SHOE_COLORS = ["red", "red", "red", "red", "blue", "green", "black", "white", "grey", "yellow", "orange"]
BLENDER_WORDS = ["glass jug", "steel jug", "compact", "pro", "mini", "family", "quiet", "turbo", "classic", "smart"]


def _items() -> pd.DataFrame:
    shoes = [
        {ITEM_COL: item, "text": f"{color} running shoes lightweight sport sneaker"}
        for item, color in zip(SHOES + [COLD_SHOE], SHOE_COLORS)
    ]
    blenders = [{ITEM_COL: item, "text": f"kitchen blender {words} appliance"} for item, words in zip(BLENDERS, BLENDER_WORDS)]
    return pd.DataFrame(shoes + blenders)


def _interactions(seed: int = 0) -> pd.DataFrame:
    """Each group-A user touches 6 random shoes, each group-B user 6 random blenders (weights 1..3)."""
    rng = np.random.default_rng(seed)
    rows = []
    for users, items in ((GROUP_A, SHOES), (GROUP_B, BLENDERS)):
        for user in users:
            for item in rng.choice(items, size=6, replace=False):
                rows.append((user, int(item), float(rng.integers(1, 4))))
    rows += [(PROBE, item, 2.0) for item in PROBE_TOUCHED]
    return pd.DataFrame(rows, columns=[USER_COL, ITEM_COL, "weight"])


def _seen(interactions: pd.DataFrame) -> pd.DataFrame:
    extra = pd.DataFrame({USER_COL: [PROBE], ITEM_COL: [PROBE_SEEN_ONLY]})
    return pd.concat([interactions[[USER_COL, ITEM_COL]], extra], ignore_index=True)


@pytest.fixture(scope="module")
def shop():
    interactions = _interactions()
    return _items(), interactions, _seen(interactions)


@pytest.fixture(scope="module")
def popularity_model(shop):
    _, interactions, seen = shop
    return PopularityRecommender().fit(interactions, seen)


@pytest.fixture(scope="module")
def content_model(shop):
    items, interactions, seen = shop
    return ContentRecommender().fit(items, interactions, seen)


@pytest.fixture(scope="module")
def als_model(spark, shop):
    _, interactions, seen = shop
    return ALSRecommender(FAST_ALS).fit(spark, interactions, seen)


@pytest.fixture(params=["popularity", "collaborative", "content"])
def fitted(request):
    """Each fitted model in turn (the ALS one needs Spark)."""
    return request.getfixturevalue({"popularity": "popularity_model", "collaborative": "als_model", "content": "content_model"}[request.param])


def _seen_pairs(recommendations: pd.DataFrame, seen: pd.DataFrame) -> pd.DataFrame:
    return recommendations.merge(seen[[USER_COL, ITEM_COL]].drop_duplicates(), on=[USER_COL, ITEM_COL])


def _assert_common_shape(recommendations: pd.DataFrame, k: int) -> None:
    assert list(recommendations.columns) == COLUMNS
    assert recommendations.dtypes.to_dict() == DTYPES
    assert recommendations[USER_COL].is_monotonic_increasing
    for user, rows in recommendations.groupby(USER_COL, sort=False):
        assert rows[RANK_COL].tolist() == list(range(1, len(rows) + 1)), f"user {user}: ranks {rows[RANK_COL].tolist()}"
        assert len(rows) <= k
        assert rows[SCORE_COL].is_monotonic_decreasing
        assert not rows[ITEM_COL].duplicated().any()
        assert np.isfinite(rows[SCORE_COL]).all()


# ---------------------------------------------------------------------------------------------
# base: SeenIndex and top_k_frame
# ---------------------------------------------------------------------------------------------
def test_seen_index_masks_exactly_the_seen_items_of_each_user():
    user_index = {10: 0, 20: 1, 30: 2}
    item_index = {100: 0, 200: 1, 300: 2}
    seen = pd.DataFrame(
        {
            USER_COL: [10, 10, 30, 99, 10, 10],  # 99 is not a model user; item 999 is not a model item
            ITEM_COL: [300, 100, 200, 100, 999, 100],  # (10, 100) twice
        }
    )
    index = SeenIndex(seen, user_index, item_index)
    scores = np.ones((3, 3))

    index.mask(scores, np.array([2, 0, 1]))  # rows: user 30, user 10, user 20

    expected = np.array([[1, -np.inf, 1], [-np.inf, 1, -np.inf], [1, 1, 1]])
    np.testing.assert_array_equal(scores, expected)


def test_seen_index_with_nothing_seen_masks_nothing():
    index = SeenIndex(pd.DataFrame({USER_COL: [5], ITEM_COL: [7]}), {1: 0, 2: 1}, {3: 0})
    scores = np.zeros((2, 1))
    index.mask(scores, np.array([0, 1]))
    np.testing.assert_array_equal(scores, np.zeros((2, 1)))


def test_top_k_frame_orders_by_score_then_product_id():
    scores = np.array(
        [
            [1.0, 3.0, 3.0, -np.inf, 3.0, 2.0],
            [0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
        ]
    )
    item_ids = np.array([60, 50, 40, 30, 20, 10])  # deliberately not in id order

    frame = top_k_frame(np.array([7, 8]), scores, item_ids, 4)

    assert list(frame.columns) == COLUMNS
    assert frame.dtypes.to_dict() == DTYPES
    # user 7: the three 3.0s by id (20, 40, 50), then the 2.0 (10); user 8: all tied, smallest ids win.
    assert frame[USER_COL].tolist() == [7] * 4 + [8] * 4
    assert frame[ITEM_COL].tolist() == [20, 40, 50, 10, 10, 20, 30, 40]
    assert frame[SCORE_COL].tolist() == [3.0, 3.0, 3.0, 2.0] + [0.5] * 4
    assert frame[RANK_COL].tolist() == [1, 2, 3, 4, 1, 2, 3, 4]


def test_top_k_frame_tie_at_the_cut_keeps_the_smallest_ids():
    # Two clear winners, then 18 items tied at 1.0 of which only one fits: it must be product 1.
    scores = np.ones((1, 20))
    scores[0, [0, 19]] = 2.0
    for k, expected in ((3, [0, 19, 1]), (4, [0, 19, 1, 2]), (5, [0, 19, 1, 2, 3])):
        frame = top_k_frame(np.array([1]), scores, np.arange(20), k)
        assert frame[ITEM_COL].tolist() == expected, k


def test_top_k_frame_tie_breaking_matches_a_full_sort():
    rng = np.random.default_rng(3)
    for _ in range(50):
        n_items = int(rng.integers(2, 60))
        scores = rng.integers(0, 3, size=(3, n_items)).astype(np.float64)
        scores[rng.random(scores.shape) < 0.2] = -np.inf
        item_ids = rng.permutation(n_items) * 3 + 1
        k = int(rng.integers(1, n_items + 3))

        frame = top_k_frame(np.array([1, 2, 3]), scores, item_ids, k)

        for row, user in enumerate([1, 2, 3]):
            finite = np.isfinite(scores[row])
            expected = sorted(zip(-scores[row][finite], item_ids[finite]))[:k]
            got = frame[frame[USER_COL] == user]
            assert got[ITEM_COL].tolist() == [item for _, item in expected]
            assert got[RANK_COL].tolist() == list(range(1, len(expected) + 1))


def test_top_k_frame_never_returns_minus_infinity():
    scores = np.array([[-np.inf, 2.0, -np.inf, 1.0], [-np.inf] * 4, [4.0, 3.0, 2.0, 1.0]])

    frame = top_k_frame(np.array([1, 2, 3]), scores, np.array([10, 20, 30, 40]), 3)

    assert np.isfinite(frame[SCORE_COL]).all()
    assert frame[USER_COL].tolist() == [1, 1, 3, 3, 3]  # user 2 has nothing left
    assert frame[ITEM_COL].tolist() == [20, 40, 10, 20, 30]
    assert frame[RANK_COL].tolist() == [1, 2, 1, 2, 3]


def test_top_k_frame_k_beyond_the_catalog_and_empty_input():
    frame = top_k_frame(np.array([1]), np.array([[1.0, 2.0]]), np.array([5, 6]), 10)
    assert frame[ITEM_COL].tolist() == [6, 5] and frame[RANK_COL].tolist() == [1, 2]

    empty = top_k_frame(np.array([], dtype=np.int64), np.zeros((0, 3)), np.array([1, 2, 3]), 5)
    assert empty.empty and list(empty.columns) == COLUMNS and empty.dtypes.to_dict() == DTYPES


# ---------------------------------------------------------------------------------------------
# popularity: hand-worked rankings
# ---------------------------------------------------------------------------------------------
def _popularity_interactions() -> pd.DataFrame:
    # item 10: users 1, 2, 3 (weights 1 each, total 3)
    # item 20: users 1, 2 (weights 5 each, total 10)
    # item 30: user 4 only, but in four rows of weight 5 (total 20; 4 rows, 1 distinct user)
    return pd.DataFrame(
        {
            USER_COL: [1, 2, 3, 1, 2, 4, 4, 4, 4],
            ITEM_COL: [10, 10, 10, 20, 20, 30, 30, 30, 30],
            "weight": [1.0, 1.0, 1.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0],
        }
    )


def test_popularity_by_distinct_users():
    model = PopularityRecommender(PopularityParams(measure="users")).fit(_popularity_interactions())

    cold = model.recommend([UNKNOWN_USER], k=3)
    assert cold[ITEM_COL].tolist() == [10, 20, 30]
    assert cold[SCORE_COL].tolist() == [3.0, 2.0, 1.0]
    assert cold[RANK_COL].tolist() == [1, 2, 3]

    # User 3 saw item 10; user 1 saw 10 and 20; user 4 saw 30.
    recs = model.recommend([3, 1, 4], k=3)
    assert recs[USER_COL].tolist() == [1, 3, 3, 4, 4]
    assert recs[ITEM_COL].tolist() == [30, 20, 30, 10, 20]
    assert recs[RANK_COL].tolist() == [1, 1, 2, 1, 2]


def test_popularity_by_summed_weight():
    model = PopularityRecommender(PopularityParams(measure="weight")).fit(_popularity_interactions())

    cold = model.recommend([UNKNOWN_USER], k=3)
    assert cold[ITEM_COL].tolist() == [30, 20, 10]
    assert cold[SCORE_COL].tolist() == [20.0, 10.0, 3.0]


def test_popularity_rejects_an_unknown_measure():
    with pytest.raises(ValueError, match="measure"):
        PopularityRecommender(PopularityParams(measure="clicks")).fit(_popularity_interactions())


def test_popularity_ties_go_to_the_smaller_product_id():
    interactions = pd.DataFrame({USER_COL: [1, 2, 3, 4], ITEM_COL: [50, 40, 70, 60], "weight": [1.0] * 4})
    model = PopularityRecommender().fit(interactions)
    assert model.recommend([UNKNOWN_USER], k=2)[ITEM_COL].tolist() == [40, 50]


def test_popularity_excludes_the_seen_frame_not_just_the_interactions():
    interactions = _popularity_interactions()
    seen = pd.DataFrame({USER_COL: [UNKNOWN_USER, 3], ITEM_COL: [10, 20]})  # user 3's item 10 is NOT in seen

    model = PopularityRecommender().fit(interactions, seen=seen)

    assert model.recommend([UNKNOWN_USER], k=3)[ITEM_COL].tolist() == [20, 30]
    assert model.recommend([3], k=3)[ITEM_COL].tolist() == [10, 30]


def test_popularity_serves_unknown_users_on_the_shop(popularity_model):
    recs = popularity_model.recommend([UNKNOWN_USER, 12345], k=5)
    _assert_common_shape(recs, 5)
    assert recs[USER_COL].tolist() == [UNKNOWN_USER] * 5 + [12345] * 5
    # Never-touched items are not popular: the cold shoe is not in the popularity table at all.
    assert COLD_SHOE not in set(popularity_model.recommend([UNKNOWN_USER], k=100)[ITEM_COL])


# ---------------------------------------------------------------------------------------------
# the common face: popularity, collaborative (ALS), content
# ---------------------------------------------------------------------------------------------
@pytest.mark.spark
def test_common_shape_k_and_contiguous_ranks(fitted):
    users = [30, PROBE, 5, 5, 13]  # unsorted, with a duplicate

    for k in (1, 3, 7):
        recs = fitted.recommend(users, k=k)
        _assert_common_shape(recs, k)
        assert recs[USER_COL].unique().tolist() == [PROBE, 5, 13, 30]
        # Every one of these users has more than k unseen items, so each gets exactly k rows.
        assert recs.groupby(USER_COL).size().tolist() == [k] * 4


@pytest.mark.spark
def test_exclude_seen(fitted, shop):
    _, interactions, seen = shop
    users = [PROBE] + GROUP_A + GROUP_B

    excluded = fitted.recommend(users, k=len(ALL_ITEMS))
    assert _seen_pairs(excluded, seen).empty
    assert PROBE_SEEN_ONLY not in set(excluded.loc[excluded[USER_COL] == PROBE, ITEM_COL])

    # With the whole catalog requested and nothing excluded, the seen pairs come back.
    included = fitted.recommend(users, k=len(ALL_ITEMS), exclude_seen=False)
    _assert_common_shape(included, len(ALL_ITEMS))
    probe_items = set(included.loc[included[USER_COL] == PROBE, ITEM_COL])
    assert set(PROBE_TOUCHED) | {PROBE_SEEN_ONLY} <= probe_items
    assert len(_seen_pairs(included, seen)) == len(seen.drop_duplicates())  # every seen pair is back


@pytest.mark.spark
def test_unknown_users(fitted):
    recs = fitted.recommend([UNKNOWN_USER, PROBE], k=3)
    if fitted.name == "popularity":  # the cold-start fallback serves everyone
        assert recs[USER_COL].tolist() == [PROBE] * 3 + [UNKNOWN_USER] * 3
    else:
        assert recs[USER_COL].tolist() == [PROBE] * 3
        only_unknown = fitted.recommend([UNKNOWN_USER], k=3)
        assert only_unknown.empty and list(only_unknown.columns) == COLUMNS and only_unknown.dtypes.to_dict() == DTYPES
    assert fitted.recommend([], k=3).empty


@pytest.mark.spark
@pytest.mark.parametrize("k", [0, -1, 2.5, "3"])
def test_bad_k_is_rejected(fitted, k):
    with pytest.raises(ValueError, match="k must be a positive integer"):
        fitted.recommend([PROBE], k=k)


@pytest.mark.parametrize("model", [PopularityRecommender(), ALSRecommender(FAST_ALS), ContentRecommender()], ids=lambda m: m.name)
def test_recommend_before_fit(model):
    with pytest.raises(RuntimeError, match="before fit"):
        model.recommend([1], k=3)


def _fit(name: str, spark, items, interactions, seen=None):
    if name == "popularity":
        return PopularityRecommender().fit(interactions, seen)
    if name == "collaborative":
        return ALSRecommender(FAST_ALS).fit(spark, interactions, seen)
    return ContentRecommender().fit(items, interactions, seen)


@pytest.mark.spark
@pytest.mark.parametrize("name", ["popularity", "collaborative", "content"])
def test_missing_columns_are_named(name, spark, shop):
    items, interactions, seen = shop
    with pytest.raises(ValueError, match="weight"):
        _fit(name, spark, items, interactions.drop(columns=["weight"]))
    with pytest.raises(ValueError, match=ITEM_COL):
        _fit(name, spark, items, interactions.drop(columns=[ITEM_COL]))
    with pytest.raises(ValueError, match=USER_COL):
        _fit(name, spark, items, interactions, seen.drop(columns=[USER_COL]))
    if name == "content":
        with pytest.raises(ValueError, match="text"):
            _fit(name, spark, items.drop(columns=["text"]), interactions)


@pytest.mark.spark
def test_save_load_round_trip(fitted, tmp_path):
    users = [PROBE, 3, 25, UNKNOWN_USER]
    fitted.save(tmp_path / fitted.name)
    loaded = type(fitted).load(tmp_path / fitted.name)

    for exclude_seen in (True, False):
        expected = fitted.recommend(users, k=6, exclude_seen=exclude_seen)
        assert not expected.empty
        pd.testing.assert_frame_equal(loaded.recommend(users, k=6, exclude_seen=exclude_seen), expected)


def test_popularity_and_content_are_deterministic(shop):
    items, interactions, seen = shop
    users = [PROBE] + GROUP_A + GROUP_B
    shuffled = interactions.sample(frac=1.0, random_state=5)
    for name in ("popularity", "content"):
        first = _fit(name, None, items, interactions, seen).recommend(users, k=5)
        again = _fit(name, None, items.iloc[::-1], shuffled, seen).recommend(users, k=5)
        pd.testing.assert_frame_equal(first, again)


@pytest.mark.spark
def test_als_same_seed_same_output_other_seed_other_factors(spark, shop, als_model):
    _, interactions, seen = shop
    users = [PROBE] + GROUP_A + GROUP_B

    again = ALSRecommender(FAST_ALS).fit(spark, interactions, seen)
    pd.testing.assert_frame_equal(again.recommend(users, k=5), als_model.recommend(users, k=5))
    np.testing.assert_array_equal(again.item_factors, als_model.item_factors)

    reseeded = ALSRecommender(ALSParams(rank=8, max_iter=5, reg_param=1.0, alpha=20.0, seed=8)).fit(spark, interactions, seen)
    assert not np.allclose(reseeded.item_factors, als_model.item_factors)


# ---------------------------------------------------------------------------------------------
# collaborative: learns the block structure
# ---------------------------------------------------------------------------------------------
@pytest.mark.spark
def test_als_ranks_the_users_own_group_above_the_other(als_model):
    recs = als_model.recommend([PROBE] + GROUP_B, k=len(ALL_ITEMS))

    probe = recs[recs[USER_COL] == PROBE]
    unseen_shoes = set(SHOES) - set(PROBE_TOUCHED) - {PROBE_SEEN_ONLY}
    # ALS only knows items somebody touched: the 5 unseen shoes and all 10 blenders.
    assert set(probe[ITEM_COL]) == unseen_shoes | set(BLENDERS)
    assert set(probe[ITEM_COL].head(len(unseen_shoes))) == unseen_shoes
    worst_shoe = probe.loc[probe[ITEM_COL].isin(unseen_shoes), SCORE_COL].min()
    best_blender = probe.loc[probe[ITEM_COL].isin(BLENDERS), SCORE_COL].max()
    assert worst_shoe > best_blender

    # And the other way round: a blender user's unseen blenders beat every shoe.
    for user, rows in recs[recs[USER_COL].isin(GROUP_B)].groupby(USER_COL):
        n_unseen_blenders = int(rows[ITEM_COL].isin(BLENDERS).sum())
        assert n_unseen_blenders == 4, user  # 10 blenders, 6 touched
        assert rows[ITEM_COL].head(n_unseen_blenders).isin(BLENDERS).all(), user


@pytest.mark.spark
def test_als_rejects_empty_interactions(spark):
    empty = pd.DataFrame({USER_COL: pd.Series(dtype=np.int64), ITEM_COL: pd.Series(dtype=np.int64), "weight": pd.Series(dtype=float)})
    with pytest.raises(ValueError, match="no interactions"):
        ALSRecommender(FAST_ALS).fit(spark, empty)


# ---------------------------------------------------------------------------------------------
# content: text similarity, cold items, similar_items
# ---------------------------------------------------------------------------------------------
def test_content_ranks_similar_text_above_unrelated(content_model):
    recs = content_model.recommend([PROBE], k=len(ALL_ITEMS))

    other_shoes = set(SHOES + [COLD_SHOE]) - set(PROBE_TOUCHED) - {PROBE_SEEN_ONLY}
    assert set(recs[ITEM_COL]) == other_shoes | set(BLENDERS)
    assert set(recs[ITEM_COL].head(len(other_shoes))) == other_shoes
    # The profile has no word in common with a blender: all that is left for them is the prior.
    blender_scores = recs.loc[recs[ITEM_COL].isin(BLENDERS), SCORE_COL]
    assert recs.loc[recs[ITEM_COL].isin(other_shoes), SCORE_COL].min() > blender_scores.max()


def test_content_recommends_a_cold_item(content_model):
    # Item 110 has text but no interactions; a shoe buyer still gets it.
    recs = content_model.recommend([PROBE], k=6)
    assert COLD_SHOE in set(recs[ITEM_COL])


def test_content_pure_text_similarity_prefers_the_closest_text():
    items = pd.DataFrame(
        {
            ITEM_COL: [1, 2, 3, 4],
            "text": ["red running shoes", "red running shoes trail", "blue running shoes", "kitchen blender"],
        }
    )
    interactions = pd.DataFrame({USER_COL: [7], ITEM_COL: [1], "weight": [1.0]})
    model = ContentRecommender(ContentParams(popularity_weight=0.0)).fit(items, interactions)

    recs = model.recommend([7], k=3)

    # Item 2 shares "red", "running", "shoes" and both bigrams; item 3 only "running shoes"; 4 nothing.
    assert recs[ITEM_COL].tolist() == [2, 3, 4]
    assert recs[SCORE_COL].iloc[2] == 0.0


def test_similar_items_are_text_neighbours_and_never_the_item_itself(content_model):
    similar = content_model.similar_items([100, 205, 424242], k=5)

    assert list(similar.columns) == ["source_product_id", ITEM_COL, SCORE_COL, RANK_COL]
    assert similar["source_product_id"].unique().tolist() == [100, 205]  # unknown 424242 dropped
    for source, group in ((100, set(SHOES + [COLD_SHOE])), (205, set(BLENDERS))):
        rows = similar[similar["source_product_id"] == source]
        assert source not in set(rows[ITEM_COL])
        assert set(rows[ITEM_COL]) <= group, source
        assert rows[RANK_COL].tolist() == [1, 2, 3, 4, 5]
        assert (rows[SCORE_COL] > 0).all()
    # Items 101..103 have exactly item 100's text: they are its closest neighbours (cosine 1).
    top = similar[similar["source_product_id"] == 100].head(3)
    assert top[ITEM_COL].tolist() == [101, 102, 103]
    np.testing.assert_allclose(top[SCORE_COL], 1.0, rtol=1e-5)


@pytest.mark.spark
def test_als_with_many_iterations_checkpoints_instead_of_overflowing_the_stack(spark):
    # Without a checkpoint folder MLlib's lineage grows with every iteration: at 24 iterations the task
    # that serialises it fails with StackOverflowError every time. The fit gives the session a folder.
    interactions = _interactions(seed=3)
    model = ALSRecommender(ALSParams(rank=4, max_iter=30, reg_param=1.0, seed=7)).fit(spark, interactions)
    assert spark.sparkContext.getCheckpointDir()
    assert np.isfinite(model.item_factors).all() and np.abs(model.item_factors).sum() > 0
    recs = model.recommend([GROUP_A[0]], k=3)
    assert len(recs) == 3
