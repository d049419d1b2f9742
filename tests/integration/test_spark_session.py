"""What get_spark and ALS set up in the JVM: native BLAS/LAPACK when the machine has them, one BLAS thread
per task, log lines on the right stream, and the ratings handed to ALS as an RDD that the tasks decode.

The BLAS checks read the classes Spark ML itself calls (``linear_algebra_backends``), not a guess from the
file system; the thread, JIT and log-stream checks start their own JVM through get_spark, in a child process,
because the environment and the JVM's options are read once, when a JVM starts (the test session's JVM is
already running).
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.features.build import raw_window_mb
from recsys.features.spark import (
    NATIVE_BLAS_THREADS_ENV, QUICK_JIT_OPTION, driver_java_options, linear_algebra_backends, quick_jit, spark_ml_blas_library,
)
from recsys.models.collaborative import _ratings_frame

pytestmark = pytest.mark.spark

REPO_ROOT = Path(__file__).resolve().parents[2]


def _loadable(library: str) -> bool:
    """Whether the dynamic loader finds ``library``: what dev.ludovic.netlib's JNI wrappers ask it for."""
    try:
        ctypes.CDLL(library)
    except OSError:
        return False
    return True


def test_spark_ml_calls_the_native_blas_and_lapack_when_the_machine_has_them(spark):
    backends = linear_algebra_backends(spark)
    if not (_loadable("libblas.so.3") and _loadable("liblapack.so.3")):
        assert not backends["blas"].startswith("JNI"), backends
        pytest.skip(f"no native libblas.so.3/liblapack.so.3 here (`make blas` installs OpenBLAS); Spark ML runs Java: {backends}")
    # The test session is not built by get_spark: no library named, the JVM loads libblas.so.3.
    assert backends == {"blas": "JNIBLAS", "blas_library": "libblas.so.3", "lapack": "JNILAPACK"}


def test_spark_ml_blas_library_settings(tmp_path):
    assert spark_ml_blas_library("system") is None
    assert spark_ml_blas_library(str(tmp_path / "libblas.so.3")) == str(tmp_path / "libblas.so.3")
    found = spark_ml_blas_library("auto")
    assert found is None or (found.endswith("/blas/libblas.so.3") and Path(found).exists()), found


GET_SPARK = r"""
import json, os, sys
from pathlib import Path
from recsys.config import Settings
from recsys.features.spark import get_spark, linear_algebra_backends
# 0.5 MB of input: a small run's JVM, with the quick JIT only.
spark = get_spark(Settings(data_dir=Path(sys.argv[1]), spark_master="local[1]", spark_shuffle_partitions=1), input_mb=0.5)
jvm = spark.sparkContext._jvm
names = sys.argv[2:]
print(json.dumps({
    "jvm_arguments": list(jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments()),
    "backends": linear_algebra_backends(spark),
    "executor_options": spark.conf.get("spark.executor.extraJavaOptions"),
    "jvm": {name: jvm.java.lang.System.getenv(name) for name in names},
    "executor_env": {name: spark.conf.get(f"spark.executorEnv.{name}", None) for name in names},
    "python_after": {name: os.environ.get(name) for name in names},
}))
sys.stdout.flush()
probe = jvm.org.apache.log4j.LogManager.getLogger("recsys.probe")
probe.warn("probe warning")
probe.error("probe error")
spark.stop()
"""


