"""Tests of the LSTM next-item recommender on small synthetic sequences with a known next-item rule."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")

from recsys.constants import ITEM_COL, RANK_COL, SCORE_COL, USER_COL  # noqa: E402
from recsys.models.sequence import SequenceParams, SequenceRecommender  # noqa: E402

N_CYCLE_ITEMS = 30
HISTORY_KEYS = {"epoch", "train_loss", "val_ndcg_at_10", "val_hr_at_10", "seconds", "positions_per_second"}

# Small and fast, but with enough optimiser steps to learn the synthetic rules in a few seconds.
FAST_PARAMS = SequenceParams(
    embedding_dim=32, hidden_dim=32, max_len=20, epochs=12, batch_size=32, n_negatives=20, dropout=0.0, seed=7,
    num_threads=2,
)


def _cyclic_sequences(n_users: int = 400, noise: float = 0.1, seed: int = 0) -> pd.DataFrame:
    """Users walking the cycle i -> (i + 1) mod N, jumping to a random item with probability ``noise``."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(n_users):
        length = int(rng.integers(5, 20))
        item = int(rng.integers(N_CYCLE_ITEMS))
        items = []
        for _ in range(length):
            items.append(item)
            item = (item + 1) % N_CYCLE_ITEMS if rng.random() > noise else int(rng.integers(N_CYCLE_ITEMS))
        rows.append({USER_COL: user, "product_ids": items, "event_types": ["view"] * length})
    return pd.DataFrame(rows)


def _next_in_cycle(sequences: pd.DataFrame) -> pd.Series:
    """The rule's next item for each user, indexed by user_id."""
    return sequences.set_index(USER_COL)["product_ids"].map(lambda items: (items[-1] + 1) % N_CYCLE_ITEMS)


def _hit_rate_at_1(recommendations: pd.DataFrame, expected: pd.Series) -> float:
    top = recommendations[recommendations[RANK_COL] == 1].set_index(USER_COL)[ITEM_COL]
    return float((top.reindex(expected.index) == expected).mean())


@pytest.fixture(scope="module")
def cyclic_sequences() -> pd.DataFrame:
    return _cyclic_sequences()


@pytest.fixture(scope="module")
def cyclic_model(cyclic_sequences: pd.DataFrame) -> SequenceRecommender:
    return SequenceRecommender(FAST_PARAMS).fit(cyclic_sequences)


def test_learns_the_next_item_of_a_deterministic_cycle(cyclic_model, cyclic_sequences):
    expected = _next_in_cycle(cyclic_sequences)

    # The next item usually already appears in the user's history, so it must not be excluded here.
    recommendations = cyclic_model.recommend(expected.index, k=5, exclude_seen=False)

    hit_rate = _hit_rate_at_1(recommendations, expected)
    chance = 1 / N_CYCLE_ITEMS
    assert hit_rate > 0.8, f"HR@1={hit_rate:.3f} (chance {chance:.3f})"


def _event_dependent_sequences(n_users: int = 600, n_base: int = 15, seed: int = 1) -> tuple[pd.DataFrame, dict]:
    """Sequences of (X, event) pairs where a purchase of X is followed by A(X) and a view of X by B(X).

    Probe users come in pairs with the same items whose only difference is the last event type, so the
    model can only tell them apart by using event types.
    """
    rng = np.random.default_rng(seed)

    def accessory(base: int) -> int:
        return 2000 + base

    def alternative(base: int) -> int:
        return 3000 + base

    rows = []
    for user in range(n_users):
        items, events = [], []
        for _ in range(int(rng.integers(3, 8))):
            base = int(rng.integers(n_base))
            event = "purchase" if rng.random() < 0.5 else "view"
            items += [1000 + base, accessory(base) if event == "purchase" else alternative(base)]
            events += [event, "view"]
        rows.append({USER_COL: user, "product_ids": items, "event_types": events})
    expected = {}
    for pair in range(2 * n_base):
        base = pair % n_base
        prefix = [1000 + int(rng.integers(n_base)), 3000 + int(rng.integers(n_base))]
        for offset, event in enumerate(("purchase", "view")):
            user = 10_000 + 2 * pair + offset
            # "cart" earlier in the prefix shows that other event types do not disturb the rule.
            rows.append({USER_COL: user, "product_ids": prefix + [1000 + base], "event_types": ["cart", "view", event]})
            expected[user] = accessory(base) if event == "purchase" else alternative(base)
    return pd.DataFrame(rows), expected


