"""Item-to-item co-occurrence ("customers who bought this also bought"), computed in Spark.

Two items co-occur when one user touched both in the training window (each user's most recent
``max_items_per_user`` items, which bounds the per-user self-join). The counts are normalised to
cosine similarity ``c(i, j) / sqrt(n_i * n_j)``, shrunk towards 0 for rare pairs
(``c / (c + shrinkage)``), and each item keeps its ``neighbours`` most similar items. The pair counting
and the top-N selection run in Spark (so the same code runs on a cluster); scoring a user is a sparse
product of their weighted items with the neighbour matrix, which works from a single interaction.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.constants import ITEM_COL, USER_COL
from recsys.models.base import FactorScoredRecommender, SeenIndex, check_columns, check_k, empty_recommendations, top_k_frame

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

NEIGHBOUR_COL = "neighbour_id"
SIMILARITY_COL = "similarity"


@dataclass
class CooccurrenceParams:
    #: each user's most recent items that form pairs: caps the O(n_u^2) pairs of very active users.
    max_items_per_user: int = 50
    #: most similar items kept per item.
    neighbours: int = 50
    #: pairs seen together by fewer users are dropped.
    min_cooccurrence: int = 1
    #: c / (c + shrinkage) damps similarities resting on few users.
    shrinkage: float = 2.0

    def __post_init__(self) -> None:
        for name in ("max_items_per_user", "neighbours", "min_cooccurrence"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"CooccurrenceParams.{name} must be an integer >= 1, got {value!r}")
        if self.shrinkage < 0:
            raise ValueError(f"CooccurrenceParams.shrinkage must be >= 0, got {self.shrinkage!r}")


def item_neighbours(interactions: "DataFrame", params: CooccurrenceParams) -> "DataFrame":
    """Spark transform: (user_id, product_id, last_event_time) -> (product_id, neighbour_id, similarity, cooccurrences).

    Pure DataFrame in, DataFrame out: the top ``params.neighbours`` neighbours of every item by
    shrunk cosine similarity, ties broken by the smaller neighbour id.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    recent_first = Window.partitionBy(USER_COL).orderBy(F.col("last_event_time").desc(), F.col(ITEM_COL))
    baskets = (
        interactions.select(USER_COL, ITEM_COL, "last_event_time")
        .dropDuplicates([USER_COL, ITEM_COL])
        .withColumn("_recency", F.row_number().over(recent_first))
        .filter(F.col("_recency") <= params.max_items_per_user)
        .select(USER_COL, ITEM_COL)
    )
    item_users = baskets.groupBy(ITEM_COL).agg(F.count(F.lit(1)).alias("n_users"))
    right = baskets.select(USER_COL, F.col(ITEM_COL).alias(NEIGHBOUR_COL))
    pairs = (
        baskets.join(right, on=USER_COL)
        .filter(F.col(ITEM_COL) != F.col(NEIGHBOUR_COL))
        .groupBy(ITEM_COL, NEIGHBOUR_COL)
        .agg(F.count(F.lit(1)).alias("cooccurrences"))
        .filter(F.col("cooccurrences") >= params.min_cooccurrence)
    )
    n_i = item_users.select(F.col(ITEM_COL), F.col("n_users").alias("n_i"))
    n_j = item_users.select(F.col(ITEM_COL).alias(NEIGHBOUR_COL), F.col("n_users").alias("n_j"))
    c = F.col("cooccurrences").cast("double")
    scored = (
        pairs.join(n_i, on=ITEM_COL)
        .join(n_j, on=NEIGHBOUR_COL)
        .withColumn(SIMILARITY_COL, c / F.sqrt(F.col("n_i") * F.col("n_j")) * (c / (c + F.lit(float(params.shrinkage)))))
    )
    best_first = Window.partitionBy(ITEM_COL).orderBy(F.col(SIMILARITY_COL).desc(), F.col(NEIGHBOUR_COL))
    return (
        scored.withColumn("_rank", F.row_number().over(best_first))
        .filter(F.col("_rank") <= params.neighbours)
        .select(ITEM_COL, NEIGHBOUR_COL, SIMILARITY_COL, F.col("cooccurrences").cast("long").alias("cooccurrences"))
    )


