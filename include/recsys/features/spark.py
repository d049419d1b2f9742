"""The SparkSession for the pipeline: local by default, a standalone cluster when ``spark_default`` says so."""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pyspark is heavy: imported lazily where a session is really built
    from pyspark.sql import SparkSession

    from recsys.config import Settings

log = logging.getLogger(__name__)


def spark_master_from_connection(host: str | None, port: int | None) -> str:
    """Turn the ``spark_default`` connection's host/port into a Spark master URL.

    ``local[*]``/``local[2]`` pass through; ``spark://host`` with a port becomes ``spark://host:port``;
    a bare host name is taken as a standalone master.
    """
    if not host:
        return "local[*]"
    host = host.strip()
    if host.startswith("local"):
        return host
    if "://" not in host:
        host = f"spark://{host}"
    if port and host.count(":") < 2:
        host = f"{host}:{port}"
    return host


def master_slots(master: str, default_parallelism: int) -> int:
    """Task slots a master URL gives: N of ``local[N]`` (every CPU for ``local[*]``, one for ``local``).

    On a cluster the executors' cores are not known from the URL: ``default_parallelism`` then.
    """
    local = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\s*\d+)?\])?", master.strip())
    if local is None:
        return max(1, default_parallelism)
    threads = local.group(1)
    if threads is None:
        return 1
    return (os.cpu_count() or 1) if threads == "*" else max(1, int(threads))


def session_cores(spark: "SparkSession") -> int:
    """Task slots of a running session (its ``defaultParallelism`` is the pipeline's shuffle partitions, no guide)."""
    return master_slots(spark.sparkContext.master, spark.sparkContext.defaultParallelism)


def get_spark(settings: "Settings", app_name: str = "recsys") -> "SparkSession":
    """Build (or reuse) the SparkSession configured from the settings."""
    from pyspark.sql import SparkSession

    # Python workers must run the same interpreter (and so the same venv) as the driver.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    log.info("starting Spark session on master %s", settings.spark_master)
    spark = (
        SparkSession.builder.appName(app_name)
        .master(settings.spark_master)
        .config("spark.sql.shuffle.partitions", str(settings.spark_shuffle_partitions))
        .config("spark.default.parallelism", str(settings.spark_shuffle_partitions))
        .config("spark.driver.memory", settings.spark_driver_memory)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.adaptive.enabled", "true")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.driver.extraJavaOptions", "-Duser.timezone=UTC")
        .config("spark.executor.extraJavaOptions", "-Duser.timezone=UTC")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("WARN")
    return spark