def test_uses_the_event_type_of_the_last_event():
    sequences, expected = _event_dependent_sequences()
    params = SequenceParams(
        embedding_dim=32, hidden_dim=32, max_len=20, epochs=15, batch_size=32, n_negatives=20, dropout=0.0, seed=3,
        num_threads=2,
    )
    model = SequenceRecommender(params).fit(sequences)

    expected_next = pd.Series(expected)
    recommendations = model.recommend(expected_next.index, k=3, exclude_seen=False)

    purchase_users = expected_next.index[expected_next.index % 2 == 0]
    view_users = expected_next.index[expected_next.index % 2 == 1]
    assert _hit_rate_at_1(recommendations, expected_next[purchase_users]) > 0.8
    assert _hit_rate_at_1(recommendations, expected_next[view_users]) > 0.8


def _ndcg_at_10(recommendations: pd.DataFrame, validation: pd.DataFrame) -> float:
    relevant = validation.groupby(USER_COL)[ITEM_COL].apply(set)
    ranked = recommendations[recommendations[RANK_COL] <= 10].groupby(USER_COL)[ITEM_COL].apply(list)
    total = 0.0
    for user, items in relevant.items():
        gains = sum(1 / math.log2(r + 2) for r, item in enumerate(ranked.get(user, [])) if item in items)
        total += gains / sum(1 / math.log2(r + 2) for r in range(min(len(items), 10)))
    return total / len(relevant)


def test_early_stopping_records_history_and_keeps_the_best_epoch(cyclic_sequences):
    # Validation items unrelated to the training rule: the metric is noise, so patience 1 stops early.
    rng = np.random.default_rng(5)
    validation = pd.DataFrame(
        {USER_COL: cyclic_sequences[USER_COL], ITEM_COL: rng.integers(N_CYCLE_ITEMS, size=len(cyclic_sequences))}
    )
    params = SequenceParams(
        embedding_dim=16, hidden_dim=16, max_len=20, epochs=30, batch_size=64, n_negatives=10, patience=1, seed=11,
        num_threads=2,
    )
    model = SequenceRecommender(params).fit(cyclic_sequences, validation=validation)

    assert 1 <= len(model.history) < params.epochs
    assert [record["epoch"] for record in model.history] == list(range(1, len(model.history) + 1))
    for record in model.history:
        assert set(record) == HISTORY_KEYS
        assert 0.0 <= record["val_ndcg_at_10"] <= 1.0 and 0.0 <= record["val_hr_at_10"] <= 1.0
        assert record["seconds"] > 0 and record["positions_per_second"] > 0 and record["train_loss"] > 0
    best = max(model.history, key=lambda record: record["val_ndcg_at_10"])
    assert model.best_epoch == best["epoch"]
    # The model keeps the best epoch's weights, so its validation NDCG is that epoch's, not the last one's.
    recommendations = model.recommend(validation[USER_COL], k=10, exclude_seen=True)
    assert _ndcg_at_10(recommendations, validation) == pytest.approx(best["val_ndcg_at_10"], abs=1e-9)


def test_without_validation_trains_every_epoch(cyclic_model):
    assert len(cyclic_model.history) == FAST_PARAMS.epochs
    assert cyclic_model.best_epoch == FAST_PARAMS.epochs
    assert all(record["val_ndcg_at_10"] is None for record in cyclic_model.history)


def test_exclude_seen_output_shape_and_unknown_users():
    sequences = pd.DataFrame(
        {
            USER_COL: [1, 2, 3],
            "product_ids": [[10, 11, 12, 13], [12, 13, 14], [15]],  # user 3 has one event: recommendable, untrained
            "event_types": [["view", "cart", "remove_from_cart", "purchase"], ["view"] * 3, ["view"]],
        }
    )
    seen = pd.DataFrame({USER_COL: [1, 1, 2, 99], ITEM_COL: [14, 16, 999, 10]})  # 16 only seen, 999/99 unknown
    extra = pd.DataFrame(
        {USER_COL: [4, 5], "product_ids": [[16, 17, 18, 19], [19, 18, 17, 16]], "event_types": [["view"] * 4] * 2}
    )
    params = SequenceParams(embedding_dim=8, hidden_dim=8, epochs=2, batch_size=2, n_negatives=3, num_threads=1)
    model = SequenceRecommender(params).fit(pd.concat([sequences, extra], ignore_index=True), seen=seen)

    recommendations = model.recommend([3, 1, 2, 12345, 1], k=4)

    assert list(recommendations.columns) == [USER_COL, ITEM_COL, SCORE_COL, RANK_COL]
    assert recommendations.dtypes.to_dict() == {
        USER_COL: np.int64, ITEM_COL: np.int64, SCORE_COL: np.float64, RANK_COL: np.int64
    }
    assert recommendations[USER_COL].tolist() == [1] * 4 + [2] * 4 + [3] * 4  # sorted, duplicates and 12345 dropped
    for user, rows in recommendations.groupby(USER_COL):
        assert rows[RANK_COL].tolist() == [1, 2, 3, 4]
        assert rows[SCORE_COL].is_monotonic_decreasing
    seen_items = {1: {10, 11, 12, 13, 14, 16}, 2: {12, 13, 14}, 3: {15}}
    for user, items in seen_items.items():
        assert not set(recommendations.loc[recommendations[USER_COL] == user, ITEM_COL]) & items

    # Catalog of 10 items minus 6 seen leaves 4 for user 1: k beyond that returns only what is left.
    assert sorted(model.recommend([1], k=10)[RANK_COL]) == [1, 2, 3, 4]
    with_seen = model.recommend([1], k=10, exclude_seen=False)
    assert len(with_seen) == 10 and set(with_seen[ITEM_COL]) == set(range(10, 20))

    for no_known_users in ([12345], []):
        empty = model.recommend(no_known_users, k=5)
        assert empty.empty and list(empty.columns) == [USER_COL, ITEM_COL, SCORE_COL, RANK_COL]
        assert empty.dtypes.to_dict() == recommendations.dtypes.to_dict()


