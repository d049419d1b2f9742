"""Run a few independent CPU-bound jobs side by side, each in its own process, bound to the caller's life.

A task that has two independent fits to make (the sequence model's held-out and full refits) finishes
sooner running them at once on two cores than one after the other on one. Threads would share the GIL
in the training loop's Python; processes do not. The workers are started with ``spawn`` (a forked copy
of a process that already started OpenMP or the JVM can hang) and die with the caller: when Airflow
kills a task with SIGKILL, its retry must not find last attempt's workers still computing and writing.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import signal
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from typing import Any

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when its parent exits; exit now if the parent is already gone.

    No-op off Linux, where a killed caller can leave its workers running until their job ends.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(error)}")
    # The parent may have died between starting this process and the prctl call above.
    if os.getppid() != parent_pid:
        os._exit(1)


def _start_worker(parent_pid: int, log_level: int) -> None:
    die_with_parent(parent_pid)
    # A spawned process starts without the caller's logging set-up; its stderr is the caller's, which
    # Airflow's task log captures, so the worker's progress lines land in the same task log.
    logging.basicConfig(
        level=log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s [%(processName)s] %(name)s: %(message)s"
    )


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """While workers start: give them no ``__main__`` to re-import.

    A spawned worker re-runs the caller's main script unless that script guards its work with
    ``if __name__ == "__main__"``; a caller without the guard would run itself again in every worker.
    The jobs are importable functions, so the workers need nothing from ``__main__``.
    """
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def run_side_by_side(jobs: Sequence[tuple[Callable[..., Any], tuple]]) -> list[Any]:
    """Run each ``(function, args)`` in its own worker process at once; return their results in order.

    ``function`` must be importable (a module-level function) and its arguments and result picklable. The
    first job to raise has its exception re-raised here (the worker's traceback is attached as its cause)
    once the others have finished; a worker killed from outside raises ``BrokenProcessPool``.
    """
    if not jobs:
        return []
    context = multiprocessing.get_context("spawn")
    level = logging.getLogger().getEffectiveLevel()
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=len(jobs), mp_context=context, initializer=_start_worker, initargs=(os.getpid(), level)
    ) as pool:
        with _main_module_hidden():  # spawn starts each worker inside submit()
            futures = [pool.submit(function, *args) for function, args in jobs]
        log.info("running %d jobs side by side in worker processes", len(futures))
        concurrent.futures.wait(futures)
        return [future.result() for future in futures]
