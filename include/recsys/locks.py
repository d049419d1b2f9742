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
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)


@contextmanager
def file_lock(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block; log while waiting."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            started = time.monotonic()
            log.info("waiting for the %s lock (%s): another run holds it", what, path)
            fcntl.flock(handle, fcntl.LOCK_EX)
            log.info("got the %s lock after %.1fs", what, time.monotonic() - started)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def day_data_lock(data_dir: Path):
    """The lock over clean events and partial aggregates, held by validate_raw and build_features."""
    return file_lock(Path(data_dir) / "locks" / "day-data.lock", "day data (clean events, partials)")
