"""Popularity baseline: the most-interacted items of the training window, recent days counting more.

Also the fallback for users the other models cannot serve (cold users, short lists).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.constants import ITEM_COL, USER_COL
from recsys.models.base import SeenIndex, batches, check_columns, check_k, empty_recommendations, top_k_frame


@dataclass
class PopularityParams:
    #: "users": distinct users per item (robust to heavy users); "weight": sum of decayed weights.
    measure: str = "users"


class PopularityRecommender:
    name = "popularity"

    def __init__(self, params: PopularityParams | None = None):
        self.params = params or PopularityParams()
        self.item_ids: np.ndarray | None = None
        self.item_scores: np.ndarray | None = None
        self._seen: SeenIndex | None = None
        self._seen_pairs: pd.DataFrame | None = None
        self._user_index: dict[int, int] = {}

    def fit(self, interactions: pd.DataFrame, seen: pd.DataFrame | None = None) -> "PopularityRecommender":
        check_columns(interactions, [USER_COL, ITEM_COL, "weight"], "interactions")
        if seen is not None:
            check_columns(seen, [USER_COL, ITEM_COL], "seen")
        if self.params.measure == "users":
            popularity = interactions.groupby(ITEM_COL)[USER_COL].nunique()
        elif self.params.measure == "weight":
            popularity = interactions.groupby(ITEM_COL)["weight"].sum()
        else:
            raise ValueError(f"PopularityParams.measure must be 'users' or 'weight', got {self.params.measure!r}")
        popularity = popularity.sort_index()
        self.item_ids = popularity.index.to_numpy(np.int64)
        self.item_scores = popularity.to_numpy(np.float64)
        seen = seen if seen is not None else interactions[[USER_COL, ITEM_COL]]
        self._index_seen(seen)
        return self

    def _index_seen(self, seen: pd.DataFrame) -> None:
        self._seen_pairs = seen[[USER_COL, ITEM_COL]].reset_index(drop=True)
        users = np.unique(seen[USER_COL].to_numpy(np.int64))
        self._user_index = {int(u): i for i, u in enumerate(users)}
        self._seen = SeenIndex(seen, self._user_index, {int(i): j for j, i in enumerate(self.item_ids)})

    def recommend(self, user_ids, k: int, exclude_seen: bool = True) -> pd.DataFrame:
        """Top-k popular items for every requested user (known or not), unseen ones first."""
        check_k(k)
        if self.item_ids is None:
            raise RuntimeError("PopularityRecommender.recommend called before fit")
        user_ids = np.unique(np.asarray(list(user_ids), dtype=np.int64))  # one block per user, sorted by user
        if len(user_ids) == 0:
            return empty_recommendations()
        frames = []
        for chunk in batches(len(user_ids), 2048):
            users = user_ids[chunk]
            scores = np.tile(self.item_scores, (len(users), 1))
            if exclude_seen:
                known = np.array([u in self._user_index for u in users])
                rows = np.array([self._user_index.get(int(u), 0) for u in users])
                block = scores[known]
                self._seen.mask(block, rows[known])
                scores[known] = block
            frames.append(top_k_frame(users, scores, self.item_ids, k))
        return pd.concat(frames, ignore_index=True)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({ITEM_COL: self.item_ids, "popularity": self.item_scores}).to_parquet(path / "popularity.parquet")
        self._seen_pairs.to_parquet(path / "seen.parquet")
        (path / "params.json").write_text(json.dumps(asdict(self.params)))

    @classmethod
    def load(cls, path: str | Path) -> "PopularityRecommender":
        path = Path(path)
        model = cls(PopularityParams(**json.loads((path / "params.json").read_text())))
        table = pd.read_parquet(path / "popularity.parquet")
        model.item_ids = table[ITEM_COL].to_numpy(np.int64)
        model.item_scores = table["popularity"].to_numpy(np.float64)
        model._index_seen(pd.read_parquet(path / "seen.parquet"))
        return model
