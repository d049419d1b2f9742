"""recsys.parallel: jobs side by side in worker processes that die with their caller."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest

from recsys.parallel import WorkerError, run_side_by_side


def _pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def test_each_job_runs_in_its_own_process_and_results_keep_their_order():
    results = run_side_by_side([(_pid_after, (1.0,)), (_pid_after, (1.0,)), (divmod, (17, 5))])

    assert results[2] == (3, 2)
    assert os.getpid() not in results[:2]
    assert results[0] != results[1]  # two workers at once, not one after the other in the same process


def test_a_failing_job_raises_its_own_error_in_the_caller():
    with pytest.raises(ValueError, match="invalid literal for int"):
        run_side_by_side([(os.getpid, ()), (int, ("not a number",))])


def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


@pytest.mark.parametrize("bound", [True, False], ids=["bound-to-caller", "control-unbound"])
def test_workers_die_when_their_caller_is_killed(bound):
    """SIGKILL the caller mid-job (what Airflow does to a task): its workers must not compute on.

    The control starts a plain spawn pool (no death signal), to show that the check can fail.
    """
    jobs = "[(time.sleep, (120,)), (time.sleep, (120,))]"
    if bound:
        run = f"from recsys.parallel import run_side_by_side; run_side_by_side({jobs})"
    else:
        run = textwrap.dedent(
            f"""
            import concurrent.futures, multiprocessing
            with concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = [pool.submit(f, *a) for f, a in {jobs}]
            """
        )
    script = "import time\n" + run
    session_children = psutil.Process().children(recursive=True)
    caller = subprocess.Popen([sys.executable, "-c", script])
    started: list[psutil.Process] = []
    try:
        process = psutil.Process(caller.pid)
        # Two workers (the control's spawn pool also starts a resource tracker, which is not one of them).
        workers = lambda: [p for p in process.children() if "resource_tracker" not in " ".join(p.cmdline())]  # noqa: E731
        assert _wait_for(lambda: len(workers()) == 2, 60), f"the caller did not start two workers: {process.children()}"
        started = workers()
        time.sleep(1.0)  # let the workers finish their start-up (the death signal is set there)
        caller.send_signal(signal.SIGKILL)
        caller.wait(10)
        gone = _wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in started), 10)
        assert gone is bound, f"workers {'still running' if bound else 'gone'} 10 s after their caller was killed"
    finally:
        # Only this test's processes: the test session's other children (its Spark JVM) must live on.
        with contextlib.suppress(psutil.NoSuchProcess):
            started += psutil.Process(caller.pid).children(recursive=True)
        for leftover in started:
            with contextlib.suppress(psutil.NoSuchProcess):
                leftover.kill()
        caller.kill()
        caller.wait(10)
    assert all(p.is_running() for p in session_children), "the clean-up killed a process this test did not start"


def test_a_caller_script_without_a_main_guard_is_not_run_again_by_the_workers(tmp_path):
    """Spawned workers re-run an unguarded main script (doubling its work) unless it is kept from them."""
    runs = tmp_path / "runs.txt"
    script = tmp_path / "unguarded.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os
            from recsys.parallel import run_side_by_side
            with open({str(runs)!r}, "a") as out:
                out.write(f"{{os.getpid()}}\\n")
            print(run_side_by_side([(os.getpid, ()), (os.getpid, ())]))
            """
        )
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr[-2000:]
    assert len(runs.read_text().split()) == 1, f"the script's body ran in processes {runs.read_text().split()}"


@pytest.mark.parametrize(
    "call, expected",
    [
        ("from recsys.parallel import run_side_by_side; assert len(set(run_side_by_side([(os.getpid, ()), (os.getpid, ())]))) == 2", "ok"),
        ("pool = concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context('spawn')); pool.submit(os.getpid).result()",
         "AssertionError('daemonic processes are not allowed to have children')"),
    ],
    ids=["side-by-side", "control-multiprocessing-pool"],
)
def test_jobs_run_from_a_daemonic_process_like_a_celery_prefork_worker(call, expected):
    """A Celery prefork pool runs Airflow tasks in daemonic processes, which may not have multiprocessing children.

    The control shows the condition is real: a multiprocessing pool started there fails.
    """
    script = textwrap.dedent(
        f"""
        import concurrent.futures, multiprocessing, os
        def task(answers):
            try:
                {call}
                answers.put("ok")
            except BaseException as exc:
                answers.put(repr(exc))
        fork = multiprocessing.get_context("fork")
        answers = fork.SimpleQueue()
        worker = fork.Process(target=task, args=(answers,), daemon=True)
        worker.start(); worker.join()
        print(answers.get())
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == expected, done.stderr[-2000:]


def _exit_now(code: int) -> None:
    os._exit(code)


def test_a_worker_that_dies_without_a_result_raises_a_clear_error():
    with pytest.raises(WorkerError, match=r"job 1 \(_exit_now\): its worker process ended with exit code 3 and no result"):
        run_side_by_side([(os.getpid, ()), (_exit_now, (3,))])


class _NeedsTwoArguments(Exception):
    def __init__(self, first, second):
        super().__init__(f"{first} and {second}")


def _raise_needs_two() -> None:
    raise _NeedsTwoArguments("one", "two")


def test_an_exception_that_cannot_be_rebuilt_still_reports_the_workers_traceback():
    with pytest.raises(WorkerError, match="could not be read back") as raised:
        run_side_by_side([(_raise_needs_two, ())])
    assert "_NeedsTwoArguments: one and two" in str(raised.value.__cause__)


def test_a_result_that_cannot_be_pickled_is_reported_not_lost():
    with pytest.raises(WorkerError, match="could not be sent back"):
        run_side_by_side([(threading.Lock, ())])
