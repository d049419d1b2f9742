"""recsys.parallel: jobs side by side in worker processes that die with their caller."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from recsys.parallel import run_side_by_side


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
    caller = subprocess.Popen([sys.executable, "-c", script])
    try:
        process = psutil.Process(caller.pid)
        # Two spawned workers (spawn also starts a resource tracker, which is not one of them).
        workers = lambda: [p for p in process.children() if "resource_tracker" not in " ".join(p.cmdline())]  # noqa: E731
        assert _wait_for(lambda: len(workers()) == 2, 60), f"the caller did not start two workers: {process.children()}"
        started = workers()
        time.sleep(1.0)  # let the workers finish their start-up (the death signal is set there)
        caller.send_signal(signal.SIGKILL)
        caller.wait(10)
        gone = _wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in started), 10)
        assert gone is bound, f"workers {'still running' if bound else 'gone'} 10 s after their caller was killed"
    finally:
        for child in psutil.Process(os.getpid()).children(recursive=True):
            child.kill()
        caller.kill()


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
