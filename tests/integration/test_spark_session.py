"""ALS hands its ratings to Spark as an RDD that the tasks decode, not as a LocalRelation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.models.collaborative import _ratings_frame

pytestmark = pytest.mark.spark


def test_als_ratings_reach_spark_as_one_arrow_batch_per_task_slot_not_a_local_relation(spark):
    frame = pd.DataFrame({"u": np.arange(1001, dtype=np.int32) % 7, "i": np.arange(1001, dtype=np.int32) % 13, "w": np.ones(1001, np.float32)})
    keys = [f"spark.sql.execution.arrow.{key}" for key in ("pyspark.enabled", "localRelationThreshold", "maxRecordsPerBatch")]
    before = {key: spark.conf.get(key, None) for key in keys}

    ratings = _ratings_frame(spark, frame, slots=3)  # not the test session's default parallelism (2)

    # A LocalRelation would be converted and planned row by row on the driver (see _ratings_frame).
    assert ratings._jdf.queryExecution().logical().nodeName() == "LogicalRDD"
    assert ratings._jdf.rdd().getNumPartitions() == 3
    assert ratings.count() == 1001
    assert {key: spark.conf.get(key, None) for key in keys} == before
