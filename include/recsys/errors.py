"""The pipeline's own failures, in a module light enough for the DAG files to import.

Most failures are worth retrying (a service down, a file still landing, a task killed). Three are
verdicts: the same inputs give the same answer however often the task runs, so they fail the task at
once (:data:`NOT_RETRYABLE`, wired into every task by ``recsys.orchestration.default_args``) instead
of after every retry's backoff.
"""

from __future__ import annotations


class DataQualityError(RuntimeError):
    """Raised when the day's raw data cannot be used; the message says what, where and what to do."""


class QuarantineLimitError(DataQualityError):
    """More of the day's rows failed validation than ``RECSYS_QUARANTINE_MAX_FRACTION`` allows.

    A verdict on the day's files: a retry reads the same rows. Fix the source, then clear the task.
    """


class FeatureBuildError(RuntimeError):
    """The lookback window holds too little validated data to build the stages; the message says what to change.

    A verdict on the window's clean events: a retry reads the same days. Land or validate more history
    (or lower ``RECSYS_VAL_DAYS`` / ``RECSYS_TEST_DAYS``), then clear the task.
    """


class QualityGateError(RuntimeError):
    """The day's hybrid is not good enough to publish; the message names the figures.

    A verdict on the day's models (scored once, by ``fuse``): a retry of ``publish`` compares the same figures.
    """


#: Failures no retry can change.
NOT_RETRYABLE: tuple[type[BaseException], ...] = (QuarantineLimitError, FeatureBuildError, QualityGateError)