def test_same_seed_gives_identical_recommendations(cyclic_sequences):
    params = SequenceParams(embedding_dim=16, hidden_dim=16, epochs=3, batch_size=64, n_negatives=10, seed=21)
    first = SequenceRecommender(params).fit(cyclic_sequences).recommend(cyclic_sequences[USER_COL], k=10)
    second = SequenceRecommender(params).fit(cyclic_sequences).recommend(cyclic_sequences[USER_COL], k=10)

    pd.testing.assert_frame_equal(first, second)


def test_save_and_load_round_trip(cyclic_model, cyclic_sequences, tmp_path):
    cyclic_model.save(tmp_path / "model")
    loaded = SequenceRecommender.load(tmp_path / "model")

    users = cyclic_sequences[USER_COL]
    pd.testing.assert_frame_equal(loaded.recommend(users, k=10), cyclic_model.recommend(users, k=10))
    assert loaded.params == cyclic_model.params
    assert loaded.best_epoch == cyclic_model.best_epoch
    assert loaded.history == cyclic_model.history


def test_argument_errors(cyclic_sequences):
    with pytest.raises(RuntimeError, match="before fit"):
        SequenceRecommender().recommend([1], k=5)
    with pytest.raises(ValueError, match="event_types"):
        SequenceRecommender().fit(cyclic_sequences.drop(columns="event_types"))
    with pytest.raises(ValueError, match="product_id"):
        SequenceRecommender().fit(cyclic_sequences, validation=pd.DataFrame({USER_COL: [1]}))
    with pytest.raises(ValueError, match="user_id"):
        SequenceRecommender().fit(cyclic_sequences, seen=pd.DataFrame({ITEM_COL: [1]}))
    mismatched = pd.DataFrame({USER_COL: [1], "product_ids": [[1, 2]], "event_types": [["view"]]})
    with pytest.raises(ValueError, match="user 1"):
        SequenceRecommender().fit(mismatched)
    unknown_event = pd.DataFrame({USER_COL: [1], "product_ids": [[1, 2]], "event_types": [["view", "click"]]})
    with pytest.raises(ValueError, match="click"):
        SequenceRecommender().fit(unknown_event)
    duplicated = pd.DataFrame({USER_COL: [1, 1], "product_ids": [[1, 2]] * 2, "event_types": [["view"] * 2] * 2})
    with pytest.raises(ValueError, match="one row per user"):
        SequenceRecommender().fit(duplicated)
    with pytest.raises(ValueError, match="epochs"):
        SequenceParams(epochs=0)
    with pytest.raises(ValueError, match="dropout"):
        SequenceParams(dropout=1.0)

    model = SequenceRecommender(
        SequenceParams(embedding_dim=4, hidden_dim=4, epochs=1, n_negatives=2, num_threads=1)
    ).fit(cyclic_sequences.head(10))
    with pytest.raises(ValueError, match="k must be"):
        model.recommend([0], k=0)
    with pytest.raises(ValueError, match="user_ids must be integer"):
        model.recommend([0.5], k=5)


