"""The SparkSession for the pipeline: local by default, a standalone cluster when ``spark_default`` says so."""

from __future__ import annotations

import atexit
import contextlib
import glob
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
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


@contextlib.contextmanager
def session_conf(spark: "SparkSession", confs: "dict[str, str]"):
    """Set runtime SQL confs of the session for the block, then restore what was there (or unset)."""
    previous = {key: spark.conf.get(key, None) for key in confs}
    _set_confs(spark, confs)
    try:
        yield
    finally:
        _set_confs(spark, previous)


def _set_confs(spark: "SparkSession", confs: "dict[str, str | None]") -> None:
    for key, value in confs.items():
        if value is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, value)


#: One native BLAS thread per task. Spark runs a task per core and each task's BLAS calls are small
#: (ALS: rank x rank normal equations); a multi-threaded OpenBLAS or MKL would start threads of its own
#: on top and oversubscribe the cores (Spark's MLlib linear algebra guide, SPARK-21305). Cluster
#: executors get these through ``spark.executorEnv``; a local master runs the tasks inside the driver's
#: JVM, which takes its environment from this process when it starts.
NATIVE_BLAS_THREADS_ENV = {"OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


#: Debian's reference BLAS (package libblas3), where Debian keeps it beside whichever libblas.so.3 its
#: alternatives system chose (OpenBLAS, when installed, is chosen over it).
REFERENCE_BLAS_GLOB = "/usr/lib/*/blas/libblas.so.3"
#: The JVM property that tells dev.ludovic.netlib's JNIBLAS which library to load instead of libblas.so.3.
BLAS_LIBRARY_PROPERTY = "dev.ludovic.netlib.blas.nativeLibPath"


def spark_ml_blas_library(setting: str = "auto") -> "str | None":
    """The BLAS library Spark ML should load through JNI, or None for the system's libblas.so.3.

    MLlib's ALS calls BLAS once or twice per rating per half-iteration (``NormalEquation.add``: a dspr of
    rank x rank and a daxpy), on vectors of a few dozen numbers, so what each call costs around the
    arithmetic decides its speed. Debian's reference BLAS runs a dspr as one plain double loop; OpenBLAS
    runs it as one call of its axpy kernel per column (32 at rank 32), each too short to repay its set-up.
    ALS fits 545,743 ratings at rank 32 in about 11 s instead of 13 (bench/models.py). ``setting`` is
    :attr:`recsys.config.Settings.spark_blas_library`: "auto" picks the reference BLAS where it is
    installed (``make blas``), "system" never does, anything else is a path. The Cholesky solves (LAPACK)
    stay on the system's liblapack.so.3: a reference LAPACK there made no measurable difference.
    """
    if setting == "system":
        return None
    if setting != "auto":
        return setting
    found = sorted(glob.glob(REFERENCE_BLAS_GLOB))
    return found[0] if found else None


#: Where the driver JVM's log lines go: warnings to stdout, errors to stderr (see the file for why).
LOG4J2_CONFIG = Path(__file__).with_name("spark-log4j2.properties")


#: HotSpot's option that stops its tiered JIT at the quick compiler (C1): no C2 compilations.
QUICK_JIT_OPTION = "-XX:TieredStopAtLevel=1"


def quick_jit(input_mb: "float | None", max_mb: float) -> bool:
    """Whether a JVM for ``input_mb`` of data should compile with C1 only (``max_mb``: RECSYS_SPARK_QUICK_JIT_MAX_MB).

    A fresh Spark JVM spends most of its CPU compiling: starting a session and running a dozen small
    jobs took 32-34 s of CPU with the JIT's default two tiers and 19-21 s with C1 alone (5.6 instead of
    7.2 s to start the session), on a 2-core machine where a DAG run's Spark tasks overlap with the LSTM.
    C2's faster code repays its compile time only on data big enough to run hot loops for long: at 1M
    events (130 MB) C1 alone still kept up, at 10M (1.3 GB) the feature build took 1.85x as long with it
    (README, "The DAG"). ``max_mb`` 0 turns it off; unknown input: the full JIT.
    """
    return input_mb is not None and max_mb > 0 and input_mb <= max_mb


def driver_java_options(blas_library: "str | None" = None, quick_jit: bool = False) -> str:
    """The driver JVM's options: UTC, :data:`LOG4J2_CONFIG` for its log lines, Spark ML's BLAS library if
    given, and :data:`QUICK_JIT_OPTION` for a small input (:func:`quick_jit`)."""
    quick = f" {QUICK_JIT_OPTION}" if quick_jit else ""
    return f"-Duser.timezone=UTC -Dlog4j2.configurationFile={LOG4J2_CONFIG.as_uri()}{_blas_option(blas_library)}{quick}"


def _blas_option(blas_library: "str | None") -> str:
    return f" -D{BLAS_LIBRARY_PROPERTY}={blas_library}" if blas_library else ""


def get_spark(settings: "Settings", app_name: str = "recsys", input_mb: "float | None" = None) -> "SparkSession":
    """Build (or reuse) the SparkSession configured from the settings.

    ``input_mb``: how much data the session is for (the pipeline passes its lookback window's raw event
    files, :func:`recsys.features.build.raw_window_mb`); a small amount starts the JVM with the quick JIT only (:func:`quick_jit`).
    """
    from pyspark.sql import SparkSession

    # Python workers must run the same interpreter (and so the same venv) as the driver.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    blas_library = spark_ml_blas_library(settings.spark_blas_library)
    quick = quick_jit(input_mb, settings.spark_quick_jit_max_mb)
    log.info(
        "starting Spark session on master %s%s", settings.spark_master,
        f" with the quick JIT only ({input_mb:.1f} MB of input, RECSYS_SPARK_QUICK_JIT_MAX_MB={settings.spark_quick_jit_max_mb:g})"
        if quick else "",
    )
    builder = (
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
        .config("spark.driver.extraJavaOptions", driver_java_options(blas_library, quick_jit=quick))
        # A cluster's executors load the same path if they have it (the compose image installs it), else
        # netlib falls back to their libblas.so.3 or Java, which is slower but computes the same.
        .config("spark.executor.extraJavaOptions", f"-Duser.timezone=UTC{_blas_option(blas_library)}")
        # Checkpoint files (ALS's, see ensure_checkpoint_dir) are deleted once their RDDs are gone.
        .config("spark.cleaner.referenceTracking.cleanCheckpoints", "true")
    )
    for name, value in NATIVE_BLAS_THREADS_ENV.items():
        builder = builder.config(f"spark.executorEnv.{name}", value)
    with _environment_defaults(NATIVE_BLAS_THREADS_ENV):
        spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    # Under the data folder, which a cluster's executors must share anyway (they write the features there).
    ensure_checkpoint_dir(spark, settings.data_dir / "spark-checkpoints")
    return spark


@contextlib.contextmanager
def _environment_defaults(values: "dict[str, str]"):
    """Set the variables this process has not set, for the block only (a JVM started inside inherits them).

    Only for the block: numpy's own OpenBLAS, if this process loads it later, would read them too and
    run single-threaded. Values the user set are left as they are.
    """
    added = {name: value for name, value in values.items() if name not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            if name in os.environ:  # a removal, not a read: the compose env scan counts pop() as reading
                del os.environ[name]


def linear_algebra_backends(spark: "SparkSession") -> "dict[str, str]":
    """The BLAS and LAPACK implementations Spark ML calls in the driver's JVM (which runs a local master's tasks).

    ``JNIBLAS``/``JNILAPACK``: native libraries through JNI (``make blas``): ``blas_library`` names the
    BLAS file the JVM was told to load (:func:`spark_ml_blas_library`), else "libblas.so.3". Otherwise
    dev.ludovic.netlib's Java fallbacks, ``VectorBLAS`` (``Java11BLAS``/``F2jBLAS`` without the JDK's
    vector module) and ``F2jLAPACK``, with which ALS's per-rating updates (dspr, daxpy) take about 1.6x
    as long. Loads them if not loaded yet: a missing native library is then logged by the JVM as
    "Failed to load implementation from:dev.ludovic.netlib.blas.JNIBLAS".
    """
    jvm = spark.sparkContext._jvm
    blas = getattr(jvm.org.apache.spark.ml.linalg, "BLAS$").__getattr__("MODULE$").nativeBLAS()
    lapack = getattr(jvm.org.apache.spark.mllib.linalg, "LAPACK$").__getattr__("MODULE$").nativeLAPACK()
    library = jvm.java.lang.System.getProperty(BLAS_LIBRARY_PROPERTY) or "libblas.so.3"
    return {"blas": blas.getClass().getSimpleName(), "blas_library": library, "lapack": lapack.getClass().getSimpleName()}


def ensure_checkpoint_dir(spark: "SparkSession", folder: "Path | str | None" = None) -> str:
    """Give the session a checkpoint folder unless it has one; returns the folder in use.

    Iterative MLlib jobs (ALS) grow an RDD lineage with every iteration; without checkpoints the task
    that serialises it overflows the JVM's stack (``Task serialization failed: StackOverflowError``):
    seen at 12 ALS iterations on a busy machine, every time at 24. With a folder set, ALS cuts the
    lineage every ``checkpointInterval`` (10) iterations. ``folder`` None: a fresh temporary folder.
    Spark writes into a new sub-folder per session; it is removed when this process exits (the files
    are scratch: a fitted model never reads them back after its factors are collected).
    """
    context = spark.sparkContext
    current = context.getCheckpointDir()
    if current:
        return current
    path = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="recsys-spark-checkpoints-"))
    path.mkdir(parents=True, exist_ok=True)
    context.setCheckpointDir(str(path))
    current = context.getCheckpointDir()
    if current.startswith("file:"):
        atexit.register(shutil.rmtree, current[len("file:"):], ignore_errors=True)
    return current
