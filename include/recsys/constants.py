"""Column names and defaults shared by every module (one place, like Microsoft Recommenders' constants)."""

USER_COL = "user_id"
ITEM_COL = "product_id"
SCORE_COL = "score"
RANK_COL = "rank"
TIME_COL = "event_time"
EVENT_COL = "event_type"
SESSION_COL = "user_session"

#: The input contract's columns, in the REES46 layout and order.
RAW_COLUMNS = (
    "event_time",
    "event_type",
    "product_id",
    "category_id",
    "category_code",
    "brand",
    "price",
    "user_id",
    "user_session",
)
EVENT_TYPES = ("view", "cart", "remove_from_cart", "purchase")
CATALOG_COLUMNS = ("product_id", "title", "description", "category_code", "brand", "price")

#: Names of the model families and baselines, as used in MLflow, XCom and the warehouse.
#: ``cooccurrence`` (item-to-item, Spark) trains as a fourth parallel task beside the three families.
MODEL_NAMES = ("collaborative", "content", "sequence", "cooccurrence")
#: Baselines fitted inside ``fuse``, scored beside the models and offered to the ranker as candidate sources.
BASELINE_NAMES = ("popularity", "category_popularity")
HYBRID_NAME = "hybrid"

#: Stages of the temporal protocol: fit on the data before a slice and score that slice.
#: "val" fits on train and scores the validation slice (fusion and hyper-parameters are chosen here),
#: "test" fits on train+validation and scores the held-out slice (every reported metric),
#: "full" fits on everything up to and including ds (what gets published).
STAGES = ("val", "test", "full")

DEFAULT_K = 20
EVAL_K = 10
SEED = 42

#: Airflow pool bounding the CPU- and memory-heavy tasks (Spark, training, fusion) across runs and DAGs,
#: and its default size: the four training tasks of one run at once; a backfill's runs queue behind them.
COMPUTE_POOL = "recsys_compute"
COMPUTE_POOL_SLOTS = 4
