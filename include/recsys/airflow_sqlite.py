"""Connect arguments for Airflow's SQLite metadata database, which Airflow imports by path.

:func:`recsys.local_airflow.airflow_env` points ``[database] sql_alchemy_connect_args`` (and its async
twin) here when the metadata DB is the SQLite file in ``AIRFLOW_HOME``. Several Airflow processes write
that file at once: the scheduler, the dag-processor, the api-server and CLI commands such as
``airflow backfill create``. SQLite takes one writer at a time, and Python's sqlite3 waits 5 s for the
lock before it fails with "database is locked". That happened on a busy 2-core machine: a backfill
created its runs while the scheduler was creating its cron run. Here the wait is a minute. This module
imports nothing, because Airflow reads it while it is still setting itself up.
"""

SQLITE_TIMEOUT_SECONDS = 60

CONNECT_ARGS = {"timeout": SQLITE_TIMEOUT_SECONDS}
