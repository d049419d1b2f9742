"""The cross-process lock of overlapping runs: a second holder waits, and gives up with a clear error."""

from __future__ import annotations

import subprocess
import sys

import pytest

from recsys.locks import file_lock


def test_a_second_process_waits_then_times_out_naming_the_lock(tmp_path):
    lock = tmp_path / "locks" / "day-data.lock"
    with file_lock(lock, "day data"):
        child = subprocess.run(
            [sys.executable, "-c", (
                "from recsys.locks import file_lock\n"
                f"with file_lock({str(lock)!r}, 'day data', timeout_s=1.5):\n"
                "    print('got it')\n"
            )],
            capture_output=True, text=True, timeout=60,
        )
    assert child.returncode != 0 and "got it" not in child.stdout
    assert f"for the day data lock ({lock}) held by another run" in child.stderr
    assert "RECSYS_LOCK_TIMEOUT_SECONDS" in child.stderr


def test_the_lock_is_free_again_after_the_block(tmp_path):
    lock = tmp_path / "l.lock"
    with file_lock(lock, "x", timeout_s=1):
        pass
    with file_lock(lock, "x", timeout_s=1):  # would time out if the first had not released it
        pass


def test_a_negative_timeout_fails_at_once_when_held(tmp_path):
    lock = tmp_path / "l.lock"
    with file_lock(lock, "x"):
        with pytest.raises(TimeoutError, match="for the x lock"):
            with file_lock(lock, "x", timeout_s=-1):  # a second open file: flock excludes it
                pass
