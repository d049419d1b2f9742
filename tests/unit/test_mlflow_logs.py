"""MLflow's log records reach the process's own handlers at their own levels, not stderr.

An Airflow task records every stderr line at level ERROR; MLflow's own handler writes to stderr. Each case
runs in a child process, because MLflow installs its handler when it is first imported.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = r"""
import logging, sys
import mlflow
from recsys import tracking
logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
if sys.argv[1] == "routed":
    tracking.route_mlflow_logs()
logging.getLogger("mlflow.pytorch").warning("probe note")
"""


@pytest.mark.parametrize("mode", ["routed", "mlflow's own handler"])
def test_mlflow_warnings_go_to_the_process_handlers_not_stderr(mode):
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    if mode == "routed":
        assert "WARNING mlflow.pytorch: probe note" in done.stdout and "probe note" not in done.stderr, done
    else:  # the control: what an Airflow task showed as an error before
        assert "probe note" in done.stderr and "probe note" not in done.stdout, done
