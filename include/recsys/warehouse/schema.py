"""The warehouse contract: table and view names, column lists and the idempotent DDL for DuckDB and PostgreSQL.

Readers (dashboards, the serving API, analysts) rely on these names and types; change them only together
with everything that reads ``recsys.recommendations``, ``recsys.pipeline_runs`` and
``recsys.latest_recommendations``.

How (ds, user_id, rank) stays unique differs by backend, because what is fast differs:

* PostgreSQL: ``recommendations`` is LIST-partitioned by ds, one partition per day named by
  ``partition_name`` (e.g. ``recommendations_p20240301``), with ``PRIMARY KEY (ds, user_id, rank)``
  declared on the parent (each partition carries its own unique index). A publish loads and indexes a
  fresh table, then exchanges it for the day's partition in one transaction (see the writer).
* DuckDB: no index. Maintaining DuckDB's ART index made replacing a 2M-row day about 10x slower than the
  load itself, so uniqueness is enforced by the only writer instead: ``publish_partition`` rejects frames
  with a repeated (user_id, rank) and always replaces the whole day (DELETE the day + INSERT it, in one
  transaction, serialised per database file). Do not write to ``recommendations`` in DuckDB by hand.
"""

from __future__ import annotations

import datetime as dt
import re

DEFAULT_SCHEMA = "recsys"
RECOMMENDATIONS_TABLE = "recommendations"
RUNS_TABLE = "pipeline_runs"
LATEST_VIEW = "latest_recommendations"
READER_ROLE = "recsys_reader"

#: Columns a frame given to ``publish_partition`` must have (the ds comes from the argument).
RECOMMENDATION_FRAME_COLUMNS = ("user_id", "rank", "product_id", "score", "sources", "reason", "run_id")
RECOMMENDATION_KEY_COLUMNS = ("user_id", "rank", "product_id")
RECOMMENDATION_COLUMNS = ("ds", *RECOMMENDATION_FRAME_COLUMNS)
#: Unique in ``recommendations`` (the PostgreSQL primary key; in DuckDB guaranteed by the writer).
RECOMMENDATION_UNIQUE_KEY = ("ds", "user_id", "rank")

#: Keys of the run record given to ``publish_partition`` (published_rows may be left out: it is filled in).
RUN_RECORD_KEYS = (
    "airflow_run_id",
    "mlflow_run_id",
    "raw_rows",
    "clean_rows",
    "quarantined_rows",
    "users",
    "items",
    "published_rows",
    "metrics",
)
RUN_COLUMNS = ("ds", "airflow_run_id", "mlflow_run_id", "published_at", *RUN_RECORD_KEYS[2:])

# The schema name is the one identifier interpolated into SQL (identifiers cannot be bound parameters),
# so it is restricted to lower-case unquoted-identifier characters within PostgreSQL's 63-byte limit.
SCHEMA_NAME_PATTERN = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

# DOUBLE is DuckDB's name; PostgreSQL spells it DOUBLE PRECISION. Everything else is common SQL.
_DOUBLE_TYPE = {"duckdb": "DOUBLE", "postgresql": "DOUBLE PRECISION"}


def validate_schema_name(schema: str) -> str:
    """Return ``schema`` if it is a safe identifier, else raise ValueError saying what is allowed."""
    if not isinstance(schema, str) or not SCHEMA_NAME_PATTERN.fullmatch(schema):
        raise ValueError(
            f"warehouse schema name {schema!r} is not allowed: it must match {SCHEMA_NAME_PATTERN.pattern} "
            f"(lower-case letters, digits and underscores, starting with a letter or underscore, at most 63 characters)"
        )
    return schema


def partition_name(day: dt.date) -> str:
    """Name of the PostgreSQL partition holding ``day`` (in the warehouse schema): recommendations_pYYYYMMDD."""
    return f"{RECOMMENDATIONS_TABLE}_p{day:%Y%m%d}"


def recommendation_columns_ddl(dialect: str) -> str:
    """The recommendations column list with NOT NULL and CHECK constraints, without the key (shared by the
    table and PostgreSQL's per-publish load tables, which must match it column for column to be attached).

    The CHECK is named explicitly because PostgreSQL attaches a partition only if it has every CHECK of the
    parent under the same name (``recommendations_rank_check`` is also what PostgreSQL named it by default).
    """
    double = _double_type(dialect)
    return f"""
            ds DATE NOT NULL,
            user_id BIGINT NOT NULL,
            rank INTEGER NOT NULL CONSTRAINT {RECOMMENDATIONS_TABLE}_rank_check CHECK (rank >= 1),
            product_id BIGINT NOT NULL,
            score {double},
            sources TEXT,
            reason TEXT,
            run_id TEXT"""


def _double_type(dialect: str) -> str:
    if dialect not in _DOUBLE_TYPE:
        raise ValueError(f"schema_ddl: unknown dialect {dialect!r}; expected one of {sorted(_DOUBLE_TYPE)}")
    return _DOUBLE_TYPE[dialect]


def schema_ddl(schema: str, dialect: str) -> list[str]:
    """Idempotent statements creating the schema, both tables and the latest-day view, in order.

    PostgreSQL: ``recommendations`` is partitioned by ds with the primary key on the parent; DuckDB: a plain
    table without an index (uniqueness is the writer's job, see the module docstring). The writers'
    ``ensure_schema`` also migrates tables created by older versions of this DDL.
    """
    validate_schema_name(schema)
    _double_type(dialect)
    if dialect == "postgresql":
        key = f",\n            PRIMARY KEY ({', '.join(RECOMMENDATION_UNIQUE_KEY)})\n        ) PARTITION BY LIST (ds)"
    else:
        key = "\n        )"
    return [
        f"CREATE SCHEMA IF NOT EXISTS {schema}",
        f"CREATE TABLE IF NOT EXISTS {schema}.{RECOMMENDATIONS_TABLE} ({recommendation_columns_ddl(dialect)}{key}",
        f"""
        CREATE TABLE IF NOT EXISTS {schema}.{RUNS_TABLE} (
            ds DATE PRIMARY KEY,
            airflow_run_id TEXT,
            mlflow_run_id TEXT,
            published_at TIMESTAMP NOT NULL,
            raw_rows BIGINT,
            clean_rows BIGINT,
            quarantined_rows BIGINT,
            users BIGINT,
            items BIGINT,
            published_rows BIGINT,
            metrics TEXT
        )
        """,
        # Explicit columns (not SELECT *) so CREATE OR REPLACE never changes the view's shape under readers.
        f"""
        CREATE OR REPLACE VIEW {schema}.{LATEST_VIEW} AS
        SELECT {", ".join(RECOMMENDATION_COLUMNS)}
        FROM {schema}.{RECOMMENDATIONS_TABLE}
        WHERE ds = (SELECT max(ds) FROM {schema}.{RECOMMENDATIONS_TABLE})
        """,
    ]


def reader_role_ddl(schema: str) -> list[str]:
    """PostgreSQL statements creating the read-only role (if missing) and granting it read access to ``schema``."""
    validate_schema_name(schema)
    return [
        # CREATE ROLE has no IF NOT EXISTS; duplicate_object covers two sessions racing past the check.
        f"""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{READER_ROLE}') THEN
                CREATE ROLE {READER_ROLE} NOLOGIN;
            END IF;
        EXCEPTION WHEN duplicate_object THEN
            NULL;
        END
        $$
        """,
        f"GRANT USAGE ON SCHEMA {schema} TO {READER_ROLE}",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {READER_ROLE}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT ON TABLES TO {READER_ROLE}",
    ]
