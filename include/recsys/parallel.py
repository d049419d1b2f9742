"""Run a few independent CPU-bound jobs side by side, each in its own process, bound to the caller's life.

A task that has two independent fits to make (the sequence model's held-out and full refits) finishes
sooner running them at once on two cores than one after the other on one. Threads would share the GIL
in the training loop's Python; processes do not.

Each worker is a fresh interpreter (``python -m recsys.parallel``), not a ``multiprocessing`` child:

* it works from any caller, including a Celery prefork worker, whose processes are daemonic and may
  not start ``multiprocessing`` children ("daemonic processes are not allowed to have children");
* nothing is forked from a process that already started OpenMP threads or a JVM;
* the caller's main script is never re-imported, guarded by ``if __name__ == "__main__"`` or not;
* it dies with the caller: when Airflow kills a task with SIGKILL, its retry must not find the last
  attempt's workers still computing and writing.

A job and its result travel as pickles through files in a private temporary folder; the worker's
stdout and stderr are the caller's, so its log lines land in the same Airflow task log. It logs to
stdout: Airflow records a task's stderr lines at level ERROR, which would paint every epoch's progress red.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class WorkerError(RuntimeError):
    """A worker ended without a result, or its job raised an exception that could not be sent back as it was."""


class _RemoteTraceback(Exception):
    """The worker's traceback, attached as the cause of the exception re-raised in the caller."""

    def __str__(self) -> str:
        return self.args[0]


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when its parent exits; exit now if the parent is already gone.

    No-op off Linux, where a killed caller can leave its workers running until their job ends. Linux
    sends the signal when the *thread* that started this process ends, so start workers from a thread
    that outlives them (the task's main thread).
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(error)}")
    # The parent may have died between starting this process and the prctl call above.
    if os.getppid() != parent_pid:
        os._exit(1)


def run_side_by_side(jobs: Sequence[tuple[Callable[..., Any], tuple]]) -> list[Any]:
    """Run each ``(function, args)`` in its own worker process at once; return their results in order.

    ``function`` must be importable (a module-level function) and its arguments and result picklable.
    Once every worker has ended, the first job that raised has its exception re-raised here, with the
    worker's traceback as its cause; a worker that ended without a result raises :class:`WorkerError`.
    """
    if not jobs:
        return []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(entry for entry in sys.path if entry)}
    level = logging.getLogger().getEffectiveLevel()
    with tempfile.TemporaryDirectory(prefix="recsys-side-by-side-") as scratch:
        folder = Path(scratch)
        workers: list[subprocess.Popen] = []
        try:
            for number, (function, args) in enumerate(jobs):
                job = folder / f"job-{number}.pkl"
                job.write_bytes(pickle.dumps((function, tuple(args), level)))
                command = [sys.executable, "-m", __name__, str(os.getpid()), str(job), str(folder / f"result-{number}.pkl")]
                workers.append(subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL))
            log.info("running %d jobs side by side in worker processes %s", len(workers), [w.pid for w in workers])
            exit_codes = [worker.wait() for worker in workers]
        finally:  # the caller was interrupted (or a start failed): take the workers down with it
            for worker in workers:
                if worker.poll() is None:
                    worker.kill()
                    worker.wait()
        return _collect(folder, jobs, exit_codes)


def _collect(folder: Path, jobs: Sequence[tuple[Callable[..., Any], tuple]], exit_codes: list[int]) -> list[Any]:
    results, failure = [], None
    for number, ((function, _), code) in enumerate(zip(jobs, exit_codes)):
        name = f"job {number} ({getattr(function, '__qualname__', function)})"
        path = folder / f"result-{number}.pkl"
        if not path.exists():
            failure = failure or WorkerError(f"{name}: its worker process ended with exit code {code} and no result")
            results.append(None)
            continue
        kind, payload, text = pickle.loads(path.read_bytes())  # bytes and strings only: always readable
        try:
            value = pickle.loads(payload)
        except Exception as exc:  # noqa: BLE001 - e.g. an exception class that cannot be rebuilt from its args
            kind, value = "error", WorkerError(f"{name}: its outcome could not be read back: {exc!r}")
        if kind == "error":
            value.__cause__ = _RemoteTraceback(f"\n\"\"\"\n{name} failed in its worker process:\n{text}\"\"\"")
            failure = failure or value
            results.append(None)
        else:
            results.append(value)
    if failure is not None:
        raise failure
    return results


def _work(parent_pid: int, job: Path, result: Path) -> None:
    """A worker's whole life: bind to the caller, run the one job, leave its outcome beside the job."""
    die_with_parent(parent_pid)
    function, args, level = pickle.loads(job.read_bytes())
    logging.basicConfig(
        level=level, stream=sys.stdout, format="%(asctime)s %(levelname)s [worker %(process)d] %(name)s: %(message)s"
    )
    try:
        kind, value, text = "ok", function(*args), ""
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the caller, which raises it
        kind, value, text = "error", exc, traceback.format_exc()
    try:
        payload = pickle.dumps(value)
    except Exception as exc:  # noqa: BLE001 - an unpicklable result or exception still reports what happened
        text = text or traceback.format_exc()
        kind, payload = "error", pickle.dumps(WorkerError(f"its outcome could not be sent back: {exc!r}"))
    staged = result.with_suffix(".partial")
    staged.write_bytes(pickle.dumps((kind, payload, text)))
    os.replace(staged, result)  # the caller sees a whole result or none


if __name__ == "__main__":
    # Through the importable module, so that what the worker pickles (WorkerError) names recsys.parallel,
    # not this run's __main__.
    from recsys.parallel import _work as work

    work(int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
