"""Collaborative filtering: Spark MLlib ALS with implicit preferences on the interaction weights.

Spark fits the factors (so the same code runs on a cluster); scoring is a dense dot product of the
collected factors in numpy, batched over users, which also lets us exclude seen items exactly.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from recsys.constants import ITEM_COL, USER_COL
from recsys.features.spark import ensure_checkpoint_dir, linear_algebra_backends, session_conf, session_cores
from recsys.models.base import FactorScoredRecommender, SeenIndex, check_columns, check_k

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


@dataclass
class ALSParams:
    rank: int = 32
    reg_param: float = 0.05
    alpha: float = 20.0
    max_iter: int = 12
    seed: int = 42
    #: user/item blocks of MLlib's ALS; 0 = the session's task slots (2 on ``local[2]``). MLlib's default
    #: of 10, or the pipeline's 8 shuffle partitions, means 8-10 tasks per half-iteration on 2 cores:
    #: pure scheduling and shuffle overhead (bench/models.py: 15.8 s with 8 blocks, about 10 s with 2).
    num_blocks: int = 0


def _ratings_frame(spark: "SparkSession", frame: pd.DataFrame, slots: int):
    """``frame`` as a Spark DataFrame that the tasks decode, one Arrow batch (= partition) per task slot.

    Under ``spark.sql.execution.arrow.localRelationThreshold`` (48 MB: 4M ratings) Spark turns an Arrow
    frame into a LocalRelation: the driver alone then converts every row, and ALS's select is planned and
    evaluated over them row by row (ConvertToLocalRelation) before its first job, while the executors
    wait: 1.3-1.5 s of CPU per fit at 0.5M ratings (bench/models.py), and garbage for the GC. No
    repartition after: ALS groups the ratings into its blocks itself.
    """
    with session_conf(spark, {
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.localRelationThreshold": "0",
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(-(-len(frame) // slots)),
    }):
        return spark.createDataFrame(frame)


class ALSRecommender(FactorScoredRecommender):
    name = "collaborative"

    def __init__(self, params: ALSParams | None = None):
        self.params = params or ALSParams()
        self.user_ids: np.ndarray | None = None
        self.item_ids: np.ndarray | None = None
        self.user_factors: np.ndarray | None = None
        self.item_factors: np.ndarray | None = None
        self.spark_model = None
        self._seen_pairs: pd.DataFrame | None = None
        self._seen: SeenIndex | None = None
        self._user_index: dict[int, int] = {}

    def fit(self, spark: "SparkSession", interactions: pd.DataFrame, seen: pd.DataFrame | None = None) -> "ALSRecommender":
        """Fit ALS on (user_id, product_id, weight); ``seen`` pairs are excluded at recommendation time."""
        from pyspark.ml.recommendation import ALS

        check_columns(interactions, [USER_COL, ITEM_COL, "weight"], "interactions")
        if seen is not None:
            check_columns(seen, [USER_COL, ITEM_COL], "seen")
        if interactions.empty:
            raise ValueError("ALSRecommender.fit got no interactions")
        # MLlib wants int32 ids: map to contiguous indices and keep the mapping.
        user_ids = np.unique(interactions[USER_COL].to_numpy(np.int64))
        item_ids = np.unique(interactions[ITEM_COL].to_numpy(np.int64))
        frame = pd.DataFrame(
            {
                "u": np.searchsorted(user_ids, interactions[USER_COL].to_numpy(np.int64)).astype(np.int32),
                "i": np.searchsorted(item_ids, interactions[ITEM_COL].to_numpy(np.int64)).astype(np.int32),
                "w": interactions["weight"].to_numpy(np.float32),
            }
        )
        p = self.params
        slots = session_cores(spark)
        blocks = p.num_blocks or slots
        ratings = _ratings_frame(spark, frame, slots)
        ensure_checkpoint_dir(spark)  # ALS checkpoints every 10 iterations only where a folder is set
        als = ALS(
            numUserBlocks=blocks, numItemBlocks=blocks,
            rank=p.rank, regParam=p.reg_param, alpha=p.alpha, maxIter=p.max_iter, seed=p.seed,
            implicitPrefs=True, userCol="u", itemCol="i", ratingCol="w",
            coldStartStrategy="drop", nonnegative=False, checkpointInterval=10,
        )
        log.info(
            "fitting ALS %s on %d interactions (%d users x %d items), %d blocks, linear algebra %s",
            asdict(p), len(frame), len(user_ids), len(item_ids), blocks, linear_algebra_backends(spark),
        )
        model = als.fit(ratings)
        self.spark_model = model
        self.user_ids, self.item_ids = user_ids, item_ids
        self.user_factors = self._dense_factors(model.userFactors.toPandas(), len(user_ids))
        self.item_factors = self._dense_factors(model.itemFactors.toPandas(), len(item_ids))
        self._index_seen(seen if seen is not None else interactions[[USER_COL, ITEM_COL]])
        return self

    def _dense_factors(self, factors: pd.DataFrame, n: int) -> np.ndarray:
        dense = np.zeros((n, self.params.rank), dtype=np.float32)
        if len(factors):
            dense[factors["id"].to_numpy()] = np.stack(factors["features"].to_numpy()).astype(np.float32)
        return dense

    def _score_rows(self, rows: np.ndarray) -> np.ndarray:
        return self.user_factors[rows] @ self.item_factors.T

    def recommend(self, user_ids, k: int, exclude_seen: bool = True) -> pd.DataFrame:
        """Top-k items by factor dot product; users unknown to the model get no rows."""
        check_k(k)
        if self.user_factors is None:
            raise RuntimeError("ALSRecommender.recommend called before fit")
        return self._recommend_known(user_ids, k, exclude_seen)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.savez(path / "factors.npz", user_ids=self.user_ids, item_ids=self.item_ids, user_factors=self.user_factors, item_factors=self.item_factors)
        self._seen_pairs.to_parquet(path / "seen.parquet")
        (path / "params.json").write_text(json.dumps(asdict(self.params)))

    @classmethod
    def load(cls, path: str | Path) -> "ALSRecommender":
        path = Path(path)
        model = cls(ALSParams(**json.loads((path / "params.json").read_text())))
        arrays = np.load(path / "factors.npz")
        model.user_ids, model.item_ids = arrays["user_ids"], arrays["item_ids"]
        model.user_factors, model.item_factors = arrays["user_factors"], arrays["item_factors"]
        model._index_seen(pd.read_parquet(path / "seen.parquet"))
        return model
