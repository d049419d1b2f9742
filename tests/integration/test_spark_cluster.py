"""build_features on a real Spark standalone cluster (a master and one worker on 127.0.0.1) equals local mode.

The master and worker are started from the pyspark installation's own ``spark-class`` (SPARK_HOME is the
pyspark package directory) and always stopped at the end. The cluster build runs as the job's command
line, ``python -m recsys.features.build``, in its own process: one JVM holds one SparkContext, and the
test session's local context must stay alive for the other tests. Its master URL comes from
``RECSYS_SPARK_MASTER`` (Settings.spark_master), as the DAG's would from the ``spark_default`` connection.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import date, timedelta
from pathlib import Path

import pytest

pyspark = pytest.importorskip("pyspark")

from pyspark.sql import functions as F  # noqa: E402
from pyspark.testing import assertDataFrameEqual  # noqa: E402

from recsys.config import Settings  # noqa: E402
from recsys.constants import RAW_COLUMNS, STAGES  # noqa: E402
from recsys.data.synthetic import GeneratorConfig, generate  # noqa: E402
from recsys.features.build import build_features  # noqa: E402
from recsys.features.spark import spark_master_from_connection  # noqa: E402

pytestmark = pytest.mark.spark

SPARK_HOME = Path(pyspark.__file__).resolve().parent
END = date(2026, 4, 20)
DAYS = 7
START_TIMEOUT_S = 90


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _master_state(ui_port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=5) as response:
            return json.loads(response.read())
    except OSError:
        return None


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


def _stop(process: subprocess.Popen) -> None:
    """Stop one process we started (its own process group, see start_new_session), by its id."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
    """A standalone master and a 1-core, 1 GiB worker on 127.0.0.1; skips when they cannot start."""
    spark_class = SPARK_HOME / "bin" / "spark-class"
    if not os.access(spark_class, os.X_OK) or shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.skip(f"cannot start a Spark standalone cluster: need {spark_class} and Java 17 on PATH or JAVA_HOME")
    root = tmp_path_factory.mktemp("standalone")
    env = {
        **os.environ,
        "SPARK_HOME": str(SPARK_HOME),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOG_DIR": str(root / "logs"),
        "SPARK_WORKER_DIR": str(root / "work"),
        "PYSPARK_PYTHON": sys.executable,
    }
    master_port, master_ui, worker_ui = _free_port(), _free_port(), _free_port()
    url = f"spark://127.0.0.1:{master_port}"
    processes: list[tuple[subprocess.Popen, Path]] = []

    def start(name: str, args: list[str]) -> subprocess.Popen:
        log = root / f"{name}.log"
        handle = open(log, "w")
        process = subprocess.Popen(
            [str(spark_class), *args], env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True, cwd=root
        )
        handle.close()
        processes.append((process, log))
        return process

    def wait_for(condition, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if condition():
                return
            for process, log in processes:
                if process.poll() is not None:
                    pytest.skip(f"Spark standalone {log.stem} exited with {process.returncode} before {what}:\n{_tail(log)}")
            time.sleep(1)
        pytest.skip(f"Spark standalone cluster: no {what} within {START_TIMEOUT_S}s:\n"
                    + "\n".join(_tail(log) for _, log in processes))

    try:
        start("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(master_port),
                         "--webui-port", str(master_ui)])
        wait_for(lambda: (_master_state(master_ui) or {}).get("status") == "ALIVE", "a live master")
        start("worker", ["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", "1", "--memory", "1g",
                         "--webui-port", str(worker_ui), "--work-dir", str(root / "work"), url])
        wait_for(lambda: any(w.get("state") == "ALIVE" for w in (_master_state(master_ui) or {}).get("workers", [])),
                 "registered worker")
        yield {"url": url, "port": master_port, "ui": master_ui, "root": root}
    finally:
        for process, _ in reversed(processes):
            _stop(process)


def _write_clean(spark, data_dir: Path) -> None:
    """Clean Parquet per day straight from the generated CSV (the contract's types; no GX needed here)."""
    raw = spark.read.option("header", True).csv(str(data_dir / "raw" / "events"))
    raw.select(
        F.to_timestamp(F.regexp_replace("event_time", " UTC$", "")).alias("event_time"),
        "event_type",
        F.col("product_id").cast("long"),
        F.col("category_id").cast("long"),
        F.nullif(F.col("category_code"), F.lit("")).alias("category_code"),
        F.nullif(F.col("brand"), F.lit("")).alias("brand"),
        F.col("price").cast("double"),
        F.col("user_id").cast("long"),
        "user_session",
        F.col("ds").cast("string").alias("ds"),
    ).select(*RAW_COLUMNS, "ds").write.partitionBy("ds").parquet(str(data_dir / "clean" / "events"))


TABLES = ["items"] + [f"{stage}/{table}" for stage in STAGES for table in ("interactions", "sequences", "seen", "targets")
                      if not (stage == "full" and table == "targets")]


def test_connection_host_and_port_become_the_master_url(standalone):
    assert spark_master_from_connection("127.0.0.1", standalone["port"]) == standalone["url"]
    assert spark_master_from_connection(standalone["url"], None) == standalone["url"]


def test_build_features_on_the_cluster_equals_local_mode_table_by_table(spark, standalone, tmp_path):
    local_dir, cluster_dir = tmp_path / "local", tmp_path / "cluster"
    generate(local_dir, GeneratorConfig(users=200, products=90, days=DAYS, seed=5, end_date=END))
    _write_clean(spark, local_dir)
    shutil.copytree(local_dir, cluster_dir)

    local = build_features(spark, Settings(data_dir=local_dir, spark_master="local[2]", spark_shuffle_partitions=2), END)

    env = {
        **os.environ,
        "RECSYS_DATA_DIR": str(cluster_dir),
        "RECSYS_SPARK_MASTER": standalone["url"],
        "RECSYS_SPARK_SHUFFLE_PARTITIONS": "2",
        "RECSYS_SPARK_DRIVER_MEMORY": "1g",
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_HOME": str(SPARK_HOME),
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
    }
    log = tmp_path / "cluster-build.log"
    with open(log, "w") as handle:
        result = subprocess.run(
            [sys.executable, "-m", "recsys.features.build", "--ds", END.isoformat()],
            env=env, stdout=subprocess.PIPE, stderr=handle, text=True, timeout=900,
        )
    assert result.returncode == 0, f"cluster build failed (rc={result.returncode}):\n{_tail(log, 60)}"
    cluster = json.loads(result.stdout.strip().splitlines()[-1])

    assert cluster["spark_master"] == standalone["url"]
    # The master ran the application on its worker's executor.
    apps = (_master_state(standalone["ui"]) or {}).get("completedapps", [])
    assert any(app["name"] == f"build_features {END}" and app.get("cores", 1) >= 1 for app in apps), apps
    assert cluster["partials"]["built"] == local["partials"]["built"] == [
        (END - timedelta(days=i)).isoformat() for i in range(DAYS - 1, -1, -1)
    ]
    ignore = {"root", "spark_master"}
    assert {k: v for k, v in cluster.items() if k not in ignore} == {k: v for k, v in local.items() if k not in ignore}
    for table in TABLES:
        assertDataFrameEqual(
            spark.read.parquet(str(Path(cluster["root"]) / table)),
            spark.read.parquet(str(Path(local["root"]) / table)),
            rtol=1e-9,
            atol=0.0,
        )
