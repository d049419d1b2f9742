"""Baseline "recently popular in the user's categories": recent popularity, weighted by the user's category taste.

``score(u, i) = (share(u, cat(i)) + smoothing) * recent_users(i)``: ``share`` is the fraction of the
user's interaction weight on the item's category, ``recent_users`` the distinct users who touched the
item in the last ``recent_days`` of the training window. Users without history (or a category the
user never touched) fall back to plain recent popularity through ``smoothing``. A stronger baseline
than global popularity for a shop with many categories, and a candidate source for the hybrid.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.constants import ITEM_COL, USER_COL
from recsys.models.base import SeenIndex, batches, check_columns, check_k, empty_recommendations, top_k_frame

#: Upper bound on the cells of one (users x items) score block.
_MAX_SCORE_CELLS = 2**24


def recent_item_users(interactions: pd.DataFrame, recent_days: int) -> pd.Series:
    """Distinct users per item over the last ``recent_days`` days of ``interactions`` (by last_event_time)."""
    check_columns(interactions, [USER_COL, ITEM_COL, "last_event_time"], "interactions")
    if interactions.empty:
        return pd.Series(dtype=np.float64)
    last = pd.to_datetime(interactions["last_event_time"], utc=True)
    recent = interactions[last >= last.max() - pd.Timedelta(days=recent_days)]
    return recent.groupby(ITEM_COL)[USER_COL].nunique().astype(np.float64)


@dataclass
class CategoryPopularityParams:
    #: days at the end of the training window that count as "recent".
    recent_days: int = 7
    #: item column whose values are the categories ("top_category" or the leaf "category_code").
    category_column: str = "category_code"
    #: added to every category share, so items outside the user's categories still rank by popularity.
    smoothing: float = 0.01

    def __post_init__(self) -> None:
        if isinstance(self.recent_days, bool) or not isinstance(self.recent_days, int) or self.recent_days < 1:
            raise ValueError(f"CategoryPopularityParams.recent_days must be an integer >= 1, got {self.recent_days!r}")
        if not self.smoothing > 0:
            raise ValueError(f"CategoryPopularityParams.smoothing must be > 0, got {self.smoothing!r}")


class CategoryPopularityRecommender:
    name = "category_popularity"

    def __init__(self, params: CategoryPopularityParams | None = None):
        self.params = params or CategoryPopularityParams()
        self.item_ids: np.ndarray | None = None
        self.item_category: np.ndarray | None = None  # category index per item
        self.recent_popularity: np.ndarray | None = None
        self.categories: np.ndarray | None = None
        self.user_ids: np.ndarray | None = None
        self.user_shares: np.ndarray | None = None  # users x categories
        self._seen_pairs: pd.DataFrame | None = None
        self._seen: SeenIndex | None = None
        self._user_index: dict[int, int] = {}

    def fit(self, interactions: pd.DataFrame, items: pd.DataFrame, seen: pd.DataFrame | None = None) -> "CategoryPopularityRecommender":
        """Recent popularity of every item of ``items`` and every user's category shares from ``interactions``."""
        p = self.params
        check_columns(interactions, [USER_COL, ITEM_COL, "weight", "last_event_time"], "interactions")
        check_columns(items, [ITEM_COL, p.category_column], "items")
        if seen is not None:
            check_columns(seen, [USER_COL, ITEM_COL], "seen")
        if interactions.empty:
            raise ValueError("CategoryPopularityRecommender.fit got no interactions")
        items = items.drop_duplicates(ITEM_COL).sort_values(ITEM_COL)
        self.item_ids = items[ITEM_COL].to_numpy(np.int64)
        category = items[p.category_column].fillna("unknown").astype(str)
        self.categories, self.item_category = np.unique(category.to_numpy(), return_inverse=True)

        recent_users = recent_item_users(interactions, p.recent_days)
        self.recent_popularity = pd.Series(self.item_ids).map(recent_users).fillna(0.0).to_numpy(np.float64)

        # Negative weights (removed from cart) say nothing about a taste for the category.
        taste = interactions[[USER_COL, ITEM_COL]].assign(weight=interactions["weight"].clip(lower=0.0))
        item_category = pd.Series(self.item_category, index=self.item_ids)
        taste["category"] = taste[ITEM_COL].map(item_category)
        taste = taste.dropna(subset=["category"])
        self.user_ids = np.unique(interactions[USER_COL].to_numpy(np.int64))
        per_category = taste.groupby([USER_COL, "category"])["weight"].sum()
        rows = np.searchsorted(self.user_ids, per_category.index.get_level_values(0).to_numpy(np.int64))
        cols = per_category.index.get_level_values(1).to_numpy(np.int64)
        shares = np.zeros((len(self.user_ids), len(self.categories)), dtype=np.float64)
        shares[rows, cols] = per_category.to_numpy(np.float64)
        totals = shares.sum(axis=1, keepdims=True)
        self.user_shares = np.divide(shares, totals, out=np.zeros_like(shares), where=totals > 0)

        seen = seen if seen is not None else interactions[[USER_COL, ITEM_COL]]
        self._index_seen(seen)
        return self

    def _index_seen(self, seen: pd.DataFrame) -> None:
        self._seen_pairs = seen[[USER_COL, ITEM_COL]].reset_index(drop=True)
        users = np.unique(np.concatenate([self.user_ids, seen[USER_COL].to_numpy(np.int64)]))
        self._user_index = {int(u): i for i, u in enumerate(users)}
        self._seen = SeenIndex(self._seen_pairs, self._user_index, {int(i): j for j, i in enumerate(self.item_ids)})

    def recommend(self, user_ids, k: int, exclude_seen: bool = True) -> pd.DataFrame:
        """Top-k items for every requested user, known or not (unknown users get recent popularity)."""
        check_k(k)
        if self.item_ids is None:
            raise RuntimeError("CategoryPopularityRecommender.recommend called before fit")
        user_ids = np.unique(np.asarray(list(user_ids), dtype=np.int64))
        if len(user_ids) == 0:
            return empty_recommendations()
        share_rows = np.searchsorted(self.user_ids, user_ids)
        share_rows = np.where(share_rows < len(self.user_ids), share_rows, 0)
        known = self.user_ids[share_rows] == user_ids
        frames = []
        for chunk in batches(len(user_ids), max(1, _MAX_SCORE_CELLS // max(1, len(self.item_ids)))):
            users = user_ids[chunk]
            shares = np.where(known[chunk, None], self.user_shares[share_rows[chunk]], 0.0)
            scores = (shares[:, self.item_category] + self.params.smoothing) * self.recent_popularity
            # Items nobody touched recently are not "recently popular" (and may be unknown to the window).
            scores[:, self.recent_popularity <= 0] = -np.inf
            if exclude_seen:
                in_seen = np.array([int(u) in self._user_index for u in users])
                block = scores[in_seen]
                self._seen.mask(block, np.array([self._user_index[int(u)] for u in users[in_seen]], dtype=np.int64))
                scores[in_seen] = block
            frames.append(top_k_frame(users, scores, self.item_ids, k))
        return pd.concat(frames, ignore_index=True)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.savez(
            path / "arrays.npz", item_ids=self.item_ids, item_category=self.item_category, recent_popularity=self.recent_popularity,
            categories=self.categories.astype(str), user_ids=self.user_ids, user_shares=self.user_shares,
        )
        self._seen_pairs.to_parquet(path / "seen.parquet")
        (path / "params.json").write_text(json.dumps(asdict(self.params)))

    @classmethod
    def load(cls, path: str | Path) -> "CategoryPopularityRecommender":
        path = Path(path)
        model = cls(CategoryPopularityParams(**json.loads((path / "params.json").read_text())))
        arrays = np.load(path / "arrays.npz")
        for name in ("item_ids", "item_category", "recent_popularity", "categories", "user_ids", "user_shares"):
            setattr(model, name, arrays[name])
        model._index_seen(pd.read_parquet(path / "seen.parquet"))
        return model