def test_popularity_prior_starts_the_output_bias_at_log_target_frequency():
    """Before any useful training step the network already ranks next items by how often they follow."""
    # Item 30 is the next item 3 times, 20 twice, 10 never (it only opens sequences).
    sequences = pd.DataFrame({
        USER_COL: [1, 2, 3],
        "product_ids": [[10, 30, 20], [10, 30], [10, 30, 20]],
        "event_types": [["view"] * 3, ["view"] * 2, ["view"] * 3],
    })
    params = SequenceParams(embedding_dim=4, hidden_dim=4, epochs=1, batch_size=8, n_negatives=2, learning_rate=1e-12, num_threads=1)
    model = SequenceRecommender(params).fit(sequences)
    bias = model.network.output_bias.weight.detach().numpy().ravel()
    counts = np.array([0, 2, 3], dtype=float) + 1.0  # items 10, 20, 30 in index order 1..3, add-one smoothed
    np.testing.assert_allclose(bias[1:], np.log(counts) - np.log(counts).mean(), atol=1e-5)
    flat = SequenceRecommender(SequenceParams(**{**params.__dict__, "popularity_prior": False})).fit(sequences)
    assert np.allclose(flat.network.output_bias.weight.detach().numpy(), 0.0, atol=1e-5)


def test_item_prior_replaces_target_frequency_and_rejects_negative_counts():
    sequences = pd.DataFrame({USER_COL: [1, 2], "product_ids": [[10, 20], [20, 10]], "event_types": [["view"] * 2] * 2})
    params = SequenceParams(embedding_dim=4, hidden_dim=4, epochs=1, batch_size=8, n_negatives=2, learning_rate=1e-12, num_threads=1)
    model = SequenceRecommender(params).fit(sequences, item_prior=pd.Series({10: 0.0, 20: 8.0, 99: 5.0}))
    bias = model.network.output_bias.weight.detach().numpy().ravel()
    counts = np.array([1.0, 9.0])  # items 10, 20: prior + 1; item 99 is not in the vocabulary
    np.testing.assert_allclose(bias[1:], np.log(counts) - np.log(counts).mean(), atol=1e-5)
    with pytest.raises(ValueError, match="item_prior"):
        SequenceRecommender(params).fit(sequences, item_prior=pd.Series({10: -1.0}))


def test_batch_size_gives_few_users_enough_steps_per_epoch():
    from recsys.models.sequence import MIN_STEPS_PER_EPOCH, batch_size_for

    assert MIN_STEPS_PER_EPOCH == 20
    assert batch_size_for(610) == 32  # MovieLens: 610 // 20 = 30, floored at 32 (19 steps an epoch)
    assert batch_size_for(1000) == 50  # exactly 20 steps an epoch
    assert batch_size_for(3000) == 64  # the demo data and anything larger: the ceiling (47 steps an epoch here)
    assert batch_size_for(1_000_000) == 64
    assert batch_size_for(0) == 32
    with pytest.raises(ValueError, match="n_sequences"):
        batch_size_for(-1)


def test_recommendations_do_not_depend_on_which_users_are_asked_together(cyclic_model, cyclic_sequences):
    """Users are scored in batches of similar length (shortest first) and the rows put back in user order: a
    user's list must be the one they get when asked alone, and the frame sorted by user, then rank."""
    users = cyclic_sequences[USER_COL].to_numpy()[::-1]  # asked in reverse order, lengths mixed
    together = cyclic_model.recommend(users, k=5)
    assert together[USER_COL].is_monotonic_increasing
    assert together.groupby(USER_COL)[RANK_COL].apply(list).map([1, 2, 3, 4, 5].__eq__).all()
    alone = pd.concat([cyclic_model.recommend([user], k=5) for user in users[:40]], ignore_index=True)
    merged = together.merge(alone, on=[USER_COL, RANK_COL], suffixes=("", "_alone"))
    assert len(merged) == len(alone) == 200
    assert (merged[ITEM_COL] == merged[f"{ITEM_COL}_alone"]).all()
    np.testing.assert_allclose(merged[SCORE_COL], merged[f"{SCORE_COL}_alone"], rtol=1e-5, atol=1e-6)


def test_mask_dropout_scales_what_it_keeps_and_is_off_in_eval_mode():
    import torch

    from recsys.models.sequence import MaskDropout

    dropout = MaskDropout(0.3)
    x = torch.ones(200_000)
    torch.manual_seed(5)
    out = dropout(x)
    kept = out != 0
    assert abs(1.0 - kept.float().mean().item() - 0.3) < 0.01  # about p of the values dropped
    assert torch.allclose(out[kept], torch.full_like(out[kept], 1 / 0.7))  # the rest scaled: same expectation
    torch.manual_seed(5)
    assert torch.equal(dropout(x), out)  # reproducible under a seed
    dropout.eval()
    assert dropout(x) is x
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\)"):
        MaskDropout(1.0)
