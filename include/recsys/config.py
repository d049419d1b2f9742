"""Settings from environment variables, with defaults: the only module that reads ``os.environ``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={raw!r} must be an integer") from exc


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={raw!r} must be a number") from exc


@dataclass(frozen=True)
class EventWeights:
    """Implicit-feedback strength of each event type (remove_from_cart is negative)."""

    view: float = 1.0
    cart: float = 3.0
    remove_from_cart: float = -1.0
    purchase: float = 5.0

    def as_dict(self) -> dict[str, float]:
        return {
            "view": self.view,
            "cart": self.cart,
            "remove_from_cart": self.remove_from_cart,
            "purchase": self.purchase,
        }


@dataclass(frozen=True)
class Settings:
    """Every tunable of the pipeline. Build it with :func:`load_settings`; override per run with ``replace``."""

    data_dir: Path
    lookback_days: int = 90
    top_k: int = 20
    val_days: int = 2
    test_days: int = 2
    session_gap_minutes: int = 30
    #: steps of each user's history kept for the sequence model. 200 rather than 50: on MovieLens (about
    #: 165 ratings per user) the last 50 left the LSTM two thirds of the training steps short.
    sequence_length: int = 200
    half_life_days: float = 14.0
    quarantine_max_fraction: float = 0.05
    #: publish only if the hybrid's held-out NDCG@10 is at most this fraction below the champion's
    champion_tolerance: float = 0.10
    candidates_per_model: int = 100
    #: ALS settings tried on the validation slice (the first N of ``pipeline.ALS_GRID``); fewer is faster.
    als_trials: int = 3
    mlflow_tracking_uri: str = ""
    mlflow_experiment: str = "recsys_daily"
    spark_master: str = "local[*]"
    spark_shuffle_partitions: int = 8
    spark_driver_memory: str = "2g"
    #: the native BLAS library Spark ML's JNI wrapper loads (recsys.features.spark.spark_ml_blas_library):
    #: "auto" = Debian's reference BLAS where installed (``make blas``), else the system's libblas.so.3;
    #: "system" = always the system's libblas.so.3; anything else = the path of a BLAS library.
    spark_blas_library: str = "auto"
    #: a Spark task whose lookback window holds at most this many MB of raw event files starts its JVM
    #: with the quick JIT compiler only (recsys.features.spark.quick_jit); 0 = never.
    spark_quick_jit_max_mb: float = 32.0
    #: PyTorch threads for the LSTM. The three models train side by side, and oversubscribed OpenMP
    #: threads spin-wait badly, so the default is half the cores (at least one).
    torch_threads: int = field(default_factory=lambda: max(1, (os.cpu_count() or 2) // 2))
    #: the LSTM's test and full refits run side by side in two worker processes only when the early-stopped
    #: fit's epochs they repeat took at least this long; each worker pays a few seconds of start-up (a fresh
    #: interpreter importing torch, pandas and the pipeline), which a smaller fit does not repay.
    sequence_side_by_side_seconds: float = 15.0
    event_weights: EventWeights = field(default_factory=EventWeights)
    seed: int = 42

    # ---- derived locations under the data dir -------------------------------------------------
    @property
    def raw_events_dir(self) -> Path:
        return self.data_dir / "raw" / "events"

    @property
    def catalog_path(self) -> Path:
        return self.data_dir / "raw" / "catalog" / "products.csv"

    @property
    def clean_events_dir(self) -> Path:
        return self.data_dir / "clean" / "events"

    @property
    def quarantine_dir(self) -> Path:
        return self.data_dir / "quarantine"

    @property
    def features_dir(self) -> Path:
        return self.data_dir / "features"

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    @property
    def warehouse_path(self) -> Path:
        return self.data_dir / "warehouse.duckdb"

    @property
    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        # A busy timeout lets parallel training tasks wait for SQLite's write lock instead of failing.
        return f"sqlite:///{(self.data_dir / 'mlflow' / 'mlflow.db').resolve()}?timeout=60"

    @property
    def mlflow_artifact_root(self) -> Path:
        return (self.data_dir / "mlflow" / "artifacts").resolve()

    def with_overrides(self, **overrides) -> "Settings":
        """A copy with the given fields replaced; ``None`` values are ignored (unset DAG params)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


def load_settings() -> Settings:
    """Read the settings from the environment (see the README's configuration table)."""
    return Settings(
        data_dir=Path(os.environ.get("RECSYS_DATA_DIR") or "./data").resolve(),
        lookback_days=_env_int("RECSYS_LOOKBACK_DAYS", 90),
        top_k=_env_int("RECSYS_TOP_K", 20),
        val_days=_env_int("RECSYS_VAL_DAYS", 2),
        test_days=_env_int("RECSYS_TEST_DAYS", 2),
        session_gap_minutes=_env_int("RECSYS_SESSION_GAP_MINUTES", 30),
        sequence_length=_env_int("RECSYS_SEQUENCE_LENGTH", 200),
        half_life_days=_env_float("RECSYS_HALF_LIFE_DAYS", 14.0),
        quarantine_max_fraction=_env_float("RECSYS_QUARANTINE_MAX_FRACTION", 0.05),
        champion_tolerance=_env_float("RECSYS_CHAMPION_TOLERANCE", 0.10),
        candidates_per_model=_env_int("RECSYS_CANDIDATES_PER_MODEL", 100),
        als_trials=_env_int("RECSYS_ALS_TRIALS", 3),
        mlflow_tracking_uri=os.environ.get("MLFLOW_TRACKING_URI", ""),
        mlflow_experiment=os.environ.get("RECSYS_MLFLOW_EXPERIMENT", "recsys_daily"),
        spark_master=os.environ.get("RECSYS_SPARK_MASTER", "local[*]"),
        spark_shuffle_partitions=_env_int("RECSYS_SPARK_SHUFFLE_PARTITIONS", 8),
        spark_driver_memory=os.environ.get("RECSYS_SPARK_DRIVER_MEMORY", "2g"),
        spark_blas_library=os.environ.get("RECSYS_SPARK_BLAS_LIBRARY") or "auto",
        spark_quick_jit_max_mb=_env_float("RECSYS_SPARK_QUICK_JIT_MAX_MB", 32.0),
        torch_threads=_env_int("RECSYS_TORCH_THREADS", max(1, (os.cpu_count() or 2) // 2)),
        sequence_side_by_side_seconds=_env_float("RECSYS_SEQUENCE_SIDE_BY_SIDE_SECONDS", 15.0),
        seed=_env_int("RECSYS_SEED", 42),
    )
