"""What every model shares: the stage's training data, the seen-item mask, and top-k selection."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd

from recsys.constants import ITEM_COL, RANK_COL, SCORE_COL, USER_COL


@dataclass
class StageData:
    """The features one stage of the temporal protocol trains on (all pandas, small enough per day)."""

    interactions: pd.DataFrame  # user_id, product_id, weight, n_events, last_event_time, purchased
    sequences: pd.DataFrame  # user_id, product_ids[], event_types[], length
    seen: pd.DataFrame  # user_id, product_id
    items: pd.DataFrame  # product_id, text, category_code, brand, price, top_category, ...
    targets: pd.DataFrame | None  # user_id, product_id (val and test stages)


def load_stage(features_root: str | Path, stage: str) -> StageData:
    root = Path(features_root)
    targets_path = root / stage / "targets"
    return StageData(
        interactions=pd.read_parquet(root / stage / "interactions"),
        sequences=pd.read_parquet(root / stage / "sequences"),
        seen=pd.read_parquet(root / stage / "seen"),
        items=pd.read_parquet(root / "items"),
        targets=pd.read_parquet(targets_path) if targets_path.exists() else None,
    )


def check_columns(frame: pd.DataFrame, required: Iterable[str], what: str) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} is missing column(s) {missing}; it has {list(frame.columns)}")


def check_k(k: int) -> None:
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")


class SeenIndex:
    """Per-user sets of item *indices* to exclude, as a CSR-like structure for fast batch masking."""

    def __init__(self, seen: pd.DataFrame, user_index: dict[int, int], item_index: dict[int, int]):
        users = seen[USER_COL].map(user_index)
        items = seen[ITEM_COL].map(item_index)
        keep = users.notna() & items.notna()
        pairs = np.stack([users[keep].to_numpy(np.int64), items[keep].to_numpy(np.int64)], axis=1) if keep.any() else np.zeros((0, 2), np.int64)
        order = np.lexsort((pairs[:, 1], pairs[:, 0])) if len(pairs) else np.zeros(0, np.int64)
        pairs = pairs[order]
        self.items = pairs[:, 1]
        self.offsets = np.searchsorted(pairs[:, 0], np.arange(len(user_index) + 1))

    def mask(self, scores: np.ndarray, user_rows: np.ndarray) -> None:
        """Set the scores of seen items to -inf in place (``scores`` rows follow ``user_rows``)."""
        for row, user in enumerate(user_rows):
            start, end = self.offsets[user], self.offsets[user + 1]
            if end > start:
                scores[row, self.items[start:end]] = -np.inf


def top_k_frame(user_ids: np.ndarray, scores: np.ndarray, item_ids: np.ndarray, k: int) -> pd.DataFrame:
    """Top-k items per row of ``scores`` (users × items) as a long frame; -inf scores are never returned."""
    k_eff = min(k, scores.shape[1])
    if scores.shape[0] == 0 or k_eff == 0:
        return empty_recommendations()
    item_ids = np.asarray(item_ids)
    if np.any(np.diff(item_ids) < 0):  # columns in product-id order, so "first tied column" = smallest id
        by_id = np.argsort(item_ids, kind="stable")
        scores, item_ids = scores[:, by_id], item_ids[by_id]
    part = np.argpartition(-scores, k_eff - 1, axis=1)[:, :k_eff]
    # argpartition picks arbitrarily among items tied with the k-th score; where more items tie at
    # that boundary than fit, re-select those rows so the smallest product ids win the tie
    # (a -inf boundary needs nothing: every finite score is already in and -inf is dropped below).
    kth = np.take_along_axis(scores, part, axis=1).min(axis=1)
    n_at_least = (scores >= kth[:, None]).sum(axis=1)
    for row in np.flatnonzero((n_at_least > k_eff) & np.isfinite(kth)):
        above = np.flatnonzero(scores[row] > kth[row])
        tied = np.flatnonzero(scores[row] == kth[row])[: k_eff - len(above)]
        part[row] = np.concatenate([above, tied])
    part_scores = np.take_along_axis(scores, part, axis=1)
    # Sort by score, then by item id so ties are broken deterministically.
    order = np.lexsort((item_ids[part], -part_scores), axis=1)
    top = np.take_along_axis(part, order, axis=1)
    top_scores = np.take_along_axis(part_scores, order, axis=1)
    frame = pd.DataFrame(
        {
            USER_COL: np.repeat(user_ids, k_eff).astype(np.int64),
            ITEM_COL: item_ids[top].ravel().astype(np.int64),
            SCORE_COL: top_scores.ravel().astype(np.float64),
            RANK_COL: np.tile(np.arange(1, k_eff + 1, dtype=np.int64), len(user_ids)),
        }
    )
    return frame[np.isfinite(frame[SCORE_COL])].reset_index(drop=True)


def empty_recommendations() -> pd.DataFrame:
    return pd.DataFrame(
        {USER_COL: pd.Series(dtype=np.int64), ITEM_COL: pd.Series(dtype=np.int64), SCORE_COL: pd.Series(dtype=np.float64), RANK_COL: pd.Series(dtype=np.int64)}
    )


class FactorScoredRecommender:
    """Shared plumbing of models that score known users against every item in batches (ALS, content).

    Subclasses set ``user_ids`` and ``item_ids`` (sorted id arrays) when fitting and implement
    ``_score_rows(rows)``: the dense scores (len(rows) × n_items) of the users at those row indices.
    """

    user_ids: np.ndarray | None = None
    item_ids: np.ndarray | None = None
    batch_size = 1024

    def _index_seen(self, seen: pd.DataFrame) -> None:
        self._seen_pairs = seen[[USER_COL, ITEM_COL]].reset_index(drop=True)
        self._user_index = {int(u): i for i, u in enumerate(self.user_ids)}
        self._seen = SeenIndex(self._seen_pairs, self._user_index, {int(i): j for j, i in enumerate(self.item_ids)})

    def _score_rows(self, rows: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _recommend_known(self, user_ids, k: int, exclude_seen: bool) -> pd.DataFrame:
        """Top-k per requested user the model knows (one block per user, sorted by user); others get no rows."""
        requested = np.unique(np.asarray(list(user_ids), dtype=np.int64))
        known = np.array([u for u in requested if int(u) in self._user_index], dtype=np.int64)
        if len(known) == 0:
            return empty_recommendations()
        rows = np.array([self._user_index[int(u)] for u in known])
        frames = []
        for chunk in batches(len(known), self.batch_size):
            scores = self._score_rows(rows[chunk])
            if exclude_seen:
                self._seen.mask(scores, rows[chunk])
            frames.append(top_k_frame(known[chunk], scores, self.item_ids, k))
        return pd.concat(frames, ignore_index=True)


def batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))