class CooccurrenceRecommender(FactorScoredRecommender):
    """Scores ``profile(u) @ S``: the user's weighted items times the item-to-neighbour similarity matrix."""

    name = "cooccurrence"

    def __init__(self, params: CooccurrenceParams | None = None):
        self.params = params or CooccurrenceParams()
        self.neighbour_table: pd.DataFrame | None = None
        self.item_ids: np.ndarray | None = None
        self.user_ids: np.ndarray | None = None
        self.similarity: sp.csr_matrix | None = None  # items x items
        self.profiles: sp.csr_matrix | None = None  # users x items
        self._profile_pairs: pd.DataFrame | None = None
        self._seen_pairs: pd.DataFrame | None = None
        self._seen: SeenIndex | None = None
        self._user_index: dict[int, int] = {}

    def fit(self, spark: "SparkSession", interactions: pd.DataFrame, seen: pd.DataFrame | None = None) -> "CooccurrenceRecommender":
        """Count co-occurrences of (user_id, product_id, weight, last_event_time) in Spark; keep the top neighbours."""
        check_columns(interactions, [USER_COL, ITEM_COL, "weight", "last_event_time"], "interactions")
        if seen is not None:
            check_columns(seen, [USER_COL, ITEM_COL], "seen")
        if interactions.empty:
            raise ValueError("CooccurrenceRecommender.fit got no interactions")
        frame = interactions[[USER_COL, ITEM_COL, "last_event_time"]].copy()
        frame["last_event_time"] = pd.to_datetime(frame["last_event_time"], utc=True)
        log.info("co-occurrence %s over %d interactions of %d users", asdict(self.params), len(frame), frame[USER_COL].nunique())
        neighbours = item_neighbours(spark.createDataFrame(frame), self.params).toPandas()
        self._set_neighbours(neighbours, interactions[ITEM_COL].to_numpy(np.int64))
        self._set_profiles(interactions[[USER_COL, ITEM_COL, "weight"]])
        self._index_seen(seen if seen is not None else interactions[[USER_COL, ITEM_COL]])
        log.info("co-occurrence: %d items, %d neighbour pairs, %d user profiles", len(self.item_ids), len(neighbours), len(self.user_ids))
        return self

    def _set_neighbours(self, neighbours: pd.DataFrame, known_items: np.ndarray) -> None:
        neighbours = neighbours.sort_values([ITEM_COL, SIMILARITY_COL, NEIGHBOUR_COL], ascending=[True, False, True]).reset_index(drop=True)
        self.neighbour_table = neighbours
        self.item_ids = np.unique(np.concatenate([known_items, neighbours[ITEM_COL].to_numpy(np.int64)]))
        rows = np.searchsorted(self.item_ids, neighbours[ITEM_COL].to_numpy(np.int64))
        cols = np.searchsorted(self.item_ids, neighbours[NEIGHBOUR_COL].to_numpy(np.int64))
        n = len(self.item_ids)
        self.similarity = sp.csr_matrix((neighbours[SIMILARITY_COL].to_numpy(np.float64), (rows, cols)), shape=(n, n))

    def _set_profiles(self, weighted: pd.DataFrame) -> None:
        """Each user's items with their (clipped, per-user normalised) interaction weights."""
        weighted = weighted[weighted[ITEM_COL].isin(self.item_ids)].copy()
        weighted["weight"] = weighted["weight"].clip(lower=0.0)
        self._profile_pairs = weighted.reset_index(drop=True)
        self.user_ids = np.unique(weighted[USER_COL].to_numpy(np.int64))
        self.profiles = self._profile_matrix(weighted, self.user_ids)

    def _profile_matrix(self, weighted: pd.DataFrame, user_ids: np.ndarray) -> sp.csr_matrix:
        rows = np.searchsorted(user_ids, weighted[USER_COL].to_numpy(np.int64))
        cols = np.searchsorted(self.item_ids, weighted[ITEM_COL].to_numpy(np.int64))
        matrix = sp.csr_matrix((weighted["weight"].to_numpy(np.float64), (rows, cols)), shape=(len(user_ids), len(self.item_ids)))
        totals = np.asarray(matrix.sum(axis=1)).ravel()
        return sp.diags(np.divide(1.0, totals, out=np.zeros_like(totals), where=totals > 0)) @ matrix

    def _score_rows(self, rows: np.ndarray) -> np.ndarray:
        scores = np.asarray((self.profiles[rows] @ self.similarity).todense(), dtype=np.float64)
        scores[scores <= 0] = -np.inf  # no co-occurrence with anything the user touched: not a candidate
        return scores

    def recommend(self, user_ids, k: int, exclude_seen: bool = True) -> pd.DataFrame:
        """Top-k items co-occurring with the user's items; users without history get no rows."""
        check_k(k)
        if self.similarity is None:
            raise RuntimeError("CooccurrenceRecommender.recommend called before fit")
        return self._recommend_known(user_ids, k, exclude_seen)

    def recommend_from_items(self, touched: pd.DataFrame, k: int) -> pd.DataFrame:
        """Top-k for ad-hoc baskets (user_id, product_id[, weight]), e.g. a cold user's session today.

        The touched items themselves are excluded; items the model does not know are ignored.
        """
        check_k(k)
        if self.similarity is None:
            raise RuntimeError("CooccurrenceRecommender.recommend_from_items called before fit")
        check_columns(touched, [USER_COL, ITEM_COL], "touched")
        basket = touched[touched[ITEM_COL].isin(self.item_ids)]
        if "weight" not in basket.columns:
            basket = basket.assign(weight=1.0)
        basket = basket.assign(weight=basket["weight"].clip(lower=0.0))
        users = np.unique(basket[USER_COL].to_numpy(np.int64))
        if len(users) == 0:
            return empty_recommendations()
        scores = np.asarray((self._profile_matrix(basket, users) @ self.similarity).todense(), dtype=np.float64)
        scores[scores <= 0] = -np.inf
        scores[np.searchsorted(users, basket[USER_COL].to_numpy(np.int64)), np.searchsorted(self.item_ids, basket[ITEM_COL].to_numpy(np.int64))] = -np.inf
        return top_k_frame(users, scores, self.item_ids, k)

    def neighbours_of(self, product_ids, k: int) -> pd.DataFrame:
        """The k nearest neighbours of each given item: (product_id, neighbour_id, similarity, cooccurrences)."""
        check_k(k)
        if self.neighbour_table is None:
            raise RuntimeError("CooccurrenceRecommender.neighbours_of called before fit")
        table = self.neighbour_table[self.neighbour_table[ITEM_COL].isin(np.asarray(list(product_ids), dtype=np.int64))]
        return table[table.groupby(ITEM_COL).cumcount() < k].reset_index(drop=True)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.neighbour_table.to_parquet(path / "neighbours.parquet")
        np.savez(path / "items.npz", item_ids=self.item_ids)
        self._profile_pairs.to_parquet(path / "profiles.parquet")
        self._seen_pairs.to_parquet(path / "seen.parquet")
        (path / "params.json").write_text(json.dumps(asdict(self.params)))

    @classmethod
    def load(cls, path: str | Path) -> "CooccurrenceRecommender":
        path = Path(path)
        model = cls(CooccurrenceParams(**json.loads((path / "params.json").read_text())))
        model._set_neighbours(pd.read_parquet(path / "neighbours.parquet"), np.load(path / "items.npz")["item_ids"])
        model._set_profiles(pd.read_parquet(path / "profiles.parquet"))
        model._index_seen(pd.read_parquet(path / "seen.parquet"))
        return model