@pytest.fixture(scope="module")
def child_session(tmp_path_factory):
    """A child process that starts its own JVM through get_spark (with MKL_NUM_THREADS=3 set by the user)."""
    names = sorted(NATIVE_BLAS_THREADS_ENV)
    env = {k: v for k, v in os.environ.items() if k not in names}
    env["MKL_NUM_THREADS"] = "3"  # set by the user: kept
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "include"), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", GET_SPARK, str(tmp_path_factory.mktemp("child-spark") / "data"), *names],
        env=env, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_get_spark_gives_the_jvm_and_the_executors_one_blas_thread_and_leaves_this_process_alone(child_session):
    seen = json.loads(next(line for line in child_session.stdout.splitlines() if line.startswith("{")))
    assert seen["jvm"] == {"MKL_NUM_THREADS": "3", "OPENBLAS_NUM_THREADS": "1"}
    assert seen["executor_env"] == {"MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    # numpy's own OpenBLAS in the driver process must not be pinned to one thread by it.
    assert seen["python_after"] == {"MKL_NUM_THREADS": "3", "OPENBLAS_NUM_THREADS": None}


def test_get_spark_hands_spark_ml_the_reference_blas_where_it_is_installed(child_session):
    """ALS's per-rating BLAS calls cost less in Debian's reference BLAS than in OpenBLAS (spark_ml_blas_library)."""
    seen = json.loads(next(line for line in child_session.stdout.splitlines() if line.startswith("{")))
    reference = spark_ml_blas_library("auto")
    if reference is None:
        pytest.skip(f"Debian's reference BLAS is not installed here (`make blas` installs libblas3); Spark ML runs {seen['backends']}")
    # Loaded for real: JNIBLAS means dev.ludovic.netlib opened the library at that path.
    assert seen["backends"]["blas"] == "JNIBLAS", seen["backends"]
    assert seen["backends"]["blas_library"] == reference
    assert f"-Ddev.ludovic.netlib.blas.nativeLibPath={reference}" in seen["executor_options"]


def test_a_small_runs_jvm_compiles_with_the_quick_jit_only(child_session):
    """C2 costs a fresh JVM more CPU than it saves on small data (recsys.features.spark.quick_jit)."""
    seen = json.loads(next(line for line in child_session.stdout.splitlines() if line.startswith("{")))
    assert QUICK_JIT_OPTION in seen["jvm_arguments"], seen["jvm_arguments"]


def test_quick_jit_is_for_known_small_inputs_only():
    assert quick_jit(0.5, 16.0) and quick_jit(16.0, 16.0)
    assert not quick_jit(16.1, 16.0)
    assert not quick_jit(None, 16.0)  # unknown size: the full JIT
    assert not quick_jit(0.0, 0.0)  # 0 turns it off
    assert QUICK_JIT_OPTION in driver_java_options(quick_jit=True)
    assert QUICK_JIT_OPTION not in driver_java_options()


def test_raw_window_mb_counts_the_lookback_windows_files_only(tmp_path):
    raw = tmp_path / "raw" / "events"
    day = date(2026, 3, 10)
    sizes = {date(2026, 3, 10): 3 * 2**20, date(2026, 3, 8): 2**20, date(2026, 3, 7): 5 * 2**20, date(2026, 3, 11): 7 * 2**20}
    for d, size in sizes.items():
        folder = raw / f"ds={d.isoformat()}" / "part"
        folder.mkdir(parents=True)
        (folder / "events.csv").write_bytes(b"x" * size)
    # A 3-day window ending on the 10th: the 10th and the 8th (the 9th is missing); not the 7th, not the later 11th.
    assert raw_window_mb(raw, day, 3) == pytest.approx(4.0)
    assert raw_window_mb(raw, day, 4) == pytest.approx(9.0)
    assert raw_window_mb(tmp_path / "nowhere", day, 3) == 0.0


def test_the_jvm_writes_warnings_to_stdout_and_only_errors_to_stderr(child_session):
    """An Airflow task records its stderr at level ERROR: Spark's start-up notes and warnings must not land there."""
    out, err = child_session.stdout.splitlines(), child_session.stderr.splitlines()
    assert any(line.endswith("WARN probe: probe warning") for line in out), child_session.stdout[-2000:]
    assert any(line.endswith("ERROR probe: probe error") for line in err), child_session.stderr[-2000:]
    assert not any(" WARN " in line or "log4j profile" in line or "setLogLevel" in line for line in err), err
    assert not any("ERROR probe" in line for line in out), out


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
