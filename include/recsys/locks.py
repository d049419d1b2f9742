"""Cross-process locks on the data dir, so runs of different days can overlap safely.

Airflow backfills run several days at once by default (``max_active_runs`` of a backfill is 10 unless
given), and each day's run reads and may (re)write the clean events and partial aggregates of the days
before it. Those steps take an exclusive ``flock`` on a file under ``$RECSYS_DATA_DIR/locks/``; the
per-day work that follows (training, fusion) runs in parallel. ``flock`` is released by the kernel when
the holder dies, so a SIGKILLed task never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)


@contextmanager
def file_lock(path: Path, what: str, timeout_s: float | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block; log while waiting.

    Gives up after ``timeout_s`` (default ``RECSYS_LOCK_TIMEOUT_SECONDS``, 3600) with a TimeoutError naming
    the lock, so a stuck holder fails the waiting task (which Airflow retries) instead of hanging it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    timeout_s = float(os.environ.get("RECSYS_LOCK_TIMEOUT_SECONDS", "3600")) if timeout_s is None else timeout_s
    with open(path, "a+") as handle:
        started = time.monotonic()
        waiting_logged = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - started
                if waited > timeout_s:
                    raise TimeoutError(
                        f"waited {waited:.0f}s for the {what} lock ({path}) held by another run; "
                        "check for a stuck task of recsys_daily, or raise RECSYS_LOCK_TIMEOUT_SECONDS"
                    ) from None
                if not waiting_logged:
                    log.info("waiting for the %s lock (%s): another run holds it", what, path)
                    waiting_logged = True
                time.sleep(1.0)
        if waiting_logged:
            log.info("got the %s lock after %.1fs", what, time.monotonic() - started)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def day_data_lock(data_dir: Path):
    """The lock over clean events and partial aggregates, held by validate_raw and build_features."""
    return file_lock(Path(data_dir) / "locks" / "day-data.lock", "day data (clean events, partials)")
