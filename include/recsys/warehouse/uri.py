"""Turn the ``warehouse_default`` connection's fields into a warehouse URI (no Airflow import here)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote


def warehouse_uri(
    default_duckdb_path: Path,
    conn_type: str | None = None,
    host: str | None = None,
    port: int | None = None,
    login: str | None = None,
    password: str | None = None,
    schema: str | None = None,
) -> str:
    """``postgres``/``postgresql`` connections give a PostgreSQL URI (``schema`` is the database, as in
    Airflow's Postgres connection); ``duckdb`` takes ``host`` as the file path; no connection at all
    means the embedded DuckDB file under the data dir."""
    kind = (conn_type or "").lower()
    if kind in ("postgres", "postgresql"):
        if not host:
            raise ValueError("the warehouse_default connection is of type postgres but has no host")
        auth = ""
        if login:
            auth = quote(login, safe="")
            if password:
                auth += ":" + quote(password, safe="")
            auth += "@"
        return f"postgresql://{auth}{host}:{port or 5432}/{schema or 'postgres'}"
    if kind == "duckdb":
        return f"duckdb:///{Path(host or default_duckdb_path).resolve()}"
    if kind:
        raise ValueError(f"warehouse_default has connection type {conn_type!r}; use 'postgres' or 'duckdb' (or remove it for the embedded DuckDB)")
    return f"duckdb:///{Path(default_duckdb_path).resolve()}"
